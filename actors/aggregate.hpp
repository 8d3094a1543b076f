// One actor per aggregate stream. It loads the stream (latest snapshot plus later events) on its
// first message, then decides commands one at a time in arrival order, appends their events
// with an exact expected version through the store pool, and answers only after the append
// committed. When another process appended in between, it reloads and decides again, up to
// `retry_attempts` times. An exception from domain code fails that command only
// (execution_failed) and the state is rebuilt from the store.
//
// Protocol:
//   (execute_atom, CommandEnvelope)  -> reply JSON (see replies.hpp)
//   (state_atom, StateQuery)         -> {"version":n,"state":{...}}
//   (idle_atom)                      -> when nothing is queued or running, reports
//                                       (idle_atom, stream_id, messages received) to the router
//   (stop_atom)                      -> quits (sent by the router after an idle report)
// The router asks after `idle_timeout` without commands for it, and stops it unless more
// messages are on their way.
#pragma once

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>
#include <chrono>

#include "actors/messages.hpp"

namespace cqrs::actors {

struct AggregateConfig {
  int retry_attempts = 10;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};  // 0: never idle out
  int snapshot_every = 0;                       // overrides the type's setting when > 0
  const Upcasters* upcasters = nullptr;         // applied to stored events on load; must outlive
  const UniqueScopes* unique_scopes = nullptr;  // scopes outcomes claim values in; must outlive
};

// Spawns the actor for `stream_id` (from the router, which receives its idle reports).
caf::actor spawn_aggregate(caf::local_actor* parent, AggregateConfig config, caf::actor store_pool,
                           caf::actor router, const AggregateType* type, std::string stream_id);

}  // namespace cqrs::actors
