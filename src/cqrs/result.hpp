// The library's one error type and the Result<T> that carries either a value or an Error.
//
// Errors are values: every fallible call returns a Result and callers check it right away.
// An Error has a kind (who produced it), a snake_case code that travels on the wire unchanged,
// and a human-readable message.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace cqrs {

// Who produced an error. Codes are only unique within a kind's vocabulary, but the shipped codes
// below are unique across kinds.
enum class ErrorKind {
  kRejected,      // a domain rule said no (insufficient_balance, ...)
  kInvalidInput,  // the request itself is malformed (invalid_payload, invalid_argument, ...)
  kConflict,      // optimistic concurrency or uniqueness (wrong_expected_version, ...)
  kUnavailable,   // a dependency is down (store_unavailable); retrying later may succeed
  kInternal,      // a bug or an unexpected state; the message says what
};

std::string_view to_string(ErrorKind kind);

// Codes produced by the event stores.
namespace errc {
inline constexpr std::string_view kWrongExpectedVersion = "wrong_expected_version";
inline constexpr std::string_view kStreamExists = "stream_exists";
inline constexpr std::string_view kStreamNotFound = "stream_not_found";
inline constexpr std::string_view kDuplicateEvent = "duplicate_event";
inline constexpr std::string_view kDuplicateCommand = "duplicate_command";
inline constexpr std::string_view kStoreUnavailable = "store_unavailable";
inline constexpr std::string_view kInvalidPayload = "invalid_payload";
inline constexpr std::string_view kInvalidArgument = "invalid_argument";
inline constexpr std::string_view kEventTooLarge = "event_too_large";
inline constexpr std::string_view kAppendTooLarge = "append_too_large";
inline constexpr std::string_view kSnapshotTooLarge = "snapshot_too_large";
// A unique claim (scope, value) that another stream owns; the domain maps it to its own code.
inline constexpr std::string_view kAlreadyTaken = "already_taken";
inline constexpr std::string_view kSchemaTooNew = "schema_too_new";
inline constexpr std::string_view kMigrationFailed = "migration_failed";
inline constexpr std::string_view kStoreError = "store_error";
}  // namespace errc

class Error {
 public:
  Error(ErrorKind kind, std::string_view code, std::string message)
      : kind_(kind), code_(code), message_(std::move(message)) {}

  static Error rejected(std::string_view code, std::string message) {
    return {ErrorKind::kRejected, code, std::move(message)};
  }
  static Error invalid(std::string_view code, std::string message) {
    return {ErrorKind::kInvalidInput, code, std::move(message)};
  }
  static Error conflict(std::string_view code, std::string message) {
    return {ErrorKind::kConflict, code, std::move(message)};
  }
  static Error unavailable(std::string message) {
    return {ErrorKind::kUnavailable, errc::kStoreUnavailable, std::move(message)};
  }
  static Error internal(std::string_view code, std::string message) {
    return {ErrorKind::kInternal, code, std::move(message)};
  }

  // wrong_expected_version carries the stream's actual version.
  static Error wrong_expected_version(std::string_view stream_id, std::string_view expected,
                                      int64_t actual_version);

  ErrorKind kind() const { return kind_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }
  std::optional<int64_t> actual_version() const { return actual_version_; }

  bool is(std::string_view code) const { return code_ == code; }

  // "code: message", for logs and test failure output.
  std::string to_string() const;

 private:
  ErrorKind kind_;
  std::string code_;
  std::string message_;
  std::optional<int64_t> actual_version_;
};

// Holds either a T or an Error. Accessing the wrong alternative is a programmer error (asserted).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(state_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(state_);
  }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(!ok());
    return *error_;
  }

 private:
  std::optional<Error> error_;
};

}  // namespace cqrs
