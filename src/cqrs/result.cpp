// Error formatting.
#include "cqrs/result.hpp"

namespace cqrs {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kRejected:
      return "rejected";
    case ErrorKind::kInvalidInput:
      return "invalid_input";
    case ErrorKind::kConflict:
      return "conflict";
    case ErrorKind::kUnavailable:
      return "unavailable";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "unknown";
}

Error Error::wrong_expected_version(std::string_view stream_id, std::string_view expected,
                                    int64_t actual_version) {
  Error error(ErrorKind::kConflict, errc::kWrongExpectedVersion,
              "stream '" + std::string(stream_id) + "' expected " + std::string(expected) +
                  " but its version is " + std::to_string(actual_version));
  error.actual_version_ = actual_version;
  return error;
}

std::string Error::to_string() const { return code_ + ": " + message_; }

}  // namespace cqrs
