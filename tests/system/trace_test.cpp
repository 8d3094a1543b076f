// Traceability through cqrsctl: a stream's history, and the causal tree of a bank transfer from
// the client's command through the process manager's commands to the transfer's completion.
#include <gtest/gtest.h>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;
constexpr int kExitRejected = 1;

class TraceTest : public DaemonTest {
 protected:
  void open(const std::string& id, int64_t balance) {
    CtlReply reply = dispatch(daemon_->port(), "OpenAccount",
                              {{"account_id", id},
                               {"owner", id},
                               {"email", id + "@example.com"},
                               {"initial_balance", balance}});
    ASSERT_EQ(reply.status(), "ok") << reply.describe();
  }
};

TEST_F(TraceTest, HistoryPrintsTheStreamAsJsonLinesOrATable) {
  CtlReply issued = dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "h1"}, {"amount", 50}});
  ASSERT_EQ(issued.status(), "ok");
  for (int idx = 0; idx < 3; ++idx) {
    ASSERT_EQ(
        dispatch(daemon_->port(), "RedeemGiftCard", {{"card_id", "h1"}, {"amount", 10}}).status(),
        "ok");
  }
  ProcessResult all = run_cqrsctl(daemon_->port(), {"history", "giftcard-h1"});
  ASSERT_EQ(all.exit_code, kExitOk) << all.describe();
  ASSERT_EQ(all.stdout_lines.size(), 4u) << all.describe();
  json first = json::parse(all.stdout_lines[0]);
  EXPECT_EQ(first["version"], 1);
  EXPECT_EQ(first["type"], "GiftCardIssued");
  EXPECT_EQ(first["data"]["amount"], 50);
  EXPECT_EQ(first["metadata"]["command_id"], issued.json["command_id"]);
  EXPECT_EQ(first["metadata"]["command_type"], "IssueGiftCard");
  EXPECT_EQ(first["time"].get<std::string>().size(), 27u) << first["time"];  // ISO, µs, Z

  ProcessResult window =
      run_cqrsctl(daemon_->port(), {"history", "giftcard-h1", "--from", "2", "--limit", "2"});
  ASSERT_EQ(window.stdout_lines.size(), 2u) << window.describe();
  EXPECT_EQ(json::parse(window.stdout_lines[0])["version"], 2);
  EXPECT_EQ(json::parse(window.stdout_lines[1])["data"]["remaining"], 30);

  ProcessResult table =
      run_cqrsctl(daemon_->port(), {"history", "giftcard-h1", "--format", "table"});
  ASSERT_EQ(table.stdout_lines.size(), 5u) << table.describe();
  EXPECT_EQ(table.stdout_lines[0].rfind("VERSION", 0), 0u);
  EXPECT_NE(table.stdout_lines[4].find("GiftCardRedeemed"), std::string::npos);

  ProcessResult bad = run_cqrsctl(daemon_->port(), {"history", "giftcard-h1", "--limit", "0"});
  EXPECT_NE(bad.exit_code, kExitOk);
  EXPECT_NE(bad.describe().find("--limit"), std::string::npos) << bad.describe();
}

// cqrsd keeps the correlation index behind its appends (schema/018): a command's correlation
// gets its row soon after, without any trace asking.
TEST_F(TraceTest, TheDaemonIndexesCorrelationsBehindItsAppends) {
  std::string correlation = new_command_id();
  CtlReply issued = dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", "ci"}, {"amount", 5}},
                             {"--correlation-id", correlation});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();
  EXPECT_TRUE(wait_until(
      [&] {
        return scalar("SELECT count(*) FROM cqrs.correlations WHERE correlation_id = $1",
                      {correlation}) == "1";
      },
      20s))
      << daemon_->stderr_text();
  EXPECT_TRUE(wait_until([&] { return scalar(kRunsNotCorrelated) == "0"; }, 20s));
  ProcessResult traced = run_cqrsctl(daemon_->port(), {"trace", correlation, "--format", "json"});
  ASSERT_EQ(traced.exit_code, kExitOk) << traced.describe();
  json trace = json::parse(traced.stdout_lines.at(0));
  ASSERT_EQ(trace["commands"].size(), 1u) << trace.dump(2);
  EXPECT_EQ(trace["commands"][0]["events"].size(), 1u) << trace.dump(2);
}

TEST_F(TraceTest, TraceShowsATransferFromRequestToCompletion) {
  open("ta", 500);
  open("tb", 0);
  std::string correlation = new_command_id();
  CtlReply requested = dispatch(
      daemon_->port(), "TransferMoney",
      {{"transfer_id", "tt"}, {"from_account", "ta"}, {"to_account", "tb"}, {"amount", 120}},
      {"--correlation-id", correlation});
  ASSERT_EQ(requested.status(), "ok") << requested.describe();
  ASSERT_TRUE(wait_until(
      [&] {
        return scalar("SELECT status FROM bank_transfers WHERE transfer_id = 'tt'") == "completed";
      },
      20s));

  ProcessResult as_json = run_cqrsctl(daemon_->port(), {"trace", correlation, "--format", "json"});
  ASSERT_EQ(as_json.exit_code, kExitOk) << as_json.describe();
  json trace = json::parse(as_json.stdout_lines.at(0));
  ASSERT_EQ(trace["commands"].size(), 1u) << trace.dump(2);
  // Follow the chain: each command's first event caused the next command.
  std::vector<std::string> chain;
  const json* command = &trace["commands"][0];
  while (command != nullptr) {
    chain.push_back((*command)["command_type"].get<std::string>());
    const json& events = (*command)["events"];
    ASSERT_FALSE(events.empty()) << trace.dump(2);
    chain.push_back(events[0]["type"].get<std::string>());
    command = events[0]["caused"].empty() ? nullptr : &events[0]["caused"][0];
  }
  EXPECT_EQ(chain, (std::vector<std::string>{"TransferMoney", "TransferRequested", "DebitAccount",
                                             "AccountDebited", "CreditAccount", "AccountCredited",
                                             "CompleteTransfer", "TransferCompleted"}))
      << trace.dump(2);
  EXPECT_EQ(trace["commands"][0]["command_id"], requested.json["command_id"]);

  ProcessResult as_tree = run_cqrsctl(daemon_->port(), {"trace", correlation});
  ASSERT_EQ(as_tree.exit_code, kExitOk) << as_tree.describe();
  ASSERT_EQ(as_tree.stdout_lines.size(), 8u) << as_tree.describe();
  EXPECT_EQ(as_tree.stdout_lines[0].rfind("command TransferMoney ", 0), 0u) << as_tree.describe();
  EXPECT_EQ(as_tree.stdout_lines[2].rfind("    command DebitAccount ", 0), 0u)
      << as_tree.describe();
  EXPECT_EQ(as_tree.stdout_lines[7].rfind("              event TransferCompleted ", 0), 0u)
      << as_tree.describe();

  ProcessResult unknown = run_cqrsctl(daemon_->port(), {"trace", new_command_id()});
  EXPECT_EQ(unknown.exit_code, kExitRejected) << unknown.describe();
  EXPECT_NE(unknown.stderr_text.find("no events with correlation id"), std::string::npos);
}

}  // namespace
}  // namespace cqrs::system_test
