// Traceability: what one correlation touched, as a causal tree, and a stream's history as JSON.
//
// Every stored event's metadata names the command that produced it (command_id, command_type),
// the correlation it belongs to (correlation_id) and its cause (causation_id: the command itself
// for a client's command, the event a process manager reacted to for the commands it sent). So
// the events of one correlation form a tree:
//
//   command TransferMoney (transfer-t1)
//     event TransferRequested transfer-t1@1
//       command DebitAccount (account-a)       <- caused by that event
//         event AccountDebited account-a@3
//           ...
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cqrs/event.hpp"

namespace cqrs {

// One event as JSON: stream_id, version, type, type_version, event_id, position, time (UTC,
// ISO 8601 with microseconds), data and metadata (parsed).
nlohmann::json event_json(const RecordedEvent& event);

// The causal tree of `events` (all of one correlation, in any order): a JSON array of root
// commands, each {"command_id", "command_type", "stream_id", "events": [event_json + "caused":
// [commands]]}. A command whose cause is not among the events (the client's, or one whose
// causing event is missing) is a root. Commands and events keep the global order.
nlohmann::json trace_tree(const std::vector<RecordedEvent>& events);

// The tree as indented text, one line per command and per event.
std::string render_trace(const nlohmann::json& tree);

}  // namespace cqrs
