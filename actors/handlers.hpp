// Handler actors: one detached actor per handler, each owning a HandlerRunner (and with it a
// connection of its own), plus the notifier that wakes them when the store appends.
//
// A handler actor steps its runner until it catches up, then waits for a wake-up from the
// notifier or the polling interval, whichever comes first (a lost notification only delays).
// After a failure it waits the runner's backoff; while another process holds the handler it
// retries the lock every second; a stopped handler waits for a restart.
//
// Protocol of a handler actor:
//   (wake_atom)                         -> new events may be there
//   (admin_atom, request JSON)          -> reply JSON:
//       {"op":"status"}                  {"name","kind","state","position","lag","last_error",
//                                         "dead_letters",..}
//       {"op":"reset"}                   projectors: reset and replay; {"status":"ok","total":n}
//       {"op":"restart"}                 clears a stop
//       {"op":"dead_letters","limit":n}  {"status":"ok","dead_letters":[...]}
// It reports (progress_atom, name, commit_id, global_position) to `observer` whenever its
// checkpoint moves (the gateway, for strong consistency).
#pragma once

#include <atomic>
#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "actors/messages.hpp"
#include "cqrs/domain/upcasters.hpp"
#include "cqrs/handlers/handler.hpp"

namespace cqrs::actors {

struct HandlerActorConfig {
  std::chrono::milliseconds poll_interval{1000};
  // A caught-up handler that is woken steps again no sooner than this after its last step
  // began, so that under load one step takes the events of many appends (one read, one
  // transaction) instead of one step per append. 0: step at every wake-up.
  std::chrono::milliseconds min_step_interval{5};
  std::chrono::milliseconds dispatch_timeout{30000};  // process managers' commands
  // Sent with process managers' commands, so that the gateway accepts internal ones
  // (GatewayConfig::internal_token).
  std::string dispatch_token;
};

// `gateway` receives process managers' commands (as dispatch envelopes) and progress reports.
// `upcasters` must outlive the actor.
caf::actor spawn_handler_actor(caf::actor_system& system, std::shared_ptr<Handler> handler,
                               std::string conninfo, const Upcasters* upcasters, caf::actor gateway,
                               HandlerActorConfig config);

// The correlation indexer: a detached actor with a store connection of its own that keeps
// cqrs.correlations behind the appends (PostgresEventStore::index_correlations, schema/018).
// It indexes batches until it catches up with the watermark, then waits for a wake-up (a
// WakeTarget of every type) or the polling interval. Indexers of several processes on one
// database take turns; failures are logged once and retried. Traces find every event whether
// it runs or not: it only keeps the part of $all they walk short.
struct CorrelationIndexerConfig {
  std::chrono::milliseconds poll_interval{1000};
  // Under load, one batch per this interval at most: each batch is one transaction.
  std::chrono::milliseconds min_step_interval{100};
  std::chrono::milliseconds retry_interval{1000};
  // Each batch is one write transaction, which holds back $all's watermark for every reader while
  // it runs (a few milliseconds for a thousand runs).
  int batch_runs = 1000;
};
caf::actor spawn_correlation_indexer(caf::actor_system& system, std::string conninfo,
                                     CorrelationIndexerConfig config);

// A handler actor and the event types it handles (sorted; empty: every type).
struct WakeTarget {
  caf::actor actor;
  std::vector<std::string> types;
};

// One LISTEN connection per daemon: on each notification of the store's channel, sends wake_atom
// to the targets that handle one of the announced event types (to all of them when a
// notification names no types). Reconnects by itself; stops with the object.
class Notifier {
 public:
  Notifier(std::string conninfo, std::vector<WakeTarget> targets);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

 private:
  void run();

  std::string conninfo_;
  std::vector<WakeTarget> targets_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace cqrs::actors
