// Concurrent redemptions of one gift card: many cqrsctl processes at once, one windowed stdin
// batch, and two cqrsd processes sharing one database. The balance must never go negative,
// every successful redemption must be stored exactly once, and versions must have no gaps.
#include <gtest/gtest.h>

#include <latch>
#include <set>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;

constexpr int64_t kCardValue = 100;
constexpr int64_t kRedeemAmount = 3;
constexpr int kRedemptions = 50;
constexpr int kExpectedOk = kCardValue / kRedeemAmount;  // 33, leaving 1

// Tallies replies to redemptions of one card.
struct Tally {
  int ok = 0;
  int insufficient_balance = 0;
  int gift_card_empty = 0;
  int too_many_attempts = 0;
  std::vector<std::string> unexpected;  // anything else, described
  std::set<int64_t> ok_versions;
  std::vector<std::pair<std::string, size_t>> ok_commands;  // id, number of events announced

  void add(const json& reply, int exit_code) {
    std::string status = reply.is_object() ? reply.value("status", "") : "";
    std::string error = reply.is_object() ? reply.value("error", "") : "";
    if (status == "ok") {
      ++ok;
      ok_versions.insert(reply.value("version", int64_t{-1}));
      ok_commands.emplace_back(reply.value("command_id", ""), reply.value("events", json()).size());
      if (exit_code != 0 && exit_code != -1) {
        unexpected.push_back("ok with exit code " + std::to_string(exit_code));
      }
    } else if (status == "rejected" && error == "insufficient_balance") {
      ++insufficient_balance;
    } else if (status == "rejected" && error == "gift_card_empty") {
      ++gift_card_empty;
    } else if (status == "error" && error == "too_many_attempts") {
      ++too_many_attempts;
    } else {
      unexpected.push_back(reply.dump() + " (exit " + std::to_string(exit_code) + ")");
    }
  }
};

std::string describe(const Tally& tally) {
  std::string out = "ok " + std::to_string(tally.ok) + ", insufficient_balance " +
                    std::to_string(tally.insufficient_balance) + ", gift_card_empty " +
                    std::to_string(tally.gift_card_empty) + ", too_many_attempts " +
                    std::to_string(tally.too_many_attempts);
  for (const auto& each : tally.unexpected) out += "\n  unexpected: " + each;
  return out;
}

class ConcurrencyTest : public SystemTest {
 protected:
  // Checks the stored stream of `card_id` after the redemptions tallied in `tally`.
  void expect_consistent_card(const std::string& card_id, int64_t issued, const Tally& tally) {
    auto stream = events("giftcard-" + card_id);
    EXPECT_TRUE(versions_are_contiguous(stream));
    EXPECT_EQ(scalar("SELECT count(*) FROM (SELECT stream_id, stream_version FROM cqrs.events "
                     "GROUP BY 1, 2 HAVING count(*) > 1) AS duplicates"),
              "0");
    GiftCardFold fold = fold_gift_card(stream);
    EXPECT_TRUE(fold.problems.empty()) << ::testing::PrintToString(fold.problems);
    int64_t remaining = fold.state_reply["state"]["remaining"].get<int64_t>();
    EXPECT_GE(remaining, 0);
    EXPECT_LE(fold.redeemed_total, issued);
    EXPECT_EQ(fold.redemptions, tally.ok) << describe(tally);
    EXPECT_EQ(tally.ok * kRedeemAmount, issued - remaining) << describe(tally);
    EXPECT_EQ(static_cast<int>(tally.ok_versions.size()), tally.ok)
        << "two successful replies claim the same version: " << describe(tally);
    for (const auto& [id, announced] : tally.ok_commands) {
      EXPECT_EQ(events_of_command(stream, id).size(), announced) << "command " << id;
    }
  }
};

TEST_F(ConcurrencyTest, FiftyConcurrentCqrsctlRedemptionsOfThreeFromOneHundredLeaveOne) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  CtlReply issued = dispatch(daemon->port(), "IssueGiftCard", {{"card_id", "c"}, {"amount", 100}});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();

  std::vector<CtlReply> replies(kRedemptions);
  std::latch go(kRedemptions);
  std::vector<std::thread> clients;
  for (int idx = 0; idx < kRedemptions; ++idx) {
    clients.emplace_back([&, idx] {
      go.arrive_and_wait();  // start all processes at once
      replies[idx] =
          dispatch(daemon->port(), "RedeemGiftCard", {{"card_id", "c"}, {"amount", kRedeemAmount}});
    });
  }
  for (auto& client : clients) client.join();

  Tally tally;
  for (const auto& reply : replies) {
    tally.add(reply.json, reply.exit_code());
    if (reply.status() == "rejected") {
      EXPECT_EQ(reply.exit_code(), 1) << reply.describe();
    }
  }
  EXPECT_EQ(tally.ok, kExpectedOk) << describe(tally);
  EXPECT_EQ(tally.insufficient_balance, kRedemptions - kExpectedOk) << describe(tally);
  EXPECT_TRUE(tally.unexpected.empty()) << describe(tally);
  std::set<int64_t> expected_versions;
  for (int64_t version = 2; version <= kExpectedOk + 1; ++version) {
    expected_versions.insert(version);
  }
  EXPECT_EQ(tally.ok_versions, expected_versions);

  auto stream = events("giftcard-c");
  ASSERT_EQ(stream.size(), static_cast<size_t>(kExpectedOk + 1));
  EXPECT_EQ(stream.back().version, kExpectedOk + 1);
  EXPECT_EQ(fold_gift_card(stream).state_reply["state"]["remaining"], 1);
  expect_consistent_card("c", kCardValue, tally);

  CtlReply state = query_state(daemon->port(), "giftcard", "c");
  EXPECT_EQ(state.json, fold_gift_card(stream).state_reply) << state.describe();
  daemon->stop();
}

TEST_F(ConcurrencyTest, FiftyRedemptionsInOneWindowedStdinBatchLeaveOne) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  CtlReply issued = dispatch(daemon->port(), "IssueGiftCard", {{"card_id", "w"}, {"amount", 100}});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();

  std::vector<std::string> lines, ids;
  for (int idx = 0; idx < kRedemptions; ++idx) {
    ids.push_back(new_command_id());
    lines.push_back(
        envelope_line("RedeemGiftCard", {{"card_id", "w"}, {"amount", kRedeemAmount}}, ids.back()));
  }
  BatchReply batch = dispatch_batch(daemon->port(), lines, kRedemptions);
  EXPECT_EQ(batch.process.exit_code, 1) << "the worst result is a rejection\n"
                                        << batch.process.describe();
  ASSERT_EQ(batch.replies.size(), lines.size()) << batch.process.describe();

  Tally tally;
  for (size_t idx = 0; idx < batch.replies.size(); ++idx) {
    tally.add(batch.replies[idx], -1);
    EXPECT_EQ(batch.replies[idx].value("command_id", ""), ids[idx])
        << "result lines come in input order";
  }
  EXPECT_EQ(tally.ok, kExpectedOk) << describe(tally);
  EXPECT_EQ(tally.insufficient_balance, kRedemptions - kExpectedOk) << describe(tally);
  EXPECT_TRUE(tally.unexpected.empty()) << describe(tally);

  auto stream = events("giftcard-w");
  ASSERT_EQ(stream.size(), static_cast<size_t>(kExpectedOk + 1));
  EXPECT_EQ(stream.back().version, kExpectedOk + 1);
  EXPECT_EQ(fold_gift_card(stream).state_reply["state"]["remaining"], 1);
  expect_consistent_card("w", kCardValue, tally);
  daemon->stop();
}

TEST_F(ConcurrencyTest, TwoDaemonsOnOneDatabaseRedeemingOneCardKeepTheBalanceConsistent) {
  constexpr int64_t kIssued = 300;
  constexpr int kPerDaemon = 60;  // 120 x 3 = 360 requested of 300
  auto first = start_daemon();
  ASSERT_NE(first, nullptr);
  auto second = start_daemon();
  ASSERT_NE(second, nullptr);
  CtlReply issued =
      dispatch(first->port(), "IssueGiftCard", {{"card_id", "shared"}, {"amount", kIssued}});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();

  // Both daemons load the card before the race, so each holds a cached state the other makes
  // stale.
  for (Daemon* daemon : {first.get(), second.get()}) {
    CtlReply state = query_state(daemon->port(), "giftcard", "shared");
    ASSERT_EQ(state.json.value("version", int64_t{-1}), 1) << state.describe();
  }

  std::vector<BatchReply> batches(2);
  std::latch go(2);
  std::vector<std::thread> clients;
  Daemon* daemons[] = {first.get(), second.get()};
  for (int side = 0; side < 2; ++side) {
    clients.emplace_back([&, side] {
      std::vector<std::string> lines;
      for (int idx = 0; idx < kPerDaemon; ++idx) {
        lines.push_back(envelope_line("RedeemGiftCard",
                                      {{"card_id", "shared"}, {"amount", kRedeemAmount}},
                                      new_command_id()));
      }
      go.arrive_and_wait();
      batches[side] = dispatch_batch(daemons[side]->port(), lines, 16);
    });
  }
  for (auto& client : clients) client.join();

  Tally tally;
  for (const auto& batch : batches) {
    ASSERT_EQ(batch.replies.size(), static_cast<size_t>(kPerDaemon)) << batch.process.describe();
    for (const auto& reply : batch.replies) tally.add(reply, -1);
  }
  EXPECT_TRUE(tally.unexpected.empty()) << describe(tally);
  expect_consistent_card("shared", kIssued, tally);
  GiftCardFold fold = fold_gift_card(events("giftcard-shared"));
  if (tally.too_many_attempts == 0) {
    // Demand exceeds the balance and nothing gave up: the whole value was redeemed.
    EXPECT_EQ(fold.state_reply["state"]["remaining"], 0) << describe(tally);
    EXPECT_EQ(tally.ok, kIssued / kRedeemAmount) << describe(tally);
  }
  RecordProperty("too_many_attempts", tally.too_many_attempts);

  // A daemon that starts now reads exactly what the store holds.
  auto third = start_daemon();
  ASSERT_NE(third, nullptr);
  CtlReply state = query_state(third->port(), "giftcard", "shared");
  EXPECT_EQ(state.json, fold.state_reply) << state.describe();
  for (Daemon* daemon : {first.get(), second.get(), third.get()}) daemon->stop();
}

}  // namespace
}  // namespace cqrs::system_test
