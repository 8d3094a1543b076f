// Router: one aggregate actor per stream id.
#include "actors/router.hpp"

#include <malloc.h>

#include <caf/all.hpp>
#include <chrono>
#include <unordered_map>

namespace cqrs::actors {
namespace {

struct LiveAggregate {
  caf::actor actor;
  uint64_t forwarded = 0;  // messages sent to it; compared with its idle report
};

struct RouterState {
  caf::actor pool;
  AggregateConfig config;
  std::unordered_map<std::string, LiveAggregate> live;
  uint64_t stops_since_trim = 0;
  std::chrono::steady_clock::time_point last_trim{};
  static inline const char* name = "cqrs.router";
};

using RouterActor = caf::stateful_actor<RouterState>;

LiveAggregate& find_or_spawn(RouterActor* self, const AggregateType* type,
                             const std::string& stream_id) {
  auto& live = self->state.live;
  auto it = live.find(stream_id);
  if (it != live.end()) return it->second;
  caf::actor aggregate = spawn_aggregate(self, self->state.config, self->state.pool,
                                         caf::actor_cast<caf::actor>(self), type, stream_id);
  self->monitor(aggregate);
  return live.emplace(stream_id, LiveAggregate{aggregate, 0}).first->second;
}

// glibc keeps the memory of stopped aggregates for reuse instead of returning it to the system,
// so an idle daemon would stay at its peak size. After many stops (or when none is left), hand
// it back, at most every 10 s: malloc_trim takes milliseconds on a large heap.
void return_memory_after_stops(RouterState& state) {
  constexpr uint64_t kStopsPerTrim = 10000;
  ++state.stops_since_trim;
  if (state.stops_since_trim < kStopsPerTrim && !state.live.empty()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - state.last_trim < std::chrono::seconds(10)) return;
  state.last_trim = now;
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
    self->quit(exit.reason);
  });
  self->set_down_handler([self](caf::down_msg& down) {
    auto& live = self->state.live;
    for (auto it = live.begin(); it != live.end(); ++it) {
      if (it->second.actor.address() == down.source) {
        live.erase(it);
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
      [self](idle_atom, const std::string& stream_id, uint64_t received) {
        auto it = self->state.live.find(stream_id);
        if (it == self->state.live.end() || it->second.forwarded != received) return;
        // Nothing is on its way to it: it can go, and the next command spawns a fresh one.
        self->demonitor(it->second.actor);
        self->send(it->second.actor, stop_atom::value);
        self->state.live.erase(it);
        return_memory_after_stops(self->state);
      },
      [self](status_atom) { return static_cast<uint64_t>(self->state.live.size()); },
  };
}

}  // namespace

caf::actor spawn_router(caf::actor_system& system, caf::actor store_pool,
                        AggregateConfig aggregate_config) {
  return system.spawn(router, std::move(store_pool), aggregate_config);
}

}  // namespace cqrs::actors
