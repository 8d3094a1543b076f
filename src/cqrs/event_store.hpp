// The event store interface: append-only streams, a global order ($all), checkpoints, snapshots
// and recorded command outcomes. Implemented by PostgresEventStore and InMemoryEventStore; one
// conformance suite (tests/integration/store_conformance_test.cpp) holds both to this contract.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs {

class EventStore {
 public:
  virtual ~EventStore() = default;

  // Appends `events` to the end of `stream_id`, atomically: all are stored or none.
  // Stream versions continue 1..n without gaps. Errors: wrong_expected_version (with the actual
  // version), stream_exists, stream_not_found, duplicate_event, invalid_payload, invalid_argument,
  // event_too_large, append_too_large (see validate_append), store_unavailable.
  virtual Result<AppendResult> append(std::string_view stream_id, ExpectedVersion expected,
                                      std::span<const EventData> events) = 0;

  // Group commit: runs every request in one transaction where possible. Requests are isolated:
  // each is checked on its own (expected version, duplicate command id, duplicate event ids) and
  // one request's failure never fails another. The events and command record of one request are
  // atomic. Returns one WriteResult per request, in order. Errors as for append, plus
  // duplicate_command (see WriteResult::existing_result). A recorded command result that is a
  // JSON object gains "position": the Position::to_string() of the request's last event.
  virtual std::vector<WriteResult> write(std::span<const WriteRequest> requests) = 0;

  // Up to `max_count` events of one stream. Forward: versions >= from_version ascending.
  // Backward: versions <= from_version descending (from_version < 0 means "from the end").
  // A stream that does not exist reads as empty.
  virtual Result<std::vector<RecordedEvent>> read_stream(std::string_view stream_id,
                                                         int64_t from_version, size_t max_count,
                                                         Direction direction) = 0;

  // The stream's current version; 0 when it does not exist.
  virtual Result<int64_t> stream_version(std::string_view stream_id) = 0;

  // Up to `max_count` events of $all strictly after `after`, in the global order. Never returns an
  // event while an earlier one (in that order) may still become visible, so a reader that passes
  // back `page.next` sees every committed event exactly once.
  virtual Result<AllPage> read_all(Position after, size_t max_count) = 0;

  // The position of the last event a reader of $all can see now; Position{} when there is none.
  // The default pages through read_all.
  virtual Result<Position> head();

  // Checkpoints of named handlers. load returns nullopt for a handler that never saved one.
  virtual Result<std::optional<Position>> load_checkpoint(std::string_view handler) = 0;
  virtual Result<void> save_checkpoint(std::string_view handler, Position position) = 0;

  // The latest snapshot per stream. Saving an older version than the stored one is a no-op.
  // save_snapshot refuses what validate_snapshot refuses (append_validation.hpp):
  // invalid_argument, invalid_payload, snapshot_too_large.
  virtual Result<void> save_snapshot(const Snapshot& snapshot) = 0;
  virtual Result<std::optional<Snapshot>> load_snapshot(std::string_view stream_id) = 0;

  // Many StreamLoads at once (aggregates loading); one LoadedStream per load, in order. The
  // default runs load_snapshot and read_stream per load; a store may do them together.
  virtual std::vector<LoadedStream> load_streams(std::span<const StreamLoad> loads);

  // The events whose metadata has this correlation_id, in $all order, at most `max_count`
  // (traceability). The default pages through read_all; a store may use an index.
  virtual Result<std::vector<RecordedEvent>> read_correlated(std::string_view correlation_id,
                                                             size_t max_count);
  // How many runs of $all (schema/012) read_correlated must walk because the store's index of
  // correlations has not reached them yet. 0 for a store whose index is always current (the
  // default).
  virtual Result<int64_t> correlation_index_lag() { return int64_t{0}; }

  // Command outcomes by command_id. record returns false (and keeps the first record) when the
  // id is already recorded; it refuses what validate_command_record refuses
  // (append_validation.hpp): invalid_argument, invalid_payload, event_too_large.
  virtual Result<bool> record_command(const CommandRecord& record) = 0;
  virtual Result<std::optional<CommandRecord>> find_command(const Uuid& command_id) = 0;
};

}  // namespace cqrs
