// The event store's vocabulary: events to append, recorded events, expected versions, positions.
//
// Payloads (data, metadata) are JSON text. The stores validate them on append and hand them back
// unchanged in meaning (Postgres normalizes jsonb formatting), so callers parse with the JSON
// library of their choice and the store never pays for a parse it does not need.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cqrs/result.hpp"
#include "cqrs/uuid.hpp"

namespace cqrs {

// An event as the writer hands it to the store.
struct EventData {
  Uuid event_id = Uuid::time_ordered();
  std::string type;             // e.g. "GiftCardIssued"
  int32_t type_version = 1;     // payload schema version, for upcasting
  std::string data = "{}";      // JSON value
  std::string metadata = "{}";  // JSON object: command_id, correlation_id, causation_id, user keys
};

// Where a reader of $all stands. The order of $all is (commit_id, global_position): commit_id
// groups the events of one writing transaction and orders transactions so that a reader never
// sees a later one before an earlier one has finished (promise 2). `Position{}` is the origin.
struct Position {
  uint64_t commit_id = 0;
  int64_t global_position = 0;

  friend auto operator<=>(const Position&, const Position&) = default;
  std::string to_string() const;  // "commit_id/global_position"
  static std::optional<Position> parse(std::string_view text);
};

// An event as stored.
struct RecordedEvent {
  int64_t global_position = 0;
  uint64_t commit_id = 0;
  std::string stream_id;
  int64_t stream_version = 0;  // 1-based
  Uuid event_id;
  std::string type;
  int32_t type_version = 1;
  std::string data;
  std::string metadata;
  int64_t created_at_us = 0;  // microseconds since the Unix epoch

  Position position() const { return {commit_id, global_position}; }
};

// What an append expects of the stream it writes to (the optimistic-concurrency guard).
class ExpectedVersion {
 public:
  enum class Kind { kAny, kNoStream, kStreamExists, kExact };

  static ExpectedVersion any() { return ExpectedVersion(Kind::kAny, 0); }
  static ExpectedVersion no_stream() { return ExpectedVersion(Kind::kNoStream, 0); }
  static ExpectedVersion stream_exists() { return ExpectedVersion(Kind::kStreamExists, 0); }
  // exact(0) means "the stream has no events", like no_stream but reported as a version mismatch.
  static ExpectedVersion exact(int64_t version) { return ExpectedVersion(Kind::kExact, version); }

  Kind kind() const { return kind_; }
  int64_t version() const { return version_; }
  std::string to_string() const;  // "any", "no_stream", "stream_exists", "version 3"

 private:
  ExpectedVersion(Kind kind, int64_t version) : kind_(kind), version_(version) {}
  Kind kind_;
  int64_t version_;
};

struct AppendResult {
  int64_t stream_version = 0;             // the stream's version after the append
  std::vector<int64_t> global_positions;  // one per appended event, in order
  uint64_t commit_id = 0;                 // the Position::commit_id of the appended events

  // The $all position of the last appended event (handlers past it have seen them all).
  Position last_position() const {
    return {commit_id, global_positions.empty() ? 0 : global_positions.back()};
  }
};

enum class Direction { kForward, kBackward };

// A page of $all. `next` is the checkpoint to pass to the following read (it is the last event's
// position, or the `after` that was passed when the page is empty).
struct AllPage {
  std::vector<RecordedEvent> events;
  Position next;  // where the next page starts (the last event read, or skipped past)
  // The page stopped at its size limit (or, for a read by type, at the end of its window of
  // transactions before the watermark): more events may follow at once.
  bool more = false;
};

// The latest saved state of one aggregate stream.
struct Snapshot {
  std::string stream_id;
  int64_t stream_version = 0;  // the version the state reflects
  std::string state_type;
  int32_t state_version = 1;  // schema version of the state payload
  std::string data;           // JSON
};

// The outcome of a command, recorded for idempotent dispatch.
struct CommandRecord {
  Uuid command_id;
  std::string stream_id;
  std::string result;  // JSON, as returned to the first caller
};

// One unit of a group commit: events for one stream and, optionally, the command that produced
// them. With no events, only the command is recorded (a rejection, or a command that changed
// nothing).
// A unique value that a write claims (or releases) in a named scope, already normalized. At most
// one stream owns a (scope, value) at a time; claims and releases commit with the events.
struct UniqueClaim {
  std::string scope;
  std::string value;
  bool release = false;

  friend bool operator==(const UniqueClaim&, const UniqueClaim&) = default;
};

// A request without events records its command's outcome only (a rejection, or a command that
// changed nothing). Its expected version is checked all the same: an outcome decided against an
// older version than the stream's fails like an append (wrong_expected_version, stream_exists,
// stream_not_found), and nothing is recorded.
struct WriteRequest {
  std::string stream_id;
  ExpectedVersion expected = ExpectedVersion::any();
  std::vector<EventData> events;
  std::optional<CommandRecord> command;
  // Applied in order, in the same transaction as the events. A value another stream owns fails
  // the whole request with already_taken (nothing appended, nothing claimed).
  std::vector<UniqueClaim> claims;
};

// The outcome of one WriteRequest: `appended` on success (empty positions for record-only
// requests), else `error`. For duplicate_command, `existing_result` is the result recorded by the
// first dispatch of that command id.
struct WriteResult {
  std::optional<AppendResult> appended;
  std::optional<Error> error;
  std::optional<std::string> existing_result;
  // For already_taken: the claim that another stream owns.
  std::optional<UniqueClaim> taken;

  bool ok() const { return appended.has_value(); }
};

// Loading an aggregate: the latest snapshot newer than `after_version` (when `with_snapshot`)
// plus every event after it (or after `after_version` when there is no newer snapshot).
struct StreamLoad {
  std::string stream_id;
  int64_t after_version = 0;
  bool with_snapshot = true;
};

// The answer to a StreamLoad: `error` set, or the snapshot (if one was used) and the events.
struct LoadedStream {
  std::optional<Snapshot> snapshot;
  std::vector<RecordedEvent> events;
  std::optional<Error> error;
};

}  // namespace cqrs
