// Checks every store applies to an append before touching storage, so both stores reject the
// same input with the same error.
#pragma once

#include <span>
#include <string_view>

#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs {

inline constexpr size_t kMaxStreamIdBytes = 1024;
// What the stores' indexes hold of an event: its type, and its metadata's correlation_id.
inline constexpr size_t kMaxEventTypeBytes = 1024;
inline constexpr size_t kMaxCorrelationIdBytes = 1024;
// An event's data and metadata together (text bytes), and every event of one append (types,
// data and metadata): so that what the server builds from them stays well below what PostgreSQL
// takes in one value (1 GiB) or one jsonb (256 MiB).
inline constexpr size_t kMaxEventBytes = size_t{16} << 20;
// Counted as JSON text, which jsonb can make up to about six times larger (dense numbers).
inline constexpr size_t kMaxAppendBytes = size_t{64} << 20;
// A unique claim's scope and value, which the claims' primary key indexes.
inline constexpr size_t kMaxClaimBytes = 1024;
// A snapshot's state (JSON text): one jsonb value, as an event's data is.
inline constexpr size_t kMaxSnapshotBytes = size_t{16} << 20;

// The bytes of `events`' data and metadata, the measure of the size limits.
size_t payload_bytes(std::span<const EventData> events);

// invalid_argument when the stream id is empty, longer than kMaxStreamIdBytes, not UTF-8 or
// contains NUL.
Result<void> validate_stream_id(std::string_view stream_id);
// The same rules for a handler's name (checkpoints) and a correlation id (read_correlated;
// kMaxCorrelationIdBytes).
Result<void> validate_handler_name(std::string_view name);
Result<void> validate_correlation_id(std::string_view correlation_id);

// invalid_argument unless `name` (an event type, a snapshot's state type) is non-empty UTF-8
// without NUL of at most kMaxEventTypeBytes; the message starts with `where`, then `what`.
Result<void> validate_type_name(std::string_view name, const std::string& where,
                                std::string_view what);

// Everything about an append that does not depend on stored state: the stream id, a non-empty
// list, event types (at most kMaxEventTypeBytes), type versions, event ids (non-nil, unique
// within the call), payloads (data: any JSON value; metadata: a JSON object whose
// correlation_id, if any, is a string of at most kMaxCorrelationIdBytes or null; neither may
// contain a NUL character, which Postgres' jsonb cannot store) and sizes (kMaxEventBytes per
// event, kMaxAppendBytes per append). Errors: invalid_argument, invalid_payload,
// event_too_large, append_too_large, duplicate_event.
Result<void> validate_append(std::string_view stream_id, ExpectedVersion expected,
                             std::span<const EventData> events);

// validate_append for a write() request (or only its stream id when it has no events), plus its
// command record (validate_command_record) and its claims (a non-empty scope and a value, UTF-8
// without NUL, each at most kMaxClaimBytes: invalid_argument).
Result<void> validate_write_request(const WriteRequest& request);

// A command's record, as record_command() and write() store it: its stream id (as
// validate_stream_id), a non-nil command id (invalid_argument) and its result, JSON
// (invalid_payload) of at most kMaxEventBytes (event_too_large).
Result<void> validate_command_record(const CommandRecord& record);

// A snapshot before it is saved: its stream id (as validate_stream_id), a stream version >= 1, a
// state type as an event type is (non-empty UTF-8 without NUL, at most kMaxEventTypeBytes), a
// state version >= 1 (all invalid_argument), and its state, JSON (invalid_payload) of at most
// kMaxSnapshotBytes (snapshot_too_large).
Result<void> validate_snapshot(const Snapshot& snapshot);

// invalid_payload unless `text` is JSON (an object when `must_be_object`) without NUL characters;
// the message starts with `what`.
Result<void> validate_json(std::string_view text, bool must_be_object, std::string_view what);

// True when `text` is well-formed UTF-8.
bool is_valid_utf8(std::string_view text);

}  // namespace cqrs
