// The EventStore defaults that are written in terms of the other operations.
#include "cqrs/event_store.hpp"

#include <limits>

namespace cqrs {

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
