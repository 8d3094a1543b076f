// An event store in process memory, for domain tests and the embedded mode. Same contract as
// PostgresEventStore (the conformance suite runs against both); nothing survives the process.
//
// Thread-safe: one instance may be shared by any number of threads.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "cqrs/event_store.hpp"

namespace cqrs {

class InMemoryEventStore final : public EventStore {
 public:
  InMemoryEventStore() = default;
  InMemoryEventStore(const InMemoryEventStore&) = delete;
  InMemoryEventStore& operator=(const InMemoryEventStore&) = delete;

  Result<AppendResult> append(std::string_view stream_id, ExpectedVersion expected,
                              std::span<const EventData> events) override;
  std::vector<WriteResult> write(std::span<const WriteRequest> requests) override;
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream_id, int64_t from_version,
                                                 size_t max_count, Direction direction) override;
  Result<int64_t> stream_version(std::string_view stream_id) override;
  Result<AllPage> read_all(Position after, size_t max_count) override;
  Result<std::optional<Position>> load_checkpoint(std::string_view handler) override;
  Result<void> save_checkpoint(std::string_view handler, Position position) override;
  Result<void> save_snapshot(const Snapshot& snapshot) override;
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream_id) override;
  Result<bool> record_command(const CommandRecord& record) override;
  Result<std::optional<CommandRecord>> find_command(const Uuid& command_id) override;

 private:
  // REQUIRES: mutex_ held; the append already passed validate_append.
  Result<AppendResult> append_locked(std::string_view stream_id, ExpectedVersion expected,
                                     std::span<const EventData> events);
  WriteResult write_locked(const WriteRequest& request);

  mutable std::mutex mutex_;
  // Invariant: events_[i].global_position == i + 1 and commit ids are non-decreasing, so the
  // global order is the vector order.
  std::vector<RecordedEvent> events_;
  std::map<std::string, std::vector<size_t>, std::less<>> streams_;  // stream -> indexes
  std::unordered_set<Uuid> event_ids_;
  uint64_t last_commit_id_ = 0;
  std::map<std::string, Position, std::less<>> checkpoints_;
  std::map<std::string, Snapshot, std::less<>> snapshots_;
  std::unordered_map<Uuid, CommandRecord> commands_;
  std::map<std::pair<std::string, std::string>, std::string> claims_;  // (scope, value) -> stream
};

}  // namespace cqrs
