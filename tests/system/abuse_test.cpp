// Clients that misbehave leave the daemon serving everyone else: a flood of in-flight commands
// is bounded by limits.max_in_flight (the rest get `overloaded`), a client killed mid-request
// costs nothing, and garbage bytes on the port only close that connection.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;

// Resident memory of a process in KiB (0 when unknown).
int64_t rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

// A raw TCP connection to the daemon's port.
int connect_raw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class AbuseTest : public DaemonTest {
 protected:
  // A well-behaved client still gets through.
  void expect_served(const std::string& card_id) {
    CtlReply reply =
        dispatch(daemon_->port(), "IssueGiftCard", {{"card_id", card_id}, {"amount", 5}});
    EXPECT_EQ(reply.exit_code(), kExitOk) << reply.describe();
    EXPECT_EQ(events("giftcard-" + card_id).size(), 1u);
  }
};

TEST_F(AbuseTest, FloodOfTenThousandInFlightIsBoundedByOverloaded) {
  constexpr size_t kFlood = 10000;
  std::vector<std::string> lines;
  for (size_t idx = 0; idx < kFlood; ++idx) {
    lines.push_back(envelope_line("IssueGiftCard",
                                  {{"card_id", "flood-" + std::to_string(idx)}, {"amount", 1}},
                                  new_command_id()));
  }
  int64_t rss_before = rss_kib(daemon_->pid());
  BatchReply batch = dispatch_batch(daemon_->port(), lines, kFlood, 120s);
  ASSERT_EQ(batch.replies.size(), kFlood) << batch.process.describe();
  size_t ok = 0;
  size_t overloaded = 0;
  for (size_t idx = 0; idx < kFlood; ++idx) {
    const json& reply = batch.replies[idx];
    if (reply.value("status", "") == "ok") {
      ++ok;
    } else {
      ASSERT_EQ(reply.value("error", ""), "overloaded") << idx << ": " << reply.dump();
      EXPECT_NE(reply.value("message", "").find("limits.max_in_flight"), std::string::npos);
      ++overloaded;
    }
  }
  EXPECT_GT(ok, 0u);
  EXPECT_GT(overloaded, 0u) << "10,000 at once never reached the in-flight limit (4096)";
  // Exactly the accepted ones are stored.
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.events WHERE stream_id LIKE 'giftcard-flood-%'"),
            std::to_string(ok));
  int64_t rss_after = rss_kib(daemon_->pid());
  EXPECT_LT(rss_after - rss_before, 512 * 1024)
      << "RSS grew from " << rss_before << " KiB to " << rss_after << " KiB";
  std::printf("flood: %zu ok, %zu overloaded, RSS %lld -> %lld KiB\n", ok, overloaded,
              static_cast<long long>(rss_before), static_cast<long long>(rss_after));
  expect_served("after-flood");
}

TEST_F(AbuseTest, ClientKilledMidRequestLeavesTheDaemonServing) {
  // Far more than cqrsd answers in 300 ms (about 3,000 at its peak on 2 cores), so that the
  // client is killed with commands in flight.
  std::string input;
  for (int idx = 0; idx < 30000; ++idx) {
    input += envelope_line("IssueGiftCard",
                           {{"card_id", "killed-" + std::to_string(idx)}, {"amount", 1}},
                           new_command_id()) +
             "\n";
  }
  // SIGKILL after 300 ms, with commands in flight.
  ProcessResult killed =
      run_process({"/usr/bin/timeout", "-s", "KILL", "0.3", CQRSCTL_BIN, "--port",
                   std::to_string(daemon_->port()), "dispatch", "-", "--window", "500"},
                  input, 30s);
  EXPECT_NE(killed.exit_code, 0) << killed.describe();
  EXPECT_TRUE(daemon_->running());
  expect_served("after-kill");
  EXPECT_TRUE(versions_are_contiguous(events()));
}

TEST_F(AbuseTest, GarbageBytesOnThePortCloseOnlyThatConnection) {
  std::mt19937 random(42);
  // Random bytes, a header-sized burst of 0xff (absurd lengths), and a connection that sends
  // half a header and then stays silent.
  for (int round = 0; round < 5; ++round) {
    int fd = connect_raw(daemon_->port());
    ASSERT_GE(fd, 0);
    std::vector<char> bytes(64 * 1024);
    for (char& byte : bytes) byte = static_cast<char>(random());
    (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
  int absurd = connect_raw(daemon_->port());
  ASSERT_GE(absurd, 0);
  std::vector<char> ones(256, static_cast<char>(0xff));
  (void)::send(absurd, ones.data(), ones.size(), MSG_NOSIGNAL);
  int silent = connect_raw(daemon_->port());
  ASSERT_GE(silent, 0);
  (void)::send(silent, ones.data(), 10, MSG_NOSIGNAL);

  expect_served("after-garbage");
  EXPECT_TRUE(daemon_->running());
  EXPECT_LT(rss_kib(daemon_->pid()), 1024 * 1024) << "an absurd length was allocated";
  ::close(absurd);
  ::close(silent);
  expect_served("after-garbage-closed");
}

}  // namespace
}  // namespace cqrs::system_test
