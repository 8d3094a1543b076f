// The EventStore defaults that are written in terms of the other operations.
#include "cqrs/event_store.hpp"

#include <limits>
#include <nlohmann/json.hpp>

#include "cqrs/append_validation.hpp"

namespace cqrs {

Result<std::vector<RecordedEvent>> EventStore::read_correlated(std::string_view correlation_id,
                                                               size_t max_count) {
  if (auto valid = validate_correlation_id(correlation_id); !valid) return valid.error();
  constexpr size_t kPage = 1000;
  std::vector<RecordedEvent> found;
  Position after;
  while (found.size() < max_count) {
    auto page = read_all(after, kPage);
    if (!page) return page.error();
    for (RecordedEvent& event : page->events) {
      auto metadata = nlohmann::json::parse(event.metadata, nullptr, false);
      // Stored metadata holds a string or null there (validate_append).
      auto correlation = metadata.is_object() ? metadata.find("correlation_id") : metadata.end();
      if (correlation != metadata.end() && correlation->is_string() &&
          correlation->get_ref<const std::string&>() == correlation_id &&
          found.size() < max_count) {
        found.push_back(std::move(event));
      }
    }
    if (page->events.empty() || page->next == after) break;
    after = page->next;
  }
  return found;
}

Result<Position> EventStore::head() {
  constexpr size_t kPage = 1000;
  Position after;
  while (true) {
    auto page = read_all(after, kPage);
    if (!page) return page.error();
    if (page->events.empty() || page->next == after) return after;
    after = page->next;
  }
}

std::vector<LoadedStream> EventStore::load_streams(std::span<const StreamLoad> loads) {
  std::vector<LoadedStream> loaded(loads.size());
  for (size_t idx = 0; idx < loads.size(); ++idx) {
    const StreamLoad& load = loads[idx];
    LoadedStream& out = loaded[idx];
    int64_t after = load.after_version;
    if (load.with_snapshot) {
      auto snapshot = load_snapshot(load.stream_id);
      if (!snapshot) {
        out.error = snapshot.error();
        continue;
      }
      if (snapshot->has_value() && (*snapshot)->stream_version > after) {
        out.snapshot = std::move(**snapshot);
        after = out.snapshot->stream_version;
      }
    }
    auto events = read_stream(load.stream_id, after + 1, std::numeric_limits<size_t>::max(),
                              Direction::kForward);
    if (!events) {
      out.error = events.error();
      out.snapshot.reset();
      continue;
    }
    out.events = std::move(events).value();
  }
  return loaded;
}

}  // namespace cqrs
