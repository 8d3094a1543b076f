// The router: finds or spawns the aggregate actor of a command's stream and forwards the
// command to it, so each stream has exactly one actor in this process (promise 4). It stops an
// aggregate that reports idle only when no message it forwarded is still on its way.
//
// Protocol:
//   (execute_atom, CommandEnvelope)  -> forwarded; the aggregate answers the original sender
//   (state_atom, StateQuery)         -> forwarded likewise
//   (idle_atom, stream_id, received) -> from aggregates
//   (status_atom)                    -> number of live aggregates
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/aggregate.hpp"

namespace cqrs::actors {

using status_atom = caf::atom_constant<caf::atom("status")>;

caf::actor spawn_router(caf::actor_system& system, caf::actor store_pool,
                        AggregateConfig aggregate_config);

}  // namespace cqrs::actors
