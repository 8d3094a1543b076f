// projection_bench: how far behind the store the gift card projection runs under load, and how
// fast a projection rebuilds, each beside a raw baseline measured in the same run.
//
//   projection_bench [--seconds N] [--rebuild-events N] [--rate CMD_PER_S] [--url CONNINFO]
//   [--keep]
//
// Lag. cqrsd runs against a fresh database (cqrs_bench_<pid>). First the peak rate of
// IssueGiftCard at 256 in flight is measured (the projection falls behind meanwhile), and the
// rate of the whole pipeline: the same cards over the time until the projection caught up. Then
// new cards are issued open loop at half of the first (or at --rate).
// A trigger on giftcard_summary records clock_timestamp() when the projector inserts each card's
// row (in the projector's transaction, which commits right after its batch), and the lag of a
// card is that time minus its event's created_at, which is the start of the append's
// transaction. So the figure is an upper bound of "append commit -> projection commit": it also
// contains the append transaction's own duration. Goal: p99 <= 50 ms.
//
// Rebuild. N gift card events (half GiftCardIssued, half GiftCardRedeemed on those cards) are
// inserted straight into cqrs.events, the projection catches up, then `handler reset
// giftcard_summary` replays all of them while the benchmark polls the handler's position. The raw
// baseline is a libpq client that pages cqrs.events in the same order (500 a transaction, through
// an index on every event's (transaction_id, global_position) that it builds untimed) and runs
// the same upsert per event into a copy of the table. Goal: rebuild >= 0.5x raw.
#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/client.hpp"
#include "bench_daemon.hpp"
#include "bench_support.hpp"
#include "cqrs/event.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"

namespace {

using namespace cqrs::bench;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kProgram = "projection_bench";
constexpr double kLagGoalMs = 50;
constexpr double kRebuildGoal = 0.5;
constexpr size_t kPeakWindow = 256;
constexpr size_t kRawPage = 500;
constexpr auto kCatchUpLimit = 300s;

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted = true; }

struct Options {
  double seconds = 5;
  size_t rebuild_events = 200'000;
  double rate = 0;                       // commands/s of the lag run; 0: half of the measured peak
  std::vector<std::string> daemon_args;  // extra cqrsd options (--daemon-arg, repeatable)
  std::string url;
  bool keep = false;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string issue_envelope(const std::string& card_id) {
  return nlohmann::json{{"type", "IssueGiftCard"},
                        {"data", {{"card_id", card_id}, {"amount", 5000}}},
                        {"timeout_ms", 10000}}
      .dump();
}

// Waits until the handler's position is at or past `target` (nullopt: until its lag is 0).
// Returns false on timeout, interruption or an admin error.
bool wait_for_handler(cqrs::Client& client, const std::string& name,
                      std::optional<cqrs::Position> target) {
  auto deadline = Clock::now() + kCatchUpLimit;
  while (!g_interrupted && Clock::now() < deadline) {
    auto status = client.admin({{"op", "status"}});
    if (!status || !status->ok()) return false;
    for (const auto& handler : status->json["handlers"]) {
      if (handler.value("name", "") != name) continue;
      auto position = handler["position"].is_string()
                          ? cqrs::Position::parse(handler["position"].get<std::string>())
                          : std::nullopt;
      if (target ? (position && *position >= *target)
                 : (handler["lag"].is_number() && handler["lag"].get<int64_t>() == 0)) {
        return true;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// The peak IssueGiftCard rate at kPeakWindow in flight.
double peak_issue_rate(cqrs::Client& client, double seconds, size_t& count) {
  count = static_cast<size_t>(std::max(2000.0, 3000 * seconds));
  std::vector<std::string> envelopes;
  for (size_t idx = 0; idx < count; ++idx)
    envelopes.push_back(issue_envelope("peak-" + std::to_string(idx)));
  auto start = Clock::now();
  client.dispatch_many(envelopes, kPeakWindow, 10s, [](size_t, cqrs::Result<std::string>) {});
  return static_cast<double>(count) / seconds_since(start);
}

// CPU milliseconds per command of cqrsd, PostgreSQL and this client over a phase.
std::string cpu_per_command(const CpuSample& from, const CpuSample& to, size_t commands) {
  CpuUse use = cpu_between(from, to);
  auto per = [&](double seconds) {
    return fixed(seconds * 1000 / std::max<size_t>(1, commands), 3);
  };
  std::string out = "cqrsd " + per(use.daemon) + " ms, postgres " + per(use.postgres) +
                    " ms, client " + per(use.client) + " ms";
  if (use.percent(use.other) > kForeignCpuWarning) {
    out += " (disturbed: other processes used " + fixed(use.percent(use.other), 0) + "% of a core)";
  }
  return out;
}

struct LagFigures {
  size_t sent = 0;
  size_t ok = 0;
  std::string projected;
  double p50 = 0;
  double p99 = 0;
  double worst = 0;
  std::string cpu;
};

// Issues new cards (ids `prefix`N) open loop at `rate` for `seconds`, waits until every
// acknowledged one is projected, and reads the lags off bench_projected.
std::optional<LagFigures> lag_run(cqrs::Client& client, PGconn* sql, pid_t daemon_pid, double rate,
                                  double seconds, const std::string& prefix) {
  LagFigures out;
  out.sent = static_cast<size_t>(rate * seconds);
  std::vector<std::string> envelopes;
  for (size_t idx = 0; idx < out.sent; ++idx)
    envelopes.push_back(issue_envelope(prefix + std::to_string(idx)));
  CpuSample start = sample_cpu(daemon_pid);
  client.dispatch_at_rate(envelopes, Clock::now() + 50ms, rate, 10s,
                          [&](size_t, cqrs::Result<std::string> reply) {
                            if (reply && reply->find("\"status\":\"ok\"") != std::string::npos)
                              ++out.ok;
                          });
  // Every acknowledged card must arrive (a lag of 0 can be momentary: a running transaction
  // anywhere holds $all readers back until it ends).
  std::string want = std::to_string(out.ok);
  std::string like = " WHERE card_id LIKE '" + prefix + "%'";
  auto deadline = Clock::now() + kCatchUpLimit;
  while (query_value(sql, "SELECT count(*) FROM bench_projected" + like) != want) {
    if (g_interrupted || Clock::now() >= deadline) {
      std::fprintf(stderr, "%s: the projection did not catch up\n", kProgram);
      return std::nullopt;
    }
    // Each poll scans bench_projected: keep them rare, they compete with the run's tail.
    std::this_thread::sleep_for(100ms);
  }
  out.cpu = cpu_per_command(start, sample_cpu(daemon_pid), out.sent);
  std::string error;
  auto rows = exec_sql(sql,
                       "SELECT count(*),"
                       " percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
                       " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)"
                       " FROM (SELECT extract(epoch FROM p.projected_at - s.issued_at) * 1000 AS ms"
                       " FROM bench_projected AS p JOIN giftcard_summary AS s USING (card_id)" +
                           like + ") AS lags",
                       error);
  if (!rows) {
    std::fprintf(stderr, "%s: %s\n", kProgram, error.c_str());
    return std::nullopt;
  }
  out.projected = PQgetvalue(rows.get(), 0, 0);
  out.p50 = std::atof(PQgetvalue(rows.get(), 0, 1));
  out.p99 = std::atof(PQgetvalue(rows.get(), 0, 2));
  out.worst = std::atof(PQgetvalue(rows.get(), 0, 3));
  return out;
}

void print_lag(const LagFigures& lag, double rate, const std::string& why) {
  std::printf(
      "projection lag at %s cmd/s (%s), %zu of %zu commands ok, %s cards projected:\n"
      "  p50 %s ms  p99 %s ms  max %s ms  (goal p99 <= %s ms: %s)\n"
      "  CPU per command: %s\n",
      fixed(rate, 0).c_str(), why.c_str(), lag.ok, lag.sent, lag.projected.c_str(),
      fixed(lag.p50, 2).c_str(), fixed(lag.p99, 2).c_str(), fixed(lag.worst, 2).c_str(),
      fixed(kLagGoalMs, 0).c_str(), lag.p99 <= kLagGoalMs ? "met" : "MISSED", lag.cpu.c_str());
}

// Two peaks: the rate at which cqrsd takes IssueGiftCard (the projection falls behind meanwhile),
// and the rate of the whole pipeline, up to the projection having caught up. The lag is measured
// at half of the first (or at --rate).
int measure_lag(cqrs::Client& client, PGconn* sql, pid_t daemon_pid, const Options& options) {
  CpuSample peak_start = sample_cpu(daemon_pid);
  auto started = Clock::now();
  size_t peak_count = 0;
  double peak = peak_issue_rate(client, options.seconds, peak_count);
  CpuSample peak_end = sample_cpu(daemon_pid);
  // The peak run leaves the projection behind; start from a caught-up one.
  if (!wait_for_handler(client, "giftcard_summary", std::nullopt)) {
    std::fprintf(stderr, "%s: the projection did not catch up after the peak run\n", kProgram);
    return 1;
  }
  double pipeline_peak = static_cast<double>(peak_count) / seconds_since(started);
  std::printf("issue peak %s cmd/s (CPU per command: %s); with the projection caught up %s cmd/s\n",
              fixed(peak, 0).c_str(), cpu_per_command(peak_start, peak_end, peak_count).c_str(),
              fixed(pipeline_peak, 0).c_str());
  if (options.rate > 0) {
    auto lag = lag_run(client, sql, daemon_pid, options.rate, options.seconds, "lag-r-");
    if (!lag) return 1;
    print_lag(*lag, options.rate, "set by --rate");
    return 0;
  }
  auto at_issue_peak = lag_run(client, sql, daemon_pid, peak / 2, options.seconds, "lag-i-");
  if (!at_issue_peak) return 1;
  print_lag(*at_issue_peak, peak / 2, "half of the issue peak");
  return 0;
}

// Inserts `count` events straight into the store: count/2 issues, then a redemption of each card.
bool insert_history(PGconn* sql, size_t count, std::string& error) {
  size_t cards = std::max<size_t>(1, count / 2);
  std::string n = std::to_string(cards);
  std::string statement =
      "INSERT INTO cqrs.events (stream_id, stream_version, event_id, event_type, event_version,"
      " data, metadata)"
      " SELECT 'giftcard-r' || g, v, gen_random_uuid(),"
      "  CASE v WHEN 1 THEN 'GiftCardIssued' ELSE 'GiftCardRedeemed' END, 1,"
      "  CASE v WHEN 1 THEN jsonb_build_object('card_id', 'r' || g, 'amount', 5000)"
      "  ELSE jsonb_build_object('card_id', 'r' || g, 'amount', 100, 'remaining', 4900) END,"
      "  '{}'::jsonb"
      " FROM generate_series(1, 2) AS v, generate_series(1, " +
      n + ") AS g ORDER BY v, g";
  return exec_sql(sql, statement, error) != nullptr;
}

// The raw baseline: the same rows, one statement per event, kRawPage events a transaction.
std::optional<double> raw_rebuild(PGconn* sql, size_t& events, std::string& error) {
  if (!exec_sql(sql, "TRUNCATE raw_summary", error)) return std::nullopt;
  // cqrs.events indexes $all by run (schema/013): the baseline pages through an index of its
  // own on every event, built after the projection's rebuild and before the clock starts.
  if (!exec_sql(sql,
                "CREATE INDEX IF NOT EXISTS raw_all_order ON cqrs.events"
                " (transaction_id, global_position)",
                error)) {
    return std::nullopt;
  }
  auto start = Clock::now();
  std::string last_xid = "0";
  std::string last_position = "0";
  events = 0;
  while (true) {
    const char* page_params[] = {last_xid.c_str(), last_position.c_str()};
    std::string limit = std::to_string(kRawPage);
    std::string query =
        "SELECT transaction_id::text, global_position, event_type, data::text,"
        " (extract(epoch FROM created_at) * 1000000)::bigint FROM cqrs.events"
        " WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)"
        " ORDER BY cqrs.events.transaction_id, cqrs.events.global_position LIMIT " +
        limit;
    auto page = checked(
        sql, PQexecParams(sql, query.c_str(), 2, nullptr, page_params, nullptr, nullptr, 0), error);
    if (!page) return std::nullopt;
    int rows = PQntuples(page.get());
    if (rows == 0) break;
    if (!exec_sql(sql, "BEGIN", error)) return std::nullopt;
    for (int row = 0; row < rows; ++row) {
      std::string type = PQgetvalue(page.get(), row, 2);
      auto data = nlohmann::json::parse(PQgetvalue(page.get(), row, 3));
      std::string card = data.value("card_id", "");
      std::string at = PQgetvalue(page.get(), row, 4);
      if (type == "GiftCardIssued") {
        std::string amount = std::to_string(data.value("amount", int64_t{0}));
        const char* params[] = {card.c_str(), amount.c_str(), at.c_str()};
        if (!checked(sql,
                     PQexecParams(sql,
                                  "INSERT INTO raw_summary (card_id, initial_value,"
                                  " remaining_value, status, issued_at, updated_at)"
                                  " VALUES ($1, $2, $2, 'active',"
                                  " 'epoch'::timestamptz + $3::bigint * interval '1 microsecond',"
                                  " 'epoch'::timestamptz + $3::bigint * interval '1 microsecond')"
                                  " ON CONFLICT (card_id) DO NOTHING",
                                  3, nullptr, params, nullptr, nullptr, 0),
                     error)) {
          return std::nullopt;
        }
      } else if (type == "GiftCardRedeemed") {
        std::string remaining = std::to_string(data.value("remaining", int64_t{0}));
        const char* params[] = {card.c_str(), remaining.c_str(), at.c_str()};
        if (!checked(sql,
                     PQexecParams(sql,
                                  "UPDATE raw_summary SET remaining_value = $2,"
                                  " updated_at = 'epoch'::timestamptz + $3::bigint *"
                                  " interval '1 microsecond' WHERE card_id = $1",
                                  3, nullptr, params, nullptr, nullptr, 0),
                     error)) {
          return std::nullopt;
        }
      }
      ++events;
    }
    last_xid = PQgetvalue(page.get(), rows - 1, 0);
    last_position = PQgetvalue(page.get(), rows - 1, 1);
    if (!exec_sql(sql, "COMMIT", error)) return std::nullopt;
  }
  return seconds_since(start);
}

int measure_rebuild(cqrs::Client& client, PGconn* sql, const Options& options) {
  std::string error;
  if (!exec_sql(sql, "DROP TRIGGER bench_projected ON giftcard_summary", error) ||
      !insert_history(sql, options.rebuild_events, error) ||
      !exec_sql(sql, "CREATE TABLE raw_summary (LIKE giftcard_summary INCLUDING ALL)", error)) {
    std::fprintf(stderr, "%s: %s\n", kProgram, error.c_str());
    return 1;
  }
  if (!wait_for_handler(client, "giftcard_summary", std::nullopt)) {
    std::fprintf(stderr, "%s: the projection did not catch up before the rebuild\n", kProgram);
    return 1;
  }
  (void)exec_sql(sql, "VACUUM ANALYZE", error);
  auto start = Clock::now();
  auto reset = client.admin({{"op", "reset"}, {"handler", "giftcard_summary"}});
  if (!reset || !reset->ok()) {
    std::fprintf(stderr, "%s: reset failed: %s\n", kProgram,
                 reset ? reset->message.c_str() : reset.error().to_string().c_str());
    return 1;
  }
  auto target = cqrs::Position::parse(reset->json.value("target", ""));
  int64_t total = reset->json.value("total", int64_t{0});
  if (!wait_for_handler(client, "giftcard_summary", target)) {
    std::fprintf(stderr, "%s: the rebuild did not finish\n", kProgram);
    return 1;
  }
  double rebuild_seconds = seconds_since(start);
  double rebuild_rate = static_cast<double>(total) / rebuild_seconds;

  size_t raw_events = 0;
  auto raw_seconds = raw_rebuild(sql, raw_events, error);
  if (!raw_seconds) {
    std::fprintf(stderr, "%s: raw baseline: %s\n", kProgram, error.c_str());
    return 1;
  }
  double raw_rate = static_cast<double>(raw_events) / *raw_seconds;
  std::string same = query_value(
      sql,
      "SELECT count(*) FROM (SELECT * FROM giftcard_summary EXCEPT SELECT * FROM raw_summary) x");
  double ratio = rebuild_rate / raw_rate;
  std::printf(
      "rebuild of giftcard_summary: %lld events in %s s = %s events/s\n"
      "  raw (libpq, same statements, %zu events a transaction): %zu events in %s s = %s events/s\n"
      "  rebuild/raw %s (goal >= %s: %s); rows differing from the raw table: %s\n",
      static_cast<long long>(total), fixed(rebuild_seconds, 2).c_str(),
      fixed(rebuild_rate, 0).c_str(), kRawPage, raw_events, fixed(*raw_seconds, 2).c_str(),
      fixed(raw_rate, 0).c_str(), fixed(ratio, 2).c_str(), fixed(kRebuildGoal, 1).c_str(),
      ratio >= kRebuildGoal ? "met" : "MISSED", same.c_str());
  return 0;
}

int run(const Options& options) {
  std::string dbname;
  auto conninfo = create_bench_database(options.url, kProgram, dbname);
  if (!conninfo) return 1;
  int result = 1;
  {
    std::string error;
    auto sql = connect_raw(*conninfo, error);
    auto conn = cqrs::pg::Connection::open(*conninfo);
    if (!sql || !conn || !cqrs::pg::migrate(**conn)) {
      std::fprintf(stderr, "%s: cannot prepare the database %s\n", kProgram, error.c_str());
    } else if (!exec_sql(sql.get(),
                         "CREATE TABLE bench_projected (card_id text PRIMARY KEY,"
                         " projected_at timestamptz NOT NULL);"
                         "CREATE FUNCTION bench_projected() RETURNS trigger LANGUAGE plpgsql AS"
                         " $$ BEGIN INSERT INTO bench_projected VALUES (NEW.card_id,"
                         " clock_timestamp()); RETURN NEW; END $$;"
                         "CREATE TRIGGER bench_projected AFTER INSERT ON giftcard_summary"
                         " FOR EACH ROW EXECUTE FUNCTION bench_projected()",
                         error)) {
      std::fprintf(stderr, "%s: %s\n", kProgram, error.c_str());
    } else {
      std::vector<std::string> args = {"--db.url=" + *conninfo, "--server.port=0",
                                       "--log.level=warn"};
      args.insert(args.end(), options.daemon_args.begin(), options.daemon_args.end());
      auto daemon = BenchDaemon::start(CQRSD_BIN, args, &g_interrupted, error);
      auto client =
          daemon ? cqrs::Client::connect("127.0.0.1", daemon->port())
                 : cqrs::Result<std::unique_ptr<cqrs::Client>>(cqrs::Error::unavailable(error));
      if (!client) {
        std::fprintf(stderr, "%s: %s\n", kProgram, client.error().to_string().c_str());
      } else {
        std::printf("%s: PostgreSQL %s, %u CPUs; cqrsd and this client share them\n", kProgram,
                    query_value(sql.get(), "SHOW server_version").c_str(),
                    std::thread::hardware_concurrency());
        result = measure_lag(**client, sql.get(), daemon->pid(), options);
        if (result == 0 && !g_interrupted) result = measure_rebuild(**client, sql.get(), options);
      }
    }
  }
  if (!options.keep) drop_bench_database(options.url, dbname, kProgram);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const char* url = std::getenv("DATABASE_URL")) options.url = url;
  for (int idx = 1; idx < argc; ++idx) {
    std::string arg = argv[idx];
    auto value = [&]() -> std::string { return idx + 1 < argc ? argv[++idx] : ""; };
    if (arg == "--seconds") {
      options.seconds = std::max(1.0, std::atof(value().c_str()));
    } else if (arg == "--rebuild-events") {
      options.rebuild_events = static_cast<size_t>(std::max(1000L, std::atol(value().c_str())));
    } else if (arg == "--rate") {
      options.rate = std::max(0.0, std::atof(value().c_str()));
    } else if (arg == "--daemon-arg") {
      options.daemon_args.push_back(value());
    } else if (arg == "--url") {
      options.url = value();
    } else if (arg == "--keep") {
      options.keep = true;
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--seconds N] [--rebuild-events N] [--rate CMD_PER_S] [--url CONNINFO] "
          "[--keep]\n",
          kProgram);
      return arg == "--help" ? 0 : 2;
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return run(options);
}
