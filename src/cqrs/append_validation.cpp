// Input checks shared by the event stores.
#include "cqrs/append_validation.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace cqrs {
namespace {

// The length of the UTF-8 sequence that starts at text[idx] (a byte >= 0x80), or 0 when it is
// malformed: a bad lead or continuation byte, truncated, overlong, a surrogate or beyond U+10FFFF.
size_t utf8_sequence_length(std::string_view text, size_t idx) {
  auto byte = static_cast<unsigned char>(text[idx]);
  size_t length;
  uint32_t code_point;
  if ((byte & 0xE0) == 0xC0) {
    length = 2;
    code_point = byte & 0x1F;
  } else if ((byte & 0xF0) == 0xE0) {
    length = 3;
    code_point = byte & 0x0F;
  } else if ((byte & 0xF8) == 0xF0) {
    length = 4;
    code_point = byte & 0x07;
  } else {
    return 0;
  }
  if (idx + length > text.size()) return 0;
  for (size_t cont_idx = 1; cont_idx < length; ++cont_idx) {
    auto cont = static_cast<unsigned char>(text[idx + cont_idx]);
    if ((cont & 0xC0) != 0x80) return 0;
    code_point = code_point << 6 | (cont & 0x3F);
  }
  static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kMinForLength[length] || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

// The first byte at or after `from` that a JSON string cannot hold as it is: a quote, a
// backslash, a control character or the start of a multi-byte UTF-8 sequence; text.size() when
// there is none. Eight bytes at a time, since most of a payload's bytes are plain string text.
size_t plain_end(std::string_view text, size_t from) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHighs = 0x8080808080808080ULL;
  size_t pos = from;
  for (; pos + 8 <= text.size(); pos += 8) {
    uint64_t word;
    std::memcpy(&word, text.data() + pos, 8);
    // A byte's high bit ends up set where that byte is below 0x20, is '"' or '\\', or is at or
    // above 0x80. A subtraction's borrow may also flag bytes above such a byte, never below.
    uint64_t quote = word ^ (kOnes * '"');
    uint64_t backslash = word ^ (kOnes * '\\');
    uint64_t special =
        ((word - kOnes * 0x20) | (quote - kOnes) | (backslash - kOnes) | word) & kHighs;
    // So the lowest flagged byte is a special one: on a little-endian machine, the first.
    if (special == 0) continue;
    if constexpr (std::endian::native == std::endian::little) {
      return pos + static_cast<size_t>(std::countr_zero(special)) / 8;
    }
    break;  // the bytes below find it
  }
  while (pos < text.size()) {
    auto byte = static_cast<unsigned char>(text[pos]);
    if (byte < 0x20 || byte >= 0x80 || byte == '"' || byte == '\\') break;
    ++pos;
  }
  return pos;
}

// The code point of the four hex digits at text[at...], or -1.
int hex_code(std::string_view text, size_t at) {
  if (at + 4 > text.size()) return -1;
  int code = 0;
  for (size_t idx = at; idx < at + 4; ++idx) {
    char c = text[idx];
    int digit = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
    if (digit < 0) return -1;
    code = code << 4 | digit;
  }
  return code;
}

// The value of a checked JSON string from its text between the quotes: escapes decoded to
// UTF-8, as jsonb stores it and ->> returns it.
std::string decoded(std::string_view written) {
  std::string out;
  out.reserve(written.size());
  for (size_t idx = 0; idx < written.size();) {
    if (written[idx] != '\\') {
      out += written[idx++];
      continue;
    }
    if (written[idx + 1] != 'u') {
      static constexpr std::string_view kFrom = "\"\\/bfnrt", kTo = "\"\\/\b\f\n\r\t";
      out += kTo[kFrom.find(written[idx + 1])];
      idx += 2;
      continue;
    }
    uint32_t code = static_cast<uint32_t>(hex_code(written, idx + 2));
    idx += 6;
    if (code >= 0xD800 && code <= 0xDBFF) {  // a surrogate pair (checked)
      code = 0x10000 + ((code - 0xD800) << 10) +
             (static_cast<uint32_t>(hex_code(written, idx + 2)) - 0xDC00);
      idx += 6;
    }
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | code >> 6);
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | code >> 12);
      out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | code >> 18);
      out += static_cast<char>(0x80 | (code >> 12 & 0x3F));
      out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }
  return out;
}

// Where a JSON text first goes wrong: the byte offset and what is wrong there.
struct JsonProblem {
  size_t position;
  const char* reason;
};

// A strict RFC 8259 checker that builds nothing: one pass over the bytes, with a stack of the
// open containers. Beyond the grammar it rejects what PostgreSQL's jsonb cannot store or
// refuses: malformed UTF-8, NUL (raw or as \u0000) and unpaired UTF-16 surrogate escapes.
class JsonChecker {
 public:
  // With `watched_key`, the checker also notes the value of that member of a top-level object
  // (the last one, as jsonb keeps the last of duplicate keys).
  explicit JsonChecker(std::string_view text, std::string_view watched_key = {})
      : text_(text), watched_key_(watched_key) {}

  // The watched member's value: its kind, and for a string its text between the quotes as
  // written (escapes not decoded).
  enum class Kind { kAbsent, kString, kNull, kOther };
  struct Watched {
    Kind kind = Kind::kAbsent;
    std::string_view written;
  };

  std::optional<JsonProblem> check() {
    skip_whitespace();
    top_is_object_ = pos_ < text_.size() && text_[pos_] == '{';
    while (true) {
      if (!value()) return problem_;
      if (opened_) {  // the next value is the new container's first element
        opened_ = false;
        continue;
      }
      // After a value: close containers or move to the next element.
      while (true) {
        skip_whitespace();
        if (open_.empty()) {
          if (pos_ != text_.size()) return fail("unexpected text after the JSON value");
          return std::nullopt;
        }
        char closer = open_.back() == '{' ? '}' : ']';
        if (pos_ < text_.size() && text_[pos_] == closer) {
          open_.pop_back();
          ++pos_;
          continue;
        }
        if (pos_ >= text_.size() || text_[pos_] != ',') {
          return fail(closer == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        ++pos_;
        if (closer == '}' && !member_key()) return problem_;
        break;
      }
    }
  }

  bool top_is_object() const { return top_is_object_; }
  const Watched& watched() const { return watched_; }

 private:
  std::optional<JsonProblem> fail(const char* reason) {
    problem_ = JsonProblem{pos_, reason};
    return problem_;
  }
  bool failed(const char* reason) {
    fail(reason);
    return false;
  }

  void skip_whitespace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  // One value. A container only opens here (opened_; its elements follow in check()'s loop, so
  // nesting never deepens the C++ stack); an empty one opens and closes here.
  bool value() {
    skip_whitespace();
    if (pos_ >= text_.size()) return failed("expected a value, found the end of the text");
    if (watch_value_) {
      watch_value_ = false;
      size_t start = pos_;
      watched_ = Watched{text_[pos_] == '"'   ? Kind::kString
                         : text_[pos_] == 'n' ? Kind::kNull
                                              : Kind::kOther,
                         {}};
      if (watched_.kind != Kind::kString) return value();
      if (!string()) return false;
      watched_.written = text_.substr(start + 1, pos_ - start - 2);
      return true;
    }
    switch (text_[pos_]) {
      case '{':
      case '[':
        return open_container(text_[pos_]);
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }

  // `opener` at pos_: an empty container is read whole; otherwise it stays open (with an
  // object's first key read).
  bool open_container(char opener) {
    char closer = opener == '{' ? '}' : ']';
    ++pos_;
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == closer) {
      ++pos_;
      return true;
    }
    open_.push_back(opener);
    opened_ = true;
    return opener == '[' || member_key();
  }

  // `"key" :` of an object member.
  bool member_key() {
    skip_whitespace();
    if (pos_ >= text_.size() || text_[pos_] != '"') return failed("expected a string key");
    size_t start = pos_;
    if (!string()) return false;
    if (!watched_key_.empty() && open_.size() == 1) {
      std::string_view key = text_.substr(start + 1, pos_ - start - 2);
      watch_value_ = key.find('\\') == std::string_view::npos ? key == watched_key_
                                                              : decoded(key) == watched_key_;
    }
    skip_whitespace();
    if (pos_ >= text_.size() || text_[pos_] != ':') return failed("expected ':'");
    ++pos_;
    return true;
  }

  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return failed("expected a value");
    pos_ += word.size();
    return true;
  }

  size_t digits() {
    size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    return pos_ - start;
  }

  // A number as RFC 8259 writes it, within what PostgreSQL's numeric can hold: at most 131,072
  // digits before the decimal point and 16,383 after it, counting the fraction's written digits
  // (its display scale), as numeric_in does.
  bool number() {
    if (text_[pos_] == '-') ++pos_;
    size_t integer_start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '0') {
      ++pos_;
    } else if (digits() == 0) {
      return failed("expected a value");
    }
    std::string_view integer = text_.substr(integer_start, pos_ - integer_start);
    std::string_view fraction;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      size_t fraction_start = pos_;
      if (digits() == 0) return failed("expected a digit after the decimal point");
      fraction = text_.substr(fraction_start, pos_ - fraction_start);
    }
    int64_t exponent = 0;
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      bool negative = pos_ < text_.size() && text_[pos_] == '-';
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      size_t exponent_start = pos_;
      if (digits() == 0) return failed("expected a digit in the exponent");
      for (char c : text_.substr(exponent_start, pos_ - exponent_start)) {
        exponent = std::min<int64_t>(exponent * 10 + (c - '0'), kMaxExponent);
      }
      if (negative) exponent = -exponent;
    }
    // The decimal weight of the first non-zero digit (10^weight); none for a zero.
    std::optional<int64_t> weight;
    if (size_t first = integer.find_first_not_of('0'); first != std::string_view::npos) {
      weight = static_cast<int64_t>(integer.size() - first) - 1;
    } else if (first = fraction.find_first_not_of('0'); first != std::string_view::npos) {
      weight = -static_cast<int64_t>(first) - 1;
    }
    int64_t scale = std::max<int64_t>(0, static_cast<int64_t>(fraction.size()) - exponent);
    if (exponent >= kMaxExponent || exponent <= -kMaxExponent || scale > kMaxScale ||
        (weight && *weight + exponent > kMaxWeight)) {
      pos_ = integer_start;
      return failed(
          "a number beyond what PostgreSQL can store (at most 131072 digits before the decimal "
          "point and 16383 after it)");
    }
    return true;
  }

  static constexpr int64_t kMaxExponent = 1'073'741'823;  // numeric_in refuses |e| >= INT_MAX / 2
  static constexpr int64_t kMaxScale = 16'383;
  static constexpr int64_t kMaxWeight = 131'071;

  // Four hex digits after \u; -1 when they are not.
  int hex4() {
    int code = hex_code(text_, pos_);
    if (code >= 0) pos_ += 4;
    return code;
  }

  bool string() {
    ++pos_;  // the opening quote
    while (true) {
      pos_ = plain_end(text_, pos_);
      if (pos_ >= text_.size()) break;
      auto byte = static_cast<unsigned char>(text_[pos_]);
      if (byte == '"') {
        ++pos_;
        return true;
      }
      if (byte == '\\') {
        if (!escape()) return false;
      } else if (byte == 0) {
        return failed("contains a NUL character, which cannot be stored");
      } else if (byte < 0x20) {
        return failed("a control character in a string must be escaped");
      } else {
        size_t length = utf8_sequence_length(text_, pos_);
        if (length == 0) return failed("malformed UTF-8");
        pos_ += length;
      }
    }
    return failed("unterminated string");
  }

  bool escape() {
    size_t start = pos_;
    ++pos_;  // the backslash
    if (pos_ >= text_.size()) return failed("unterminated string");
    char kind = text_[pos_++];
    if (kind != 'u') {
      if (std::string_view("\"\\/bfnrt").find(kind) != std::string_view::npos) return true;
      pos_ = start;
      return failed("invalid escape sequence");
    }
    int code = hex4();
    if (code < 0) {
      pos_ = start;
      return failed("\\u needs four hex digits");
    }
    if (code == 0) {
      pos_ = start;
      return failed("contains a NUL character (\\u0000), which cannot be stored");
    }
    if (code >= 0xDC00 && code <= 0xDFFF) {
      pos_ = start;
      return failed("a low surrogate escape without a high surrogate before it");
    }
    if (code >= 0xD800 && code <= 0xDBFF) {
      int low = -1;
      if (text_.substr(pos_, 2) == "\\u") {
        pos_ += 2;
        low = hex4();
      }
      if (low < 0xDC00 || low > 0xDFFF) {
        pos_ = start;
        return failed("a high surrogate escape without a low surrogate after it");
      }
    }
    return true;
  }

  std::string_view text_;
  std::string_view watched_key_;
  Watched watched_;
  bool watch_value_ = false;  // the next value is the watched member's
  size_t pos_ = 0;
  std::string open_;  // '{' or '[' per open container, innermost last
  bool opened_ = false;
  bool top_is_object_ = false;
  std::optional<JsonProblem> problem_;
};

// validate_json with the message's subject built only when there is a problem.
template <typename What>
Result<void> check_json(JsonChecker& checker, bool must_be_object, const What& what) {
  if (auto problem = checker.check()) {
    return Error::invalid(errc::kInvalidPayload,
                          std::string(what()) + " is not valid JSON at byte " +
                              std::to_string(problem->position) + ": " + problem->reason);
  }
  if (must_be_object && !checker.top_is_object()) {
    return Error::invalid(errc::kInvalidPayload, std::string(what()) + " must be a JSON object");
  }
  return {};
}

template <typename What>
Result<void> check_json(std::string_view text, bool must_be_object, const What& what) {
  JsonChecker checker(text);
  return check_json(checker, must_be_object, what);
}

// An event's metadata: a JSON object whose correlation_id, when it has one, is a string short
// enough for the index of correlations (or null).
template <typename What>
Result<void> check_metadata(std::string_view text, const What& what) {
  JsonChecker checker(text, "correlation_id");
  if (auto checked = check_json(checker, true, what); !checked) return checked;
  const JsonChecker::Watched& correlation = checker.watched();
  if (correlation.kind == JsonChecker::Kind::kOther) {
    return Error::invalid(errc::kInvalidPayload,
                          std::string(what()) + ": correlation_id must be a string");
  }
  if (correlation.kind == JsonChecker::Kind::kString &&
      correlation.written.size() > kMaxCorrelationIdBytes) {
    if (size_t bytes = decoded(correlation.written).size(); bytes > kMaxCorrelationIdBytes) {
      return Error::invalid(errc::kInvalidPayload, std::string(what()) + ": correlation_id is " +
                                                       std::to_string(bytes) +
                                                       " bytes long; the limit is " +
                                                       std::to_string(kMaxCorrelationIdBytes));
    }
  }
  return {};
}

// At most `limit` bytes of `text`, for a message, cut at a UTF-8 character boundary.
std::string_view shortened(std::string_view text, size_t limit) {
  if (text.size() <= limit) return text;
  size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

}  // namespace

Result<void> validate_json(std::string_view text, bool must_be_object, std::string_view what) {
  return check_json(text, must_be_object, [&] { return what; });
}

bool is_valid_utf8(std::string_view text) {
  size_t idx = 0;
  while (idx < text.size()) {
    if (static_cast<unsigned char>(text[idx]) < 0x80) {
      ++idx;
      continue;
    }
    size_t length = utf8_sequence_length(text, idx);
    if (length == 0) return false;
    idx += length;
  }
  return true;
}

size_t payload_bytes(std::span<const EventData> events) {
  size_t bytes = 0;
  for (const EventData& event : events) bytes += event.data.size() + event.metadata.size();
  return bytes;
}

namespace {

// invalid_argument unless `text` (a `what`) is non-empty UTF-8 without NUL of at most `limit`
// bytes: what a text parameter of PostgreSQL can carry whole (libpq ends it at a NUL).
Result<void> validate_name(std::string_view text, std::string_view what, size_t limit) {
  if (text.empty()) {
    return Error::invalid(errc::kInvalidArgument, std::string(what) + " must not be empty");
  }
  if (text.size() > limit) {
    return Error::invalid(errc::kInvalidArgument,
                          std::string(what) + " is " + std::to_string(text.size()) +
                              " bytes long; the limit is " + std::to_string(limit));
  }
  if (text.find('\0') != std::string_view::npos || !is_valid_utf8(text)) {
    return Error::invalid(errc::kInvalidArgument,
                          std::string(what) + " must be UTF-8 text without NUL");
  }
  return {};
}

}  // namespace

Result<void> validate_stream_id(std::string_view stream_id) {
  return validate_name(stream_id, "stream id", kMaxStreamIdBytes);
}

Result<void> validate_handler_name(std::string_view name) {
  return validate_name(name, "handler name", kMaxStreamIdBytes);
}

Result<void> validate_correlation_id(std::string_view correlation_id) {
  return validate_name(correlation_id, "correlation id", kMaxCorrelationIdBytes);
}

namespace {

// An event id that two of `events` share, if any. Time-ordered ids, the usual kind, arrive in
// increasing order, which a pass over them shows without copying them.
std::optional<Uuid> repeated_event_id(std::span<const EventData> events) {
  bool increasing = true;
  for (size_t idx = 1; idx < events.size() && increasing; ++idx) {
    increasing = events[idx - 1].event_id < events[idx].event_id;
  }
  if (increasing) return std::nullopt;
  std::vector<Uuid> ids;
  ids.reserve(events.size());
  for (const EventData& event : events) ids.push_back(event.event_id);
  std::sort(ids.begin(), ids.end());
  auto repeated = std::adjacent_find(ids.begin(), ids.end());
  if (repeated == ids.end()) return std::nullopt;
  return *repeated;
}

// A command record's id and result; write() stores it under its request's stream.
Result<void> validate_command_outcome(const CommandRecord& record) {
  if (record.command_id.is_nil()) {
    return Error::invalid(errc::kInvalidArgument, "a command record's command id must not be nil");
  }
  if (record.result.size() > kMaxEventBytes) {
    return Error::invalid(errc::kEventTooLarge,
                          "the command result is " + std::to_string(record.result.size()) +
                              " bytes; the limit is " + std::to_string(kMaxEventBytes));
  }
  return validate_json(record.result, false, "command result");
}

}  // namespace

Result<void> validate_type_name(std::string_view name, const std::string& where,
                                std::string_view what) {
  if (name.empty() || !is_valid_utf8(name) || name.find('\0') != std::string_view::npos) {
    return Error::invalid(errc::kInvalidArgument, where + ": " + std::string(what) +
                                                      " must be non-empty UTF-8 text without NUL");
  }
  if (name.size() > kMaxEventTypeBytes) {
    return Error::invalid(errc::kInvalidArgument, where + ": " + std::string(what) + " (" +
                                                      std::string(shortened(name, 40)) +
                                                      "...) is " + std::to_string(name.size()) +
                                                      " bytes long; the limit is " +
                                                      std::to_string(kMaxEventTypeBytes));
  }
  return {};
}

namespace {

Result<void> validate_expected(ExpectedVersion expected) {
  if (expected.kind() == ExpectedVersion::Kind::kExact && expected.version() < 0) {
    return Error::invalid(errc::kInvalidArgument, "expected version must be >= 0, got " +
                                                      std::to_string(expected.version()));
  }
  return {};
}

}  // namespace

Result<void> validate_append(std::string_view stream_id, ExpectedVersion expected,
                             std::span<const EventData> events) {
  if (auto checked = validate_stream_id(stream_id); !checked) return checked;
  if (auto checked = validate_expected(expected); !checked) return checked;
  if (events.empty()) {
    return Error::invalid(errc::kInvalidArgument, "an append needs at least one event");
  }
  // Sizes before contents: an append too large is refused without reading its payloads.
  size_t append_bytes = 0;
  for (size_t event_idx = 0; event_idx < events.size(); ++event_idx) {
    const EventData& event = events[event_idx];
    size_t event_bytes = payload_bytes(std::span(&event, 1));
    if (event_bytes > kMaxEventBytes) {
      return Error::invalid(errc::kEventTooLarge, "event " + std::to_string(event_idx) + " is " +
                                                      std::to_string(event_bytes) +
                                                      " bytes of data and metadata; the limit is " +
                                                      std::to_string(kMaxEventBytes));
    }
    append_bytes += event_bytes + event.type.size();
  }
  if (append_bytes > kMaxAppendBytes) {
    return Error::invalid(errc::kAppendTooLarge,
                          "the append's " + std::to_string(events.size()) + " events hold " +
                              std::to_string(append_bytes) + " bytes (types, data and metadata); " +
                              "the limit is " + std::to_string(kMaxAppendBytes) +
                              ": split it into smaller appends");
  }
  for (size_t event_idx = 0; event_idx < events.size(); ++event_idx) {
    const EventData& event = events[event_idx];
    auto where = [&] { return "event " + std::to_string(event_idx); };
    if (auto valid = validate_type_name(event.type, where(), "event type"); !valid) return valid;
    if (event.type_version < 1) {
      return Error::invalid(errc::kInvalidArgument,
                            where() + " (" + event.type + "): type version must be >= 1");
    }
    if (event.event_id.is_nil()) {
      return Error::invalid(errc::kInvalidArgument,
                            where() + " (" + event.type + "): event id must not be nil");
    }
    if (auto checked =
            check_json(event.data, false, [&] { return where() + " (" + event.type + ") data"; });
        !checked) {
      return checked;
    }
    // The events of one command usually share its metadata: text already checked is not again.
    if (event_idx > 0 && event.metadata == events[event_idx - 1].metadata) continue;
    if (auto checked = check_metadata(event.metadata,
                                      [&] { return where() + " (" + event.type + ") metadata"; });
        !checked) {
      return checked;
    }
  }
  if (auto repeated = repeated_event_id(events)) {
    return Error::conflict(errc::kDuplicateEvent,
                           "event id " + repeated->to_string() + " appears twice in one append");
  }
  return {};
}

Result<void> validate_command_record(const CommandRecord& record) {
  if (auto valid = validate_stream_id(record.stream_id); !valid) return valid;
  return validate_command_outcome(record);
}

Result<void> validate_snapshot(const Snapshot& snapshot) {
  if (auto valid = validate_stream_id(snapshot.stream_id); !valid) return valid;
  const std::string where =
      "the snapshot of stream '" + std::string(shortened(snapshot.stream_id, 80)) + "'";
  if (snapshot.stream_version < 1) {
    return Error::invalid(errc::kInvalidArgument, where + ": stream version must be >= 1, got " +
                                                      std::to_string(snapshot.stream_version));
  }
  if (auto valid = validate_type_name(snapshot.state_type, where, "state type"); !valid) {
    return valid;
  }
  if (snapshot.state_version < 1) {
    return Error::invalid(errc::kInvalidArgument, where + ": state version must be >= 1, got " +
                                                      std::to_string(snapshot.state_version));
  }
  if (snapshot.data.size() > kMaxSnapshotBytes) {
    return Error::invalid(errc::kSnapshotTooLarge,
                          where + ": state is " + std::to_string(snapshot.data.size()) +
                              " bytes of JSON; the limit is " + std::to_string(kMaxSnapshotBytes) +
                              ": keep less state, or take no snapshot of this aggregate");
  }
  return validate_json(snapshot.data, false, where + ": snapshot data");
}

Result<void> validate_write_request(const WriteRequest& request) {
  // A write without events records an outcome only, checked against its expected version too.
  Result<void> valid = request.events.empty()
                           ? validate_stream_id(request.stream_id)
                           : validate_append(request.stream_id, request.expected, request.events);
  if (!valid) return valid;
  if (auto checked = validate_expected(request.expected); !checked) return checked;
  if (request.command) {
    if (auto checked = validate_command_outcome(*request.command); !checked) return checked;
  }
  for (size_t idx = 0; idx < request.claims.size(); ++idx) {
    const UniqueClaim& claim = request.claims[idx];
    for (const std::string* text : {&claim.scope, &claim.value}) {
      std::string where =
          "claim " + std::to_string(idx) + ": " + (text == &claim.scope ? "scope" : "value");
      if (text->size() > kMaxClaimBytes) {
        return Error::invalid(errc::kInvalidArgument,
                              where + " is " + std::to_string(text->size()) +
                                  " bytes long; the limit is " + std::to_string(kMaxClaimBytes));
      }
      if (text->find('\0') != std::string::npos || !is_valid_utf8(*text)) {
        return Error::invalid(errc::kInvalidArgument, where + " must be UTF-8 text without NUL");
      }
    }
    if (claim.scope.empty()) {
      return Error::invalid(errc::kInvalidArgument,
                            "claim " + std::to_string(idx) + ": scope must not be empty");
    }
  }
  return {};
}

}  // namespace cqrs
