// Every message type exchanged between cqrsd's actors, and the atoms of the remote protocol.
//
// The remote protocol (client <-> gateway) uses only atoms and std::string, which CAF serializes
// without registration: requests and replies are JSON documents (see docs/commands.md).
//   (dispatch_atom, envelope JSON)      -> reply JSON
//   (state_atom, aggregate, id)         -> reply JSON
//   (admin_atom, request JSON)          -> reply JSON (status, handler reset/restart, dead letters)
// Everything else is local to one cqrsd process and never crosses the network.
#pragma once

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cqrs/domain/domain.hpp"
#include "cqrs/envelope.hpp"
#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs::actors {

// Remote protocol.
using dispatch_atom = caf::atom_constant<caf::atom("dispatch")>;
using state_atom = caf::atom_constant<caf::atom("state")>;

using admin_atom = caf::atom_constant<caf::atom("admin")>;

// Local protocol.
using execute_atom = caf::atom_constant<caf::atom("execute")>;
using write_atom = caf::atom_constant<caf::atom("write")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using snapshot_atom = caf::atom_constant<caf::atom("snapshot")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using trim_atom = caf::atom_constant<caf::atom("trim")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
using progress_atom = caf::atom_constant<caf::atom("progress")>;
using handlers_atom = caf::atom_constant<caf::atom("handlers")>;
// (query_atom, request JSON) -> reply JSON: read-only store queries for admin requests
// (history, trace), answered by a store worker.
using query_atom = caf::atom_constant<caf::atom("query")>;

// A decoded, addressed command with its envelope fields (cqrs/envelope.hpp). Travels gateway ->
// router -> aggregate.
using Consistency = cqrs::Consistency;
using CommandEnvelope = cqrs::CommandEnvelope;

// A handler actor as the gateway knows it (for admin requests and strong consistency).
struct HandlerRef {
  std::string name;
  std::string kind;  // projector | process_manager | event_handler
  bool strong = false;
  std::vector<std::string> event_types;  // sorted; empty: every type
  caf::actor actor;
};

// A request for the state of one aggregate (admin). Travels gateway -> router -> aggregate.
struct StateQuery {
  const AggregateType* type = nullptr;
  std::string aggregate_id;
  std::string stream_id;
};

// Loading an aggregate: the latest snapshot (when `with_snapshot`) plus events after it, or the
// events after `after_version` for a reload.
using LoadJob = StreamLoad;
using LoadOutcome = LoadedStream;

}  // namespace cqrs::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::actors::CommandEnvelope)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::actors::StateQuery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::WriteRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<cqrs::WriteRequest>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::WriteResult)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<cqrs::WriteResult>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::StreamLoad)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<cqrs::StreamLoad>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::LoadedStream)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<cqrs::LoadedStream>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cqrs::Snapshot)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<cqrs::actors::HandlerRef>)
