// Idempotent dispatch through real processes: a command id dispatched again returns the first
// outcome and stores nothing new, within one daemon, within one windowed batch, and across a
// daemon restart on the same database.
#include <gtest/gtest.h>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;

class IdempotencyTest : public SystemTest {};

TEST_F(IdempotencyTest, SameCommandIdTwiceGivesTheIdenticalReplyAndOneSetOfEvents) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  std::string issue_id = new_command_id();
  std::string redeem_id = new_command_id();
  std::string rejected_id = new_command_id();
  json issue = {{"card_id", "i1"}, {"amount", 100}};
  json redeem = {{"card_id", "i1"}, {"amount", 40}};
  json too_much = {{"card_id", "i1"}, {"amount", 1000}};

  CtlReply issued = dispatch(port, "IssueGiftCard", issue, {"--command-id", issue_id});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();
  CtlReply redeemed = dispatch(port, "RedeemGiftCard", redeem, {"--command-id", redeem_id});
  ASSERT_EQ(redeemed.status(), "ok") << redeemed.describe();
  CtlReply rejected = dispatch(port, "RedeemGiftCard", too_much, {"--command-id", rejected_id});
  ASSERT_EQ(rejected.error(), "insufficient_balance") << rejected.describe();

  CtlReply issued_again = dispatch(port, "IssueGiftCard", issue, {"--command-id", issue_id});
  CtlReply redeemed_again = dispatch(port, "RedeemGiftCard", redeem, {"--command-id", redeem_id});
  CtlReply rejected_again =
      dispatch(port, "RedeemGiftCard", too_much, {"--command-id", rejected_id});

  EXPECT_EQ(issued_again.exit_code(), 0) << issued_again.describe();
  EXPECT_EQ(issued_again.json, issued.json) << "not gift_card_exists: the recorded outcome";
  EXPECT_EQ(redeemed_again.exit_code(), 0) << redeemed_again.describe();
  EXPECT_EQ(redeemed_again.json, redeemed.json);
  EXPECT_EQ(redeemed_again.json.value("version", int64_t{0}), 2);
  EXPECT_EQ(rejected_again.exit_code(), 1) << rejected_again.describe();
  EXPECT_EQ(rejected_again.json, rejected.json);

  auto stored = events("giftcard-i1");
  ASSERT_EQ(stored.size(), 2u) << "the repeated redemption must not be applied again";
  EXPECT_TRUE(versions_are_contiguous(stored));
  EXPECT_EQ(events_of_command(stored, issue_id).size(), 1u);
  EXPECT_EQ(events_of_command(stored, redeem_id).size(), 1u);
  EXPECT_TRUE(events_of_command(stored, rejected_id).empty());

  CtlReply state = query_state(port, "giftcard", "i1");
  EXPECT_EQ(state.json["state"].value("remaining", int64_t{-1}), 60) << state.describe();
  daemon->stop();
}

TEST_F(IdempotencyTest, DuplicateCommandIdsInOneWindowedBatchAreAppliedOnce) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  CtlReply issued = dispatch(daemon->port(), "IssueGiftCard", {{"card_id", "i2"}, {"amount", 100}});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();

  std::string id = new_command_id();
  std::vector<std::string> lines(
      8, envelope_line("RedeemGiftCard", {{"card_id", "i2"}, {"amount", 10}}, id));
  BatchReply batch = dispatch_batch(daemon->port(), lines, lines.size());
  EXPECT_EQ(batch.process.exit_code, 0) << batch.process.describe();
  ASSERT_EQ(batch.replies.size(), lines.size()) << batch.process.describe();
  for (const auto& reply : batch.replies) {
    EXPECT_EQ(reply, batch.replies.front()) << "every copy gets the first outcome";
  }
  EXPECT_EQ(batch.replies.front().value("status", ""), "ok");
  EXPECT_EQ(batch.replies.front().value("version", int64_t{0}), 2);

  auto stored = events("giftcard-i2");
  EXPECT_EQ(stored.size(), 2u);
  EXPECT_EQ(events_of_command(stored, id).size(), 1u);
  daemon->stop();
}

TEST_F(IdempotencyTest, SameCommandIdAfterADaemonRestartReturnsTheRecordedReply) {
  std::string issue_id = new_command_id();
  std::string empty_id = new_command_id();
  json issue = {{"card_id", "i3"}, {"amount", 100}};
  json redeem_all = {{"card_id", "i3"}, {"amount", 100}};
  CtlReply issued, emptied;
  {
    auto daemon = start_daemon();
    ASSERT_NE(daemon, nullptr);
    issued = dispatch(daemon->port(), "IssueGiftCard", issue, {"--command-id", issue_id});
    ASSERT_EQ(issued.status(), "ok") << issued.describe();
    emptied = dispatch(daemon->port(), "RedeemGiftCard", redeem_all, {"--command-id", empty_id});
    ASSERT_EQ(emptied.status(), "ok") << emptied.describe();
    ASSERT_EQ(emptied.json.value("version", int64_t{0}), 3) << emptied.describe();
    EXPECT_EQ(daemon->stop(), 0);
  }

  auto restarted = start_daemon();
  ASSERT_NE(restarted, nullptr);
  // The card is empty now, so deciding the redemption again would reject it: the reply must be
  // the recorded one.
  CtlReply emptied_again =
      dispatch(restarted->port(), "RedeemGiftCard", redeem_all, {"--command-id", empty_id});
  EXPECT_EQ(emptied_again.exit_code(), 0) << emptied_again.describe();
  EXPECT_EQ(emptied_again.json, emptied.json);
  CtlReply issued_again =
      dispatch(restarted->port(), "IssueGiftCard", issue, {"--command-id", issue_id});
  EXPECT_EQ(issued_again.exit_code(), 0) << issued_again.describe();
  EXPECT_EQ(issued_again.json, issued.json);

  auto stored = events("giftcard-i3");
  EXPECT_EQ(stored.size(), 3u);
  EXPECT_TRUE(versions_are_contiguous(stored));
  EXPECT_EQ(events_of_command(stored, issue_id).size(), 1u);
  EXPECT_EQ(events_of_command(stored, empty_id).size(), 2u);  // GiftCardRedeemed + Emptied

  // A new command id is decided against the reloaded state.
  CtlReply fresh =
      dispatch(restarted->port(), "RedeemGiftCard", {{"card_id", "i3"}, {"amount", 1}});
  EXPECT_EQ(fresh.error(), "gift_card_empty") << fresh.describe();
  restarted->stop();
}

}  // namespace
}  // namespace cqrs::system_test
