// The store writers: a fixed pool of detached workers, each with its own store connection, and a
// cooperative dispatcher in front of them that batches waiting writes into one transaction
// (group commit). Every libpq call happens on a worker's own thread, never on the scheduler.
//
// One write batch is in flight at a time, and the writes that arrive meanwhile wait to go
// together in the next one: on a few cores, concurrent small transactions cost more CPU per
// command than they save in commit latency. A second batch starts beside it only when the queue
// already fills a whole batch (`max_batch` writes, or `max_batch_events` events: writes of many
// events keep a server core busy each, so they run side by side), or when the newest batch in
// flight has run for `write_stall` (a lock wait, say), so that one slow transaction cannot hold
// every command back. Write batches never take the last idle worker: it is kept for loads, which
// commands wait on. Loads use any idle worker.
//
// Protocol of the pool actor:
//   (write_atom, WriteRequest)  -> WriteResult   one request, batched with whatever else waits
//   (load_atom, LoadJob)        -> LoadOutcome   snapshot + events of one stream, batched with
//                                                other waiting loads into one query
//   (snapshot_atom, Snapshot)   -> (no reply)    saved in the background, best effort
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <functional>
#include <memory>

#include "actors/messages.hpp"
#include "actors/metrics.hpp"
#include "cqrs/event_store.hpp"

namespace cqrs::actors {

// Opens one store handle per worker (a new connection for Postgres; the same shared store for
// the in-memory one). Called on the worker's own thread, again after a failure.
using StoreFactory = std::function<Result<std::shared_ptr<EventStore>>()>;

struct StorePoolConfig {
  size_t workers = 4;
  size_t max_batch = 256;  // WriteRequests per transaction (and LoadJobs per query) at most
  // Events per write transaction at most; a batch holds at least one WriteRequest, however many
  // events it has. Waiting writes with this many events make a whole batch (see above).
  size_t max_batch_events = 128;
  // How long a write batch runs before another may start beside it (see above).
  std::chrono::milliseconds write_stall{20};
  // When set: events appended, batch sizes and busy workers are counted there.
  std::shared_ptr<DaemonMetrics> metrics;
};

// Spawns the workers (detached) and the dispatcher (cooperative); returns the dispatcher.
// The workers stop when the dispatcher stops.
caf::actor spawn_store_pool(caf::actor_system& system, StoreFactory factory,
                            StorePoolConfig config);

// The body of one worker; spawn it detached. Exposed for tests.
caf::behavior store_worker(caf::event_based_actor* self, StoreFactory factory);

}  // namespace cqrs::actors
