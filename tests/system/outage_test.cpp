// PostgreSQL goes away under load and comes back: commands fail fast with store_unavailable
// instead of hanging, the daemon stays up and reconnects by itself, nothing answered ok is lost,
// and the projections catch up. The test runs its own PostgreSQL cluster (scripts/pg with
// CQRS_PG_ROOT and a free port) so that stopping it disturbs no other test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kScriptTimeout = std::chrono::seconds(120);
constexpr int kCommandTimeoutMs = 3000;

// A PostgreSQL cluster of this test's own, managed through scripts/pg.
class OwnCluster {
 public:
  OwnCluster() : port_(free_local_port()) {
    root_ = fs::path("/tmp") / ("cqrsd-outage-" + std::to_string(::getpid()));
  }
  ~OwnCluster() {
    (void)run("stop");
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  bool start() { return run("start"); }
  bool stop() { return run("stop"); }
  // scripts/pg `command` with DATABASE_URL set to `url` (as after `eval "$(scripts/pg env)"`
  // when `url` is the cluster's own).
  ProcessResult run_with_url(const std::string& command, const std::string& url) {
    return script(command, port_, url);
  }
  // scripts/pg `command` for this cluster's directory but with CQRS_PG_PORT=`port`.
  ProcessResult run_on_port(const std::string& command, uint16_t port) {
    return script(command, port, "");
  }
  uint16_t port() const { return port_; }
  // The exit code of `scripts/pg status` (0 running, 3 not).
  int status() { return script("status", port_, "").exit_code; }
  std::string url() const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/cqrsd";
  }

 private:
  // scripts/pg `command` for this cluster's directory on `port`, with DATABASE_URL set to
  // `url`, or unset when it is empty.
  ProcessResult script(const std::string& command, uint16_t port, const std::string& url) {
    std::vector<std::string> argv = {"/usr/bin/env"};
    if (url.empty()) {
      argv.insert(argv.end(), {"-u", "DATABASE_URL"});
    } else {
      argv.push_back("DATABASE_URL=" + url);
    }
    argv.insert(argv.end(),
                {"CQRS_PG_ROOT=" + root_.string(), "CQRS_PG_PORT=" + std::to_string(port), "bash",
                 std::string(CQRS_SOURCE_DIR) + "/scripts/pg", command});
    return run_process(argv, "", kScriptTimeout);
  }

  bool run(const std::string& command) {
    ProcessResult result = script(command, port_, "");
    EXPECT_EQ(result.exit_code, 0) << "scripts/pg " << command << ": " << result.describe();
    return result.exit_code == 0;
  }

  uint16_t port_;
  fs::path root_;
};

// One command's outcome as the load generator saw it.
struct Outcome {
  std::string card_id;
  std::string status;
  std::string error;
};

// Issues new gift cards in batches (one cqrsctl process each) until stopped.
class Load {
 public:
  explicit Load(uint16_t port) : port_(port) {
    thread_ = std::thread([this] { run(); });
  }
  ~Load() { stop(); }

  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Outcome> outcomes() const {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }
  size_t count(const std::string& status, const std::string& error = "") const {
    std::lock_guard lock(mutex_);
    size_t n = 0;
    for (const auto& outcome : outcomes_) {
      if (outcome.status == status && (error.empty() || outcome.error == error)) ++n;
    }
    return n;
  }
  // The longest a batch took: every command in it was answered by then.
  Clock::duration slowest_batch() const {
    std::lock_guard lock(mutex_);
    return slowest_;
  }

 private:
  void run() {
    constexpr size_t kBatch = 20;
    size_t next = 0;
    while (!stopping_) {
      std::vector<std::string> lines;
      std::vector<std::string> cards;
      for (size_t idx = 0; idx < kBatch; ++idx) {
        std::string card = "outage-" + std::to_string(next++);
        cards.push_back(card);
        nlohmann::json line = {{"type", "IssueGiftCard"},
                               {"data", {{"card_id", card}, {"amount", 100}}},
                               {"command_id", new_command_id()},
                               {"timeout_ms", kCommandTimeoutMs}};
        lines.push_back(line.dump());
      }
      auto started = Clock::now();
      BatchReply batch = dispatch_batch(port_, lines, kBatch, 60s);
      auto took = Clock::now() - started;
      std::lock_guard lock(mutex_);
      slowest_ = std::max(slowest_, took);
      for (size_t idx = 0; idx < cards.size(); ++idx) {
        Outcome outcome{cards[idx], "missing", ""};
        if (idx < batch.replies.size()) {
          outcome.status = batch.replies[idx].value("status", "");
          outcome.error = batch.replies[idx].value("error", "");
        }
        outcomes_.push_back(outcome);
      }
    }
  }

  uint16_t port_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<Outcome> outcomes_;
  Clock::duration slowest_{};
};

TEST(OutageTest, PostgresStoppedAndRestartedUnderLoad) {
  OwnCluster cluster;
  ASSERT_TRUE(cluster.start());
  auto daemon = Daemon::start(cluster.url(), {"--db.connect_timeout=60s"});
  ASSERT_NE(daemon, nullptr);

  Load load(daemon->port());
  ASSERT_TRUE(wait_until([&] { return load.count("ok") >= 40; }, 30s)) << "no load before";

  ASSERT_TRUE(cluster.stop());
  size_t unavailable_before = load.count("error", "store_unavailable");
  // While it is down, commands are refused quickly.
  EXPECT_TRUE(wait_until(
      [&] { return load.count("error", "store_unavailable") >= unavailable_before + 40; }, 30s))
      << "commands did not fail with store_unavailable while PostgreSQL was down";
  EXPECT_TRUE(daemon->running());
  size_t ok_while_down_start = load.count("ok");

  ASSERT_TRUE(cluster.start());
  // It reconnects by itself: commands succeed again.
  EXPECT_TRUE(wait_until([&] { return load.count("ok") >= ok_while_down_start + 40; }, 30s))
      << "commands did not succeed again after PostgreSQL came back";
  load.stop();
  EXPECT_TRUE(daemon->running());

  // Every command answered is answered with ok or store_unavailable, and no batch waited out
  // more than the request timeout (plus process start-up).
  std::set<std::string> ok_cards;
  for (const Outcome& outcome : load.outcomes()) {
    if (outcome.status == "ok") {
      ok_cards.insert(outcome.card_id);
    } else {
      EXPECT_EQ(outcome.error, "store_unavailable")
          << outcome.card_id << ": " << outcome.status << " " << outcome.error;
    }
  }
  EXPECT_LT(load.slowest_batch(), std::chrono::milliseconds(kCommandTimeoutMs) + 5s);
  std::printf(
      "outage: %zu ok, %zu store_unavailable, slowest batch of 20 %lld ms\n", load.count("ok"),
      load.count("error", "store_unavailable"),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(load.slowest_batch()).count()));

  // Nothing answered ok is missing from the store.
  auto sql = pg::Connection::open(cluster.url());
  ASSERT_TRUE(sql.ok()) << sql.error().to_string();
  std::vector<StoredEvent> stored = read_events(**sql);
  std::set<std::string> stored_cards;
  for (const StoredEvent& event : stored) {
    if (event.type == "GiftCardIssued") stored_cards.insert(event.data.value("card_id", ""));
  }
  for (const std::string& card : ok_cards) {
    EXPECT_TRUE(stored_cards.count(card)) << card << " was answered ok but is not stored";
  }

  // The projection catches up with everything stored.
  std::string want = std::to_string(stored_cards.size());
  std::string have;
  EXPECT_TRUE(wait_until(
      [&] {
        auto rows =
            (*sql)->exec("SELECT count(*) FROM giftcard_summary WHERE card_id LIKE 'outage-%'");
        have = rows ? std::string(rows->text(0, 0)) : "?";
        return have == want;
      },
      30s))
      << "giftcard_summary has " << have << " of " << want << " cards";
  daemon->stop();
}

// PostgreSQL restarts while cqrsd is idle (maintenance at night): the server closed every
// connection, saying so, and cqrsd replaces each before it next uses it. No command after the
// restart fails, not even the first of each connection.
TEST(OutageTest, NoCommandFailsAfterARestartWhileIdle) {
  OwnCluster cluster;
  ASSERT_TRUE(cluster.start());
  auto daemon = Daemon::start(cluster.url());
  ASSERT_NE(daemon, nullptr);
  auto issue = [&](const std::string& prefix) {
    std::vector<std::string> lines;
    for (int idx = 0; idx < 40; ++idx) {
      lines.push_back(envelope_line("IssueGiftCard",
                                    {{"card_id", prefix + std::to_string(idx)}, {"amount", 100}},
                                    new_command_id()));
    }
    return dispatch_batch(daemon->port(), lines, 8, 60s);
  };
  auto failures_of = [](const BatchReply& batch) {
    std::vector<std::string> failures;
    for (const nlohmann::json& reply : batch.replies) {
      if (reply.value("status", "") != "ok") failures.push_back(reply.dump());
    }
    return failures;
  };
  BatchReply before = issue("before-restart-");
  ASSERT_EQ(before.replies.size(), 40u) << before.process.describe();
  ASSERT_TRUE(failures_of(before).empty()) << failures_of(before).front();

  ASSERT_TRUE(cluster.stop());
  ASSERT_TRUE(cluster.start());

  BatchReply after = issue("after-restart-");
  ASSERT_EQ(after.replies.size(), 40u) << after.process.describe();
  std::vector<std::string> failures = failures_of(after);
  EXPECT_TRUE(failures.empty()) << failures.size()
                                << " of 40 failed, the first: " << failures.front();
  EXPECT_TRUE(daemon->running());
  daemon->stop();
}

// `eval "$(scripts/pg env)"` exports the cluster's own DATABASE_URL; scripts/pg start and stop
// must still manage that cluster (they used to take it for an external server and do nothing),
// while a URL of another server is still left alone.
TEST(PrivateCluster, StartAndStopManageTheClusterWhoseUrlIsExported) {
  OwnCluster cluster;
  ProcessResult external = cluster.run_with_url("start", "postgresql://nobody@127.0.0.1:1/x");
  EXPECT_EQ(external.exit_code, 0) << external.describe();
  EXPECT_EQ(cluster.status(), 3) << "a start with another server's URL started the cluster";
  ProcessResult started = cluster.run_with_url("start", cluster.url());
  ASSERT_EQ(started.exit_code, 0) << started.describe();
  EXPECT_EQ(cluster.status(), 0) << started.describe();
  ProcessResult stopped = cluster.run_with_url("stop", cluster.url());
  EXPECT_EQ(stopped.exit_code, 0) << stopped.describe();
  EXPECT_EQ(cluster.status(), 3) << stopped.describe();
}

// CQRS_PG_PORT changed while the cluster runs: start and status used to report it running on
// the new port, where nothing listens. They name the port it runs on instead.
TEST(PrivateCluster, APortChangeWhileRunningIsNamed) {
  OwnCluster cluster;
  ASSERT_TRUE(cluster.start());
  uint16_t other = free_local_port();
  ASSERT_NE(other, cluster.port());
  ProcessResult moved = cluster.run_on_port("start", other);
  EXPECT_EQ(moved.exit_code, 1) << moved.describe();
  EXPECT_NE(moved.stderr_text.find("runs on port " + std::to_string(cluster.port())),
            std::string::npos)
      << moved.describe();
  ProcessResult status = cluster.run_on_port("status", other);
  EXPECT_EQ(status.exit_code, 3) << status.describe();
  EXPECT_EQ(cluster.status(), 0);
  EXPECT_TRUE(cluster.stop());
}

}  // namespace
}  // namespace cqrs::system_test
