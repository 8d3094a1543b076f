// Store pool: batching dispatcher plus detached workers.
#include "actors/store_pool.hpp"

#include <caf/all.hpp>
#include <chrono>
#include <deque>
#include <set>

#include "actors/log.hpp"
#include "actors/queries.hpp"
#include "actors/replies.hpp"

namespace cqrs::actors {
namespace {

struct PendingWrite {
  WriteRequest request;
  caf::typed_response_promise<WriteResult> promise;
};

struct PendingLoad {
  LoadJob job;
  caf::typed_response_promise<LoadOutcome> promise;
};

using Clock = std::chrono::steady_clock;

struct PoolState {
  std::vector<caf::actor> workers;
  std::vector<caf::actor> idle;
  std::deque<PendingWrite> writes;
  std::deque<PendingLoad> loads;
  size_t max_batch = 256;
  size_t max_batch_events = 128;
  size_t queued_events = 0;  // of the writes waiting
  std::chrono::milliseconds write_stall{20};
  std::multiset<Clock::time_point> writes_started;  // of the write batches in flight
  bool recheck_armed = false;                       // a pump is scheduled for a stalled batch
  bool prefer_loads = false;                        // alternate, so neither kind starves the other
  size_t next_query = 0;                            // round robin of admin queries over the workers
  std::shared_ptr<DaemonMetrics> metrics;           // may be null
  static inline const char* name = "cqrs.store_pool";
};

using PoolActor = caf::stateful_actor<PoolState>;

void pump(PoolActor* self);

// Metrics of one committed group: its size, and the events the ok requests appended.
void count_write_batch(const PoolState& st, const std::vector<WriteResult>& results) {
  if (!st.metrics) return;
  uint64_t events = 0;
  for (const WriteResult& result : results) {
    if (result.appended) events += result.appended->global_positions.size();
  }
  st.metrics->append_batch_size.observe(static_cast<double>(results.size()));
  if (events > 0) st.metrics->events_appended.inc(events);
}

void dispatch_writes(PoolActor* self, caf::actor worker) {
  auto& st = self->state;
  auto started = st.writes_started.insert(Clock::now());
  std::vector<WriteRequest> batch;
  std::vector<caf::typed_response_promise<WriteResult>> promises;
  size_t events = 0;
  while (!st.writes.empty() && batch.size() < st.max_batch) {
    size_t next_events = st.writes.front().request.events.size();
    if (!batch.empty() && events + next_events > st.max_batch_events) break;
    events += next_events;
    st.queued_events -= next_events;
    batch.push_back(std::move(st.writes.front().request));
    promises.push_back(std::move(st.writes.front().promise));
    st.writes.pop_front();
  }
  self->request(worker, caf::infinite, write_atom::value, std::move(batch))
      .then(
          [self, worker, promises, started](std::vector<WriteResult>& results) mutable {
            self->state.writes_started.erase(started);
            count_write_batch(self->state, results);
            for (size_t idx = 0; idx < promises.size(); ++idx) {
              promises[idx].deliver(
                  idx < results.size()
                      ? std::move(results[idx])
                      : WriteResult{
                            {}, Error::internal(errc::kStoreError, "missing result"), {}, {}});
            }
            self->state.idle.push_back(worker);
            pump(self);
          },
          [self, worker, promises, started](caf::error& err) mutable {
            self->state.writes_started.erase(started);
            Error error = Error::unavailable("store worker failed: " + self->system().render(err));
            for (auto& promise : promises) promise.deliver(WriteResult{{}, error, {}, {}});
            self->state.idle.push_back(worker);
            pump(self);
          });
}

void dispatch_loads(PoolActor* self, caf::actor worker) {
  auto& st = self->state;
  size_t count = std::min(st.loads.size(), st.max_batch);
  std::vector<LoadJob> jobs;
  std::vector<caf::typed_response_promise<LoadOutcome>> promises;
  jobs.reserve(count);
  promises.reserve(count);
  for (size_t idx = 0; idx < count; ++idx) {
    jobs.push_back(std::move(st.loads.front().job));
    promises.push_back(std::move(st.loads.front().promise));
    st.loads.pop_front();
  }
  self->request(worker, caf::infinite, load_atom::value, std::move(jobs))
      .then(
          [self, worker, promises](std::vector<LoadOutcome>& outcomes) mutable {
            for (size_t idx = 0; idx < promises.size(); ++idx) {
              LoadOutcome outcome;
              if (idx < outcomes.size()) {
                outcome = std::move(outcomes[idx]);
              } else {
                outcome.error = Error::internal(errc::kStoreError, "missing load result");
              }
              promises[idx].deliver(std::move(outcome));
            }
            self->state.idle.push_back(worker);
            pump(self);
          },
          [self, worker, promises](caf::error& err) mutable {
            Error error = Error::unavailable("store worker failed: " + self->system().render(err));
            for (auto& promise : promises) {
              LoadOutcome outcome;
              outcome.error = error;
              promise.deliver(std::move(outcome));
            }
            self->state.idle.push_back(worker);
            pump(self);
          });
}

// Whether waiting writes may start a batch now (see store_pool.hpp); when they must wait for a
// batch in flight that is not yet stalled, a pump is scheduled for the moment it would be.
bool may_write(PoolActor* self) {
  auto& st = self->state;
  if (st.writes.empty()) return false;
  // One worker stays free of writes for aggregate loads, which commands wait on.
  if (st.workers.size() > 1 && st.writes_started.size() + 1 >= st.workers.size()) return false;
  if (st.writes_started.empty() || st.writes.size() >= st.max_batch ||
      st.queued_events >= st.max_batch_events) {
    return true;
  }
  auto stalled_at = *st.writes_started.rbegin() + st.write_stall;
  auto now = Clock::now();
  if (now >= stalled_at) return true;
  if (!st.recheck_armed) {
    st.recheck_armed = true;
    self->delayed_send(self, stalled_at - now, write_atom::value);
  }
  return false;
}

void pump(PoolActor* self) {
  auto& st = self->state;
  while (!st.idle.empty()) {
    bool writable = may_write(self);
    if (!writable && st.loads.empty()) break;
    caf::actor worker = st.idle.back();
    st.idle.pop_back();
    bool take_load = !st.loads.empty() && (!writable || st.prefer_loads);
    st.prefer_loads = !st.prefer_loads;
    if (take_load) {
      dispatch_loads(self, worker);
    } else {
      dispatch_writes(self, worker);
    }
  }
  if (st.metrics) {
    st.metrics->store_workers_busy.set(static_cast<double>(st.workers.size() - st.idle.size()));
  }
}

caf::behavior store_pool(PoolActor* self, std::vector<caf::actor> workers, StorePoolConfig config) {
  self->state.workers = workers;
  self->state.idle = workers;
  self->state.max_batch = std::max<size_t>(1, config.max_batch);
  self->state.max_batch_events = std::max<size_t>(1, config.max_batch_events);
  self->state.write_stall = config.write_stall;
  self->state.metrics = std::move(config.metrics);
  if (self->state.metrics) {
    self->state.metrics->store_workers.set(static_cast<double>(workers.size()));
  }
  for (auto& worker : workers) self->link_to(worker);
  return {
      [self](write_atom, WriteRequest& request) -> caf::result<WriteResult> {
        auto promise = self->make_response_promise<WriteResult>();
        self->state.queued_events += request.events.size();
        self->state.writes.push_back(PendingWrite{std::move(request), promise});
        pump(self);
        return promise;
      },
      [self](write_atom) {
        // The batch in flight may have stalled: look again.
        self->state.recheck_armed = false;
        pump(self);
      },
      [self](load_atom, LoadJob& job) -> caf::result<LoadOutcome> {
        auto promise = self->make_response_promise<LoadOutcome>();
        self->state.loads.push_back(PendingLoad{std::move(job), promise});
        pump(self);
        return promise;
      },
      [self](query_atom, std::string& request) {
        // Any worker, in turn (there is always at least one); the query waits behind that
        // worker's current job.
        auto& pool_workers = self->state.workers;
        size_t pick = self->state.next_query++ % pool_workers.size();
        return self->delegate(pool_workers[pick], query_atom::value, std::move(request));
      },
      [self](snapshot_atom, Snapshot& snapshot) {
        auto& pool_workers = self->state.workers;
        if (pool_workers.empty()) return;
        // Any worker; it queues behind its current job. Snapshots are an optimization only.
        size_t pick = std::hash<std::string>{}(snapshot.stream_id) % pool_workers.size();
        self->send(pool_workers[pick], snapshot_atom::value, std::move(snapshot));
      },
  };
}

// Opens the worker's store on demand; returns nullptr with `error` set when it cannot.
std::shared_ptr<EventStore> ensure_store(std::shared_ptr<EventStore>& store,
                                         const StoreFactory& factory, std::optional<Error>& error) {
  if (store) return store;
  auto opened = factory();
  if (!opened) {
    error = opened.error();
    return nullptr;
  }
  if (!*opened) {
    error = Error::internal(errc::kStoreError, "the store factory returned no store");
    return nullptr;
  }
  store = std::move(opened).value();
  return store;
}

// What an exception thrown by a store (a bug, or memory running out) says to the requests it
// failed. The worker drops that store, whose connection may be in any state, and opens another
// at its next job; the exception must not end the worker, which the pool is linked to: every
// request the pool had taken would go unanswered and every later one fail.
Error store_threw(std::shared_ptr<EventStore>& store, std::string_view what) {
  store.reset();
  log::write(log::Level::kError, "store worker caught an exception", {{"what", std::string(what)}});
  return Error::unavailable("the store failed unexpectedly (" + std::string(what) + ")");
}

// The exception being handled, in words. REQUIRES: called inside a catch block.
std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}

}  // namespace

caf::behavior store_worker(caf::event_based_actor*, StoreFactory factory) {
  auto store = std::make_shared<std::shared_ptr<EventStore>>();
  return {
      [store, factory](write_atom, std::vector<WriteRequest>& batch) {
        try {
          std::optional<Error> error;
          auto handle = ensure_store(*store, factory, error);
          if (!handle) {
            return std::vector<WriteResult>(batch.size(), WriteResult{{}, error, {}, {}});
          }
          return handle->write(batch);
        } catch (...) {
          // Whether anything was stored is unknown: store_unavailable, which says so.
          Error error = store_threw(*store, current_exception_text());
          return std::vector<WriteResult>(batch.size(), WriteResult{{}, error, {}, {}});
        }
      },
      [store, factory](load_atom, std::vector<LoadJob>& jobs) {
        LoadOutcome failed;
        try {
          std::optional<Error> error;
          auto handle = ensure_store(*store, factory, error);
          if (handle) return handle->load_streams(jobs);
          failed.error = error;
        } catch (...) {
          failed.error = store_threw(*store, current_exception_text());
        }
        return std::vector<LoadOutcome>(jobs.size(), failed);
      },
      [store, factory](query_atom, const std::string& request) -> std::string {
        try {
          std::optional<Error> error;
          auto handle = ensure_store(*store, factory, error);
          if (!handle) return error_reply(*error);
          return run_query(*handle, request);
        } catch (...) {
          return error_reply(store_threw(*store, current_exception_text()));
        }
      },
      [store, factory](snapshot_atom, Snapshot& snapshot) {
        Result<void> saved;
        try {
          std::optional<Error> error;
          auto handle = ensure_store(*store, factory, error);
          saved = handle ? handle->save_snapshot(snapshot) : Result<void>(*error);
        } catch (...) {
          saved = store_threw(*store, current_exception_text());
        }
        // Best effort: the stream's events stay the truth, and loading replays what a snapshot
        // would have spared. A refused snapshot (too large, say) is said, since it would be
        // refused again every time; a store that is down is said by the commands that fail
        // meanwhile, so only when debugging.
        if (!saved) {
          log::write(saved.error().kind() == ErrorKind::kUnavailable ? log::Level::kDebug
                                                                     : log::Level::kWarn,
                     "snapshot not saved",
                     {{"stream_id", snapshot.stream_id},
                      {"stream_version", std::to_string(snapshot.stream_version)},
                      {"error", saved.error().code()},
                      {"message", saved.error().message()}});
        }
      },
  };
}

caf::actor spawn_store_pool(caf::actor_system& system, StoreFactory factory,
                            StorePoolConfig config) {
  std::vector<caf::actor> workers;
  for (size_t idx = 0; idx < std::max<size_t>(1, config.workers); ++idx) {
    workers.push_back(system.spawn<caf::detached>(store_worker, factory));
  }
  return system.spawn(store_pool, std::move(workers), std::move(config));
}

}  // namespace cqrs::actors
