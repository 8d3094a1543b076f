// The connection between cqrsctl and cqrsd: many processes connecting at once must each receive
// their reply (a lost one shows up as cqrsctl's client-side "timeout" although cqrsd answered),
// and a batch client must give up promptly once the daemon is gone.
#include <gtest/gtest.h>

#include <latch>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

constexpr int kClients = 50;
constexpr int kRounds = 5;

class TransportTest : public SystemTest {
 protected:
  // kRounds rounds of kClients concurrent `cqrsctl state` calls; returns the failures.
  std::vector<std::string> run_rounds(uint16_t port) {
    std::vector<std::string> failures;
    for (int round = 0; round < kRounds; ++round) {
      std::vector<CtlReply> replies(kClients);
      std::latch go(kClients);
      std::vector<std::thread> clients;
      for (int idx = 0; idx < kClients; ++idx) {
        clients.emplace_back([&, idx] {
          go.arrive_and_wait();
          replies[idx] = run_cqrsctl_state(port);
        });
      }
      for (auto& client : clients) client.join();
      for (int idx = 0; idx < kClients; ++idx) {
        if (replies[idx].exit_code() != 0 || replies[idx].json.value("version", -1) != 1) {
          failures.push_back("round " + std::to_string(round) + " client " + std::to_string(idx) +
                             ": " + replies[idx].describe());
        }
      }
    }
    return failures;
  }

  // A short client timeout: a lost reply costs 3 s instead of 6.
  static CtlReply run_cqrsctl_state(uint16_t port) {
    return query_state(port, "giftcard", "t", {"--timeout-ms", "2000"});
  }
};

TEST_F(TransportTest, FiftyClientsConnectingAtOnceEachReceiveTheirReply) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(dispatch(daemon->port(), "IssueGiftCard", {{"card_id", "t"}, {"amount", 1}}).status(),
            "ok");
  auto failures = run_rounds(daemon->port());
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << kClients * kRounds
                                << " replies lost; first:\n"
                                << failures.front();
  daemon->stop();
}

TEST_F(TransportTest, BatchClientGivesUpPromptlyOnceTheDaemonIsKilled) {
  using namespace std::chrono_literals;
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  ASSERT_EQ(dispatch(port, "IssueGiftCard", {{"card_id", "b"}, {"amount", 1'000'000}}).status(),
            "ok");
  std::vector<std::string> lines;
  for (int idx = 0; idx < 3000; ++idx) {
    lines.push_back(
        envelope_line("RedeemGiftCard", {{"card_id", "b"}, {"amount", 1}}, new_command_id()));
  }
  BatchReply batch;
  std::chrono::steady_clock::time_point finished;
  std::thread client([&] {
    batch = dispatch_batch(port, lines, 64, 20s, {"--timeout-ms", "2000"});
    finished = std::chrono::steady_clock::now();
  });
  bool loaded =
      wait_until([&] { return std::stoi(scalar("SELECT count(*) FROM cqrs.events")) >= 200; }, 15s);
  daemon->kill9();
  auto killed = std::chrono::steady_clock::now();
  client.join();
  ASSERT_TRUE(loaded) << "the batch did not get going";

  // With the connection gone no answer can come: at most the requests already in flight may
  // wait out their timeout (2 s + 1 s), not every remaining window in turn.
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(finished - killed);
  EXPECT_FALSE(batch.process.timed_out)
      << "cqrsctl was still waiting 20 s after it started; " << batch.replies.size() << " of "
      << lines.size() << " lines answered";
  EXPECT_LT(waited.count(), 8000) << "cqrsctl went on waiting " << waited.count()
                                  << " ms after cqrsd died";
  if (!batch.process.timed_out) {
    EXPECT_EQ(batch.process.exit_code, 2) << "lines after the kill end in errors";
    ASSERT_EQ(batch.replies.size(), lines.size());
    EXPECT_EQ(batch.replies.back().value("status", ""), "error") << batch.replies.back();
  }
}

}  // namespace
}  // namespace cqrs::system_test
