// command_bench: load generator for cqrsd over CAF (the C++ client, cqrs::Client). It starts cqrsd
// as a child process on a fresh database and measures gift card commands end to end: throughput
// and latency at several windows of in-flight commands, the latency at about half of the peak
// rate (open loop), one client with one command at a time, and, with --cards, cqrsd's memory while
// many aggregates are live and after they went idle. A raw libpq baseline (one INSERT + COMMIT
// per command, same concurrency) runs in the same process so the ratio cqrsd/raw carries over to
// other machines. Prints per-phase figures and markdown tables for docs/BENCHMARKS.md.
//
// usage: command_bench [--seconds N] [--quick] [--windows 1,16,64,256] [--url CONNINFO]
//                      [--issue-percent 30] [--cards N] [--idle-timeout 5s] [--memory-only]
//                      [--cqrsd-arg FLAG]... [--open-loop-log FILE] [--transport-floor] [--keep]
//
// The server is DATABASE_URL (or --url; a postgresql:// URL or a libpq keyword string). The run
// creates database cqrs_bench_<pid> there, lets cqrsd migrate it, and stops cqrsd (SIGTERM) and
// drops the database at the end (also after Ctrl-C or a failure).
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "actors/client.hpp"
#include "bench_daemon.hpp"
#include "bench_support.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/uuid.hpp"
#include "giftcard/giftcard.hpp"

#ifndef CQRSD_BIN
#error "CQRSD_BIN (the path of the cqrsd executable) must be defined by the build"
#endif
#ifndef TRANSPORT_FLOOR_BIN
#error "TRANSPORT_FLOOR_BIN (the path of bench/transport_floor) must be defined by the build"
#endif

namespace {

using namespace cqrs::bench;

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kDefaultWindows[] = {1, 16, 64, 256};
constexpr double kDefaultIssueShare = 0.3;      // the rest are redeems on existing cards
constexpr int64_t kCardAmount = 1'000'000'000;  // redeems of 1..99 cents never empty a card
constexpr size_t kSeedCards = 10'000;           // issued before the measurements (also warmup)
constexpr size_t kSetupWindow = 256;            // window for seeding and for --cards
constexpr size_t kMemoryChunk = 20'000;         // --cards envelopes built and sent per call
constexpr size_t kConnectionMargin = 10;        // connections left free for others
constexpr auto kCommandTimeout = std::chrono::milliseconds(3'000);  // see settle()
constexpr double kHalfPeakP99GoalMs = 10.0;                         // open loop at half of the peak
constexpr double kRatioGoal = 2.0;                                  // cqrsd/raw at high concurrency
constexpr size_t kRatioGoalMinWindow = 64;                          // "high concurrency"
constexpr double kSingleP50GoalMs = 1.5;
constexpr double kRssGoalBytes = 1024.0 * 1024 * 1024;
constexpr double kIdleKeptGrowth = 0.1;  // "back near the start": keeps <= 10% of its growth
constexpr auto kIdleSettleLimit = 60s;
constexpr double kIdleCpuPercent = 3;   // "idle" between phases: under 3% of a core
constexpr size_t kReuseCards = 50'000;  // --cards: new cards issued after idle (reuse check)

std::atomic<bool> g_interrupted{false};

void on_signal(int) { g_interrupted = true; }

struct Options {
  double seconds = 5;
  double probe_seconds = 1;
  double issue_share = kDefaultIssueShare;
  std::vector<size_t> windows{std::begin(kDefaultWindows), std::end(kDefaultWindows)};
  std::string base_conninfo;
  size_t cards = 0;
  std::string idle_timeout = "5s";
  std::vector<std::string> daemon_args;  // extra cqrsd flags (--cqrsd-arg), for experiments
  bool throughput = true;
  bool transport_floor = false;  // --transport-floor: the CAF echo server instead of cqrsd
  bool keep_database = false;
  std::string open_loop_log;  // --open-loop-log: every measured open-loop command's timing
};

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

Clock::duration from_seconds(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Sleeps up to `seconds`; returns early on Ctrl-C.
void interruptible_sleep(double seconds) {
  auto end = Clock::now() + from_seconds(seconds);
  while (!g_interrupted && Clock::now() < end) {
    std::this_thread::sleep_for(std::min<Clock::duration>(20ms, end - Clock::now()));
  }
}

// "1234567.8" -> "1,234,568".
std::string with_commas(double value) {
  std::string digits = std::to_string(static_cast<int64_t>(value + 0.5));
  std::string out;
  for (size_t idx = 0; idx < digits.size(); ++idx) {
    if (idx > 0 && (digits.size() - idx) % 3 == 0) out.push_back(',');
    out.push_back(digits[idx]);
  }
  return out;
}

// A CAF timespan as cqrsd takes it ("5s", "500ms", "2min", "1h"), in seconds.
std::optional<double> duration_seconds(std::string_view text) {
  constexpr std::pair<std::string_view, double> kUnits[] = {
      {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"min", 60}, {"h", 3600}, {"s", 1}};
  for (const auto& [suffix, scale] : kUnits) {
    if (!text.ends_with(suffix)) continue;
    std::string number(text.substr(0, text.size() - suffix.size()));
    char* end = nullptr;
    double value = std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size() || value < 0) return std::nullopt;
    return value * scale;
  }
  return std::nullopt;
}

std::string mib(double bytes) { return fixed(bytes / (1024.0 * 1024.0), 0) + " MiB"; }

// ---- raw libpq (as in store_bench) -----------------------------------------------------------

// CPU used between two samples, in % of one core (the machine has nproc * 100 %).
struct CpuShare {
  double daemon = 0;
  double client = 0;
  double postgres = 0;
  double other = 0;
};

CpuShare share_between(const CpuSample& from, const CpuSample& to) {
  CpuUse use = cpu_between(from, to);
  return {use.percent(use.daemon), use.percent(use.client), use.percent(use.postgres),
          use.percent(use.other)};
}

std::string describe(const CpuShare& cpu) {
  std::string out = "cqrsd " + fixed(cpu.daemon, 0) + "%, client " + fixed(cpu.client, 0) +
                    "%, postgres " + fixed(cpu.postgres, 0) + "%, other " + fixed(cpu.other, 0) +
                    "% (of one core; " + std::to_string(std::thread::hardware_concurrency()) +
                    " cores = " + std::to_string(100 * std::thread::hardware_concurrency()) + "%)";
  if (cpu.other > kForeignCpuWarning) {
    out += "\n              WARNING: other processes used " + fixed(cpu.other, 0) +
           "% of a core meanwhile; these figures are disturbed";
  }
  return out;
}

// ---- cqrsd as a child process ------------------------------------------------------------------

using Daemon = cqrs::bench::BenchDaemon;

// ---- the commands ------------------------------------------------------------------------------

cqrs::DispatchOptions dispatch_options() {
  cqrs::DispatchOptions options;
  options.timeout = kCommandTimeout;
  return options;
}

struct Command {
  std::string envelope;
  bool issue = false;
  std::string card_id;  // the new card, for issues
};

std::string issue_envelope(const std::string& card_id) {
  return cqrs::Client::envelope(
      cqrs::type_name_of<giftcard::IssueGiftCard>(),
      nlohmann::json(giftcard::IssueGiftCard{card_id, kCardAmount}).dump(), dispatch_options());
}

std::string redeem_envelope(const std::string& card_id, int64_t amount) {
  return cqrs::Client::envelope(cqrs::type_name_of<giftcard::RedeemGiftCard>(),
                                nlohmann::json(giftcard::RedeemGiftCard{card_id, amount}).dump(),
                                dispatch_options());
}

// IssueGiftCard of a new card (`issue_share` of the commands, 30% by default), else
// RedeemGiftCard of 1..99 cents on a random card whose issue was already answered (so redeems are
// not rejected for a card still being issued).
class CommandMix {
 public:
  CommandMix(std::string prefix, uint64_t seed, double issue_share)
      : prefix_(std::move(prefix)), rng_(seed), issue_share_(issue_share) {}

  Command next(const std::vector<std::string>& known_cards) {
    Command command;
    if (known_cards.empty() || unit_(rng_) < issue_share_) {
      command.issue = true;
      command.card_id = prefix_ + std::to_string(++issued_);
      command.envelope = issue_envelope(command.card_id);
    } else {
      std::uniform_int_distribution<size_t> pick(0, known_cards.size() - 1);
      std::uniform_int_distribution<int64_t> cents(1, 99);
      command.envelope = redeem_envelope(known_cards[pick(rng_)], cents(rng_));
    }
    return command;
  }

 private:
  std::string prefix_;
  std::mt19937_64 rng_;
  double issue_share_;
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
  uint64_t issued_ = 0;
};

enum class ReplyStatus { kOk, kRejected, kError };

// The top-level "status" of a reply. Keys are dumped in sorted order and event data has no
// "status" field, so the last occurrence is the top-level one.
ReplyStatus status_of(const cqrs::Result<std::string>& reply) {
  if (!reply) return ReplyStatus::kError;
  constexpr std::string_view kKey = R"("status":")";
  size_t at = reply->rfind(kKey);
  if (at == std::string::npos) return ReplyStatus::kError;
  std::string_view value = std::string_view(*reply).substr(at + kKey.size());
  if (value.starts_with("ok\"")) return ReplyStatus::kOk;
  if (value.starts_with("rejected\"")) return ReplyStatus::kRejected;
  return ReplyStatus::kError;
}

std::string describe_reply(const cqrs::Result<std::string>& reply) {
  return reply ? *reply : reply.error().to_string();
}

// ---- measurements ------------------------------------------------------------------------------

double percentile(const std::vector<double>& sorted_values, double fraction) {
  if (sorted_values.empty()) return 0;
  size_t idx = static_cast<size_t>(fraction * static_cast<double>(sorted_values.size() - 1) + 0.5);
  return sorted_values[std::min(idx, sorted_values.size() - 1)];
}

struct Figures {
  size_t commands = 0;
  double seconds = 0;
  double rate = 0;                         // commands/s
  std::vector<double> latencies_ms;        // sorted
  std::vector<double> issue_latencies_ms;  // by type (where recorded), sorted
  std::vector<double> redeem_latencies_ms;
  size_t ok = 0;
  size_t rejected = 0;
  size_t errors = 0;
  std::string first_problem;
  std::vector<std::string> issued;  // cards whose issue was answered ok
  CpuShare cpu;

  double p(double fraction) const { return percentile(latencies_ms, fraction); }

  void sort_latencies() {
    std::sort(latencies_ms.begin(), latencies_ms.end());
    std::sort(issue_latencies_ms.begin(), issue_latencies_ms.end());
    std::sort(redeem_latencies_ms.begin(), redeem_latencies_ms.end());
  }

  // Latency of issues vs redeems (an issue of a new card also loads its empty stream first).
  std::string by_type() const {
    return "issue p50 " + fixed(percentile(issue_latencies_ms, 0.5), 2) + " / p99 " +
           fixed(percentile(issue_latencies_ms, 0.99), 2) + " ms, redeem p50 " +
           fixed(percentile(redeem_latencies_ms, 0.5), 2) + " / p99 " +
           fixed(percentile(redeem_latencies_ms, 0.99), 2) + " ms";
  }

  void count(ReplyStatus status, const cqrs::Result<std::string>& reply) {
    if (status == ReplyStatus::kOk) {
      ++ok;
      return;
    }
    if (status == ReplyStatus::kRejected) {
      ++rejected;
    } else {
      ++errors;
    }
    if (first_problem.empty()) first_problem = describe_reply(reply);
  }

  void merge(Figures&& other) {
    latencies_ms.insert(latencies_ms.end(), other.latencies_ms.begin(), other.latencies_ms.end());
    issue_latencies_ms.insert(issue_latencies_ms.end(), other.issue_latencies_ms.begin(),
                              other.issue_latencies_ms.end());
    redeem_latencies_ms.insert(redeem_latencies_ms.end(), other.redeem_latencies_ms.begin(),
                               other.redeem_latencies_ms.end());
    ok += other.ok;
    rejected += other.rejected;
    errors += other.errors;
    if (first_problem.empty()) first_problem = std::move(other.first_problem);
    issued.insert(issued.end(), std::make_move_iterator(other.issued.begin()),
                  std::make_move_iterator(other.issued.end()));
  }

  std::string summary() const {
    std::string out = with_commas(rate) + " cmd/s  p50 " + fixed(p(0.50), 2) + " ms  p95 " +
                      fixed(p(0.95), 2) + " ms  p99 " + fixed(p(0.99), 2) + " ms  (" +
                      with_commas(static_cast<double>(commands)) + " commands in " +
                      fixed(seconds, 2) + " s";
    if (rejected + errors > 0) {
      out += "; " + std::to_string(rejected) + " rejected, " + std::to_string(errors) + " errors";
    }
    return out + ")";
  }
};

// Sends `commands` through Client::dispatch_many with at most `window` in flight. Latency per
// command: from the moment the window let it go to its reply. dispatch_many sends the envelopes in
// index order, the first `window` at once and the next one right after each reply's callback
// returns, so command window + k leaves when the k-th reply (in arrival order) has been handled.
Figures run_windowed(cqrs::Client& client, std::vector<Command>&& commands, size_t window,
                     pid_t daemon_pid) {
  const size_t count = commands.size();
  std::vector<std::string> envelopes;
  envelopes.reserve(count);
  for (Command& command : commands) envelopes.push_back(std::move(command.envelope));
  std::vector<Clock::time_point> sent(count);
  Figures figures;
  figures.commands = count;
  figures.latencies_ms.reserve(count);
  size_t replies = 0;
  CpuSample cpu_before = sample_cpu(daemon_pid);
  Clock::time_point start = Clock::now();
  for (size_t idx = 0; idx < std::min(window, count); ++idx) sent[idx] = start;
  client.dispatch_many(
      envelopes, window, kCommandTimeout, [&](size_t index, cqrs::Result<std::string> reply) {
        Clock::time_point now = Clock::now();
        if (size_t released = window + replies++; released < count) {
          sent[released] = now;
        }
        double latency = ms_between(sent[index], now);
        figures.latencies_ms.push_back(latency);
        (commands[index].issue ? figures.issue_latencies_ms : figures.redeem_latencies_ms)
            .push_back(latency);
        ReplyStatus status = status_of(reply);
        figures.count(status, reply);
        if (status == ReplyStatus::kOk && commands[index].issue) {
          figures.issued.push_back(std::move(commands[index].card_id));
        }
      });
  Clock::time_point end = Clock::now();
  figures.cpu = share_between(cpu_before, sample_cpu(daemon_pid));
  figures.seconds = seconds_between(start, end);
  figures.rate = static_cast<double>(count) / figures.seconds;
  figures.sort_latencies();
  return figures;
}

std::vector<Command> make_commands(CommandMix& mix, const std::vector<std::string>& known_cards,
                                   size_t count) {
  std::vector<Command> commands;
  commands.reserve(count);
  for (size_t idx = 0; idx < count; ++idx) commands.push_back(mix.next(known_cards));
  return commands;
}

// Open loop at a fixed rate: command k is due at start + k / rate, whatever happened to earlier
// ones; Client::dispatch_at_rate sends each when due from one asynchronous sender. Latency runs
// from the due time, so a server (or sender) that falls behind shows up as latency instead of a
// lower send rate (no coordinated omission). The first `warmup_seconds` run at the same rate but
// are not counted.
Figures run_open_loop(cqrs::Client& client, const std::vector<std::string>& known_cards,
                      double issue_share, double rate, double warmup_seconds, double seconds,
                      const std::string& prefix, pid_t daemon_pid, FILE* log) {
  const auto total = static_cast<size_t>(rate * (warmup_seconds + seconds));
  CommandMix mix(prefix, 7919, issue_share);
  std::vector<Command> commands = make_commands(mix, known_cards, total);
  std::vector<std::string> envelopes;
  envelopes.reserve(total);
  for (Command& command : commands) envelopes.push_back(std::move(command.envelope));
  Clock::time_point start = Clock::now() + 50ms;
  Clock::time_point measured_from = start + from_seconds(warmup_seconds);
  Clock::time_point last_reply = measured_from;
  Figures figures;
  std::optional<CpuSample> cpu_before;
  client.dispatch_at_rate(
      envelopes, start, rate, kCommandTimeout, [&](size_t index, cqrs::Result<std::string> reply) {
        Clock::time_point now = Clock::now();
        Clock::time_point due = start + from_seconds(static_cast<double>(index) / rate);
        ReplyStatus status = status_of(reply);
        if (status == ReplyStatus::kOk && commands[index].issue) {
          figures.issued.push_back(commands[index].card_id);
        }
        if (due < measured_from) return;
        if (!cpu_before) cpu_before = sample_cpu(daemon_pid);
        last_reply = std::max(last_reply, now);
        figures.latencies_ms.push_back(ms_between(due, now));
        if (log != nullptr) {
          std::fprintf(log, "%.3f %.3f %s\n", ms_between(measured_from, due),
                       figures.latencies_ms.back(), commands[index].issue ? "issue" : "redeem");
        }
        (commands[index].issue ? figures.issue_latencies_ms : figures.redeem_latencies_ms)
            .push_back(figures.latencies_ms.back());
        figures.count(status, reply);
      });
  if (cpu_before) figures.cpu = share_between(*cpu_before, sample_cpu(daemon_pid));
  figures.commands = figures.latencies_ms.size();
  figures.seconds = seconds_between(measured_from, last_reply);
  figures.rate = static_cast<double>(figures.commands) / figures.seconds;
  figures.sort_latencies();
  return figures;
}

// One caller, one command at a time, through the typed blocking Client::dispatch; the first
// `warmup_seconds` are not counted.
Figures run_single(cqrs::Client& client, const std::vector<std::string>& known_cards,
                   double issue_share, double warmup_seconds, double seconds,
                   const std::string& prefix, pid_t daemon_pid) {
  Figures figures;
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<size_t> pick(0, known_cards.size() - 1);
  uint64_t issued = 0;
  Clock::time_point measured_from = Clock::now() + from_seconds(warmup_seconds);
  Clock::time_point end = measured_from + from_seconds(seconds);
  std::optional<CpuSample> cpu_before;
  while (!g_interrupted && Clock::now() < end) {
    bool issue = unit(rng) < issue_share;
    std::string card_id = issue ? prefix + std::to_string(++issued) : known_cards[pick(rng)];
    Clock::time_point sent = Clock::now();
    cqrs::Result<cqrs::DispatchReply> reply =
        issue ? client.dispatch(giftcard::IssueGiftCard{card_id, kCardAmount}, dispatch_options())
              : client.dispatch(giftcard::RedeemGiftCard{card_id, 1}, dispatch_options());
    Clock::time_point now = Clock::now();
    ReplyStatus status = !reply                        ? ReplyStatus::kError
                         : reply->ok()                 ? ReplyStatus::kOk
                         : reply->status == "rejected" ? ReplyStatus::kRejected
                                                       : ReplyStatus::kError;
    if (status == ReplyStatus::kOk && issue) figures.issued.push_back(card_id);
    if (sent < measured_from) continue;
    if (!cpu_before) cpu_before = sample_cpu(daemon_pid);
    figures.latencies_ms.push_back(ms_between(sent, now));
    (issue ? figures.issue_latencies_ms : figures.redeem_latencies_ms)
        .push_back(figures.latencies_ms.back());
    figures.count(status, reply ? cqrs::Result<std::string>(reply->json.dump())
                                : cqrs::Result<std::string>(reply.error()));
  }
  if (cpu_before) figures.cpu = share_between(*cpu_before, sample_cpu(daemon_pid));
  figures.commands = figures.latencies_ms.size();
  figures.seconds = seconds_between(measured_from, Clock::now());
  figures.rate = static_cast<double>(figures.commands) / figures.seconds;
  figures.sort_latencies();
  return figures;
}

// ---- the raw baseline --------------------------------------------------------------------------

struct alignas(64) RawCounter {
  std::atomic<int64_t> inserts{0};
};

// `connections` threads, one libpq connection each, each running a prepared single-row INSERT in
// autocommit (one INSERT + COMMIT, one WAL flush, per command) of an event-shaped row like
// store_bench's: GiftCard events with command/correlation/causation ids in the metadata.
std::optional<Figures> run_raw(const std::string& conninfo, size_t connections, double issue_share,
                               double warmup_seconds, double seconds, pid_t daemon_pid,
                               std::string& error) {
  std::vector<RawCounter> counters(connections);
  std::vector<std::vector<double>> latencies(connections);
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::latch connected(static_cast<ptrdiff_t>(connections) + 1);
  auto fail = [&](const std::string& message) {
    std::lock_guard lock(error_mutex);
    if (error.empty()) error = message;
    stop = true;
  };
  std::vector<std::thread> threads;
  for (size_t thread_idx = 0; thread_idx < connections; ++thread_idx) {
    threads.emplace_back([&, thread_idx] {
      std::string thread_error;
      PgConnPtr conn = connect_raw(conninfo, thread_error);
      bool ok = conn && checked(conn.get(),
                                PQprepare(conn.get(), "insert",
                                          "INSERT INTO bench_raw (stream_id, stream_version, "
                                          "event_id, event_type, event_version, data, metadata) "
                                          "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                                          0, nullptr),
                                thread_error);
      connected.count_down();
      if (!ok) return fail("raw connection " + std::to_string(thread_idx) + ": " + thread_error);
      connected.wait();
      std::mt19937_64 rng(thread_idx);
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      latencies[thread_idx].reserve(1 << 16);
      for (int64_t number = 1; !stop && !g_interrupted; ++number) {
        bool issue = unit(rng) < issue_share;
        std::string card_id = "raw-" + std::to_string(thread_idx) + "-" + std::to_string(number);
        std::string stream_id = "giftcard-" + card_id;
        std::string data =
            issue ? R"({"amount":1000000000,"card_id":")" + card_id + R"("})"
                  : R"({"amount":37,"card_id":")" + card_id + R"(","remaining":999999963})";
        std::string command_id = cqrs::Uuid::time_ordered().to_string();
        std::string metadata = R"({"causation_id":")" + command_id + R"(","command_id":")" +
                               command_id + R"(","correlation_id":")" + command_id + R"("})";
        std::string event_id = cqrs::Uuid::time_ordered().to_string();
        const char* values[] = {stream_id.c_str(),
                                "1",
                                event_id.c_str(),
                                issue ? "GiftCardIssued" : "GiftCardRedeemed",
                                "1",
                                data.c_str(),
                                metadata.c_str()};
        Clock::time_point sent = Clock::now();
        if (!checked(conn.get(),
                     PQexecPrepared(conn.get(), "insert", 7, values, nullptr, nullptr, 0),
                     thread_error)) {
          return fail("raw insert: " + thread_error);
        }
        if (measuring) {
          latencies[thread_idx].push_back(ms_between(sent, Clock::now()));
          counters[thread_idx].inserts.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  connected.arrive_and_wait();
  interruptible_sleep(warmup_seconds);
  CpuSample cpu_before = sample_cpu(daemon_pid);
  measuring = true;
  Clock::time_point start = Clock::now();
  interruptible_sleep(seconds);
  measuring = false;
  Clock::time_point end = Clock::now();
  CpuSample cpu_after = sample_cpu(daemon_pid);
  stop = true;
  for (std::thread& thread : threads) thread.join();
  if (!error.empty()) return std::nullopt;
  if (g_interrupted) {
    error = "interrupted";
    return std::nullopt;
  }
  Figures figures;
  figures.cpu = share_between(cpu_before, cpu_after);
  for (size_t idx = 0; idx < connections; ++idx) {
    figures.commands += static_cast<size_t>(counters[idx].inserts.load());
    figures.latencies_ms.insert(figures.latencies_ms.end(), latencies[idx].begin(),
                                latencies[idx].end());
  }
  figures.ok = figures.commands;
  figures.seconds = seconds_between(start, end);
  figures.rate = static_cast<double>(figures.commands) / figures.seconds;
  figures.sort_latencies();
  return figures;
}

// ---- the run -----------------------------------------------------------------------------------

// Connections the raw baseline may open: max_connections minus the reserved ones, those in use,
// cqrsd's (already counted) and a margin for others.
size_t available_connections(PGconn* conn) {
  std::string free_slots =
      query_value(conn,
                  "SELECT current_setting('max_connections')::int - "
                  "current_setting('superuser_reserved_connections')::int - "
                  "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')");
  long slots = std::atol(free_slots.c_str()) - static_cast<long>(kConnectionMargin);
  return static_cast<size_t>(std::max(1L, slots));
}

std::unique_ptr<Daemon> start_daemon(const Options& options, const std::string& conninfo,
                                     const std::vector<std::string>& extra, std::string& error) {
  std::vector<std::string> args{"--db.url=" + conninfo, "--server.port=0", "--log.level=warn"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), options.daemon_args.begin(), options.daemon_args.end());
  return Daemon::start(CQRSD_BIN, args, &g_interrupted, error);
}

// A server the benchmark started, and its client. The client goes first when it ends.
struct Running {
  std::unique_ptr<Daemon> server;
  std::unique_ptr<cqrs::Client> client;
};

// Connects a client to `server`, just started as `name` (null when that failed with `error`).
// Prints what went wrong and returns nothing on failure.
std::optional<Running> connected(std::unique_ptr<Daemon> server, const char* name,
                                 std::string& error) {
  if (!server) {
    std::fprintf(stderr, "command_bench: starting %s: %s\n", name, error.c_str());
    return std::nullopt;
  }
  auto client = cqrs::Client::connect("127.0.0.1", server->port());
  if (!client) {
    std::fprintf(stderr, "command_bench: %s\n", client.error().to_string().c_str());
    return std::nullopt;
  }
  return Running{std::move(server), std::move(client).value()};
}

// Issues `count` cards named <prefix><n> with a window of kSetupWindow, kMemoryChunk at a time.
// Returns the issued ids (only those answered ok); prints progress when `progress` is set.
std::optional<Figures> issue_cards(cqrs::Client& client, const std::string& prefix, size_t count,
                                   pid_t daemon_pid, bool progress, std::string& error) {
  Figures total;
  Clock::time_point start = Clock::now();
  for (size_t done = 0; done < count && !g_interrupted; done += kMemoryChunk) {
    std::vector<Command> commands;
    size_t chunk = std::min(kMemoryChunk, count - done);
    commands.reserve(chunk);
    for (size_t idx = 0; idx < chunk; ++idx) {
      Command& command = commands.emplace_back();
      command.issue = true;
      command.card_id = prefix + std::to_string(done + idx + 1);
      command.envelope = issue_envelope(command.card_id);
    }
    Figures figures = run_windowed(client, std::move(commands), kSetupWindow, daemon_pid);
    if (figures.errors > 0 || figures.rejected > 0) {
      error = std::to_string(figures.errors + figures.rejected) + " of " + std::to_string(chunk) +
              " issues failed; first: " + figures.first_problem;
      return std::nullopt;
    }
    total.merge(std::move(figures));
    if (progress) {
      std::printf(
          "  %s cards issued, %s cmd/s so far, cqrsd RSS %s\n",
          with_commas(static_cast<double>(done + chunk)).c_str(),
          with_commas(static_cast<double>(done + chunk) / seconds_between(start, Clock::now()))
              .c_str(),
          mib(rss_bytes(daemon_pid)).c_str());
      std::fflush(stdout);
    }
  }
  if (g_interrupted) {
    error = "interrupted";
    return std::nullopt;
  }
  total.commands = total.latencies_ms.size();
  total.seconds = seconds_between(start, Clock::now());
  total.rate = static_cast<double>(total.commands) / total.seconds;
  total.sort_latencies();
  return total;
}

// Starts each phase from a clean slate: a CHECKPOINT, then waits until cqrsd and this process are
// idle. CAF 0.17 still delivers the timeout of every answered request when it expires (the
// gateway's after the command's timeout, the client's a second later): after a phase whose last
// command was sent at `last_send`, both stay busy until about last_send + kCommandTimeout + 1 s.
// That work must not be billed to the next phase, so wait for it to pass, then for idle CPU.
void settle(PGconn* admin, pid_t daemon_pid, Clock::time_point last_send) {
  std::string ignored;
  (void)exec_sql(admin, "CHECKPOINT", ignored);
  interruptible_sleep(seconds_between(Clock::now(), last_send + kCommandTimeout + 1500ms));
  auto deadline = Clock::now() + 5s;
  CpuSample before = sample_cpu(daemon_pid);
  while (!g_interrupted && Clock::now() < deadline) {
    interruptible_sleep(0.5);
    CpuSample after = sample_cpu(daemon_pid);
    CpuShare used = share_between(before, after);
    if (used.daemon < kIdleCpuPercent && used.client < kIdleCpuPercent) return;
    before = after;
  }
}

bool problems_reported(const Figures& figures, const std::string& label) {
  size_t bad = figures.rejected + figures.errors;
  if (bad == 0) return false;
  std::printf("  WARNING (%s): %zu of %zu commands not ok; first: %s\n", label.c_str(), bad,
              figures.commands, figures.first_problem.c_str());
  return figures.errors * 100 > figures.commands;  // more than 1% errors: the figures are void
}

// "rate | p50 | p95 | p99" for the markdown table.
std::string latency_cells(const Figures& figures) {
  return with_commas(figures.rate) + " | " + fixed(figures.p(0.50), 2) + " | " +
         fixed(figures.p(0.95), 2) + " | " + fixed(figures.p(0.99), 2);
}

std::string cpu_cell(const CpuShare& cpu) {
  return fixed(cpu.daemon, 0) + " / " + fixed(cpu.client, 0) + " / " + fixed(cpu.postgres, 0) +
         (cpu.other > kForeignCpuWarning ? " (disturbed: others " + fixed(cpu.other, 0) + ")" : "");
}

struct ThroughputRow {
  size_t window = 0;
  Figures cqrsd;
  Figures raw;
  size_t raw_connections = 0;
};

int run_throughput(const Options& options, const std::string& conninfo, PGconn* admin,
                   std::vector<std::string>& table) {
  std::string error;
  auto running = connected(start_daemon(options, conninfo, {}, error), "cqrsd", error);
  if (!running) return 1;
  auto& [daemon, client] = *running;
  std::string extra;
  for (const std::string& arg : options.daemon_args) extra += " " + arg;
  std::printf("cqrsd pid %d listening on 127.0.0.1:%u (%s)\n", daemon->pid(), daemon->port(),
              extra.empty() ? "default options" : ("extra flags:" + extra).c_str());
  pid_t pid = daemon->pid();
  std::printf("cqrsd RSS at start: %s\n", mib(rss_bytes(pid)).c_str());
  std::fflush(stdout);

  // Cards for the redeems, issued up front; this also warms up cqrsd and the client.
  auto seeded = issue_cards(*client, "seed-", kSeedCards, pid, false, error);
  if (!seeded) {
    std::fprintf(stderr, "command_bench: seeding cards: %s\n", error.c_str());
    return 1;
  }
  std::vector<std::string> known_cards = std::move(seeded->issued);
  std::printf("seeded %s cards at %s cmd/s (window %zu, issues only)\n\n",
              with_commas(static_cast<double>(known_cards.size())).c_str(),
              with_commas(seeded->rate).c_str(), kSetupWindow);

  Clock::time_point last_send = Clock::now();  // of the last command sent to cqrsd
  size_t free_connections = available_connections(admin);
  std::vector<ThroughputRow> rows;
  double expected_rate = 500;
  int phase = 0;
  for (size_t window : options.windows) {
    ++phase;
    CommandMix mix("w" + std::to_string(phase) + "-", 1000 + phase, options.issue_share);
    // Probe (also warmup): about probe_seconds' worth at the rate seen so far; then the measured
    // run, sized from the probe's rate to last about options.seconds.
    settle(admin, pid, last_send);
    auto probe_count = static_cast<size_t>(
        std::max(static_cast<double>(4 * window), expected_rate * options.probe_seconds));
    Figures probe =
        run_windowed(*client, make_commands(mix, known_cards, probe_count), window, pid);
    if (problems_reported(probe, "probe")) return 1;
    auto count = static_cast<size_t>(
        std::max(static_cast<double>(8 * window), probe.rate * options.seconds));
    std::vector<Command> commands = make_commands(mix, known_cards, count);
    for (std::string& card : probe.issued) known_cards.push_back(std::move(card));
    Figures measured = run_windowed(*client, std::move(commands), window, pid);
    last_send = Clock::now();
    if (g_interrupted) return 1;
    std::printf("window %4zu  cqrsd %s\n", window, measured.summary().c_str());
    std::printf("              %s\n              cpu: %s\n", measured.by_type().c_str(),
                describe(measured.cpu).c_str());
    if (problems_reported(measured, "window " + std::to_string(window))) return 1;
    for (std::string& card : measured.issued) known_cards.push_back(std::move(card));
    expected_rate = measured.rate;

    ThroughputRow row;
    row.window = window;
    row.raw_connections = std::min(window, free_connections);
    settle(admin, pid, last_send);
    auto raw = run_raw(conninfo, row.raw_connections, options.issue_share,
                       std::min(1.0, options.seconds / 4), options.seconds, pid, error);
    if (!raw) {
      std::fprintf(stderr, "command_bench: raw baseline: %s\n", error.c_str());
      return 1;
    }
    std::printf("              raw   %s on %zu connection%s\n", raw->summary().c_str(),
                row.raw_connections, row.raw_connections == 1 ? "" : "s");
    std::printf("              cpu: %s\n", describe(raw->cpu).c_str());
    double ratio = measured.rate / raw->rate;
    std::printf("              cqrsd/raw %.2f%s\n\n", ratio,
                window >= kRatioGoalMinWindow ? (std::string(" (goal >= ") + fixed(kRatioGoal, 1) +
                                                 ": " + (ratio >= kRatioGoal ? "met)" : "MISSED)"))
                                                    .c_str()
                                              : "");
    std::fflush(stdout);
    row.cqrsd = std::move(measured);
    row.raw = std::move(*raw);
    rows.push_back(std::move(row));
  }

  // Latency at about half of the peak, open loop.
  auto peak = std::max_element(rows.begin(), rows.end(), [](const auto& lhs, const auto& rhs) {
    return lhs.cqrsd.rate < rhs.cqrsd.rate;
  });
  settle(admin, pid, last_send);
  double half_rate = peak->cqrsd.rate / 2;
  FILE* log = nullptr;
  if (!options.open_loop_log.empty()) {
    log = std::fopen(options.open_loop_log.c_str(), "w");
    if (log == nullptr) {
      std::fprintf(stderr, "command_bench: cannot write %s\n", options.open_loop_log.c_str());
      return 1;
    }
    std::fprintf(log, "# due_ms latency_ms kind (due_ms from the start of the measured run)\n");
  }
  Figures half = run_open_loop(*client, known_cards, options.issue_share, half_rate,
                               options.probe_seconds, options.seconds, "o-", pid, log);
  if (log != nullptr) std::fclose(log);
  last_send = Clock::now();
  if (g_interrupted) return 1;
  bool half_met = half.p(0.99) <= kHalfPeakP99GoalMs;
  std::printf(
      "open loop at %s cmd/s (half of the peak, %s cmd/s at window %zu): %s (goal p99 <= "
      "%.0f ms: %s)\n",
      with_commas(half_rate).c_str(), with_commas(peak->cqrsd.rate).c_str(), peak->window,
      half.summary().c_str(), kHalfPeakP99GoalMs, half_met ? "met" : "MISSED");
  std::printf("              %s\n              cpu: %s\n", half.by_type().c_str(),
              describe(half.cpu).c_str());
  if (problems_reported(half, "open loop")) return 1;

  // One client, one command at a time.
  settle(admin, pid, last_send);
  Figures single = run_single(*client, known_cards, options.issue_share, options.probe_seconds,
                              options.seconds, "s-", pid);
  if (g_interrupted) return 1;
  bool single_met = single.p(0.5) <= kSingleP50GoalMs;
  std::printf("one client, one command at a time (Client::dispatch): %s (goal p50 <= %s ms: %s)\n",
              single.summary().c_str(), fixed(kSingleP50GoalMs, 1).c_str(),
              single_met ? "met" : "MISSED");
  std::printf("              %s\n              cpu: %s\n", single.by_type().c_str(),
              describe(single.cpu).c_str());
  if (problems_reported(single, "single client")) return 1;

  // For comparison: a state query of a loaded aggregate takes the same way through the client,
  // gateway, router and aggregate, but no store round trip.
  std::vector<double> state_ms;
  Clock::time_point state_end = Clock::now() + from_seconds(std::min(2.0, options.seconds));
  while (!g_interrupted && Clock::now() < state_end) {
    Clock::time_point sent = Clock::now();
    auto reply = client->state("GiftCard", known_cards.front(), kCommandTimeout);
    state_ms.push_back(ms_between(sent, Clock::now()));
    if (!reply || reply->json.find("version") == reply->json.end()) {
      std::printf("  WARNING: state query failed: %s\n",
                  reply ? reply->json.dump().c_str() : reply.error().to_string().c_str());
      break;
    }
  }
  std::sort(state_ms.begin(), state_ms.end());
  std::printf(
      "state query of a loaded aggregate (no store round trip), one at a time: p50 %s ms, p99 %s "
      "ms\n",
      fixed(percentile(state_ms, 0.5), 2).c_str(), fixed(percentile(state_ms, 0.99), 2).c_str());
  std::printf("cqrsd RSS after the throughput runs: %s (peak %s)\n", mib(rss_bytes(pid)).c_str(),
              mib(peak_rss_bytes(pid)).c_str());

  client.reset();
  if (std::string stopped = daemon->stop(); !stopped.empty()) {
    std::printf("WARNING: cqrsd %s\n", stopped.c_str());
  }

  table.push_back(
      "| Workload | cqrsd cmd/s | p50 ms | p95 ms | p99 ms | Raw INSERT+COMMIT/s | cqrsd/raw | "
      "CPU % cqrsd / client / Postgres | Goal |");
  table.push_back("|---|--:|--:|--:|--:|--:|--:|--:|---|");
  for (const ThroughputRow& row : rows) {
    double ratio = row.cqrsd.rate / row.raw.rate;
    std::string goal = "–";
    if (row.window >= kRatioGoalMinWindow) {
      goal = std::string("cqrsd/raw ≥ 2: ") + (ratio >= kRatioGoal ? "met" : "**missed**");
    }
    std::string raw = with_commas(row.raw.rate);
    if (row.raw_connections != row.window) {
      raw += " (" + std::to_string(row.raw_connections) + " conns)";
    }
    table.push_back("| " + std::to_string(row.window) + " in flight (dispatch_many) | " +
                    latency_cells(row.cqrsd) + " | " + raw + " | " + fixed(ratio, 2) + " | " +
                    cpu_cell(row.cqrsd.cpu) + " | " + goal + " |");
  }
  table.push_back("| open loop at ½ peak (" + with_commas(half_rate) + "/s target) | " +
                  latency_cells(half) + " | – | – | " + cpu_cell(half.cpu) +
                  " | p99 ≤ 10 ms: " + (half_met ? "met" : "**missed**") + " |");
  auto one =
      std::find_if(rows.begin(), rows.end(), [](const auto& row) { return row.window == 1; });
  table.push_back("| 1 client, 1 at a time (Client::dispatch) | " + latency_cells(single) + " | " +
                  (one == rows.end() ? "–" : with_commas(one->raw.rate)) + " | " +
                  (one == rows.end() ? "–" : fixed(single.rate / one->raw.rate, 2)) + " | " +
                  cpu_cell(single.cpu) + " | p50 ≤ 1.5 ms: " + (single_met ? "met" : "**missed**") +
                  " |");
  return 0;
}

// --transport-floor: the same client and commands against bench/transport_floor, a server that
// answers every dispatch at once (no parsing, no aggregate, no database), and the raw baseline at
// the same windows. The floor's rate bounds what any cqrsd can reach on this machine with CAF
// remote messaging; when it is below kRatioGoal x raw, that goal is out of reach here.
int run_transport_floor(const Options& options, const std::string& conninfo, PGconn* admin,
                        std::vector<std::string>& table) {
  std::string error;
  auto running = connected(Daemon::start(TRANSPORT_FLOOR_BIN, {}, &g_interrupted, error),
                           "transport_floor", error);
  if (!running) return 1;
  auto& [server, client] = *running;
  pid_t pid = server->pid();
  std::printf(
      "transport floor: pid %d on 127.0.0.1:%u answers every dispatch at once (its CPU is shown "
      "in the cqrsd column)\n\n",
      pid, server->port());
  // Redeems of cards that need not exist: the floor server reads nothing.
  std::vector<std::string> known_cards;
  for (int idx = 0; idx < 1000; ++idx) known_cards.push_back("floor-" + std::to_string(idx));

  table.push_back(
      "| Window | Transport floor cmd/s | p50 ms | p95 ms | p99 ms | Raw INSERT+COMMIT/s | "
      "Floor/raw | CPU % floor server / client | " +
      fixed(kRatioGoal, 0) + "x raw reachable? |");
  table.push_back("|---|--:|--:|--:|--:|--:|--:|--:|---|");
  size_t free_connections = available_connections(admin);
  Clock::time_point last_send = Clock::now();
  int phase = 0;
  for (size_t window : options.windows) {
    ++phase;
    CommandMix mix("f" + std::to_string(phase) + "-", 2000 + phase, options.issue_share);
    settle(admin, pid, last_send);
    Figures probe =
        run_windowed(*client, make_commands(mix, known_cards, std::max<size_t>(4 * window, 20'000)),
                     window, pid);
    if (problems_reported(probe, "floor probe")) return 1;
    auto count = static_cast<size_t>(
        std::max(static_cast<double>(8 * window), probe.rate * options.seconds));
    Figures floor = run_windowed(*client, make_commands(mix, known_cards, count), window, pid);
    last_send = Clock::now();
    if (g_interrupted) return 1;
    if (problems_reported(floor, "floor window " + std::to_string(window))) return 1;
    size_t connections = std::min(window, free_connections);
    settle(admin, pid, last_send);
    auto raw = run_raw(conninfo, connections, options.issue_share,
                       std::min(1.0, options.seconds / 4), options.seconds, pid, error);
    if (!raw) {
      std::fprintf(stderr, "command_bench: raw baseline: %s\n", error.c_str());
      return 1;
    }
    double ratio = floor.rate / raw->rate;
    bool reachable = ratio >= kRatioGoal;
    bool judged = window >= kRatioGoalMinWindow;  // the goal is for high concurrency
    std::printf("window %4zu  floor %s\n              cpu: %s\n", window, floor.summary().c_str(),
                describe(floor.cpu).c_str());
    std::printf("              raw   %s on %zu connection%s\n              cpu: %s\n",
                raw->summary().c_str(), connections, connections == 1 ? "" : "s",
                describe(raw->cpu).c_str());
    std::printf("              floor/raw %.2f%s\n\n", ratio,
                !judged     ? ""
                : reachable ? ": CAF transport alone leaves room for 2x raw"
                            : ": 2x raw is out of reach: CAF transport alone is slower");
    std::string raw_cell = with_commas(raw->rate);
    if (connections != window) raw_cell += " (" + std::to_string(connections) + " conns)";
    table.push_back("| " + std::to_string(window) + " | " + latency_cells(floor) + " | " +
                    raw_cell + " | " + fixed(ratio, 2) + " | " + fixed(floor.cpu.daemon, 0) +
                    " / " + fixed(floor.cpu.client, 0) + " | " +
                    (!judged     ? "–"
                     : reachable ? "yes"
                                 : "**no**") +
                    " |");
  }
  client.reset();
  if (std::string stopped = server->stop(); !stopped.empty()) {
    std::printf("WARNING: transport_floor %s\n", stopped.c_str());
  }
  return 0;
}

int run_memory(const Options& options, const std::string& conninfo,
               std::vector<std::string>& table) {
  std::string error;
  auto running = connected(
      start_daemon(options, conninfo, {"--aggregates.idle_timeout=" + options.idle_timeout}, error),
      "cqrsd", error);
  if (!running) return 1;
  auto& [daemon, client] = *running;
  pid_t pid = daemon->pid();
  std::printf("\nmemory: %s cards, window %zu, cqrsd with --aggregates.idle_timeout=%s (pid %d)\n",
              with_commas(static_cast<double>(options.cards)).c_str(), kSetupWindow,
              options.idle_timeout.c_str(), pid);
  interruptible_sleep(1);
  double rss_start = rss_bytes(pid);
  std::printf("  cqrsd RSS before: %s\n", mib(rss_start).c_str());
  std::fflush(stdout);
  auto issued = issue_cards(*client, "m-", options.cards, pid, true, error);
  if (!issued) {
    std::fprintf(stderr, "command_bench: --cards: %s\n", error.c_str());
    return 1;
  }
  double rss_live = rss_bytes(pid);
  // With an idle timeout shorter than the issuing, the first cards' actors stop while later ones
  // are issued: then only about rate x timeout are live at once.
  double live_estimate = std::min(static_cast<double>(options.cards),
                                  issued->rate * *duration_seconds(options.idle_timeout));
  if (live_estimate < static_cast<double>(options.cards)) {
    std::printf(
        "  note: issuing took longer than the idle timeout: about %s aggregates were live at "
        "once, not %s (use a longer --idle-timeout to hold them all)\n",
        with_commas(live_estimate).c_str(),
        with_commas(static_cast<double>(options.cards)).c_str());
  }
  double rss_peak = peak_rss_bytes(pid);
  Clock::time_point issued_at = Clock::now();
  std::printf("  issued in %s s (%s cmd/s, p50 %s ms, p99 %s ms); cqrsd RSS %s, peak %s\n",
              fixed(issued->seconds, 1).c_str(), with_commas(issued->rate).c_str(),
              fixed(issued->p(0.5), 2).c_str(), fixed(issued->p(0.99), 2).c_str(),
              mib(rss_live).c_str(), mib(rss_peak).c_str());
  std::fflush(stdout);

  // Wait until every aggregate has stopped, then until RSS holds still for longer than the
  // router's trim period (10 s), at most 60 s past the idle timeout.
  double idle_seconds = *duration_seconds(options.idle_timeout);
  double rss_idle = rss_live;
  Clock::time_point stable_since = Clock::now();
  auto live_aggregates = [&]() -> int64_t {
    auto status = client->admin({{"op", "status"}});
    if (!status || !status->ok()) return -1;
    return status->json.value("aggregates_live", int64_t{-1});
  };
  while (!g_interrupted &&
         Clock::now() - issued_at < from_seconds(idle_seconds) + kIdleSettleLimit) {
    interruptible_sleep(0.5);
    double now_rss = rss_bytes(pid);
    if (std::abs(now_rss - rss_idle) > std::max(1024.0 * 1024, rss_idle * 0.01)) {
      stable_since = Clock::now();
    }
    rss_idle = now_rss;
    if (seconds_between(stable_since, Clock::now()) >= 12 && live_aggregates() == 0) break;
  }
  double waited = seconds_between(issued_at, Clock::now());
  std::printf("  after %s s idle: cqrsd RSS %s\n", fixed(waited, 0).c_str(), mib(rss_idle).c_str());
  std::fflush(stdout);
  // A card whose actor was stopped must still work (reloaded from the store).
  auto check = client->dispatch(giftcard::RedeemGiftCard{"m-1", 1}, dispatch_options());
  std::printf("  redeem on the first card after idle: %s\n",
              check ? check->status.c_str() : check.error().to_string().c_str());
  // RSS alone cannot tell freed-but-kept memory (the allocator keeps it) from memory still in use.
  // Issuing more new cards can: freed memory is reused, so RSS grows far less than the first time.
  // Memory the router handed back to the system (malloc_trim) is not there to reuse: the new cards
  // take fresh pages, and the drop of RSS at idle already showed that it was freed.
  size_t reuse_cards = std::min(options.cards, kReuseCards);
  auto reissued = issue_cards(*client, "r-", reuse_cards, pid, false, error);
  if (!reissued) {
    std::fprintf(stderr, "command_bench: --cards, second round: %s\n", error.c_str());
    return 1;
  }
  double rss_reused = rss_bytes(pid);
  double first_growth = (rss_live - rss_start) / live_estimate;
  double second_growth = (rss_reused - rss_idle) / static_cast<double>(reuse_cards);
  bool reused = second_growth < first_growth / 4;
  bool returned = rss_idle - rss_start <= kIdleKeptGrowth * std::max(0.0, rss_peak - rss_start);
  std::string verdict = reused     ? "the idle aggregates' memory was freed and reused"
                        : returned ? "freed and returned to the system at idle, so new pages"
                                   : "NOT reused: the idle aggregates' memory looks still in use";
  std::printf(
      "  %s more new cards after idle: cqrsd RSS %s (%s bytes per card, against %s the first "
      "time): %s\n",
      with_commas(static_cast<double>(reuse_cards)).c_str(), mib(rss_reused).c_str(),
      with_commas(std::max(0.0, second_growth)).c_str(), with_commas(first_growth).c_str(),
      verdict.c_str());
  client.reset();
  if (std::string stopped = daemon->stop(); !stopped.empty()) {
    std::printf("WARNING: cqrsd %s\n", stopped.c_str());
  }

  bool live_met = rss_peak <= kRssGoalBytes;
  bool idle_met = returned;
  table.push_back("| Memory, " + with_commas(static_cast<double>(options.cards)) +
                  " cards (idle_timeout " + options.idle_timeout + ") | RSS |");
  table.push_back("|---|--:|");
  table.push_back("| before | " + mib(rss_start) + " |");
  table.push_back("| after issuing (" + with_commas(issued->rate) + " cmd/s; ~" +
                  with_commas(live_estimate) + " live) | " + mib(rss_live) + " (peak " +
                  mib(rss_peak) + "): ≤ 1 GiB " + (live_met ? "met" : "**missed**") + " |");
  table.push_back("| " + fixed(waited, 0) + " s later (idle) | " + mib(rss_idle) +
                  ": back near the start (keeps ≤ 10% of the growth) " +
                  (idle_met ? "met" : "**missed**") + " |");
  table.push_back("| then " + with_commas(static_cast<double>(reuse_cards)) + " more new cards | " +
                  mib(rss_reused) + " (" + with_commas(std::max(0.0, second_growth)) +
                  " B/card vs " + with_commas(first_growth) + " B/card before: " +
                  (reused     ? "memory reused"
                   : returned ? "memory was returned"
                              : "**not reused**") +
                  ") |");
  return 0;
}

int run(const Options& options, const std::string& conninfo) {
  std::string error;
  PgConnPtr admin = connect_raw(conninfo, error);
  if (!admin || !exec_sql(admin.get(), kRawEventTableDdl, error)) {
    std::fprintf(stderr, "command_bench: %s\n", error.c_str());
    return 1;
  }
  std::printf("machine: %s\n", machine_description(admin.get()).c_str());
  std::printf("%s: %s\n", options.transport_floor ? "server" : "cqrsd",
              options.transport_floor ? TRANSPORT_FLOOR_BIN : CQRSD_BIN);
  std::printf(
      "settings: %s s per measurement; mix %d%% IssueGiftCard / %d%% RedeemGiftCard; %s seed "
      "cards\n\n",
      fixed(options.seconds, 1).c_str(), static_cast<int>(options.issue_share * 100 + 0.5),
      100 - static_cast<int>(options.issue_share * 100 + 0.5),
      with_commas(static_cast<double>(kSeedCards)).c_str());
  std::fflush(stdout);

  std::vector<std::string> table;
  if (options.transport_floor) {
    if (int code = run_transport_floor(options, conninfo, admin.get(), table); code != 0)
      return code;
  } else if (options.throughput) {
    if (int code = run_throughput(options, conninfo, admin.get(), table); code != 0) return code;
  }
  if (options.cards > 0) {
    if (!table.empty()) table.push_back("");
    if (int code = run_memory(options, conninfo, table); code != 0) return code;
  }
  std::printf("\n");
  for (const std::string& line : table) std::printf("%s\n", line.c_str());
  return 0;
}

void print_usage() {
  std::fprintf(
      stderr,
      "usage: command_bench [--seconds N] [--quick] [--windows LIST] [--url CONNINFO]\n"
      "                     [--issue-percent P] [--cards N] [--idle-timeout DURATION]\n"
      "                     [--memory-only] [--cqrsd-arg FLAG]... [--open-loop-log FILE]\n"
      "                     [--transport-floor] [--keep]\n"
      "  --seconds N         measure each workload for about N seconds (default 5)\n"
      "  --quick             1 second per workload (smoke run)\n"
      "  --windows LIST      in-flight windows, comma-separated (default 1,16,64,256)\n"
      "  --url C             server to use (default: $DATABASE_URL, else libpq PG* defaults)\n"
      "  --cards N           also measure cqrsd's RSS with N live aggregates and after idle\n"
      "  --idle-timeout D    cqrsd's aggregates.idle_timeout for --cards (default 5s)\n"
      "  --memory-only       skip the throughput and latency runs (with --cards)\n"
      "  --issue-percent P   share of IssueGiftCard in the mix (default 30; the rest redeem)\n"
      "  --cqrsd-arg FLAG    pass FLAG to cqrsd as well (repeatable), e.g. --db.pool_size=8\n"
      "  --open-loop-log F   write each measured open-loop command's due time and latency to F\n"
      "  --transport-floor   instead of cqrsd, measure bench/transport_floor (CAF remote\n"
      "                      messaging with no work behind it) against the raw baseline\n"
      "  --keep              keep the benchmark database for inspection (default: drop it)\n");
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  options.base_conninfo = default_conninfo();
  for (int idx = 1; idx < argc; ++idx) {
    if (take_database_option(argc, argv, idx, options.base_conninfo, options.keep_database)) {
      continue;
    }
    std::string_view arg = argv[idx];
    bool has_value = idx + 1 < argc;
    if (arg == "--seconds" && has_value) {
      options.seconds = std::atof(argv[++idx]);
      if (options.seconds <= 0) return std::nullopt;
      options.probe_seconds = std::min(1.0, options.seconds / 4);
    } else if (arg == "--quick") {
      options.seconds = 1;
      options.probe_seconds = 0.25;
    } else if (arg == "--windows" && has_value) {
      options.windows.clear();
      std::istringstream list(argv[++idx]);
      for (std::string item; std::getline(list, item, ',');) {
        long window = std::atol(item.c_str());
        if (window <= 0) return std::nullopt;
        options.windows.push_back(static_cast<size_t>(window));
      }
      if (options.windows.empty()) return std::nullopt;
    } else if (arg == "--cards" && has_value) {
      long cards = std::atol(argv[++idx]);
      if (cards <= 0) return std::nullopt;
      options.cards = static_cast<size_t>(cards);
    } else if (arg == "--idle-timeout" && has_value) {
      options.idle_timeout = argv[++idx];
      if (!duration_seconds(options.idle_timeout)) return std::nullopt;
    } else if (arg == "--cqrsd-arg" && has_value) {
      options.daemon_args.emplace_back(argv[++idx]);
    } else if (arg == "--issue-percent" && has_value) {
      double percent = std::atof(argv[++idx]);
      if (percent < 0 || percent > 100) return std::nullopt;
      options.issue_share = percent / 100;
    } else if (arg == "--transport-floor") {
      options.transport_floor = true;
    } else if (arg == "--memory-only") {
      options.throughput = false;
    } else if (arg == "--open-loop-log" && has_value) {
      options.open_loop_log = argv[++idx];
    } else {
      return std::nullopt;
    }
  }
  if (!options.throughput && options.cards == 0) return std::nullopt;
  if (options.transport_floor && (!options.throughput || options.cards > 0)) return std::nullopt;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up when piped (tee, a file)
  std::optional<Options> options = parse_options(argc, argv);
  if (!options) {
    print_usage();
    return 2;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return with_bench_database(options->base_conninfo, "command_bench", options->keep_database,
                             [&](const std::string& conninfo) {
                               int code = 1;
                               try {
                                 code = run(*options, conninfo);
                               } catch (const std::exception& ex) {
                                 std::fprintf(stderr, "command_bench: %s\n", ex.what());
                               }
                               if (g_interrupted)
                                 std::fprintf(stderr, "command_bench: interrupted\n");
                               return code;
                             });
}
