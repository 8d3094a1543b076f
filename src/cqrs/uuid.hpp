// 128-bit identifiers (RFC 4122) for events and commands.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace cqrs {

class Uuid {
 public:
  Uuid() = default;  // the nil UUID
  explicit Uuid(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  // A random (version 4) UUID. Thread-safe.
  static Uuid random();
  // A time-ordered (version 7) UUID: 48 bits of Unix milliseconds, then random bits. Ids made
  // later sort higher (within a millisecond, in any order), so B-tree indexes on them grow at
  // the right edge instead of touching random pages. Thread-safe.
  static Uuid time_ordered();

  // A name-based UUID (version 8 layout): the same name always gives the same id, different
  // names practically never collide (128 bits from two independently seeded 64-bit hashes).
  // Used for ids that must be reproducible, such as a process manager's command ids.
  static Uuid derived(std::string_view name);

  // Parses the canonical 8-4-4-4-12 hex form, either case. Returns nullopt on anything else.
  static std::optional<Uuid> parse(std::string_view text);

  bool is_nil() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }

  // Canonical lower-case 36-character form.
  std::string to_string() const;

  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace cqrs

template <>
struct std::hash<cqrs::Uuid> {
  size_t operator()(const cqrs::Uuid& id) const noexcept;
};
