// The input checks both stores share.
#include "cqrs/append_validation.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/json_edits.hpp"

namespace cqrs {
namespace {

EventData valid_event() {
  EventData event;
  event.type = "E";
  event.data = R"({"a":1})";
  return event;
}

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("Müller 東京 🎁"));
}

TEST(Utf8, RejectsMalformedSequences) {
  EXPECT_FALSE(is_valid_utf8("\xC3\x28"));          // bad continuation
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // beyond U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE6\x9D"));          // truncated
}

TEST(AppendValidation, AcceptsAWellFormedAppend) {
  std::vector<EventData> events = {valid_event(), valid_event()};
  EXPECT_TRUE(validate_append("s-1", ExpectedVersion::any(), events).ok());
}

// Time-ordered ids arrive increasing; ids in any other order are checked as well.
TEST(AppendValidation, AnEventIdTwiceInOneAppendIsRejectedInAnyOrder) {
  std::vector<EventData> events(5, valid_event());
  for (EventData& event : events) event.event_id = Uuid::time_ordered();
  EXPECT_TRUE(validate_append("s", ExpectedVersion::any(), events).ok());
  std::reverse(events.begin(), events.end());
  EXPECT_TRUE(validate_append("s", ExpectedVersion::any(), events).ok()) << "distinct, decreasing";
  events[3].event_id = events[0].event_id;  // apart, out of order
  auto result = validate_append("s", ExpectedVersion::any(), events);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), errc::kDuplicateEvent);
  EXPECT_NE(result.error().message().find(events[0].event_id.to_string()), std::string::npos)
      << result.error().message();
}

TEST(AppendValidation, NamesTheOffendingEventAndField) {
  std::vector<EventData> events = {valid_event(), valid_event()};
  events[1].type = "GiftCardIssued";
  events[1].data = R"({"amount": })";
  auto result = validate_append("s-1", ExpectedVersion::any(), events);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), errc::kInvalidPayload);
  EXPECT_NE(result.error().message().find("event 1 (GiftCardIssued) data"), std::string::npos)
      << result.error().message();
}

TEST(AppendValidation, RejectsEmptyTypeAndBadTypeVersion) {
  EventData untyped = valid_event();
  untyped.type.clear();
  EXPECT_EQ(validate_append("s", ExpectedVersion::any(), std::span(&untyped, 1)).error().code(),
            errc::kInvalidArgument);
  EventData unversioned = valid_event();
  unversioned.type_version = 0;
  EXPECT_EQ(validate_append("s", ExpectedVersion::any(), std::span(&unversioned, 1)).error().code(),
            errc::kInvalidArgument);
}

TEST(AppendValidation, RejectsNilEventId) {
  EventData event = valid_event();
  event.event_id = Uuid();
  EXPECT_EQ(validate_append("s", ExpectedVersion::any(), std::span(&event, 1)).error().code(),
            errc::kInvalidArgument);
}

TEST(AppendValidation, RejectsNulInKeysToo) {
  EventData event = valid_event();
  event.data = R"({"a\u0000b":1})";
  EXPECT_EQ(validate_append("s", ExpectedVersion::any(), std::span(&event, 1)).error().code(),
            errc::kInvalidPayload);
}

TEST(AppendValidation, AcceptsAnEscapedBackslashBeforeU0000Text) {
  EventData event = valid_event();
  event.data = R"({"path":"C:\\u0000"})";  // a backslash, then the letters u0000
  EXPECT_TRUE(validate_append("s", ExpectedVersion::any(), std::span(&event, 1)).ok());
}

TEST(AppendValidation, RejectsStreamIdsWithNul) {
  std::string stream("a\0b", 3);
  EventData event = valid_event();
  EXPECT_EQ(validate_append(stream, ExpectedVersion::any(), std::span(&event, 1)).error().code(),
            errc::kInvalidArgument);
}

Result<void> validate_one(const EventData& event) {
  return validate_append("s", ExpectedVersion::any(), std::span(&event, 1));
}

// A write() request: its events as an append, its command result and its claims.
TEST(AppendValidation, WriteRequestsCheckCommandResultsAndClaims) {
  WriteRequest request{"s", ExpectedVersion::any(), {valid_event()}, std::nullopt, {}};
  EXPECT_TRUE(validate_write_request(request).ok());
  WriteRequest record_only{"s", ExpectedVersion::any(), {}, std::nullopt, {}};
  EXPECT_TRUE(validate_write_request(record_only).ok());
  record_only.stream_id = "";
  EXPECT_EQ(validate_write_request(record_only).error().code(), errc::kInvalidArgument);

  request.command = CommandRecord{Uuid::time_ordered(), "s", R"({"status":"ok"})"};
  EXPECT_TRUE(validate_write_request(request).ok());
  request.command->result = "{";
  EXPECT_EQ(validate_write_request(request).error().code(), errc::kInvalidPayload);
  request.command->result = "\"" + std::string(kMaxEventBytes, 'r') + "\"";
  EXPECT_EQ(validate_write_request(request).error().code(), errc::kEventTooLarge);
  request.command.reset();

  auto refused = [&](UniqueClaim claim, const std::string& part) {
    request.claims = {UniqueClaim{"email", "ok@example.com"}, std::move(claim)};
    auto checked = validate_write_request(request);
    ASSERT_FALSE(checked.ok()) << part;
    EXPECT_EQ(checked.error().code(), errc::kInvalidArgument);
    EXPECT_NE(checked.error().message().find(part), std::string::npos) << checked.error().message();
  };
  request.claims = {UniqueClaim{"email", std::string(kMaxClaimBytes, 'v')}};
  EXPECT_TRUE(validate_write_request(request).ok());
  refused(UniqueClaim{"email", std::string(kMaxClaimBytes + 1, 'v')},
          "claim 1: value is 1025 bytes long; the limit is 1024");
  refused(UniqueClaim{std::string(kMaxClaimBytes + 1, 's'), "v"},
          "claim 1: scope is 1025 bytes long");
  refused(UniqueClaim{"", "v"}, "claim 1: scope must not be empty");
  refused(UniqueClaim{"email", std::string("a\0b", 3)}, "claim 1: value must be UTF-8 text");
  refused(UniqueClaim{"email", "\xC3\x28"}, "claim 1: value must be UTF-8 text");
}

// Longer types would not fit the type index: refused up front, with the length in the message.
TEST(AppendValidation, EventTypesAreAtMostTheLimitLong) {
  EventData event = valid_event();
  event.type = std::string(kMaxEventTypeBytes, 'T');
  EXPECT_TRUE(validate_one(event).ok());
  event.type += "ü";
  auto refused = validate_one(event);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("event 0: event type (" + std::string(40, 'T') +
                                           "...) is 1026 bytes long; the limit is 1024"),
            std::string::npos)
      << refused.error().message();
}

// The metadata's correlation_id goes into an index too: a string of at most the limit, counted
// as jsonb stores it (escapes decoded), or null.
TEST(AppendValidation, CorrelationIdsAreShortStrings) {
  auto with_metadata = [](std::string metadata) {
    EventData event = valid_event();
    event.metadata = std::move(metadata);
    return validate_one(event);
  };
  auto quoted = [](const std::string& text) { return "\"" + text + "\""; };
  const std::string at_limit(kMaxCorrelationIdBytes, 'c');
  EXPECT_TRUE(with_metadata(R"({"correlation_id":)" + quoted(at_limit) + "}").ok());
  EXPECT_TRUE(with_metadata(R"({"correlation_id":null})").ok());
  EXPECT_TRUE(with_metadata(R"({"other":1})").ok());
  // Escapes written longer than the limit can decode to a string within it: é is 2 bytes.
  std::string escaped;
  for (size_t idx = 0; idx < kMaxCorrelationIdBytes / 2; ++idx) escaped += "\\u00e9";
  EXPECT_TRUE(with_metadata(R"({"correlation_id":)" + quoted(escaped) + "}").ok());
  // A nested key of that name is not the correlation.
  EXPECT_TRUE(with_metadata(R"({"x":{"correlation_id":)" + quoted(at_limit + "c") + "}}").ok());

  auto refused_with = [&](const std::string& metadata, const std::string& part) {
    auto refused = with_metadata(metadata);
    ASSERT_FALSE(refused.ok()) << metadata.substr(0, 80);
    EXPECT_EQ(refused.error().code(), errc::kInvalidPayload);
    EXPECT_NE(refused.error().message().find(part), std::string::npos) << refused.error().message();
  };
  refused_with(R"({"correlation_id":)" + quoted(at_limit + "c") + "}",
               "event 0 (E) metadata: correlation_id is 1025 bytes long; the limit is 1024");
  refused_with(R"({"correlation_id":)" + quoted(escaped + "\\uD83C\\uDF81") + "}",
               "correlation_id is 1028 bytes long");
  // The key written with an escape is the same key; of duplicate keys the last counts.
  refused_with(R"({"correlation\u005fid":)" + quoted(at_limit + "c") + "}",
               "correlation_id is 1025 bytes long");
  refused_with(R"({"correlation_id":"a","correlation_id":)" + quoted(at_limit + "c") + "}",
               "correlation_id is 1025 bytes long");
  EXPECT_TRUE(
      with_metadata(R"({"correlation_id":)" + quoted(at_limit + "c") + R"(,"correlation_id":"a"})")
          .ok());
  refused_with(R"({"correlation_id":42})", "correlation_id must be a string");
  refused_with(R"({"correlation_id":["a"]})", "correlation_id must be a string");
  refused_with(R"({"correlation_id":{"a":1}})", "correlation_id must be a string");
}

// Payload sizes are checked before any payload is read.
TEST(AppendValidation, EventsAndAppendsHaveSizeLimits) {
  EventData event = valid_event();
  event.metadata = "{}";
  event.data = "\"" + std::string(kMaxEventBytes - 4, 'd') + "\"";
  ASSERT_EQ(event.data.size() + event.metadata.size(), kMaxEventBytes);
  EXPECT_TRUE(validate_one(event).ok());
  event.data.back() = 'x';  // not JSON any more, and one byte over: the size is named first
  event.data += "\"";
  auto refused = validate_one(event);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kEventTooLarge);
  EXPECT_EQ(refused.error().message(),
            "event 0 is 16777217 bytes of data and metadata; the limit is 16777216");

  // Four events at the limit fill an append; one more byte is too many.
  event.data.resize(kMaxEventBytes - event.metadata.size() - event.type.size());
  event.data.front() = '"';
  event.data.back() = '"';
  std::vector<EventData> events(kMaxAppendBytes / kMaxEventBytes, event);
  for (EventData& each : events) each.event_id = Uuid::time_ordered();
  EXPECT_TRUE(validate_append("s", ExpectedVersion::any(), events).ok());
  events.back().data.insert(1, "d");
  refused = validate_append("s", ExpectedVersion::any(), events);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), errc::kAppendTooLarge);
  EXPECT_NE(refused.error().message().find("the append's 4 events hold 67108865 bytes"),
            std::string::npos)
      << refused.error().message();
}

bool json_ok(std::string_view text) { return validate_json(text, false, "text").ok(); }

TEST(JsonCheck, AcceptsEveryKindOfValue) {
  for (const char* text :
       {"0", "-0", "12.5e-3", "1E+2", "-1.0E2", "true", "false", "null", "\"\"", "[]", "{}",
        " [1, [2, [3]], {\"a\": {\"b\": []}}] ", "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
        "\"\\u00e9 \\uD83C\\uDF81\"", "\"M\xC3\xBCller \xF0\x9F\x8E\x81\"", "\t\r\n{}\n"}) {
    EXPECT_TRUE(json_ok(text)) << text << ": "
                               << validate_json(text, false, "text").error().to_string();
  }
}

TEST(JsonCheck, RejectsWhatTheGrammarForbids) {
  for (const char* text : {"",
                           "  ",
                           "01",
                           "1.",
                           ".5",
                           "1e",
                           "+1",
                           "-",
                           "[1,]",
                           "{\"a\":1,}",
                           "{a:1}",
                           "{\"a\" 1}",
                           "[1 2]",
                           "tru",
                           "nul",
                           "True",
                           "[",
                           "{\"a\":",
                           "\"abc",
                           "1 2",
                           "{} x",
                           "'a'",
                           "[1]]",
                           "\"\\x\"",
                           "\"\\u12\"",
                           "\"a\tb\"",
                           "NaN",
                           "// c\n1",
                           "\xEF\xBB\xBF{}"}) {
    auto checked = validate_json(text, false, "text");
    ASSERT_FALSE(checked.ok()) << text;
    EXPECT_EQ(checked.error().code(), errc::kInvalidPayload);
    EXPECT_NE(checked.error().message().find("text is not valid JSON at byte "), std::string::npos)
        << checked.error().message();
  }
}

TEST(JsonCheck, RejectsWhatJsonbCannotStore) {
  EXPECT_NE(validate_json("[\"a\\u0000\"]", false, "t").error().message().find("NUL"),
            std::string::npos);
  EXPECT_FALSE(json_ok(std::string("\"a\0b\"", 5)));
  EXPECT_FALSE(json_ok("\"\\uD83C\""));         // a high surrogate alone
  EXPECT_FALSE(json_ok("\"\\uD83C\\u0041\""));  // ... followed by no low surrogate
  EXPECT_FALSE(json_ok("\"\\uDF81\""));         // a low surrogate alone
  EXPECT_FALSE(json_ok("\"\xC3\x28\""));        // malformed UTF-8 in a string
  EXPECT_FALSE(json_ok("\"\xED\xA0\x80\""));    // an encoded surrogate
}

// The limits PostgreSQL 15's numeric_in puts on a jsonb number (checked against psql).
TEST(JsonCheck, KeepsNumbersWithinWhatPostgresCanStore) {
  for (const char* text : {"2.5e833", "1e131071", "10e131070", "0.1e131072", "1e-16383",
                           "1.000e-16380", "1.5e-16382", "0e99999999", "0.0000000000e1"}) {
    EXPECT_TRUE(json_ok(text)) << text;
  }
  for (const char* text :
       {"1e131072", "10e131071", "1e-16384", "1.0000e-16380", "0.5e-16383", "0e-16384",
        "0.0e-16383", "0e1000000000000", "1e2147483647", "-1e99999999999999999999"}) {
    auto checked = validate_json(text, false, "n");
    ASSERT_FALSE(checked.ok()) << text;
    EXPECT_NE(checked.error().message().find("beyond what PostgreSQL can store"), std::string::npos)
        << checked.error().message();
  }
}

// Strings are scanned eight bytes at a time: every kind of byte that ends a plain run must be
// found at every offset within a word and across words, in long strings and short ones.
TEST(JsonCheck, FindsEveryByteThatEndsPlainTextAtEveryOffset) {
  for (size_t length : {0, 1, 7, 8, 9, 15, 16, 17, 40}) {
    for (size_t at = 0; at < length; ++at) {
      auto with = [&](std::string_view inner) {
        std::string text = "\"" + std::string(length, 'a');
        text.replace(1 + at, 1, inner);
        return text + "\"";
      };
      std::string where = "length " + std::to_string(length) + ", offset " + std::to_string(at);
      // Special bytes a string holds: escapes and multi-byte UTF-8, then text after them.
      EXPECT_TRUE(json_ok(with("\\\"b"))) << where;
      EXPECT_TRUE(json_ok(with("\\n"))) << where;
      EXPECT_TRUE(json_ok(with("\xC3\xBC"))) << where;
      EXPECT_TRUE(json_ok(with("\xF0\x9F\x8E\x81"))) << where;
      EXPECT_TRUE(json_ok(with("\x7F"))) << where;  // DEL needs no escape
      EXPECT_TRUE(json_ok("[" + with("\"").substr(0, 2 + at) + ",1]")) << where;
      // Bytes it must not hold, each named at its own position (after the opening quote).
      std::string expected = "at byte " + std::to_string(1 + at) + ": ";
      for (auto [inner, reason] : std::initializer_list<std::pair<std::string_view, const char*>>{
               {"\x1F", "a control character in a string must be escaped"},
               {"\t", "a control character in a string must be escaped"},
               {std::string_view("\0", 1), "contains a NUL character, which cannot be stored"},
               {"\xC3(", "malformed UTF-8"},
               {"\x80", "malformed UTF-8"},
               {"\xFF", "malformed UTF-8"},
               {"\\x", "invalid escape sequence"}}) {
        auto checked = validate_json(with(inner), false, "t");
        ASSERT_FALSE(checked.ok()) << where << " " << reason;
        EXPECT_NE(checked.error().message().find(expected + reason), std::string::npos)
            << where << ": " << checked.error().message();
      }
    }
  }
  // The closing quote found in every position of a word: the value after it is checked.
  for (size_t length = 0; length < 20; ++length) {
    std::string text = "[\"" + std::string(length, 'x') + "\",";
    EXPECT_TRUE(json_ok(text + "1]")) << length;
    EXPECT_FALSE(json_ok(text + "]")) << length;
  }
}

TEST(JsonCheck, NamesWhereAndWhatWentWrong) {
  auto checked = validate_json(R"({"a": 1,})", false, "event 0 (E) data");
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(checked.error().message(),
            "event 0 (E) data is not valid JSON at byte 8: expected a string key");
  EXPECT_EQ(validate_json("[1]", true, "metadata").error().message(),
            "metadata must be a JSON object");
}

TEST(JsonCheck, DeepNestingNeitherOverflowsTheStackNorFails) {
  constexpr size_t kDepth = 1'000'000;
  std::string nested = std::string(kDepth, '[') + std::string(kDepth, ']');
  EXPECT_TRUE(json_ok(nested));
  nested.pop_back();
  EXPECT_FALSE(json_ok(nested));
  std::string objects;
  for (size_t idx = 0; idx < kDepth / 10; ++idx) objects += "{\"k\":";
  objects += "1" + std::string(kDepth / 10, '}');
  EXPECT_TRUE(json_ok(objects));
}

// Random edits of valid documents, judged by the checker and by nlohmann::json: they agree on
// everything except the two things jsonb refuses and nlohmann accepts (\u0000 and a leading
// byte order mark; the edits make neither).
TEST(JsonCheck, AgreesWithAFullParserOnRandomEdits) {
  int accepted = 0, rejected = 0;
  for (const std::string& text : testing::random_json_edits(200'000, 20261128)) {
    bool ours = json_ok(text);
    bool theirs = nlohmann::json::accept(text);
    if (ours && !theirs) {
      // nlohmann keeps numbers as doubles and refuses what overflows one; numeric holds more.
      try {
        nlohmann::json parsed = nlohmann::json::parse(text);
        ADD_FAILURE() << "nlohmann refused, then parsed: " << text;
      } catch (const nlohmann::json::exception& error) {
        if (std::string(error.what()).find("number overflow") != std::string::npos) continue;
      }
    }
    ASSERT_EQ(ours, theirs) << "text: " << text;
    (ours ? accepted : rejected)++;
  }
  // Both verdicts occur often, so the agreement means something.
  EXPECT_GT(accepted, 10'000);
  EXPECT_GT(rejected, 10'000);
}

TEST(AppendValidation, ChecksEveryEventsMetadataEvenWhenTheyRepeat) {
  std::vector<EventData> events = {valid_event(), valid_event(), valid_event()};
  for (EventData& event : events) event.metadata = R"({"command_id":"c"})";
  EXPECT_TRUE(validate_append("s", ExpectedVersion::any(), events).ok());
  events[2].metadata = R"({"command_id":"c"} x)";
  auto checked = validate_append("s", ExpectedVersion::any(), events);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.error().message().find("event 2 (E) metadata"), std::string::npos)
      << checked.error().message();
}

}  // namespace
}  // namespace cqrs
