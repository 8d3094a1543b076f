// The connection between cqrsctl and cqrsd: many processes connecting at once must each receive
// their reply (a lost one shows up as cqrsctl's client-side "timeout" although cqrsd answered),
// a batch client must give up promptly once the daemon is gone, and a client must not wait
// forever for a server that accepts the connection but never completes it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

// A socket listening on a free loopback port (stored in `port`) that accepts connections in the
// kernel's backlog and never says a word; -1 on failure.
int silent_listener(uint16_t& port) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 16) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(listener);
    return -1;
  }
  port = ntohs(address.sin_port);
  return listener;
}

// A stopped cqrsd (SIGSTOP) or another service on the port accepts the TCP connection and says
// nothing: the kernel's backlog accepts it. cqrsctl gives up after its --timeout-ms.
TEST(TransportSilentServer, CqrsctlGivesUpOnAServerThatNeverCompletesTheConnection) {
  uint16_t port = 0;
  int listener = silent_listener(port);
  ASSERT_GE(listener, 0);

  auto started = std::chrono::steady_clock::now();
  ProcessResult run =
      run_cqrsctl(port, {"--timeout-ms", "500", "status"}, "", std::chrono::milliseconds(15000));
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  close(listener);
  ASSERT_FALSE(run.timed_out) << "cqrsctl was still waiting after 15 s";
  EXPECT_EQ(run.exit_code, 2) << run.describe();
  EXPECT_LT(waited.count(), 5000) << run.describe();
  EXPECT_NE(run.stderr_text.find("did not complete the connection within 500 ms"),
            std::string::npos)
      << run.describe();
}

// A command port another process listens on is said at once, before the migrations and the wait
// for PostgreSQL (it used to come after both, as CAF's cannot_open_port).
TEST(TransportSilentServer, CqrsdSaysAtOnceThatItsPortIsInUse) {
  uint16_t port = 0;
  int listener = silent_listener(port);
  ASSERT_GE(listener, 0);
  auto started = std::chrono::steady_clock::now();
  ProcessResult run =
      run_process({CQRSD_BIN, "--config-file=/dev/null", "--server.port=" + std::to_string(port),
                   "--db.url=postgresql://nobody@127.0.0.1:1/x", "--db.connect_timeout=20s"},
                  "", std::chrono::milliseconds(30000));
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  close(listener);
  EXPECT_EQ(run.exit_code, 1) << run.describe();
  EXPECT_LT(waited.count(), 5000) << "cqrsd waited for PostgreSQL first: " << run.describe();
  EXPECT_NE(run.stderr_text.find("address already in use"), std::string::npos) << run.describe();
}

}  // namespace
}  // namespace cqrs::system_test
