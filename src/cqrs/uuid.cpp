// UUID generation, parsing and formatting.
#include "cqrs/uuid.hpp"

#include <chrono>
#include <cstring>
#include <random>

namespace cqrs {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::mt19937_64& thread_generator() {
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  return generator;
}

}  // namespace

Uuid Uuid::random() {
  std::array<uint8_t, 16> bytes;
  auto& generator = thread_generator();
  uint64_t high = generator();
  uint64_t low = generator();
  std::memcpy(bytes.data(), &high, 8);
  std::memcpy(bytes.data() + 8, &low, 8);
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0F) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return Uuid(bytes);
}

namespace {

// FNV-1a over `text` from `seed`, then a splitmix64 finalizer to spread the bits.
uint64_t hash64(std::string_view text, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h += 0x9e3779b97f4a7c15ULL;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

}  // namespace

Uuid Uuid::derived(std::string_view name) {
  uint64_t high = hash64(name, 0xcbf29ce484222325ULL);
  uint64_t low = hash64(name, 0x84222325cbf29ce4ULL);
  std::array<uint8_t, 16> bytes{};
  for (int idx = 0; idx < 8; ++idx) {
    bytes[idx] = static_cast<uint8_t>(high >> (56 - 8 * idx));
    bytes[8 + idx] = static_cast<uint8_t>(low >> (56 - 8 * idx));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x80);  // version 8 (custom)
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return Uuid(bytes);
}

Uuid Uuid::time_ordered() {
  Uuid id = random();
  auto millis = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  for (int byte_idx = 0; byte_idx < 6; ++byte_idx) {
    id.bytes_[byte_idx] = static_cast<uint8_t>(millis >> (8 * (5 - byte_idx)));
  }
  id.bytes_[6] = static_cast<uint8_t>((id.bytes_[6] & 0x0F) | 0x70);  // version 7
  return id;
}

std::optional<Uuid> Uuid::parse(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  std::array<uint8_t, 16> bytes{};
  size_t byte_idx = 0;
  for (size_t char_idx = 0; char_idx < text.size();) {
    if (char_idx == 8 || char_idx == 13 || char_idx == 18 || char_idx == 23) {
      if (text[char_idx] != '-') return std::nullopt;
      ++char_idx;
      continue;
    }
    int high = hex_value(text[char_idx]);
    int low = hex_value(text[char_idx + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    bytes[byte_idx++] = static_cast<uint8_t>(high << 4 | low);
    char_idx += 2;
  }
  return Uuid(bytes);
}

bool Uuid::is_nil() const {
  for (uint8_t byte : bytes_) {
    if (byte != 0) return false;
  }
  return true;
}

std::string Uuid::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  char text[36];
  char* out = text;
  for (size_t byte_idx = 0; byte_idx < bytes_.size(); ++byte_idx) {
    if (byte_idx == 4 || byte_idx == 6 || byte_idx == 8 || byte_idx == 10) *out++ = '-';
    *out++ = kHex[bytes_[byte_idx] >> 4];
    *out++ = kHex[bytes_[byte_idx] & 0x0F];
  }
  return std::string(text, sizeof text);
}

}  // namespace cqrs

size_t std::hash<cqrs::Uuid>::operator()(const cqrs::Uuid& id) const noexcept {
  uint64_t high;
  uint64_t low;
  std::memcpy(&high, id.bytes().data(), 8);
  std::memcpy(&low, id.bytes().data() + 8, 8);
  return static_cast<size_t>(high ^ (low * 0x9E3779B97F4A7C15ULL));
}
