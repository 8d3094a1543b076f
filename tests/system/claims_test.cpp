// Unique claims end to end with the bank demo: an e-mail owns one open account at a time, across
// cqrsd processes, through group commit, and across restarts.
#include <gtest/gtest.h>

#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

json open_account(const std::string& account_id, const std::string& email) {
  return {{"account_id", account_id}, {"owner", "o"}, {"email", email}, {"initial_balance", 0}};
}

class ClaimsTest : public SystemTest {};

TEST_F(ClaimsTest, TwentyConcurrentOpeningsOverTwoDaemonsLetExactlyOneOwnTheEmail) {
  auto first = start_daemon();
  auto second = start_daemon();
  ASSERT_TRUE(first && second);
  // The same address, spelled differently: the scope normalizes before comparing.
  const std::vector<std::string> spellings = {"same@example.com", "Same@Example.com",
                                              " SAME@example.COM "};
  std::vector<std::string> lines[2];
  for (int idx = 0; idx < 20; ++idx) {
    lines[idx % 2].push_back(
        envelope_line("OpenAccount", open_account("dup-" + std::to_string(idx), spellings[idx % 3]),
                      new_command_id()));
  }
  BatchReply replies[2];
  std::thread other([&] { replies[1] = dispatch_batch(second->port(), lines[1], 10); });
  replies[0] = dispatch_batch(first->port(), lines[0], 10);
  other.join();

  int ok = 0;
  int taken = 0;
  std::string owner;
  for (int daemon = 0; daemon < 2; ++daemon) {
    ASSERT_EQ(replies[daemon].replies.size(), 10u) << replies[daemon].process.describe();
    for (const json& reply : replies[daemon].replies) {
      if (reply.value("status", "") == "ok") {
        ++ok;
        owner = reply.value("aggregate_id", "");
      } else {
        EXPECT_EQ(reply.value("status", ""), "rejected") << reply;
        EXPECT_EQ(reply.value("error", ""), "email_taken") << reply;
        EXPECT_NE(reply.value("message", "").find("same@example.com"), std::string::npos) << reply;
        ++taken;
      }
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(taken, 19);
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events WHERE event_type = 'AccountOpened'"), "1");
  EXPECT_EQ(scalar("SELECT stream_id FROM cqrs.unique_claims WHERE scope = 'account_email'"
                   " AND value = 'same@example.com'"),
            "account-" + owner);

  // Closing frees it; a new account may take it, and the old owner's id cannot reopen.
  CtlReply closed = dispatch(first->port(), "CloseAccount", {{"account_id", owner}});
  ASSERT_EQ(closed.status(), "ok") << closed.describe();
  CtlReply reopened =
      dispatch(second->port(), "OpenAccount", open_account("new-owner", "same@example.com"));
  EXPECT_EQ(reopened.status(), "ok") << reopened.describe();
  EXPECT_TRUE(wait_until(
      [&] {
        return scalar("SELECT email FROM bank_accounts WHERE account_id = 'new-owner'") ==
               "same@example.com";
      },
      20s));

  // After a restart of both, the claim still holds, and a retried command id answers the same.
  first->stop();
  second->stop();
  auto again = start_daemon();
  ASSERT_NE(again, nullptr);
  std::string command_id = new_command_id();
  CtlReply refused =
      dispatch(again->port(), "OpenAccount", open_account("late", "same@example.com"),
               {"--command-id", command_id});
  EXPECT_EQ(refused.error(), "email_taken") << refused.describe();
  CtlReply retried =
      dispatch(again->port(), "OpenAccount", open_account("late", "same@example.com"),
               {"--command-id", command_id});
  EXPECT_EQ(retried.json, refused.json) << "a retried command id got another answer";
  again->stop();
}

TEST_F(ClaimsTest, AnInvalidEmailIsRejectedWithoutAClaim) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  CtlReply missing = dispatch(daemon->port(), "OpenAccount",
                              {{"account_id", "m"}, {"owner", "o"}, {"initial_balance", 0}});
  EXPECT_EQ(missing.error(), "invalid_command") << missing.describe();
  EXPECT_NE(missing.json.value("message", "").find("email"), std::string::npos)
      << missing.describe();
  CtlReply bad = dispatch(daemon->port(), "OpenAccount", open_account("b", "not-an-address"));
  EXPECT_EQ(bad.error(), "invalid_email") << bad.describe();
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.unique_claims"), "0");
  daemon->stop();
}

}  // namespace
}  // namespace cqrs::system_test
