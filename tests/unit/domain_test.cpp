// The domain registry: command decoding with field-naming errors, addressing, lookups.
#include "cqrs/domain/domain.hpp"

#include <gtest/gtest.h>

#include "bank/bank.hpp"
#include "cqrs/append_validation.hpp"
#include "giftcard/giftcard.hpp"

namespace cqrs {
namespace {

class DomainDecoding : public ::testing::Test {
 protected:
  void SetUp() override { giftcard::register_domain(domain_); }
  Error decode_error(std::string_view type, std::string_view payload) {
    auto decoded = domain_.decode(type, payload);
    EXPECT_FALSE(decoded.ok()) << type << " " << payload << " decoded";
    return decoded.ok() ? Error::internal("none", "") : decoded.error();
  }
  Domain domain_;
};

TEST_F(DomainDecoding, DecodesAndAddressesACommand) {
  auto decoded = domain_.decode("RedeemGiftCard", R"({"card_id":"c1","amount":30})");
  ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
  EXPECT_EQ(decoded->aggregate_id, "c1");
  EXPECT_EQ(decoded->stream_id, "giftcard-c1");
  EXPECT_EQ(decoded->type->name, "RedeemGiftCard");
  EXPECT_EQ(static_cast<const giftcard::RedeemGiftCard*>(decoded->value.get())->amount, 30);
}

TEST_F(DomainDecoding, UnknownTypeNamesTheKnownOnes) {
  Error error = decode_error("BuyPony", "{}");
  EXPECT_EQ(error.code(), errc::kUnregisteredCommand);
  EXPECT_NE(error.message().find("BuyPony"), std::string::npos);
  EXPECT_NE(error.message().find("IssueGiftCard"), std::string::npos);
}

TEST_F(DomainDecoding, GarbageJsonIsInvalidCommand) {
  Error error = decode_error("IssueGiftCard", "{card_id: c1");
  EXPECT_EQ(error.code(), errc::kInvalidCommand);
  EXPECT_NE(error.message().find("not valid JSON"), std::string::npos) << error.message();
}

// Found by fuzzing (fuzz/regressions/*/number_beyond_double-*): the parser reports such a
// number with out_of_range rather than parse_error, and it escaped decode().
TEST_F(DomainDecoding, NumberBeyondADoubleIsInvalidCommand) {
  Error error = decode_error("IssueGiftCard", R"({"card_id":"c1","amount":1e999})");
  EXPECT_EQ(error.code(), errc::kInvalidCommand);
  EXPECT_NE(error.message().find("not valid JSON"), std::string::npos) << error.message();
}

TEST_F(DomainDecoding, PayloadNestedDeeperThanTheLimitIsInvalidCommand) {
  auto nested = [](size_t depth) {
    return R"({"card_id":"c1","x":)" + std::string(depth - 1, '[') + std::string(depth - 1, ']') +
           "}";
  };
  EXPECT_TRUE(domain_.decode("CancelGiftCard", nested(kMaxJsonDepth)).ok());
  Error error = decode_error("CancelGiftCard", nested(kMaxJsonDepth + 1));
  EXPECT_EQ(error.code(), errc::kInvalidCommand);
  EXPECT_NE(error.message().find("nests arrays and objects deeper than 128"), std::string::npos)
      << error.message();
  EXPECT_EQ(decode_error("CancelGiftCard", nested(200000)).code(), errc::kInvalidCommand);
}

TEST_F(DomainDecoding, MissingFieldIsNamed) {
  Error error = decode_error("IssueGiftCard", R"({"card_id":"c1"})");
  EXPECT_EQ(error.code(), errc::kInvalidCommand);
  EXPECT_NE(error.message().find("field 'amount' is missing"), std::string::npos)
      << error.message();
}

TEST_F(DomainDecoding, MistypedFieldIsNamedWithBothTypes) {
  Error error = decode_error("IssueGiftCard", R"({"card_id":"c1","amount":"ten"})");
  EXPECT_EQ(error.code(), errc::kInvalidCommand);
  EXPECT_NE(error.message().find("field 'amount' must be an integer, got string"),
            std::string::npos)
      << error.message();
}

TEST_F(DomainDecoding, FractionalAndOverflowingIntegersAreRejected) {
  EXPECT_NE(decode_error("IssueGiftCard", R"({"card_id":"c1","amount":1.5})")
                .message()
                .find("must be an integer"),
            std::string::npos);
  EXPECT_NE(decode_error("IssueGiftCard", R"({"card_id":"c1","amount":9223372036854775808})")
                .message()
                .find("out of range"),
            std::string::npos);
}

TEST_F(DomainDecoding, IdentityFieldMustBeANonEmptyString) {
  EXPECT_NE(decode_error("CancelGiftCard", R"({"card_id":""})").message().find("card_id"),
            std::string::npos);
  EXPECT_NE(decode_error("CancelGiftCard", R"({"card_id":7})").message().find("card_id"),
            std::string::npos);
  EXPECT_NE(decode_error("CancelGiftCard", "{}").message().find("'card_id' is missing"),
            std::string::npos);
}

TEST_F(DomainDecoding, PayloadMustBeAnObject) {
  EXPECT_NE(decode_error("CancelGiftCard", "[1]").message().find("must be a JSON object"),
            std::string::npos);
}

TEST_F(DomainDecoding, AggregatesAreFoundByNameOrPrefix) {
  ASSERT_NE(domain_.find_aggregate("GiftCard"), nullptr);
  EXPECT_EQ(domain_.find_aggregate("giftcard"), domain_.find_aggregate("GiftCard"));
  EXPECT_EQ(domain_.find_aggregate("nope"), nullptr);
}

TEST_F(DomainDecoding, RegisteringTheSameAggregateTwiceIsAProgrammingError) {
  EXPECT_THROW(giftcard::register_domain(domain_), std::logic_error);
}

// An aggregate's name is its snapshots' state type: a name the stores would refuse there is a
// programming error at registration, not a snapshot refused at every save.
TEST(DomainRegistration, AggregateNamesAreValidStateTypes) {
  Domain domain;
  EXPECT_THROW(domain.aggregate<giftcard::GiftCard>("", "a", "card_id"), std::logic_error);
  EXPECT_THROW(domain.aggregate<giftcard::GiftCard>(std::string("G\0c", 3), "b", "card_id"),
               std::logic_error);
  EXPECT_THROW(domain.aggregate<giftcard::GiftCard>("\xff", "c", "card_id"), std::logic_error);
  EXPECT_THROW(domain.aggregate<giftcard::GiftCard>(std::string(kMaxEventTypeBytes + 1, 'G'), "d",
                                                    "card_id"),
               std::logic_error);
  EXPECT_NO_THROW(
      domain.aggregate<giftcard::GiftCard>(std::string(kMaxEventTypeBytes, 'G'), "e", "card_id"));
}

TEST_F(DomainDecoding, OnlyHandledCommandsCanBeDeclaredCreating) {
  EXPECT_TRUE(domain_.find_command("IssueGiftCard")->creates);
  EXPECT_FALSE(domain_.find_command("RedeemGiftCard")->creates);
  Domain other;
  auto builder = other.aggregate<giftcard::GiftCard>("GiftCard", "giftcard", "card_id");
  builder.handles<giftcard::RedeemGiftCard>();
  EXPECT_THROW(builder.creates<giftcard::IssueGiftCard>(), std::logic_error);
}

TEST_F(DomainDecoding, OnlyHandledCommandsCanBeDeclaredInternal) {
  Domain other;
  auto builder = other.aggregate<giftcard::GiftCard>("GiftCard", "giftcard", "card_id");
  builder.handles<giftcard::RedeemGiftCard>();
  EXPECT_THROW(builder.internal<giftcard::IssueGiftCard>(), std::logic_error);
  builder.internal<giftcard::RedeemGiftCard>();
  EXPECT_TRUE(other.find_command("RedeemGiftCard")->internal);
}

// The transfer process's steps are internal in the bank domain: by hand they could take money
// to nowhere or end a transfer whose money is on its way. What clients send is not.
TEST(BankDomain, TheTransferProcessStepsAreInternal) {
  Domain domain;
  bank::register_domain(domain);
  for (const char* step :
       {"DebitAccount", "CreditAccount", "RefundAccount", "CompleteTransfer", "FailTransfer"}) {
    ASSERT_NE(domain.find_command(step), nullptr) << step;
    EXPECT_TRUE(domain.find_command(step)->internal) << step;
  }
  for (const char* command :
       {"OpenAccount", "DepositMoney", "WithdrawMoney", "CloseAccount", "TransferMoney"}) {
    ASSERT_NE(domain.find_command(command), nullptr) << command;
    EXPECT_FALSE(domain.find_command(command)->internal) << command;
  }
}

TEST(AggregateInstance, RebuildsStateFromStoredEventsAndSnapshots) {
  Domain domain;
  giftcard::register_domain(domain);
  const AggregateType* type = domain.find_aggregate("giftcard");
  auto card = type->create();
  ASSERT_TRUE(card->apply("GiftCardIssued", {{"card_id", "c1"}, {"amount", 100}}).ok());
  ASSERT_TRUE(
      card->apply("GiftCardRedeemed", {{"card_id", "c1"}, {"amount", 30}, {"remaining", 70}}).ok());
  EXPECT_EQ(card->state()["remaining"], 70);
  auto unknown = card->apply("GiftCardLost", nlohmann::json::object());
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), errc::kInvalidEvent);
  auto copy = type->create();
  ASSERT_TRUE(copy->restore(card->state()).ok());
  EXPECT_EQ(copy->state(), card->state());
}

}  // namespace
}  // namespace cqrs
