// Dispatch envelope decoding (cqrs/envelope.hpp): the fields as sent, defaults, and limits.
#include "cqrs/envelope.hpp"

#include <gtest/gtest.h>

#include <string>

#include "cqrs/append_validation.hpp"
#include "giftcard/giftcard.hpp"

namespace cqrs {
namespace {

class EnvelopeDecoding : public ::testing::Test {
 protected:
  void SetUp() override { giftcard::register_domain(domain_); }
  Result<DecodedEnvelope> decode(const std::string& text) {
    return decode_envelope(domain_, text, limits_);
  }
  // An envelope for CancelGiftCard whose metadata holds arrays nested `depth` levels deep (the
  // envelope and metadata objects are the first two levels).
  static std::string with_metadata_depth(size_t depth) {
    return R"({"type":"CancelGiftCard","data":{"card_id":"c1"},"metadata":{"a":)" +
           std::string(depth - 2, '[') + std::string(depth - 2, ']') + "}}";
  }
  Domain domain_;
  EnvelopeLimits limits_;
};

TEST_F(EnvelopeDecoding, TakesEveryFieldAsSent) {
  auto decoded = decode(R"({"type":"RedeemGiftCard","payload":"{\"card_id\":\"c1\",\"amount\":3}",
      "command_id":"0190A4B2-7C1E-7D3A-9F00-1234567890AB","correlation_id":"corr",
      "causation_id":"cause","metadata":{"user":"ada"},"consistency":"strong","timeout_ms":750})");
  ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
  const CommandEnvelope& envelope = decoded->envelope;
  EXPECT_EQ(envelope.command.stream_id, "giftcard-c1");
  EXPECT_EQ(envelope.command_id.to_string(), "0190a4b2-7c1e-7d3a-9f00-1234567890ab");
  EXPECT_EQ(envelope.correlation_id, "corr");
  EXPECT_EQ(envelope.causation_id, "cause");
  EXPECT_EQ(envelope.metadata, nlohmann::json({{"user", "ada"}}));
  EXPECT_EQ(envelope.consistency, Consistency::kStrong);
  EXPECT_EQ(decoded->timeout, std::chrono::milliseconds(750));
}

TEST_F(EnvelopeDecoding, DefaultsComeFromTheCommandIdAndTheLimits) {
  auto decoded = decode(R"({"type":"CancelGiftCard","data":{"card_id":"c1"}})");
  ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
  EXPECT_FALSE(decoded->envelope.command_id.is_nil());
  EXPECT_EQ(decoded->envelope.correlation_id, decoded->envelope.command_id.to_string());
  EXPECT_EQ(decoded->envelope.causation_id, decoded->envelope.command_id.to_string());
  EXPECT_EQ(decoded->envelope.consistency, Consistency::kEventual);
  EXPECT_EQ(decoded->timeout, limits_.default_timeout);
}

// The correlation goes into every event's metadata, which the event stores refuse beyond their
// limit: it is refused here, before the command runs.
TEST_F(EnvelopeDecoding, CorrelationIdsLongerThanTheStoresTakeAreInvalidCommands) {
  auto with_correlation = [&](size_t bytes) {
    return decode(R"({"type":"CancelGiftCard","data":{"card_id":"c1"},"correlation_id":")" +
                  std::string(bytes, 'c') + R"("})");
  };
  EXPECT_TRUE(with_correlation(kMaxCorrelationIdBytes).ok());
  auto decoded = with_correlation(kMaxCorrelationIdBytes + 1);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code(), errc::kInvalidCommand);
  EXPECT_EQ(decoded.error().message(),
            "envelope field 'correlation_id' is 1025 bytes long; the limit is 1024");
}

TEST_F(EnvelopeDecoding, PayloadOverTheLimitIsCommandTooLarge) {
  limits_.max_command_bytes = 16;
  auto decoded = decode(R"({"type":"CancelGiftCard","payload":"{\"card_id\":\"c1234567890\"}"})");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().code(), errc::kCommandTooLarge);
}

// Found while fuzzing (fuzz/regressions/envelope/deep_metadata_stack_overflow): copying deeply
// nested metadata recursed once per level and overflowed the stack, killing the daemon.
TEST_F(EnvelopeDecoding, MetadataNestedDeeperThanTheLimitIsInvalidCommand) {
  EXPECT_TRUE(decode(with_metadata_depth(kMaxJsonDepth)).ok());
  for (size_t depth : {kMaxJsonDepth + 1, size_t{100000}}) {
    auto decoded = decode(with_metadata_depth(depth));
    ASSERT_FALSE(decoded.ok()) << depth;
    EXPECT_EQ(decoded.error().code(), errc::kInvalidCommand);
    EXPECT_NE(decoded.error().message().find("nests arrays and objects deeper than 128"),
              std::string::npos)
        << decoded.error().message();
  }
}

}  // namespace
}  // namespace cqrs
