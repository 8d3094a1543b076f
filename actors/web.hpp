// The gift card demo web page and its JSON API (--web.enabled), served by the metrics endpoint
// (metrics::HttpExporter). docs/web.md describes it for users.
//
//   GET  /, /index.html, /app.js, /style.css   the page, compiled in from web/
//   GET  /api/giftcards          giftcard_summary: the newest cards and the totals (JSON)
//   GET  /api/giftcards/events   Server-Sent Events: a "giftcards" event with the same JSON at
//                                once, then whenever a transaction that changed the table commits
//   POST /api/commands/<Type>    the body is the command's payload; dispatched through the gateway
//                                like cqrsctl's, answered with cqrsctl's reply JSON
//
// Pushes: a thread of its own LISTENs on the channel giftcard_summary (schema/008: a trigger
// notifies it on every commit that changes the table), re-reads the summary and publishes it to
// the event streams, at most every kMinRefresh. It starts with attach(), once the schema is there.
//
// Thread-safe: the route callbacks run on the endpoint's serving threads, several at once; they
// never run on the actor scheduler (dispatches wait on a scoped actor).
#pragma once

#include <atomic>
#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cqrs/metrics/http_exporter.hpp"

namespace cqrs::pg {
class Connection;
}

namespace cqrs::actors {

class WebUi {
 public:
  struct Options {
    std::string db_url;
    size_t max_command_bytes = 1 << 20;  // limits.max_command_bytes: larger bodies get 413
    std::chrono::milliseconds command_timeout{5000};
    int64_t max_cards = 1000;  // rows listed at most (the totals count every card)
  };
  static constexpr std::chrono::milliseconds kMinRefresh{100};

  WebUi(caf::actor_system& system, Options options);
  // Stops the listening thread. REQUIRES: the endpoint serving routes() has stopped.
  ~WebUi();
  WebUi(const WebUi&) = delete;
  WebUi& operator=(const WebUi&) = delete;

  // Adds the page, the API and the event stream to `routes`, with the command size limit.
  void add_routes(metrics::HttpExporter::Routes& routes);
  // The gateway that commands go to; starts the change listener. Until then the API answers 503.
  void attach(caf::actor gateway);

 private:
  metrics::HttpResponse list_cards();
  metrics::HttpResponse dispatch(const std::string& type, const std::string& body);
  void listen_for_changes();
  // A connection for one read, and its return (a few stay open between requests).
  std::unique_ptr<pg::Connection> take_connection();
  void give_back(std::unique_ptr<pg::Connection> conn);

  caf::actor_system& system_;
  Options options_;
  std::shared_ptr<metrics::EventHub> hub_;

  std::mutex mutex_;  // guards gateway_, idle_, stopping_
  caf::actor gateway_;
  std::vector<std::unique_ptr<pg::Connection>> idle_;
  bool stopping_ = false;
  std::condition_variable stop_;
  std::thread listener_;
};

}  // namespace cqrs::actors
