// InMemoryEventStore: vectors and maps behind one mutex.
#include "cqrs/memory_event_store.hpp"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "cqrs/append_validation.hpp"

namespace cqrs {
namespace {

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// Whether a stream at `current` is what `expected` says it is.
Result<void> check_expected(std::string_view stream_id, ExpectedVersion expected, int64_t current) {
  switch (expected.kind()) {
    case ExpectedVersion::Kind::kAny:
      break;
    case ExpectedVersion::Kind::kNoStream:
      if (current != 0) {
        return Error::conflict(errc::kStreamExists, "stream '" + std::string(stream_id) +
                                                        "' already exists at version " +
                                                        std::to_string(current));
      }
      break;
    case ExpectedVersion::Kind::kStreamExists:
      if (current == 0) {
        return Error::conflict(errc::kStreamNotFound,
                               "stream '" + std::string(stream_id) + "' does not exist");
      }
      break;
    case ExpectedVersion::Kind::kExact:
      if (current != expected.version()) {
        return Error::wrong_expected_version(stream_id, expected.to_string(), current);
      }
      break;
  }
  return {};
}

}  // namespace

Result<AppendResult> InMemoryEventStore::append(std::string_view stream_id,
                                                ExpectedVersion expected,
                                                std::span<const EventData> events) {
  if (auto valid = validate_append(stream_id, expected, events); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  return append_locked(stream_id, expected, events);
}

std::vector<WriteResult> InMemoryEventStore::write(std::span<const WriteRequest> requests) {
  std::vector<WriteResult> results;
  results.reserve(requests.size());
  std::lock_guard lock(mutex_);
  for (const WriteRequest& request : requests) results.push_back(write_locked(request));
  return results;
}

WriteResult InMemoryEventStore::write_locked(const WriteRequest& request) {
  WriteResult result;
  Result<void> valid = validate_write_request(request);
  if (!valid) {
    result.error = valid.error();
    return result;
  }
  if (request.command) {
    auto existing = commands_.find(request.command->command_id);
    if (existing != commands_.end()) {
      result.error = Error::conflict(
          errc::kDuplicateCommand,
          "command " + request.command->command_id.to_string() + " was already dispatched");
      result.existing_result = existing->second.result;
      return result;
    }
  }
  // The expected version first, as cqrs.append_claiming checks it before the claims. A write
  // without events records an outcome only: it must have been decided against the stream as it
  // is now, too.
  auto stream_it = streams_.find(request.stream_id);
  int64_t current = stream_it == streams_.end() ? int64_t{0} : std::ssize(stream_it->second);
  if (auto checked = check_expected(request.stream_id, request.expected, current); !checked) {
    result.error = checked.error();
    return result;
  }
  // Claims are checked before anything changes and applied only after the append succeeded.
  // (A stream's releases free only values it owns, so they never make room for its claims.)
  for (const UniqueClaim& claim : request.claims) {
    if (claim.release) continue;
    auto owner = claims_.find({claim.scope, claim.value});
    if (owner != claims_.end() && owner->second != request.stream_id) {
      result.error = Error::conflict(
          errc::kAlreadyTaken,
          claim.scope + " '" + claim.value + "' is already claimed by stream " + owner->second);
      result.taken = claim;
      return result;
    }
  }
  if (request.events.empty()) {
    result.appended = AppendResult{current, {}};
  } else {
    auto appended = append_locked(request.stream_id, request.expected, request.events);
    if (!appended) {
      result.error = appended.error();
      return result;
    }
    result.appended = std::move(appended).value();
  }
  for (const UniqueClaim& claim : request.claims) {
    auto key = std::make_pair(claim.scope, claim.value);
    if (!claim.release) {
      claims_.emplace(key, request.stream_id);
    } else if (auto owner = claims_.find(key);
               owner != claims_.end() && owner->second == request.stream_id) {
      claims_.erase(owner);
    }
  }
  if (request.command) {
    CommandRecord record = *request.command;
    record.stream_id = request.stream_id;
    if (!request.events.empty()) {
      nlohmann::json recorded = nlohmann::json::parse(record.result, nullptr, false);
      if (recorded.is_object()) {
        recorded["position"] = result.appended->last_position().to_string();
        record.result = recorded.dump();
      }
    }
    commands_.emplace(request.command->command_id, std::move(record));
  }
  return result;
}

Result<AppendResult> InMemoryEventStore::append_locked(std::string_view stream_id,
                                                       ExpectedVersion expected,
                                                       std::span<const EventData> events) {
  auto stream_it = streams_.find(stream_id);
  int64_t current = stream_it == streams_.end() ? 0 : std::ssize(stream_it->second);
  if (auto checked = check_expected(stream_id, expected, current); !checked) {
    return checked.error();
  }
  for (const EventData& event : events) {
    if (event_ids_.contains(event.event_id)) {
      return Error::conflict(errc::kDuplicateEvent,
                             "event id " + event.event_id.to_string() + " is already stored");
    }
  }

  if (stream_it == streams_.end()) {
    stream_it = streams_.emplace(std::string(stream_id), std::vector<size_t>{}).first;
  }
  uint64_t commit_id = ++last_commit_id_;
  int64_t created_at = now_us();
  AppendResult result;
  result.global_positions.reserve(events.size());
  for (const EventData& event : events) {
    RecordedEvent recorded;
    recorded.global_position = std::ssize(events_) + 1;
    recorded.commit_id = commit_id;
    recorded.stream_id = std::string(stream_id);
    recorded.stream_version = std::ssize(stream_it->second) + 1;
    recorded.event_id = event.event_id;
    recorded.type = event.type;
    recorded.type_version = event.type_version;
    recorded.data = event.data;
    recorded.metadata = event.metadata;
    recorded.created_at_us = created_at;
    stream_it->second.push_back(events_.size());
    event_ids_.insert(event.event_id);
    result.global_positions.push_back(recorded.global_position);
    events_.push_back(std::move(recorded));
  }
  result.stream_version = std::ssize(stream_it->second);
  result.commit_id = commit_id;
  return result;
}

Result<std::vector<RecordedEvent>> InMemoryEventStore::read_stream(std::string_view stream_id,
                                                                   int64_t from_version,
                                                                   size_t max_count,
                                                                   Direction direction) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  std::vector<RecordedEvent> out;
  auto stream_it = streams_.find(stream_id);
  if (stream_it == streams_.end() || max_count == 0) return out;
  const std::vector<size_t>& indexes = stream_it->second;
  int64_t size = std::ssize(indexes);
  if (direction == Direction::kForward) {
    for (int64_t version = std::max<int64_t>(from_version, 1);
         version <= size && out.size() < max_count; ++version) {
      out.push_back(events_[indexes[version - 1]]);
    }
  } else {
    int64_t start = from_version < 0 ? size : std::min(from_version, size);
    for (int64_t version = start; version >= 1 && out.size() < max_count; --version) {
      out.push_back(events_[indexes[version - 1]]);
    }
  }
  return out;
}

Result<int64_t> InMemoryEventStore::stream_version(std::string_view stream_id) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  auto stream_it = streams_.find(stream_id);
  return stream_it == streams_.end() ? int64_t{0} : std::ssize(stream_it->second);
}

Result<AllPage> InMemoryEventStore::read_all(Position after, size_t max_count) {
  std::lock_guard lock(mutex_);
  AllPage page;
  page.next = after;
  auto first = std::upper_bound(events_.begin(), events_.end(), after,
                                [](const Position& position, const RecordedEvent& event) {
                                  return position < event.position();
                                });
  for (auto it = first; it != events_.end() && page.events.size() < max_count; ++it) {
    page.events.push_back(*it);
  }
  if (!page.events.empty()) page.next = page.events.back().position();
  // A page of none asked (max_count 0) says nothing of what follows: no more, or a reader that
  // loops while `more` would never end.
  page.more = max_count > 0 && page.events.size() == max_count;
  return page;
}

Result<std::optional<Position>> InMemoryEventStore::load_checkpoint(std::string_view handler) {
  if (auto valid = validate_handler_name(handler); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  auto it = checkpoints_.find(handler);
  if (it == checkpoints_.end()) return std::optional<Position>{};
  return std::optional<Position>{it->second};
}

Result<void> InMemoryEventStore::save_checkpoint(std::string_view handler, Position position) {
  if (auto valid = validate_handler_name(handler); !valid) return valid;
  std::lock_guard lock(mutex_);
  checkpoints_.insert_or_assign(std::string(handler), position);
  return {};
}

Result<void> InMemoryEventStore::save_snapshot(const Snapshot& snapshot) {
  if (auto valid = validate_snapshot(snapshot); !valid) return valid;
  std::lock_guard lock(mutex_);
  auto it = snapshots_.find(snapshot.stream_id);
  if (it != snapshots_.end() && it->second.stream_version > snapshot.stream_version) return {};
  snapshots_.insert_or_assign(snapshot.stream_id, snapshot);
  return {};
}

Result<std::optional<Snapshot>> InMemoryEventStore::load_snapshot(std::string_view stream_id) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  auto it = snapshots_.find(stream_id);
  if (it == snapshots_.end()) return std::optional<Snapshot>{};
  return std::optional<Snapshot>{it->second};
}

Result<bool> InMemoryEventStore::record_command(const CommandRecord& record) {
  if (auto valid = validate_command_record(record); !valid) return valid.error();
  std::lock_guard lock(mutex_);
  return commands_.emplace(record.command_id, record).second;
}

Result<std::optional<CommandRecord>> InMemoryEventStore::find_command(const Uuid& command_id) {
  std::lock_guard lock(mutex_);
  auto it = commands_.find(command_id);
  if (it == commands_.end()) return std::optional<CommandRecord>{};
  return std::optional<CommandRecord>{it->second};
}

}  // namespace cqrs
