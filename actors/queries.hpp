// Read-only admin queries answered by a store worker: a stream's history, a correlation's causal
// tree (cqrsctl history / trace), the head of $all (cqrsctl status without handlers) and how far
// the index of correlations is behind (cqrsctl status).
//
//   {"op":"history","stream_id":"account-a1","from":1,"limit":100}
//     -> {"status":"ok","stream_id":..,"events":[event_json...]}
//   {"op":"trace","correlation_id":"..."}
//     -> {"status":"ok","correlation_id":..,"events":n,"truncated":bool,"commands":[tree...]}
//   {"op":"head"}
//     -> {"status":"ok","head":"<commit_id>/<global_position>" | null}   (EventStore::head)
//   {"op":"correlation_index"}
//     -> {"status":"ok","lag":n}   (EventStore::correlation_index_lag)
#pragma once

#include <string>

#include "cqrs/event_store.hpp"

namespace cqrs::actors {

inline constexpr int64_t kHistoryDefaultLimit = 1000;
inline constexpr int64_t kHistoryMaxLimit = 10000;
inline constexpr size_t kTraceMaxEvents = 10000;

// Runs `request` (JSON text) against `store`; the reply is JSON text (errors as error replies).
std::string run_query(EventStore& store, const std::string& request);

}  // namespace cqrs::actors
