// Input checks shared by the event stores.
#include "cqrs/append_validation.hpp"

#include <nlohmann/json.hpp>
#include <unordered_set>

namespace cqrs {
namespace {

// A SAX consumer that accepts any well-formed JSON, remembers whether the top-level value is an
// object and rejects strings or keys containing NUL.
class PayloadChecker : public nlohmann::json::json_sax_t {
 public:
  bool null() override { return note_scalar(); }
  bool boolean(bool) override { return note_scalar(); }
  bool number_integer(number_integer_t) override { return note_scalar(); }
  bool number_unsigned(number_unsigned_t) override { return note_scalar(); }
  bool number_float(number_float_t, const string_t&) override { return note_scalar(); }
  bool string(string_t& value) override {
    note_scalar();
    return check_nul(value);
  }
  bool binary(binary_t&) override { return note_scalar(); }
  bool start_object(std::size_t) override {
    if (depth_++ == 0) top_is_object_ = true;
    return true;
  }
  bool key(string_t& value) override { return check_nul(value); }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::json::exception& ex) override {
    error_ = "not valid JSON at byte " + std::to_string(position) + " (" + ex.what() + ")";
    return false;
  }

  bool top_is_object() const { return top_is_object_; }
  const std::string& error() const { return error_; }

 private:
  bool note_scalar() { return true; }
  bool check_nul(const string_t& value) {
    if (value.find('\0') == string_t::npos) return true;
    error_ = "contains a NUL character (\\u0000), which cannot be stored";
    return false;
  }

  int depth_ = 0;
  bool top_is_object_ = false;
  std::string error_;
};

}  // namespace

Result<void> validate_json(std::string_view text, bool must_be_object, std::string_view what) {
  PayloadChecker checker;
  bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker);
  if (!ok) {
    return Error::invalid(errc::kInvalidPayload,
                          std::string(what) + " is " +
                              (checker.error().empty() ? "not valid JSON" : checker.error()));
  }
  if (must_be_object && !checker.top_is_object()) {
    return Error::invalid(errc::kInvalidPayload, std::string(what) + " must be a JSON object");
  }
  return {};
}

bool is_valid_utf8(std::string_view text) {
  size_t idx = 0;
  while (idx < text.size()) {
    auto byte = static_cast<unsigned char>(text[idx]);
    size_t length;
    uint32_t code_point;
    if (byte < 0x80) {
      ++idx;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code_point = byte & 0x1F;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code_point = byte & 0x0F;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code_point = byte & 0x07;
    } else {
      return false;
    }
    if (idx + length > text.size()) return false;
    for (size_t cont_idx = 1; cont_idx < length; ++cont_idx) {
      auto cont = static_cast<unsigned char>(text[idx + cont_idx]);
      if ((cont & 0xC0) != 0x80) return false;
      code_point = code_point << 6 | (cont & 0x3F);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < kMinForLength[length] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    idx += length;
  }
  return true;
}

Result<void> validate_stream_id(std::string_view stream_id) {
  if (stream_id.empty()) {
    return Error::invalid(errc::kInvalidArgument, "stream id must not be empty");
  }
  if (stream_id.size() > kMaxStreamIdBytes) {
    return Error::invalid(errc::kInvalidArgument,
                          "stream id is " + std::to_string(stream_id.size()) +
                              " bytes long; the limit is " + std::to_string(kMaxStreamIdBytes));
  }
  if (stream_id.find('\0') != std::string_view::npos || !is_valid_utf8(stream_id)) {
    return Error::invalid(errc::kInvalidArgument, "stream id must be UTF-8 text without NUL");
  }
  return {};
}

Result<void> validate_append(std::string_view stream_id, ExpectedVersion expected,
                             std::span<const EventData> events) {
  if (auto checked = validate_stream_id(stream_id); !checked) return checked;
  if (expected.kind() == ExpectedVersion::Kind::kExact && expected.version() < 0) {
    return Error::invalid(errc::kInvalidArgument, "expected version must be >= 0, got " +
                                                      std::to_string(expected.version()));
  }
  if (events.empty()) {
    return Error::invalid(errc::kInvalidArgument, "an append needs at least one event");
  }
  std::unordered_set<Uuid> seen_ids;
  seen_ids.reserve(events.size());
  for (size_t event_idx = 0; event_idx < events.size(); ++event_idx) {
    const EventData& event = events[event_idx];
    std::string where = "event " + std::to_string(event_idx);
    if (event.type.empty() || !is_valid_utf8(event.type) ||
        event.type.find('\0') != std::string::npos) {
      return Error::invalid(errc::kInvalidArgument,
                            where + ": event type must be non-empty UTF-8 text");
    }
    if (event.type_version < 1) {
      return Error::invalid(errc::kInvalidArgument,
                            where + " (" + event.type + "): type version must be >= 1");
    }
    if (event.event_id.is_nil()) {
      return Error::invalid(errc::kInvalidArgument,
                            where + " (" + event.type + "): event id must not be nil");
    }
    if (!seen_ids.insert(event.event_id).second) {
      return Error::conflict(errc::kDuplicateEvent, "event id " + event.event_id.to_string() +
                                                        " appears twice in one append");
    }
    if (auto checked = validate_json(event.data, false, where + " (" + event.type + ") data");
        !checked) {
      return checked;
    }
    if (auto checked =
            validate_json(event.metadata, true, where + " (" + event.type + ") metadata");
        !checked) {
      return checked;
    }
  }
  return {};
}

}  // namespace cqrs
