// The input checks both stores share.
#include "cqrs/append_validation.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace cqrs
