// Operators' view of a running cqrsd: /metrics counts exactly what was dispatched (by type and
// outcome, with matching latency histograms, appended events, group commits, live aggregates
// and handler positions), /healthz follows the store (reachable, migrated) also while cqrsd is
// still waiting for it at start, and --log.format json gives one JSON object per line carrying
// the command's ids.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct HttpReply {
  int status = 0;  // 0: no answer
  std::string body;
  std::string content_type;
};

HttpReply http_get(uint16_t port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2s);
  client.set_read_timeout(10s);
  auto response = client.Get(path);
  if (!response) return {};
  return {response->status, response->body, response->get_header_value("Content-Type")};
}

// The samples of a Prometheus text page, keyed by "name{labels}" exactly as rendered.
using Samples = std::map<std::string, double>;

// Parses `text` and checks the format: every sample follows "# HELP" and "# TYPE" lines of its
// family, counters end in _total, and histogram series have only _bucket/_sum/_count samples.
::testing::AssertionResult parse_exposition(const std::string& text, Samples& samples) {
  std::istringstream lines(text);
  std::string line;
  std::string help_of;
  std::string family;
  std::string type;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      help_of = line.substr(7, line.find(' ', 7) - 7);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream fields(line.substr(7));
      fields >> family >> type;
      if (family != help_of) {
        return ::testing::AssertionFailure() << "# TYPE without # HELP first: " << line;
      }
      if (type == "counter" && !family.ends_with("_total")) {
        return ::testing::AssertionFailure() << "counter not ending in _total: " << family;
      }
      if (type != "counter" && type != "gauge" && type != "histogram") {
        return ::testing::AssertionFailure() << "unexpected type: " << line;
      }
      continue;
    }
    if (line.empty() || line[0] == '#') {
      return ::testing::AssertionFailure() << "unexpected line: '" << line << "'";
    }
    size_t space = line.rfind(' ');
    if (space == std::string::npos) return ::testing::AssertionFailure() << "no value: " << line;
    std::string key = line.substr(0, space);
    std::string name = key.substr(0, key.find('{'));
    bool belongs = type == "histogram" ? (name == family + "_bucket" || name == family + "_sum" ||
                                          name == family + "_count")
                                       : name == family;
    if (!belongs) {
      return ::testing::AssertionFailure()
             << "sample outside its family " << family << ": " << line;
    }
    samples[key] = std::stod(line.substr(space + 1));
  }
  return ::testing::AssertionSuccess();
}

Samples scrape(uint16_t port) {
  Samples samples;
  HttpReply reply = http_get(port, "/metrics");
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.content_type.rfind("text/plain; version=0.0.4", 0), 0u) << reply.content_type;
  EXPECT_TRUE(parse_exposition(reply.body, samples)) << reply.body;
  return samples;
}

double value(const Samples& samples, const std::string& key) {
  auto it = samples.find(key);
  return it == samples.end() ? 0 : it->second;
}

// A histogram series' buckets never decrease, and +Inf equals _count.
::testing::AssertionResult histogram_consistent(const Samples& samples, const std::string& name,
                                                const std::string& labels) {
  std::string prefix = name + "_bucket{" + (labels.empty() ? "" : labels + ",") + "le=\"";
  // Map order is textual; walk the bounds in numeric order instead.
  std::vector<std::pair<double, double>> by_bound;
  for (auto it = samples.lower_bound(prefix); it != samples.end(); ++it) {
    if (it->first.rfind(prefix, 0) != 0) break;
    std::string bound = it->first.substr(prefix.size());
    bound = bound.substr(0, bound.find('"'));
    by_bound.emplace_back(bound == "+Inf" ? INFINITY : std::stod(bound), it->second);
  }
  if (by_bound.empty()) return ::testing::AssertionFailure() << "no buckets for " << prefix;
  std::sort(by_bound.begin(), by_bound.end());
  double previous = 0;
  for (const auto& [bound, count] : by_bound) {
    if (count < previous) {
      return ::testing::AssertionFailure() << name << " bucket le=" << bound << " decreases";
    }
    previous = count;
  }
  std::string suffix = labels.empty() ? "" : "{" + labels + "}";
  if (!std::isinf(by_bound.back().first) ||
      by_bound.back().second != value(samples, name + "_count" + suffix)) {
    return ::testing::AssertionFailure() << name << ": +Inf bucket differs from _count";
  }
  return ::testing::AssertionSuccess();
}

class Observability : public SystemTest {
 protected:
  std::unique_ptr<Daemon> start_with_metrics(std::vector<std::string> extra = {}) {
    metrics_port_ = free_local_port();
    extra.push_back("--metrics.port=" + std::to_string(metrics_port_));
    return start_daemon(extra);
  }

  uint16_t metrics_port_ = 0;
};

TEST_F(Observability, MetricsCountExactlyWhatWasDispatched) {
  auto daemon = start_with_metrics();
  ASSERT_NE(daemon, nullptr);
  Samples before = scrape(metrics_port_);
  EXPECT_EQ(value(before, "cqrs_store_workers"), 4);  // db.pool_size's default

  for (const char* card : {"m1", "m2", "m3"}) {
    ASSERT_EQ(
        dispatch(daemon->port(), "IssueGiftCard", {{"card_id", card}, {"amount", 100}}).status(),
        "ok");
  }
  for (int idx = 0; idx < 2; ++idx) {
    CtlReply rejected =
        dispatch(daemon->port(), "RedeemGiftCard", {{"card_id", "m1"}, {"amount", 500}});
    ASSERT_EQ(rejected.error(), "insufficient_balance") << rejected.describe();
  }
  ASSERT_EQ(
      dispatch(daemon->port(), "RedeemGiftCard", {{"card_id", "m2"}, {"amount", 30}}).status(),
      "ok");
  EXPECT_EQ(dispatch(daemon->port(), "PaintGiftCard", json::object()).error(),
            "unregistered_command");
  EXPECT_EQ(dispatch(daemon->port(), "RedeemGiftCard", {{"card_id", "m2"}}).error(),
            "invalid_command");

  // The projector catches up with every event; then one scrape shows everything.
  std::string head = scalar("SELECT max(global_position) FROM cqrs.events");
  ASSERT_EQ(scalar("SELECT count(*) FROM cqrs.events"), "4");
  Samples after;
  bool caught_up = wait_until(
      [&] {
        after = scrape(metrics_port_);
        return value(after, "cqrs_handler_position{handler=\"giftcard_summary\"}") ==
                   std::stod(head) &&
               after.count("cqrs_handler_lag_events{handler=\"giftcard_summary\"}") == 1 &&
               value(after, "cqrs_handler_lag_events{handler=\"giftcard_summary\"}") == 0 &&
               after.count("cqrs_correlation_index_lag_runs") == 1 &&
               value(after, "cqrs_correlation_index_lag_runs") == 0;
      },
      20s);
  ASSERT_TRUE(caught_up) << "giftcard_summary never reached " << head;

  auto delta = [&](const std::string& key) { return value(after, key) - value(before, key); };
  EXPECT_EQ(delta("cqrs_commands_total{type=\"IssueGiftCard\",outcome=\"ok\"}"), 3);
  EXPECT_EQ(delta("cqrs_commands_total{type=\"RedeemGiftCard\",outcome=\"ok\"}"), 1);
  EXPECT_EQ(delta("cqrs_commands_total{type=\"RedeemGiftCard\",outcome=\"rejected\","
                  "code=\"insufficient_balance\"}"),
            2);
  EXPECT_EQ(delta("cqrs_commands_refused_total{code=\"unregistered_command\"}"), 1);
  EXPECT_EQ(delta("cqrs_commands_refused_total{code=\"invalid_command\"}"), 1);
  double answered = 0;
  for (const auto& [key, count] : after) {
    if (key.rfind("cqrs_commands_total{", 0) == 0) answered += count;
  }
  EXPECT_EQ(answered, 6) << "only the six routed commands are counted by outcome";

  // One latency observation per answered command, per type.
  EXPECT_EQ(delta("cqrs_command_duration_seconds_count{type=\"IssueGiftCard\"}"), 3);
  EXPECT_EQ(delta("cqrs_command_duration_seconds_count{type=\"RedeemGiftCard\"}"), 3);
  EXPECT_GT(value(after, "cqrs_command_duration_seconds_sum{type=\"IssueGiftCard\"}"), 0);
  EXPECT_TRUE(
      histogram_consistent(after, "cqrs_command_duration_seconds", "type=\"IssueGiftCard\""));
  EXPECT_TRUE(
      histogram_consistent(after, "cqrs_command_duration_seconds", "type=\"RedeemGiftCard\""));

  // Four events; six write requests (rejections are recorded for idempotency), one per
  // transaction since the commands came one at a time.
  EXPECT_EQ(delta("cqrs_events_appended_total"), 4);
  EXPECT_EQ(delta("cqrs_store_append_batch_size_sum"), 6);
  EXPECT_EQ(delta("cqrs_store_append_batch_size_count"), 6);
  EXPECT_EQ(delta("cqrs_store_append_batch_size_bucket{le=\"1\"}"), 6);
  EXPECT_TRUE(histogram_consistent(after, "cqrs_store_append_batch_size", ""));
  EXPECT_GE(value(after, "cqrs_store_workers_busy"), 0);
  EXPECT_LE(value(after, "cqrs_store_workers_busy"), 4);

  EXPECT_EQ(value(after, "cqrs_aggregates_live"), 3);
  for (const char* handler :
       {"giftcard_summary", "bank_accounts", "bank_transfers", "bank_transfer_process"}) {
    std::string labels = std::string("{handler=\"") + handler + "\"";
    EXPECT_EQ(value(after, "cqrs_handler_state" + labels + ",state=\"running\"}"), 1) << handler;
    EXPECT_EQ(after.count("cqrs_handler_dead_letters" + labels + "}"), 1u) << handler;
    EXPECT_EQ(value(after, "cqrs_handler_dead_letters" + labels + "}"), 0) << handler;
  }
  EXPECT_EQ(value(after, "cqrs_metrics_collect_failures_total"), 0);

  HttpReply health = http_get(metrics_port_, "/healthz");
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(json::parse(health.body, nullptr, false), json({{"status", "ok"}}));
  EXPECT_EQ(http_get(metrics_port_, "/nothing").status, 404);
  daemon->stop();
}

// The correlation index's lag as `cqrsctl status` says it: runs stored and not yet indexed,
// down to 0 once a process that runs handlers (and so the indexer) catches up.
TEST_F(Observability, CorrelationIndexLagCountsRunsNotYetIndexed) {
  auto commands_only = start_with_metrics({"--handlers.disabled"});
  ASSERT_NE(commands_only, nullptr);
  ASSERT_EQ(dispatch(commands_only->port(), "IssueGiftCard", {{"card_id", "c1"}, {"amount", 10}})
                .status(),
            "ok");
  ASSERT_EQ(dispatch(commands_only->port(), "IssueGiftCard", {{"card_id", "c2"}, {"amount", 10}})
                .status(),
            "ok");
  // No process indexes correlations yet: both events are behind.
  Samples behind = scrape(metrics_port_);
  ASSERT_EQ(behind.count("cqrs_correlation_index_lag_runs"), 1u);
  EXPECT_EQ(value(behind, "cqrs_correlation_index_lag_runs"), 2);

  auto indexing = start_daemon();
  ASSERT_NE(indexing, nullptr);
  Samples caught_up;
  EXPECT_TRUE(wait_until(
      [&] {
        caught_up = scrape(metrics_port_);
        return caught_up.count("cqrs_correlation_index_lag_runs") == 1 &&
               value(caught_up, "cqrs_correlation_index_lag_runs") == 0;
      },
      20s))
      << value(caught_up, "cqrs_correlation_index_lag_runs");
  indexing->stop();
  commands_only->stop();
}

TEST_F(Observability, HealthzIsUnavailableWhileTheStoreRefusesConnections) {
  auto daemon = start_with_metrics();
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(http_get(metrics_port_, "/healthz").status, 200);

  // An outage of this test's database only (the shared server keeps running): no new
  // connections, and the daemon's connections ended. Set from another database, as Postgres
  // requires.
  auto admin = pg::Connection::open(cqrs::testing::database_url());
  ASSERT_TRUE(admin) << admin.error().to_string();
  std::string quoted = pg::quote_identifier(db_->name());
  ASSERT_TRUE((*admin)->exec("ALTER DATABASE " + quoted + " ALLOW_CONNECTIONS false"));
  ASSERT_TRUE((*admin)->exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
      pg::Params().add(db_->name()).add(int64_t{sql_->backend_pid()})));
  HttpReply down = http_get(metrics_port_, "/healthz");
  EXPECT_EQ(down.status, 503) << down.body;
  json reason = json::parse(down.body, nullptr, false);
  EXPECT_EQ(reason.value("status", ""), "unavailable") << down.body;
  EXPECT_EQ(reason.value("reason", "").rfind("store_unavailable", 0), 0u) << down.body;

  ASSERT_TRUE((*admin)->exec("ALTER DATABASE " + quoted + " ALLOW_CONNECTIONS true"));
  EXPECT_TRUE(wait_until([&] { return http_get(metrics_port_, "/healthz").status == 200; }, 10s));
  daemon->stop();
}

TEST_F(Observability, HealthzIsUnavailableWhileAMigrationIsMissing) {
  auto daemon = start_with_metrics();
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(http_get(metrics_port_, "/healthz").status, 200);
  std::string latest = scalar("SELECT max(version) FROM cqrs.schema_migrations");
  std::string name = scalar("SELECT name FROM cqrs.schema_migrations WHERE version = $1", {latest});
  ASSERT_TRUE(sql_->exec("DELETE FROM cqrs.schema_migrations WHERE version = " + latest));

  HttpReply down = http_get(metrics_port_, "/healthz");
  EXPECT_EQ(down.status, 503) << down.body;
  json reason = json::parse(down.body, nullptr, false);
  EXPECT_EQ(reason.value("reason", "").rfind("migration_failed", 0), 0u) << down.body;
  EXPECT_NE(reason.value("reason", "").find(latest + "_" + name), std::string::npos) << down.body;

  ASSERT_TRUE(sql_->exec("INSERT INTO cqrs.schema_migrations (version, name) VALUES (" + latest +
                         ", '" + name + "')"));
  EXPECT_EQ(http_get(metrics_port_, "/healthz").status, 200);
  daemon->stop();
}

TEST_F(Observability, HealthzAnswersWhileCqrsdStillWaitsForTheStore) {
  uint16_t closed = free_local_port();  // nothing listens there: PostgreSQL is "down"
  uint16_t metrics_port = free_local_port();
  ASSERT_NE(closed, 0);
  ASSERT_NE(metrics_port, 0);
  std::optional<ProcessResult> exited;
  std::thread runner([&] {
    exited = run_process({CQRSD_BIN, "--config-file=/dev/null",
                          "--db.url=postgresql://nobody@127.0.0.1:" + std::to_string(closed) + "/x",
                          "--server.port=0", "--db.connect_timeout=6s",
                          "--metrics.port=" + std::to_string(metrics_port)},
                         "", 30s);
  });
  HttpReply reply;
  bool answered = wait_until(
      [&] {
        reply = http_get(metrics_port, "/healthz");
        return reply.status != 0;
      },
      5s);
  runner.join();
  ASSERT_TRUE(answered) << "no answer on the metrics port while cqrsd waited";
  EXPECT_EQ(reply.status, 503) << reply.body;
  EXPECT_EQ(
      json::parse(reply.body, nullptr, false).value("reason", "").rfind("store_unavailable", 0), 0u)
      << reply.body;
  ASSERT_TRUE(exited.has_value());
  EXPECT_EQ(exited->exit_code, 1) << exited->describe();  // gave up after db.connect_timeout
}

// A server that refuses the connection for good (no such database here; a wrong role or
// password alike) is reported at once, not retried for db.connect_timeout.
TEST_F(Observability, AConnectionTheServerRefusesForGoodIsNotRetried) {
  std::string url = db_->url();
  url = url.substr(0, url.rfind('/') + 1) + "no_such_database_here";
  auto started = std::chrono::steady_clock::now();
  ProcessResult run = run_process({CQRSD_BIN, "migrate", "--config-file=/dev/null",
                                   "--db.url=" + url, "--db.connect_timeout=20s"},
                                  "", 30s);
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(run.exit_code, 1) << run.describe();
  EXPECT_LT(waited, 10s) << "retried a refusal: " << run.describe();
  EXPECT_NE(run.stderr_text.find("no_such_database_here"), std::string::npos) << run.describe();
}

// With log.format=json, a start that fails once logging is set up leaves JSON lines only (a log
// shipper parses every line).
TEST_F(Observability, AFailedStartInJsonModeWritesOnlyJsonLines) {
  ProcessResult run = run_process({CQRSD_BIN, "--config-file=/dev/null", "--log.format=json",
                                   "--tls.cert=/nonexistent/server.pem", "--db.url=" + db_->url()},
                                  "", 30s);
  EXPECT_EQ(run.exit_code, 2) << run.describe();
  std::istringstream lines(run.stderr_text);
  int count = 0;
  for (std::string line; std::getline(lines, line);) {
    ++count;
    json entry = json::parse(line, nullptr, false);
    ASSERT_TRUE(entry.is_object()) << "not a JSON object: " << line;
    EXPECT_NE(entry.value("msg", "").find("tls.cert"), std::string::npos) << line;
  }
  EXPECT_EQ(count, 1) << run.describe();
}

TEST_F(Observability, JsonLogLinesCarryTheCommandsIds) {
  auto daemon = start_daemon({"--log.format=json", "--log.level=debug"});
  ASSERT_NE(daemon, nullptr);
  std::string ok_id = new_command_id();
  std::string rejected_id = new_command_id();
  ASSERT_EQ(dispatch(daemon->port(), "IssueGiftCard", {{"card_id", "j1"}, {"amount", 10}},
                     {"--command-id", ok_id, "--correlation-id", "order-17"})
                .status(),
            "ok");
  ASSERT_EQ(dispatch(daemon->port(), "RedeemGiftCard", {{"card_id", "j1"}, {"amount", 99}},
                     {"--command-id", rejected_id})
                .status(),
            "rejected");
  daemon->stop();

  std::istringstream lines(daemon->stderr_text());
  std::string line;
  int parsed = 0;
  std::map<std::string, std::vector<json>> by_command;
  while (std::getline(lines, line)) {
    json entry = json::parse(line, nullptr, false);
    ASSERT_TRUE(entry.is_object()) << "not a JSON object: " << line;
    EXPECT_TRUE(entry.contains("time") && entry.contains("level") && entry.contains("msg")) << line;
    ++parsed;
    if (entry.contains("command_id")) by_command[entry["command_id"]].push_back(entry);
  }
  EXPECT_GT(parsed, 2);

  const auto& ok_lines = by_command[ok_id];
  ASSERT_EQ(ok_lines.size(), 2u) << "a dispatching and a dispatched line";
  for (const json& entry : ok_lines) {
    EXPECT_EQ(entry.value("correlation_id", ""), "order-17") << entry.dump();
    EXPECT_EQ(entry.value("type", ""), "IssueGiftCard") << entry.dump();
  }
  EXPECT_EQ(ok_lines[1].value("msg", ""), "dispatched");
  EXPECT_EQ(ok_lines[1].value("status", ""), "ok");

  const auto& rejected_lines = by_command[rejected_id];
  ASSERT_EQ(rejected_lines.size(), 2u);
  // Without a correlation id the command's own id correlates.
  EXPECT_EQ(rejected_lines[1].value("correlation_id", ""), rejected_id);
  EXPECT_EQ(rejected_lines[1].value("status", ""), "rejected");
  EXPECT_EQ(rejected_lines[1].value("error", ""), "insufficient_balance");
  EXPECT_EQ(rejected_lines[1].value("level", ""), "info");
}

}  // namespace
}  // namespace cqrs::system_test
