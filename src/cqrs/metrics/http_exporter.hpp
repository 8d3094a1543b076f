// cqrsd's HTTP endpoint, served from threads of its own (never from the actor scheduler):
//   GET /metrics  -> 200, the `metrics` callback's text (Prometheus text format)
//   GET /healthz  -> 200 {"status":"ok"}, or 503 {"status":"unavailable","reason":"..."}
// plus the extra routes and event streams the caller adds (the web page and its API). A path that
// no route matches is 404; a path that matches with another method is 405 with an Allow header.
// Error answers without a body of their own get {"status":"error","error":<code>,"message":..}.
//
// Concurrency: a bounded pool of kServingThreads threads serves the connections, each of which may
// carry several requests (keep-alive). Every callback (metrics, health, routes, initial stream
// messages) may therefore run on several threads at once, concurrently with itself and with the
// others: callbacks must be thread-safe. They may block, up to their own timeouts, but every
// blocked callback holds a serving thread. At most `max_streams` event streams are open at a time
// (more get 503), so streams never take every thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cqrs/metrics/event_hub.hpp"
#include "cqrs/result.hpp"

namespace cqrs::metrics {

struct HealthReport {
  bool ready = false;
  std::string reason;  // why not, when not ready
};

struct HttpRequest {
  std::string method;
  std::string path;
  std::vector<std::string> captures;  // the route pattern's groups, in order
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class HttpExporter {
 public:
  static constexpr size_t kServingThreads = 8;

  struct Route {
    std::string pattern;               // ECMAScript regex over the whole path
    std::vector<std::string> methods;  // GET routes answer HEAD too
    std::function<HttpResponse(const HttpRequest&)> handle;
  };
  // A Server-Sent Events stream (text/event-stream): every message of `hub` becomes one event
  // named `event` whose data is the message (REQUIRES: messages hold no line breaks); a comment
  // line goes out after `keepalive` of silence, so dead clients are noticed. The stream ends
  // when the exporter stops (it closes `hub`) or the client goes away.
  struct EventStream {
    std::string path;
    std::string event;
    std::shared_ptr<EventHub> hub;
    std::chrono::milliseconds keepalive{15000};
  };
  struct Routes {
    std::function<std::string()> metrics;
    std::function<HealthReport()> health;
    std::vector<Route> routes;
    std::vector<EventStream> streams;
    size_t max_streams = kServingThreads / 2;
    // Request bodies above this many bytes get 413 command_too_large (0: no limit).
    size_t max_body_bytes = 0;
  };

  // Listens on host:port (0: a free port) and serves until destroyed.
  // Errors: invalid_argument when the address cannot be bound (in use, not local, ...).
  static Result<std::unique_ptr<HttpExporter>> start(const std::string& host, uint16_t port,
                                                     Routes routes);

  // Ends the event streams, stops listening, waits for the requests in progress (and for idle
  // keep-alive connections, at most kKeepAliveSeconds) and joins the threads.
  ~HttpExporter();
  HttpExporter(const HttpExporter&) = delete;
  HttpExporter& operator=(const HttpExporter&) = delete;

  uint16_t port() const { return port_; }

  static constexpr int kKeepAliveSeconds = 1;

 private:
  struct Impl;
  explicit HttpExporter(std::unique_ptr<Impl> impl, uint16_t port);

  std::unique_ptr<Impl> impl_;
  uint16_t port_;
};

}  // namespace cqrs::metrics
