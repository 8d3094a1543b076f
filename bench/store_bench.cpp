// store_bench: throughput of PostgresEventStore (append, read_all) against raw libpq statements on
// a bare table, measured in the same run on a fresh database, so the ratio store/raw shows what
// the store's guarantees cost on this machine. Each append workload also runs the same plain
// INSERTs into a "floor" table that has only the constraints the store must keep (floor/raw: the
// most any such store can reach with the same parameters; the store sends its arrays in binary
// format, which the floor does not), and the same appends through cqrsd's store pool ("pool": the
// writers' appends are group committed with EventStore::write, as cqrsd commits its commands).
// Prints per-workload figures and a markdown table for docs/BENCHMARKS.md.
//
// usage: store_bench [--seconds N] [--rounds R] [--quick] [--url CONNINFO] [--no-notify]
//                    [--no-groups] [--keep]
//                    [--only N]
//
// Each append workload runs the sides (store, pool, raw, floor, and for appends of many events
// raw-bin: the raw INSERTs with their arrays in binary format, as the store sends them) in R
// rounds, the sides taking turns, and reports each ratio as the median of the rounds' ratios: on
// a shared host, a side measured minutes apart from its baseline sees a different machine.
//
// The server is DATABASE_URL (or --url; either a postgresql:// URL or a libpq keyword string;
// when both are absent, libpq's PGHOST/PGPORT/PGUSER defaults). The run creates database
// cqrs_bench_<pid> there for the store, raw and floor sides, and cqrs_bench_<pid>_pool for the
// pool side, so that each side's table holds only its own rows (the pool's would otherwise grow
// the store's cqrs.events to 1.3-1.5 times raw's table by the last workload). It migrates both
// and drops them at the end (also after Ctrl-C).
#include <libpq-fe.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "actors/gateway.hpp"
#include "actors/messages.hpp"
#include "actors/store_pool.hpp"
#include "bench_support.hpp"
#include "cqrs/event.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "cqrs/uuid.hpp"

namespace {

using namespace cqrs::bench;
using cqrs::pg::append_array_element;

using Clock = std::chrono::steady_clock;

constexpr std::string_view kEventType = "GiftCardIssued";
constexpr int kAppendsPerStream = 10;  // a writer starts a new stream (aggregate) after this many
constexpr double kAppendRatioGoal = 0.8;
constexpr double kReadRateGoal = 200'000;
constexpr size_t kReadPageSizes[] = {1000, 5000};

struct AppendWorkload {
  int events_per_append;
  int writers;
};
constexpr AppendWorkload kAppendWorkloads[] = {{1, 1}, {1, 16}, {100, 1}, {100, 4}};

std::atomic<bool> g_interrupted{false};

void on_signal(int) { g_interrupted = true; }

// Where each writer thread and its server process run (--pin): wherever the scheduler puts them,
// both on one CPU, or on two different ones. On a virtual machine, waking a process on another
// virtual CPU costs far more than on one's own, so where the scheduler happens to put a writer
// and its server weighs on single-event appends (docs/BENCHMARKS.md).
enum class Pin { kNone, kSame, kApart };

struct Options {
  double seconds = 10;  // measured per side and workload, split evenly over the rounds
  int rounds = 10;
  double warmup_seconds = 0.5;  // before each round's window
  std::string base_conninfo;
  bool notify = true;
  bool group_appends = true;
  bool keep_database = false;
  int only_workload = 0;  // 1-based; 0: every workload, and the reads
  Pin pin = Pin::kNone;
  Clock::duration raw_think{};  // CPU time the raw side spends before each append
};

// Pins the calling thread to a CPU, and the server process `backend_pid` to the same one or to
// the next (`pin`), choosing by the writer's number. Fails when the system refuses: setting
// another user's process's affinity takes root (or that user).
bool pin_writer(Pin pin, size_t writer_idx, int backend_pid, std::string& error) {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 2 && pin == Pin::kApart) {
    error = "--pin apart needs two CPUs";
    return false;
  }
  const int own = static_cast<int>(writer_idx % static_cast<size_t>(cpus));
  const int server = pin == Pin::kSame ? own : (own + 1) % static_cast<int>(cpus);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(own, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    error = std::string("cannot pin the writer thread: ") + std::strerror(errno);
    return false;
  }
  CPU_ZERO(&set);
  CPU_SET(server, &set);
  if (sched_setaffinity(backend_pid, sizeof(set), &set) != 0) {
    error = "cannot pin server process " + std::to_string(backend_pid) + ": " +
            std::strerror(errno) + " (--pin needs root, or the server's user)";
    return false;
  }
  return true;
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Sleeps up to `seconds`; returns early on Ctrl-C.
void interruptible_sleep(double seconds) {
  auto end = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (!g_interrupted && Clock::now() < end) {
    std::this_thread::sleep_for(
        std::min<Clock::duration>(std::chrono::milliseconds(20), end - Clock::now()));
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

// ---- raw libpq -------------------------------------------------------------------------------

int64_t row_count(PGconn* conn, const std::string& table) {
  return std::strtoll(query_value(conn, "SELECT count(*) FROM " + table).c_str(), nullptr, 10);
}

// ---- the events --------------------------------------------------------------------------------

// One append's worth of events for one stream, as an aggregate would produce it.
struct Batch {
  std::string stream_id;
  int64_t expected_version = 0;
  std::vector<cqrs::EventData> events;
  cqrs::Uuid command_id;
};

// Produces a writer's batches: distinct streams per writer, a new stream every kAppendsPerStream
// appends, versions tracked as an aggregate would (ExpectedVersion::exact).
class BatchSource {
 public:
  BatchSource(std::string stream_prefix, int events_per_append)
      : stream_prefix_(std::move(stream_prefix)), events_per_append_(events_per_append) {}

  Batch next() {
    if (appends_in_stream_ == kAppendsPerStream) {
      ++stream_number_;
      appends_in_stream_ = 0;
      version_ = 0;
    }
    Batch batch;
    batch.stream_id = stream_prefix_ + std::to_string(stream_number_);
    batch.expected_version = version_;
    // One command produces the batch: its events share the command's metadata, filled in as
    // cqrsd fills it for a command that names no correlation: a time-ordered command id, which
    // is also the correlation and the causation.
    batch.command_id = cqrs::Uuid::time_ordered();
    std::string command_id = batch.command_id.to_string();
    std::string metadata = R"({"command_id":")" + command_id + R"(","correlation_id":")" +
                           command_id + R"(","causation_id":")" + command_id + R"("})";
    batch.events.reserve(static_cast<size_t>(events_per_append_));
    for (int idx = 0; idx < events_per_append_; ++idx) {
      cqrs::EventData& event = batch.events.emplace_back();
      event.type = kEventType;
      event.data = R"({"card_id":"c)" + std::to_string(++card_number_) +
                   R"(","amount":5000,"currency":"EUR"})";
      event.metadata = metadata;
    }
    return batch;
  }

  // Called after the batch from next() was stored.
  void committed() {
    version_ += events_per_append_;
    ++appends_in_stream_;
  }

 private:
  std::string stream_prefix_;
  int events_per_append_;
  int64_t stream_number_ = 0;
  int64_t version_ = 0;
  int appends_in_stream_ = 0;
  int64_t card_number_ = 100'000'000;
};

// ---- writers -----------------------------------------------------------------------------------

// One writer thread's connection. connect() runs before the clock starts.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual bool connect(std::string& error) = 0;
  virtual bool append(const Batch& batch, std::string& error) = 0;
  // The server process of the writer's connection; 0 when it has none of its own (the pool).
  virtual int backend_pid() const { return 0; }
};

class StoreWriter final : public Writer {
 public:
  StoreWriter(std::string conninfo, bool notify, bool group_appends)
      : conninfo_(std::move(conninfo)) {
    options_.notify = notify;
    options_.group_appends = group_appends;
  }

  bool connect(std::string& error) override {
    auto store = cqrs::pg::PostgresEventStore::open(conninfo_, options_);
    if (!store) {
      error = store.error().to_string();
      return false;
    }
    store_ = std::move(store).value();
    return true;
  }

  bool append(const Batch& batch, std::string& error) override {
    auto appended = store_->append(
        batch.stream_id, cqrs::ExpectedVersion::exact(batch.expected_version), batch.events);
    if (!appended) error = appended.error().to_string();
    return appended.ok();
  }

  int backend_pid() const override { return store_->backend_pid(); }

 private:
  std::string conninfo_;
  cqrs::pg::PostgresStoreOptions options_;
  std::unique_ptr<cqrs::pg::PostgresEventStore> store_;
};

// Opens the store the way cqrsd's pool workers do, each on its own thread.
cqrs::actors::StoreFactory store_factory(const std::string& conninfo, bool notify) {
  return [conninfo, notify]() -> cqrs::Result<std::shared_ptr<cqrs::EventStore>> {
    cqrs::pg::PostgresStoreOptions options;
    options.notify = notify;
    auto store = cqrs::pg::PostgresEventStore::open(conninfo, options);
    if (!store) return store.error();
    return std::shared_ptr<cqrs::EventStore>(std::move(store).value());
  };
}

// The store as cqrsd writes to it: each writer sends its append, with the command's record, to
// the store pool (the actor in front of cqrsd's store connections) and waits for the reply. Appends
// that arrive while a transaction is in flight go together in the next one (group commit,
// EventStore::write).
class PoolWriter final : public Writer {
 public:
  PoolWriter(caf::actor_system& system, caf::actor pool)
      : system_(system), pool_(std::move(pool)) {}

  bool connect(std::string&) override {
    self_ = std::make_unique<caf::scoped_actor>(system_);
    return true;
  }

  bool append(const Batch& batch, std::string& error) override {
    cqrs::WriteRequest request;
    request.stream_id = batch.stream_id;
    request.expected = cqrs::ExpectedVersion::exact(batch.expected_version);
    request.events = batch.events;
    // Recorded with the events, as cqrsd records a command's reply for idempotent dispatch.
    std::string reply = R"({"status":"ok","stream_id":")" + batch.stream_id + R"(","version":)" +
                        std::to_string(batch.expected_version + std::ssize(batch.events)) +
                        R"(,"command_id":")" + batch.command_id.to_string() + R"(","events":[)";
    for (const cqrs::EventData& event : batch.events) {
      if (reply.back() != '[') reply += ',';
      reply += R"({"type":")" + event.type + R"(","data":)" + event.data + "}";
    }
    reply += "]}";
    request.command = cqrs::CommandRecord{batch.command_id, batch.stream_id, std::move(reply)};
    bool ok = false;
    (*self_)
        ->request(pool_, caf::infinite, cqrs::actors::write_atom::value, std::move(request))
        .receive(
            [&](cqrs::WriteResult& result) {
              ok = result.ok();
              if (!ok && result.error) error = result.error->to_string();
              if (!ok && error.empty()) error = "the write failed without an error";
            },
            [&](caf::error& failure) { error = system_.render(failure); });
    return ok;
  }

 private:
  caf::actor_system& system_;
  caf::actor pool_;
  std::unique_ptr<caf::scoped_actor> self_;
};

// Plain INSERT (autocommit) of the same rows into `table` (bench_raw, bench_raw_binary or
// bench_floor): one prepared single-row INSERT, or one prepared INSERT ... SELECT FROM
// unnest(<arrays>) per batch. The arrays are text literals, as a plain libpq program sends them;
// with `binary_arrays` (the raw-bin side) they are in binary format, as the store sends them
// (cqrs::pg::BinaryArray). With `share_metadata` (the floor), a batch whose events all carry the
// same metadata sends it once, as the store does, so that the floor stays a bound for the store:
// the server parses it once instead of once per row.
class RawWriter final : public Writer {
 public:
  // With `think`, each append first keeps the CPU busy that long (--raw-think-us).
  RawWriter(std::string conninfo, std::string table, bool share_metadata,
            bool binary_arrays = false, Clock::duration think = {})
      : conninfo_(std::move(conninfo)),
        table_(std::move(table)),
        share_metadata_(share_metadata),
        binary_arrays_(binary_arrays),
        think_(think) {}

  bool connect(std::string& error) override {
    conn_ = connect_raw(conninfo_, error);
    if (!conn_) return false;
    std::string single = "INSERT INTO " + table_ +
                         " (stream_id, stream_version, event_id, event_type, event_version, "
                         "data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    std::string batch =
        "INSERT INTO " + table_ +
        " (stream_id, stream_version, event_id, event_type, event_version, data, metadata) "
        "SELECT $1, $2::bigint + e.ord, e.event_id, e.event_type, e.event_version, e.data, " +
        std::string(share_metadata_ ? "coalesce(e.metadata, ($7::jsonb[])[1])" : "e.metadata") +
        " FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[]) "
        "WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, ord)";
    return checked(conn_.get(), PQprepare(conn_.get(), "single", single.c_str(), 0, nullptr),
                   error) &&
           checked(conn_.get(), PQprepare(conn_.get(), "batch", batch.c_str(), 0, nullptr), error);
  }

  int backend_pid() const override { return PQbackendPID(conn_.get()); }

  bool append(const Batch& batch, std::string& error) override {
    if (think_ > Clock::duration::zero()) {
      for (Clock::time_point until = Clock::now() + think_; Clock::now() < until;) {
      }
    }
    std::vector<std::string> values;
    const char* statement;
    if (batch.events.size() == 1) {
      const cqrs::EventData& event = batch.events.front();
      statement = "single";
      values = {
          batch.stream_id, std::to_string(batch.expected_version + 1), event.event_id.to_string(),
          event.type,      std::to_string(event.type_version),         event.data,
          event.metadata};
    } else if (binary_arrays_) {
      return append_binary(batch, error);
    } else {
      statement = "batch";
      bool shared = share_metadata_;
      for (const cqrs::EventData& event : batch.events) {
        shared = shared && event.metadata == batch.events.front().metadata;
      }
      std::string ids = "{", types = "{", versions = "{", data = "{", metadata = "{";
      for (const cqrs::EventData& event : batch.events) {
        append_array_element(ids, event.event_id.to_string());
        append_array_element(types, event.type);
        append_array_element(versions, std::to_string(event.type_version));
        append_array_element(data, event.data);
        if (!shared || &event == &batch.events.front()) {
          append_array_element(metadata, event.metadata);
        }
      }
      for (std::string* literal : {&ids, &types, &versions, &data, &metadata}) {
        literal->push_back('}');
      }
      values = {batch.stream_id,     std::to_string(batch.expected_version),
                std::move(ids),      std::move(types),
                std::move(versions), std::move(data),
                std::move(metadata)};
    }
    std::vector<const char*> pointers;
    for (const std::string& value : values) pointers.push_back(value.c_str());
    PGresult* result = PQexecPrepared(conn_.get(), statement, static_cast<int>(pointers.size()),
                                      pointers.data(), nullptr, nullptr, 0);
    return checked(conn_.get(), result, error) != nullptr;
  }

 private:
  // A batch with its five arrays in binary format (every event's metadata sent, as raw does).
  bool append_binary(const Batch& batch, std::string& error) {
    using cqrs::pg::BinaryArray;
    const size_t count = batch.events.size();
    BinaryArray ids(BinaryArray::kUuid, count), types(BinaryArray::kText, count),
        versions(BinaryArray::kInt4, count), data(BinaryArray::kJsonb, count),
        metadata(BinaryArray::kJsonb, count);
    for (const cqrs::EventData& event : batch.events) {
      ids.add_uuid(event.event_id.bytes());
      types.add_text(event.type);
      versions.add_int4(event.type_version);
      data.add_jsonb(event.data);
      metadata.add_jsonb(event.metadata);
    }
    std::string values[] = {batch.stream_id, std::to_string(batch.expected_version),
                            ids.take(),      types.take(),
                            versions.take(), data.take(),
                            metadata.take()};
    const char* pointers[std::size(values)];
    int lengths[std::size(values)], formats[std::size(values)];
    for (size_t idx = 0; idx < std::size(values); ++idx) {
      pointers[idx] = values[idx].c_str();
      lengths[idx] = static_cast<int>(values[idx].size());
      formats[idx] = idx >= 2 ? 1 : 0;  // the arrays
    }
    PGresult* result = PQexecPrepared(conn_.get(), "batch", static_cast<int>(std::size(values)),
                                      pointers, lengths, formats, 0);
    return checked(conn_.get(), result, error) != nullptr;
  }

  std::string conninfo_;
  std::string table_;
  bool share_metadata_;
  bool binary_arrays_;
  PgConnPtr conn_;
  Clock::duration think_;
};

// ---- append measurement ------------------------------------------------------------------------

// What one side did in one round's window.
struct AppendWindow {
  int64_t appends = 0;
  double seconds = 0;
  CpuUse cpu;
  double backends_cpu = 0;  // seconds: the writers' own server processes
  double writers_cpu = 0;   // seconds: the writer threads themselves, during the window
  std::vector<double> latencies_ms;

  double events_per_s(int events_per_append) const {
    return seconds > 0 ? static_cast<double>(appends) * events_per_append / seconds : 0;
  }
};

// One side's figures over all rounds.
struct AppendFigures {
  double appends_per_s = 0;
  double events_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  // CPU per append during the window, in µs: steadier across a noisy host's runs than the rates.
  double postgres_us = 0;  // every "postgres" process
  double backends_us = 0;  // the writers' own server processes (0 when the side has none)
  double writers_us = 0;  // the writer threads alone (the client's share without its other threads)
  double client_us = 0;   // this process (the writers, and the store's notifying thread)
};

struct alignas(64) WriterCounter {
  std::atomic<int64_t> appends{0};
};

double percentile(std::vector<double>& sorted_values, double fraction) {
  if (sorted_values.empty()) return 0;
  size_t idx = static_cast<size_t>(fraction * static_cast<double>(sorted_values.size() - 1));
  return sorted_values[idx];
}

// Runs `workload` with one writer per thread from `make_writer`: all connect, warm up, then the
// appends completed during a window of `seconds` are counted.
template <class MakeWriter>
std::optional<AppendWindow> measure_appends(const AppendWorkload& workload,
                                            const std::string& stream_prefix, double seconds,
                                            double warmup_seconds, Pin pin, MakeWriter make_writer,
                                            std::string& error) {
  const auto writer_count = static_cast<size_t>(workload.writers);
  std::vector<WriterCounter> counters(writer_count);
  std::vector<std::vector<double>> latencies_ms(writer_count);
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::latch connected(workload.writers + 1);
  std::vector<int> backend_pids(writer_count, 0);
  // Each writer's own CPU time from the first append it starts inside the window to the first
  // one it starts after: the window's, give or take one append.
  std::vector<double> writer_cpu(writer_count, 0);

  auto fail = [&](const std::string& message) {
    std::lock_guard lock(error_mutex);
    if (error.empty()) error = message;
    stop = true;
  };

  std::vector<std::thread> threads;
  for (size_t writer_idx = 0; writer_idx < writer_count; ++writer_idx) {
    threads.emplace_back([&, writer_idx] {
      std::unique_ptr<Writer> writer = make_writer();
      std::string writer_error;
      bool ok = writer->connect(writer_error);
      if (ok) backend_pids[writer_idx] = writer->backend_pid();
      if (ok && pin != Pin::kNone && writer->backend_pid() != 0) {
        ok = pin_writer(pin, writer_idx, writer->backend_pid(), writer_error);
      }
      connected.count_down();
      if (!ok) return fail("writer " + std::to_string(writer_idx) + ": " + writer_error);
      connected.wait();
      BatchSource source(stream_prefix + std::to_string(writer_idx) + "-",
                         workload.events_per_append);
      latencies_ms[writer_idx].reserve(1 << 16);
      enum class Phase { kBefore, kIn, kAfter } phase = Phase::kBefore;
      double cpu_at_start = 0;
      while (!stop) {
        if (phase == Phase::kBefore && measuring) {
          phase = Phase::kIn;
          cpu_at_start = thread_cpu_seconds();
        } else if (phase == Phase::kIn && !measuring) {
          phase = Phase::kAfter;
          writer_cpu[writer_idx] = thread_cpu_seconds() - cpu_at_start;
        }
        Batch batch = source.next();
        Clock::time_point started = Clock::now();
        if (!writer->append(batch, writer_error)) {
          return fail("writer " + std::to_string(writer_idx) + ": " + writer_error);
        }
        source.committed();
        if (measuring) {
          latencies_ms[writer_idx].push_back(seconds_between(started, Clock::now()) * 1000);
        }
        counters[writer_idx].appends.fetch_add(1, std::memory_order_relaxed);
      }
      if (phase == Phase::kIn) writer_cpu[writer_idx] = thread_cpu_seconds() - cpu_at_start;
    });
  }

  auto total_appends = [&] {
    int64_t sum = 0;
    for (const WriterCounter& counter : counters) sum += counter.appends.load();
    return sum;
  };
  connected.arrive_and_wait();
  interruptible_sleep(warmup_seconds);
  measuring = true;
  int64_t appends_before = total_appends();
  auto backends_cpu = [&] {
    double sum = 0;
    for (int pid : backend_pids) sum += pid != 0 ? process_cpu_seconds(pid) : 0;
    return sum;
  };
  CpuSample cpu_before = sample_cpu(0);
  double backends_before = backends_cpu();
  Clock::time_point window_start = Clock::now();
  interruptible_sleep(seconds);
  int64_t appends_after = total_appends();
  Clock::time_point window_end = Clock::now();
  CpuUse cpu = cpu_between(cpu_before, sample_cpu(0));
  double backends_used = backends_cpu() - backends_before;
  measuring = false;
  stop = true;
  for (std::thread& thread : threads) thread.join();
  if (!error.empty()) return std::nullopt;
  if (g_interrupted) {
    error = "interrupted";
    return std::nullopt;
  }

  AppendWindow window;
  window.appends = appends_after - appends_before;
  window.seconds = seconds_between(window_start, window_end);
  window.cpu = cpu;
  window.backends_cpu = backends_used;
  for (double used : writer_cpu) window.writers_cpu += used;
  for (auto& writer_latencies : latencies_ms) {
    window.latencies_ms.insert(window.latencies_ms.end(), writer_latencies.begin(),
                               writer_latencies.end());
  }
  return window;
}

// One side's figures from its windows in every round: rates over the total time, latencies over
// every append, CPU per append over every append.
AppendFigures figures_of(const std::vector<AppendWindow>& windows, int events_per_append) {
  int64_t appends = 0;
  double seconds = 0;
  CpuUse cpu;
  double backends_cpu = 0;
  double writers_cpu = 0;
  std::vector<double> latencies;
  for (const AppendWindow& window : windows) {
    backends_cpu += window.backends_cpu;
    writers_cpu += window.writers_cpu;
    appends += window.appends;
    seconds += window.seconds;
    cpu.postgres += window.cpu.postgres;
    cpu.client += window.cpu.client;
    latencies.insert(latencies.end(), window.latencies_ms.begin(), window.latencies_ms.end());
  }
  AppendFigures figures;
  if (seconds > 0) figures.appends_per_s = static_cast<double>(appends) / seconds;
  figures.events_per_s = figures.appends_per_s * events_per_append;
  if (appends > 0) {
    figures.postgres_us = cpu.postgres / static_cast<double>(appends) * 1e6;
    figures.client_us = cpu.client / static_cast<double>(appends) * 1e6;
    figures.backends_us = backends_cpu / static_cast<double>(appends) * 1e6;
    figures.writers_us = writers_cpu / static_cast<double>(appends) * 1e6;
  }
  std::sort(latencies.begin(), latencies.end());
  figures.p50_ms = percentile(latencies, 0.50);
  figures.p99_ms = percentile(latencies, 0.99);
  return figures;
}

// The ratio of two sides' rates round by round (each pair measured within the same minute), as
// median, lowest and highest.
struct PairedRatio {
  double median = 0;
  double low = 0;
  double high = 0;
};

PairedRatio paired_ratio(const std::vector<AppendWindow>& side,
                         const std::vector<AppendWindow>& base, int events_per_append) {
  std::vector<double> ratios;
  for (size_t round = 0; round < side.size() && round < base.size(); ++round) {
    double base_rate = base[round].events_per_s(events_per_append);
    if (base_rate > 0) ratios.push_back(side[round].events_per_s(events_per_append) / base_rate);
  }
  if (ratios.empty()) return {};
  std::sort(ratios.begin(), ratios.end());
  size_t middle = ratios.size() / 2;
  double median =
      ratios.size() % 2 == 1 ? ratios[middle] : (ratios[middle - 1] + ratios[middle]) / 2;
  return {median, ratios.front(), ratios.back()};
}

// ---- read measurement --------------------------------------------------------------------------

// What the raw reader copies out of each row (the store builds RecordedEvent the same way).
struct RawEvent {
  int64_t id = 0;
  std::string stream_id;
  int64_t stream_version = 0;
  cqrs::Uuid event_id;
  std::string type;
  int32_t type_version = 1;
  std::string data;
  std::string metadata;
  std::string created_at;
};

// A reader's progress through $all. The store-only checks catch a read_all that breaks its
// contract (every committed event exactly once, in order).
struct ReadTally {
  int64_t events = 0;
  int64_t full_passes = 0;
  int64_t out_of_order = 0;       // store only: a position not after the previous one
  int64_t miscounted_passes = 0;  // store only: full passes that did not return every event once
};

struct ReadFigures {
  double events_per_s = 0;
  ReadTally tally;
};

// Reads $all from the start over and over for `seconds` of wall time (the last pass stops where
// the time ends). `read_pass(deadline, tally)` reads one pass and returns false on error.
template <class ReadPass>
std::optional<ReadFigures> measure_reads(double seconds, ReadPass read_pass) {
  ReadFigures figures;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < deadline && !g_interrupted) {
    if (!read_pass(deadline, figures.tally)) return std::nullopt;
  }
  figures.events_per_s =
      static_cast<double>(figures.tally.events) / seconds_between(start, Clock::now());
  return figures;
}

// One pass of $all through the store, checking that positions only increase and that a complete
// pass returns exactly the `stored` events.
bool read_all_store(cqrs::pg::PostgresEventStore& store, size_t page_size, int64_t stored,
                    Clock::time_point deadline, ReadTally& tally, std::string& error) {
  int64_t count = 0;
  cqrs::Position after{};
  while (Clock::now() < deadline && !g_interrupted) {
    auto page = store.read_all(after, page_size);
    if (!page) {
      error = page.error().to_string();
      return false;
    }
    if (page->events.empty()) {
      ++tally.full_passes;
      if (count != stored) ++tally.miscounted_passes;
      return true;
    }
    for (const cqrs::RecordedEvent& event : page->events) {
      if (event.position() <= after) ++tally.out_of_order;
      after = event.position();
    }
    count += static_cast<int64_t>(page->events.size());
    tally.events += static_cast<int64_t>(page->events.size());
    after = page->next;
  }
  return true;
}

// One pass over bench_raw in id order, keyset-paged like $all, copying each row out.
bool read_all_raw(PGconn* conn, size_t page_size, Clock::time_point deadline, ReadTally& tally,
                  std::string& error) {
  int64_t after = 0;
  std::string limit = std::to_string(page_size);
  while (Clock::now() < deadline && !g_interrupted) {
    std::string after_text = std::to_string(after);
    const char* values[] = {after_text.c_str(), limit.c_str()};
    PgResultPtr rows =
        checked(conn, PQexecPrepared(conn, "read_page", 2, values, nullptr, nullptr, 0), error);
    if (!rows) return false;
    int row_count = PQntuples(rows.get());
    if (row_count == 0) {
      ++tally.full_passes;
      return true;
    }
    std::vector<RawEvent> events(static_cast<size_t>(row_count));
    for (int row = 0; row < row_count; ++row) {
      RawEvent& event = events[static_cast<size_t>(row)];
      event.id = std::strtoll(PQgetvalue(rows.get(), row, 0), nullptr, 10);
      event.stream_id = PQgetvalue(rows.get(), row, 1);
      event.stream_version = std::strtoll(PQgetvalue(rows.get(), row, 2), nullptr, 10);
      event.event_id = cqrs::Uuid::parse(PQgetvalue(rows.get(), row, 3)).value_or(cqrs::Uuid());
      event.type = PQgetvalue(rows.get(), row, 4);
      event.type_version = static_cast<int32_t>(std::atoi(PQgetvalue(rows.get(), row, 5)));
      event.data = PQgetvalue(rows.get(), row, 6);
      event.metadata = PQgetvalue(rows.get(), row, 7);
      event.created_at = PQgetvalue(rows.get(), row, 8);
    }
    tally.events += row_count;
    after = events.back().id;
  }
  return true;
}

// ---- the run -----------------------------------------------------------------------------------

struct TableRow {
  std::string workload;
  std::string store_events;
  std::string pool_events;
  std::string raw_events;
  std::string ratio;
  std::string pool_ratio;
  std::string floor_ratio;   // the required constraints' own cost: bench_floor / bench_raw
  std::string binary_ratio;  // store / raw with binary arrays ("–" for single events)
  std::string goal;
};

// Everything after the databases exist: `conninfo` holds the store's, raw's and floor's tables,
// `pool_conninfo` the store pool's. Returns the process exit code.
int run(const Options& options, const std::string& conninfo, const std::string& pool_conninfo) {
  std::string error;
  // For the store pool side: an actor system configured as cqrsd's (scheduler policy and
  // threads).
  caf::actor_system_config caf_config;
  cqrs::actors::configure_gateway_process(caf_config);
  caf::actor_system actor_system{caf_config};
  const std::pair<const std::string*, const char*> databases[] = {
      {&conninfo, "the database"}, {&pool_conninfo, "the pool's database"}};
  for (const auto& [database, which] : databases) {
    auto conn = cqrs::pg::Connection::open(*database);
    if (!conn) {
      std::fprintf(stderr, "store_bench: %s: %s\n", which, conn.error().to_string().c_str());
      return 1;
    }
    if (auto migrated = cqrs::pg::migrate(**conn); !migrated) {
      std::fprintf(stderr, "store_bench: migrating %s: %s\n", which,
                   migrated.error().to_string().c_str());
      return 1;
    }
  }
  PgConnPtr admin = connect_raw(conninfo, error);
  if (!admin || !exec_sql(admin.get(), kRawEventTableDdl, error) ||
      !exec_sql(admin.get(),
                "CREATE TABLE bench_raw_binary (LIKE bench_raw INCLUDING ALL EXCLUDING DEFAULTS);"
                " ALTER TABLE bench_raw_binary ALTER id ADD GENERATED ALWAYS AS IDENTITY,"
                " ALTER event_version SET DEFAULT 1, ALTER created_at SET DEFAULT now()",
                error) ||
      !exec_sql(admin.get(), kFloorEventTableDdl, error)) {
    std::fprintf(stderr, "store_bench: %s\n", error.c_str());
    return 1;
  }

  std::printf("machine: %s\n", machine_description(admin.get()).c_str());
  std::string experiments;
  if (options.pin != Pin::kNone) {
    experiments += "; each writer and its server process pinned to ";
    experiments += options.pin == Pin::kSame ? "one CPU" : "two CPUs";
  }
  if (options.raw_think > Clock::duration::zero()) {
    experiments += "; raw's writers busy " +
                   fixed(std::chrono::duration<double, std::micro>(options.raw_think).count(), 1) +
                   " µs before each append";
  }
  std::printf(
      "settings: each side measured %s s per workload, in %d rounds that alternate the sides, "
      "each after %s s warmup; a new stream every %d appends; "
      "store NOTIFY %s, groups %s%s\n\n",
      fixed(options.seconds, 1).c_str(), options.rounds, fixed(options.warmup_seconds, 1).c_str(),
      kAppendsPerStream, options.notify ? "on" : "off", options.group_appends ? "on" : "off",
      experiments.c_str());

  std::vector<TableRow> table;
  int workload_number = 0;
  for (const AppendWorkload& workload : kAppendWorkloads) {
    ++workload_number;
    if (options.only_workload != 0 && options.only_workload != workload_number) continue;
    std::string label = std::to_string(workload.events_per_append) + " event" +
                        (workload.events_per_append == 1 ? "" : "s") + "/append, " +
                        std::to_string(workload.writers) + " writer" +
                        (workload.writers == 1 ? "" : "s");
    // The sides take turns, round by round, and each round starts with the next side, so a
    // host that gets busier or quieter during the run weighs on all of them alike. Each ratio
    // is the median of the rounds' ratios. raw-bin runs only for appends of many events (a
    // single event travels as scalar parameters, the same on both raw sides).
    enum Side { kStore, kPool, kRaw, kFloor, kRawBinary, kSides };
    constexpr const char* kSideNames[kSides] = {"store", "pool", "raw", "floor", "raw-bin"};
    const bool many = workload.events_per_append > 1;
    std::vector<AppendWindow> windows[kSides];
    double round_seconds = options.seconds / options.rounds;
    const int side_count = many ? kSides : kRawBinary;  // raw-bin is the last side
    for (int round = 0; round < options.rounds; ++round) {
      for (int turn = 0; turn < side_count; ++turn) {
        int side = (round + turn) % side_count;
        std::string prefix = "giftcard-" + std::to_string(workload_number) + "-" +
                             std::to_string(round) + "-" + kSideNames[side] + "-";
        (void)exec_sql(admin.get(), "CHECKPOINT", error);  // each side starts from a clean slate
        std::optional<AppendWindow> window;
        if (side == kStore) {
          window = measure_appends(
              workload, prefix, round_seconds, options.warmup_seconds, options.pin,
              [&] {
                return std::make_unique<StoreWriter>(conninfo, options.notify,
                                                     options.group_appends);
              },
              error);
        } else if (side == kPool) {
          // A fresh pool each time, with cqrsd's defaults, so its connections start as the
          // others' do.
          cqrs::actors::StorePoolConfig pool_config;
          pool_config.workers = 4;
          pool_config.max_batch = 256;
          caf::actor pool = cqrs::actors::spawn_store_pool(
              actor_system, store_factory(pool_conninfo, options.notify), pool_config);
          window = measure_appends(
              workload, prefix, round_seconds, options.warmup_seconds, options.pin,
              [&] { return std::make_unique<PoolWriter>(actor_system, pool); }, error);
          caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
        } else {
          const char* table_name = side == kRaw         ? "bench_raw"
                                   : side == kRawBinary ? "bench_raw_binary"
                                                        : "bench_floor";
          window = measure_appends(
              workload, prefix, round_seconds, options.warmup_seconds, options.pin,
              [&] {
                return std::make_unique<RawWriter>(
                    conninfo, table_name, side == kFloor, side == kRawBinary,
                    side == kRaw ? options.raw_think : Clock::duration::zero());
              },
              error);
        }
        if (!window) {
          std::fprintf(stderr, "store_bench: %s, %s: %s\n", kSideNames[side], label.c_str(),
                       error.c_str());
          return 1;
        }
        windows[side].push_back(std::move(*window));
      }
    }
    const int events = workload.events_per_append;
    AppendFigures store = figures_of(windows[kStore], events);
    AppendFigures pooled = figures_of(windows[kPool], events);
    AppendFigures raw = figures_of(windows[kRaw], events);
    AppendFigures floor = figures_of(windows[kFloor], events);
    PairedRatio ratio = paired_ratio(windows[kStore], windows[kRaw], events);
    PairedRatio pool_ratio = paired_ratio(windows[kPool], windows[kRaw], events);
    PairedRatio floor_ratio = paired_ratio(windows[kFloor], windows[kRaw], events);
    std::optional<PairedRatio> binary_ratio;
    if (many) binary_ratio = paired_ratio(windows[kStore], windows[kRawBinary], events);
    auto line = [&](const char* lead, const char* name, const AppendFigures& figures) {
      std::printf(
          "%-6s %-27s %-7s %9s ev/s %8s appends/s (p50 %6.2f ms, p99 %6.2f ms; CPU per append: "
          "postgres %s µs (the writers' backends %s), client %s µs (the writer threads %s))\n",
          lead, lead[0] == '\0' ? "" : label.c_str(), name,
          with_commas(figures.events_per_s).c_str(), with_commas(figures.appends_per_s).c_str(),
          figures.p50_ms, figures.p99_ms, fixed(figures.postgres_us, 0).c_str(),
          figures.backends_us > 0 ? fixed(figures.backends_us, 0).c_str() : "–",
          fixed(figures.client_us, 0).c_str(), fixed(figures.writers_us, 0).c_str());
    };
    line("append", "store", store);
    line("", "pool", pooled);
    line("", "raw", raw);
    line("", "floor", floor);
    if (many) line("", "raw-bin", figures_of(windows[kRawBinary], events));
    auto verdict = [](const PairedRatio& paired) {
      return paired.median >= kAppendRatioGoal ? "met" : "MISSED";
    };
    std::printf("       %-27s store/raw %.3f (rounds %.2f-%.2f): goal >= %.1f %s\n", "",
                ratio.median, ratio.low, ratio.high, kAppendRatioGoal, verdict(ratio));
    std::printf("       %-27s pool/raw  %.3f (rounds %.2f-%.2f): goal >= %.1f %s\n", "",
                pool_ratio.median, pool_ratio.low, pool_ratio.high, kAppendRatioGoal,
                verdict(pool_ratio));
    std::printf("       %-27s floor/raw %.2f (rounds %.2f-%.2f): %s\n\n", "", floor_ratio.median,
                floor_ratio.low, floor_ratio.high,
                floor_ratio.median >= kAppendRatioGoal
                    ? "the required constraints leave room for the goal"
                    : "the goal is out of reach for any store with the required constraints "
                      "that sends text literals");
    if (binary_ratio) {
      // The goal is set against the raw side; this one shows what the arrays' format is worth.
      std::printf(
          "       %-27s store/raw-bin %.3f (rounds %.2f-%.2f): against raw INSERTs that "
          "send binary arrays too\n\n",
          "", binary_ratio->median, binary_ratio->low, binary_ratio->high);
    }
    std::fflush(stdout);
    auto table_verdict = [](const PairedRatio& paired) {
      return paired.median >= kAppendRatioGoal ? "met" : "**missed**";
    };
    table.push_back(
        {"append, " + label, with_commas(store.events_per_s), with_commas(pooled.events_per_s),
         with_commas(raw.events_per_s), fixed(ratio.median, 3), fixed(pool_ratio.median, 3),
         fixed(floor_ratio.median, 2), binary_ratio ? fixed(binary_ratio->median, 3) : "–",
         std::string("store ") + table_verdict(ratio) + ", pool " + table_verdict(pool_ratio)});
  }

  if (options.only_workload != 0) return 0;

  // Reads see settled tables, as autovacuum would leave them: hint bits set, statistics current.
  if (!exec_sql(admin.get(), "VACUUM (ANALYZE) cqrs.events, bench_raw", error)) {
    std::fprintf(stderr, "store_bench: vacuum: %s\n", error.c_str());
    return 1;
  }
  int64_t stored = row_count(admin.get(), "cqrs.events");
  std::printf("read_all over %s store events, %s raw rows (%s s each)\n",
              with_commas(static_cast<double>(stored)).c_str(),
              with_commas(static_cast<double>(row_count(admin.get(), "bench_raw"))).c_str(),
              fixed(options.seconds, 1).c_str());
  // The store's reader reads ahead (PostgresStoreOptions::read_ahead), as a reader that only
  // pages through $all should; the same reads one page at a time are printed beside it.
  cqrs::pg::PostgresStoreOptions reader_options;
  reader_options.read_ahead = true;
  auto reader = cqrs::pg::PostgresEventStore::open(conninfo, reader_options);
  auto plain_reader = cqrs::pg::PostgresEventStore::open(conninfo);
  if (!reader || !plain_reader) {
    std::fprintf(stderr, "store_bench: %s\n",
                 (reader ? plain_reader.error() : reader.error()).to_string().c_str());
    return 1;
  }
  if (!checked(admin.get(),
               PQprepare(admin.get(), "read_page",
                         "SELECT id, stream_id, stream_version, event_id, event_type, "
                         "event_version, data, metadata, created_at FROM bench_raw "
                         "WHERE id > $1 ORDER BY id LIMIT $2",
                         0, nullptr),
               error)) {
    std::fprintf(stderr, "store_bench: %s\n", error.c_str());
    return 1;
  }
  for (size_t page_size : kReadPageSizes) {
    auto store = measure_reads(options.seconds, [&](Clock::time_point deadline, ReadTally& tally) {
      return read_all_store(**reader, page_size, stored, deadline, tally, error);
    });
    auto raw = measure_reads(options.seconds, [&](Clock::time_point deadline, ReadTally& tally) {
      return read_all_raw(admin.get(), page_size, deadline, tally, error);
    });
    auto plain = measure_reads(options.seconds, [&](Clock::time_point deadline, ReadTally& tally) {
      return read_all_store(**plain_reader, page_size, stored, deadline, tally, error);
    });
    if (!store || !raw || !plain) {
      std::fprintf(stderr, "store_bench: read_all: %s\n", error.c_str());
      return 1;
    }
    double ratio = store->events_per_s / raw->events_per_s;
    bool met = store->events_per_s >= kReadRateGoal;
    std::printf(
        "read_all page %-5zu store %9s ev/s (%lld full passes)  raw %9s ev/s (%lld full passes)"
        "  store/raw %.2f  (goal >= %s ev/s: %s)\n",
        page_size, with_commas(store->events_per_s).c_str(),
        static_cast<long long>(store->tally.full_passes), with_commas(raw->events_per_s).c_str(),
        static_cast<long long>(raw->tally.full_passes), ratio, with_commas(kReadRateGoal).c_str(),
        met ? "met" : "MISSED");
    std::printf("%-19s without read-ahead %9s ev/s (%lld full passes)  store/raw %.2f\n", "",
                with_commas(plain->events_per_s).c_str(),
                static_cast<long long>(plain->tally.full_passes),
                plain->events_per_s / raw->events_per_s);
    for (const ReadTally* tally : {&store->tally, &plain->tally}) {
      if (tally->out_of_order == 0 && tally->miscounted_passes == 0) continue;
      std::printf(
          "  WARNING: read_all%s broke its contract: %lld events out of order, %lld of "
          "%lld full passes did not return the %lld stored events\n",
          tally == &store->tally ? "" : " without read-ahead",
          static_cast<long long>(tally->out_of_order),
          static_cast<long long>(tally->miscounted_passes),
          static_cast<long long>(tally->full_passes), static_cast<long long>(stored));
    }
    table.push_back({"read_all, page " + std::to_string(page_size),
                     with_commas(store->events_per_s), "–", with_commas(raw->events_per_s),
                     fixed(ratio, 2), "–", "–", "–",
                     std::string("≥ 200,000 ev/s: ") + (met ? "met" : "**missed**")});
  }

  std::printf(
      "\n| Workload | Store events/s | Pool events/s | Raw events/s | Store/raw | Pool/raw | "
      "Floor/raw | Store/raw-bin | Goal |\n|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
  for (const TableRow& row : table) {
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.workload.c_str(),
                row.store_events.c_str(), row.pool_events.c_str(), row.raw_events.c_str(),
                row.ratio.c_str(), row.pool_ratio.c_str(), row.floor_ratio.c_str(),
                row.binary_ratio.c_str(), row.goal.c_str());
  }
  return 0;
}

void print_usage() {
  std::fprintf(
      stderr,
      "usage: store_bench [--seconds N] [--rounds R] [--quick] [--url CONNINFO] [--no-notify] "
      "[--no-groups] [--keep] [--only N] [--pin same|apart] [--raw-think-us N]\n"
      "  --seconds N   measure each side of each workload for N seconds in all (default 10)\n"
      "  --rounds R    split them into R rounds that alternate the sides (default 10); each ratio\n"
      "                is the median of the rounds' ratios\n"
      "  --quick       1 second per side in 1 round, short warmup (smoke run)\n"
      "  --url C       server to use (default: $DATABASE_URL, else libpq PG* defaults)\n"
      "  --no-notify   open the store with PostgresStoreOptions::notify = false\n"
      "  --no-groups   open the store with PostgresStoreOptions::group_appends = false\n"
      "  --keep        keep the benchmark databases for inspection (default: drop them)\n"
      "  --only N      run only append workload N (1-4, in the order printed), no reads\n"
      "  --pin same    pin each writer thread and its server process to one CPU (root); the\n"
      "                pool side is not pinned\n"
      "  --pin apart   the same, the server process on the next CPU\n"
      "  --raw-think-us N  the raw side's writers keep the CPU busy N microseconds before each\n"
      "                append, as a client with more to do per append would\n");
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  options.base_conninfo = default_conninfo();
  for (int idx = 1; idx < argc; ++idx) {
    if (take_database_option(argc, argv, idx, options.base_conninfo, options.keep_database)) {
      continue;
    }
    std::string_view arg = argv[idx];
    if (arg == "--seconds" && idx + 1 < argc) {
      options.seconds = std::atof(argv[++idx]);
      if (options.seconds <= 0) return std::nullopt;
    } else if (arg == "--rounds" && idx + 1 < argc) {
      options.rounds = std::atoi(argv[++idx]);
      if (options.rounds < 1) return std::nullopt;
    } else if (arg == "--quick") {
      options.seconds = 1;
      options.rounds = 1;
      options.warmup_seconds = 0.3;
    } else if (arg == "--no-notify") {
      options.notify = false;
    } else if (arg == "--no-groups") {
      options.group_appends = false;
    } else if (arg == "--raw-think-us" && idx + 1 < argc) {
      double micros = std::atof(argv[++idx]);
      if (micros < 0) return std::nullopt;
      options.raw_think = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double, std::micro>(micros));
    } else if (arg == "--pin" && idx + 1 < argc) {
      std::string_view where = argv[++idx];
      if (where != "same" && where != "apart") return std::nullopt;
      options.pin = where == "same" ? Pin::kSame : Pin::kApart;
    } else if (arg == "--only" && idx + 1 < argc) {
      options.only_workload = std::atoi(argv[++idx]);
      if (options.only_workload < 1 || options.only_workload > 4) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Options> options = parse_options(argc, argv);
  if (!options) {
    print_usage();
    return 2;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return with_bench_database(options->base_conninfo, "store_bench", options->keep_database,
                             [&](const std::string& conninfo) {
                               return with_bench_database(
                                   options->base_conninfo, "store_bench", options->keep_database,
                                   [&](const std::string& pool_conninfo) {
                                     return run(*options, conninfo, pool_conninfo);
                                   },
                                   "_pool");
                             });
}
