// Router: one aggregate actor per stream id.
#include "actors/router.hpp"

#include <malloc.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <list>
#include <unordered_map>

namespace cqrs::actors {
namespace {

using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using Clock = caf::actor_clock::clock_type;

struct LiveAggregate {
  caf::actor actor;
  uint64_t forwarded = 0;  // messages sent to it; compared with its idle report
  Clock::time_point last_used;
  std::list<const std::string*>::iterator lru;  // its place in RouterState::by_last_use
};

// Idle aggregates are found by a periodic sweep over the aggregates in order of last use, so a
// busy daemon pays no timer per message (CAF's after() re-arms a clock entry on every message).
struct RouterState {
  caf::actor pool;
  AggregateConfig config;
  std::unordered_map<std::string, LiveAggregate> live;
  // Least recently used first; each names a key of `live` (stable while the entry exists).
  std::list<const std::string*> by_last_use;
  bool sweep_armed = false;
  uint64_t stops_since_trim = 0;
  bool trim_scheduled = false;
  std::chrono::steady_clock::time_point last_trim{};
  static inline const char* name = "cqrs.router";
};

using RouterActor = caf::stateful_actor<RouterState>;

Clock::duration sweep_interval(const AggregateConfig& config) {
  auto quarter = std::chrono::duration_cast<Clock::duration>(config.idle_timeout) / 4;
  return std::clamp<Clock::duration>(quarter, std::chrono::milliseconds(10),
                                     std::chrono::seconds(1));
}

void arm_sweep(RouterActor* self) {
  auto& st = self->state;
  if (st.sweep_armed || st.live.empty() || st.config.idle_timeout.count() <= 0) return;
  st.sweep_armed = true;
  self->delayed_send(self, sweep_interval(st.config), sweep_atom::value);
}

// Marks the aggregate used now: it moves to the back of the sweep order.
void touch(RouterActor* self, LiveAggregate& aggregate) {
  auto& st = self->state;
  aggregate.last_used = self->clock().now();
  st.by_last_use.splice(st.by_last_use.end(), st.by_last_use, aggregate.lru);
}

void forget(RouterState& state, std::unordered_map<std::string, LiveAggregate>::iterator it) {
  state.by_last_use.erase(it->second.lru);
  state.live.erase(it);
}

LiveAggregate& find_or_spawn(RouterActor* self, const AggregateType* type,
                             const std::string& stream_id) {
  auto& st = self->state;
  auto it = st.live.find(stream_id);
  if (it != st.live.end()) {
    touch(self, it->second);
    return it->second;
  }
  caf::actor aggregate =
      spawn_aggregate(self, st.config, st.pool, caf::actor_cast<caf::actor>(self), type, stream_id);
  self->monitor(aggregate);
  auto entry =
      st.live.emplace(stream_id, LiveAggregate{aggregate, 0, self->clock().now(), {}}).first;
  LiveAggregate& added = entry->second;
  added.lru = st.by_last_use.insert(st.by_last_use.end(), &entry->first);
  arm_sweep(self);
  return added;
}

// Asks every aggregate unused for idle_timeout whether it is idle; each answers with an idle
// report only when it has nothing queued or running. Asked ones go to the back of the order, so
// a busy one is asked again after another idle_timeout.
void sweep(RouterActor* self) {
  auto& st = self->state;
  st.sweep_armed = false;
  auto now = self->clock().now();
  auto idle_since = now - std::chrono::duration_cast<Clock::duration>(st.config.idle_timeout);
  while (!st.by_last_use.empty()) {
    auto it = st.live.find(*st.by_last_use.front());
    if (it == st.live.end()) {  // cannot happen: both are updated together
      st.by_last_use.pop_front();
      continue;
    }
    if (it->second.last_used > idle_since) break;
    self->send(it->second.actor, idle_atom::value);
    it->second.last_used = now;
    st.by_last_use.splice(st.by_last_use.end(), st.by_last_use, it->second.lru);
  }
  arm_sweep(self);
}

// glibc keeps the memory of stopped aggregates for reuse instead of returning it to the system,
// so an idle daemon would stay at its peak size. After many stops (or when none is left), hand
// it back, at most every 10 s: malloc_trim takes milliseconds on a large heap. The trim runs a
// second later, after the stopped actors have processed their stop and freed their memory, and
// a trim that falls inside the 10 s is postponed, not dropped.
void return_memory_after_stops(RouterActor* self) {
  constexpr uint64_t kStopsPerTrim = 10000;
  constexpr auto kTrimDelay = std::chrono::seconds(1);
  constexpr auto kTrimEvery = std::chrono::seconds(10);
  auto& st = self->state;
  ++st.stops_since_trim;
  if (st.trim_scheduled || (st.stops_since_trim < kStopsPerTrim && !st.live.empty())) return;
  auto now = std::chrono::steady_clock::now();
  auto delay =
      std::max<std::chrono::steady_clock::duration>(kTrimDelay, st.last_trim + kTrimEvery - now);
  st.trim_scheduled = true;
  self->delayed_send(self, delay, trim_atom::value);
}

void trim(RouterState& state) {
  state.trim_scheduled = false;
  state.last_trim = std::chrono::steady_clock::now();
  state.stops_since_trim = 0;
  malloc_trim(0);
}

caf::behavior router(RouterActor* self, caf::actor pool, AggregateConfig config) {
  self->state.pool = std::move(pool);
  self->state.config = config;
  // Stopping the router stops every aggregate it spawned (they are not linked to it, so that one
  // aggregate's crash does not take the router down).
  self->set_exit_handler([self](caf::exit_msg& exit) {
    for (auto& [stream_id, aggregate] : self->state.live) {
      self->send_exit(aggregate.actor, exit.reason);
    }
    self->state.live.clear();
    self->state.by_last_use.clear();
    self->quit(exit.reason);
  });
  self->set_down_handler([self](caf::down_msg& down) {
    auto& live = self->state.live;
    for (auto it = live.begin(); it != live.end(); ++it) {
      if (it->second.actor.address() == down.source) {
        forget(self->state, it);
        return;
      }
    }
  });
  return {
      [self](execute_atom, CommandEnvelope& envelope) {
        std::string stream_id = envelope.command.stream_id;
        LiveAggregate& target = find_or_spawn(self, envelope.command.type->aggregate, stream_id);
        ++target.forwarded;
        return self->delegate(target.actor, execute_atom::value, std::move(envelope));
      },
      [self](state_atom, StateQuery& query) {
        std::string stream_id = query.stream_id;
        LiveAggregate& target = find_or_spawn(self, query.type, stream_id);
        ++target.forwarded;
        return self->delegate(target.actor, state_atom::value, std::move(query));
      },
      [self](query_atom, std::string& request) {
        return self->delegate(self->state.pool, query_atom::value, std::move(request));
      },
      [self](idle_atom, const std::string& stream_id, uint64_t received) {
        auto it = self->state.live.find(stream_id);
        if (it == self->state.live.end() || it->second.forwarded != received) return;
        // Nothing is on its way to it: it can go, and the next command spawns a fresh one.
        self->demonitor(it->second.actor);
        self->send(it->second.actor, stop_atom::value);
        forget(self->state, it);
        return_memory_after_stops(self);
      },
      [self](sweep_atom) { sweep(self); },
      [self](trim_atom) { trim(self->state); },
      [self](status_atom) { return static_cast<uint64_t>(self->state.live.size()); },
  };
}

}  // namespace

caf::actor spawn_router(caf::actor_system& system, caf::actor store_pool,
                        AggregateConfig aggregate_config) {
  return system.spawn(router, std::move(store_pool), aggregate_config);
}

}  // namespace cqrs::actors
