// The gateway: the actor published on cqrsd's port. It decodes and validates dispatch envelopes,
// runs the middleware pipeline and hands commands to the router; it also answers admin requests.
//
// Remote protocol (only atoms and strings cross the network):
//   (dispatch_atom, envelope JSON) -> reply JSON (replies.hpp). The envelope:
//     {"type":"RedeemGiftCard",                    required
//      "payload":"{\"card_id\":\"c1\",...}"        the command as JSON text, or
//      "data":{"card_id":"c1",...},                the command as a JSON object
//      "command_id":"<uuid>",                      optional; generated when absent
//      "correlation_id":"...",                     optional; defaults to the command id
//      "causation_id":"...",                       optional; defaults to the command id
//      "metadata":{...},                           optional JSON object, copied to events
//      "consistency":"eventual"|"strong",          optional
//      "timeout_ms":5000}                          optional, 1..300000
//   (state_atom, aggregate type or prefix, id) -> {"version":n,"state":{...}} or an error reply
//   (admin_atom, request JSON) -> reply JSON: {"op":"status"}, {"op":"reset"|"restart",
//     "handler":name}, {"op":"dead_letters"[,"handler":name]} (docs/handlers.md)
// Local protocol:
//   (drain_atom) -> true once every accepted command is answered; new ones get shutting_down
//   (handlers_atom, handlers) -> the handler actors, for admin requests and strong consistency
//   (progress_atom, name, commit_id, global_position) -> a handler's checkpoint moved
// With "consistency":"strong", an ok reply is held until every strong handler has passed the
// reply's "position"; past the command's timeout the answer is consistency_timeout.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "cqrs/domain/domain.hpp"
#include "cqrs/middleware.hpp"

namespace cqrs::actors {

struct GatewayConfig {
  size_t max_command_bytes = 1 << 20;
  std::chrono::milliseconds default_timeout{5000};
  // Commands accepted but not yet done, at most; beyond it dispatch answers `overloaded` at
  // once (bounded memory under a flood; clients retry later). A command answered `timeout`
  // counts until its aggregate is done with it, or for 60 s more at most.
  size_t max_in_flight = 4096;
  // Internal commands (AggregateBuilder::internal) are accepted only as (dispatch_atom, envelope,
  // token) with this token: the process managers of this daemon have it
  // (HandlerActorConfig::dispatch_token), clients do not. Empty: no internal command is
  // accepted.
  std::string internal_token;
};

// CAF settings of a process that publishes a gateway (cqrsd, and bench/transport_floor, which must
// measure CAF as cqrsd runs it): the middleman loaded, CAF's logger quiet, deserialization on the
// multiplexer thread, work sharing, and one scheduler thread per core but one.
void configure_gateway_process(caf::actor_system_config& cfg);

// `domain` must outlive the gateway.
caf::actor spawn_gateway(caf::actor_system& system, const Domain& domain, caf::actor router,
                         GatewayConfig config,
                         std::vector<std::shared_ptr<Middleware>> middlewares);

}  // namespace cqrs::actors
