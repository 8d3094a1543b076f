// Position ordering and text form; ExpectedVersion descriptions; Error formatting; what handlers
// read of an event's metadata.
#include "cqrs/event.hpp"

#include <gtest/gtest.h>

#include "cqrs/handlers/handler.hpp"
#include "cqrs/result.hpp"

namespace cqrs {
namespace {

TEST(Position, OrdersByCommitThenGlobalPosition) {
  EXPECT_LT((Position{1, 9}), (Position{2, 3}));
  EXPECT_LT((Position{2, 3}), (Position{2, 4}));
  EXPECT_EQ((Position{}), (Position{0, 0}));
}

TEST(Position, TextFormRoundTrips) {
  Position position{18446744073709551000ULL, 42};
  EXPECT_EQ(Position::parse(position.to_string()), position);
  EXPECT_FALSE(Position::parse("12").has_value());
  EXPECT_FALSE(Position::parse("a/1").has_value());
  EXPECT_FALSE(Position::parse("1/-2").has_value());
  EXPECT_FALSE(Position::parse("1/2x").has_value());
}

TEST(ExpectedVersion, DescribesItself) {
  EXPECT_EQ(ExpectedVersion::any().to_string(), "any");
  EXPECT_EQ(ExpectedVersion::no_stream().to_string(), "no_stream");
  EXPECT_EQ(ExpectedVersion::stream_exists().to_string(), "stream_exists");
  EXPECT_EQ(ExpectedVersion::exact(3).to_string(), "version 3");
}

TEST(Error, WrongExpectedVersionCarriesTheActualVersion) {
  Error error = Error::wrong_expected_version("giftcard-1", "version 2", 5);
  EXPECT_EQ(error.code(), "wrong_expected_version");
  EXPECT_EQ(error.kind(), ErrorKind::kConflict);
  EXPECT_EQ(error.actual_version(), 5);
  EXPECT_EQ(error.to_string(),
            "wrong_expected_version: stream 'giftcard-1' expected version 2 but its version is 5");
}

TEST(Result, HoldsAValueOrAnError) {
  Result<int> value = 3;
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 3);
  Result<int> error = Error::unavailable("down");
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.error().code(), "store_unavailable");
  Result<void> nothing;
  EXPECT_TRUE(nothing.ok());
}

// A handler's view of the metadata: null or non-string fields read as "", as absent ones do
// (stores keep a null correlation_id; see validate_append).
TEST(HandlerEvent, MetadataFieldsThatAreNotStringsReadAsEmpty) {
  Event event;
  event.metadata = nlohmann::json::parse(R"({"correlation_id":null,"command_id":7})");
  EXPECT_EQ(event.correlation_id(), "");
  EXPECT_EQ(event.command_id(), "");
  event.metadata = nlohmann::json::parse(R"({"correlation_id":"c","command_id":"k"})");
  EXPECT_EQ(event.correlation_id(), "c");
  EXPECT_EQ(event.command_id(), "k");
  event.metadata = nlohmann::json::array();
  EXPECT_EQ(event.correlation_id(), "");
}

}  // namespace
}  // namespace cqrs
