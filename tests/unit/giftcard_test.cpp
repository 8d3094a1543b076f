// Gift card rules, through the given/when/then helper: every outcome and rejection code.
#include "giftcard/giftcard.hpp"

#include <gtest/gtest.h>

#include "cqrs/testing/aggregate_case.hpp"

namespace giftcard {
namespace {

using Case = cqrs::testing::AggregateCase<GiftCard>;

TEST(GiftCard, IssuingANewCardRecordsItsValue) {
  Case card(register_domain);
  EXPECT_TRUE(card.when(IssueGiftCard{"c1", 5000}).then_events(GiftCardIssued{"c1", 5000}));
  EXPECT_EQ(card.state().remaining, 5000);
  EXPECT_EQ(card.state().status, "active");
}

TEST(GiftCard, IssuingWithANonPositiveAmountIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.when(IssueGiftCard{"c1", 0}).then_rejected("invalid_amount"));
  EXPECT_TRUE(card.when(IssueGiftCard{"c1", -5}).then_rejected("invalid_amount"));
}

TEST(GiftCard, IssuingTwiceIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
                  .when(IssueGiftCard{"c1", 100})
                  .then_rejected("gift_card_exists"));
}

TEST(GiftCard, RedeemingPartOfTheValueLeavesTheRest) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
                  .when(RedeemGiftCard{"c1", 30})
                  .then_events(GiftCardRedeemed{"c1", 30, 70}));
  EXPECT_EQ(card.state().remaining, 70);
}

TEST(GiftCard, RedeemingTheRestEmptiesTheCard) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100}, GiftCardRedeemed{"c1", 40, 60})
                  .when(RedeemGiftCard{"c1", 60})
                  .then_events(GiftCardRedeemed{"c1", 60, 0}, GiftCardEmptied{"c1"}));
  EXPECT_EQ(card.state().status, "emptied");
}

TEST(GiftCard, RedeemMoreThanBalanceIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
                  .when(RedeemGiftCard{"c1", 101})
                  .then_rejected("insufficient_balance"));
  EXPECT_NE(card.outcome().rejection().message.find("100"), std::string::npos);
}

TEST(GiftCard, RedeemingAnUnknownCardIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.when(RedeemGiftCard{"c1", 1}).then_rejected("gift_card_not_found"));
}

TEST(GiftCard, RedeemingANonPositiveAmountIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
                  .when(RedeemGiftCard{"c1", 0})
                  .then_rejected("invalid_amount"));
}

TEST(GiftCard, RedeemingACancelledCardIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100}, GiftCardCancelled{"c1", 100})
                  .when(RedeemGiftCard{"c1", 1})
                  .then_rejected("gift_card_cancelled"));
}

TEST(GiftCard, RedeemingAnEmptyCardIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 10})
                  .when(RedeemGiftCard{"c1", 10})
                  .when(RedeemGiftCard{"c1", 1})
                  .then_rejected("gift_card_empty"));
}

TEST(GiftCard, CancellingRecordsWhatWasLeft) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100}, GiftCardRedeemed{"c1", 25, 75})
                  .when(CancelGiftCard{"c1"})
                  .then_events(GiftCardCancelled{"c1", 75}));
  EXPECT_EQ(card.state().status, "cancelled");
}

TEST(GiftCard, CancellingAnUnknownCardIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.when(CancelGiftCard{"c1"}).then_rejected("gift_card_not_found"));
}

TEST(GiftCard, CancellingTwiceIsRejected) {
  Case card(register_domain);
  EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
                  .when(CancelGiftCard{"c1"})
                  .when(CancelGiftCard{"c1"})
                  .then_rejected("gift_card_cancelled"));
}

}  // namespace
}  // namespace giftcard
