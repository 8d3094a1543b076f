// Formatting and parsing of the store vocabulary types.
#include "cqrs/event.hpp"

#include <charconv>

namespace cqrs {

std::string Position::to_string() const {
  return std::to_string(commit_id) + "/" + std::to_string(global_position);
}

std::optional<Position> Position::parse(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  Position position;
  const char* commit_end = text.data() + slash;
  auto [commit_ptr, commit_ec] = std::from_chars(text.data(), commit_end, position.commit_id);
  if (commit_ec != std::errc() || commit_ptr != commit_end) return std::nullopt;
  const char* end = text.data() + text.size();
  auto [pos_ptr, pos_ec] = std::from_chars(commit_end + 1, end, position.global_position);
  if (pos_ec != std::errc() || pos_ptr != end || position.global_position < 0) return std::nullopt;
  return position;
}

std::string ExpectedVersion::to_string() const {
  switch (kind_) {
    case Kind::kAny:
      return "any";
    case Kind::kNoStream:
      return "no_stream";
    case Kind::kStreamExists:
      return "stream_exists";
    case Kind::kExact:
      return "version " + std::to_string(version_);
  }
  return "unknown";
}

}  // namespace cqrs
