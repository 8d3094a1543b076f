// append_costs: what each part of cqrs.events costs an append, statement by statement. Where
// store_bench compares whole appends, this program takes the store's append statement apart:
// it runs the same rows into tables that differ in one thing each (the raw baseline's bare
// table, the floor, cqrs.events without its run index, then with it, with the separate type index
// it had before schema/015 or the correlation index it had before schema/018 added, and the
// column rules as table CHECK constraints instead of domains), the store's
// statement shape (stream lock, RETURNING) against a plain INSERT, and for appends of many
// events the arrays' format (text literals, as the baselines send them, or binary, as the store
// does) on the raw table and on cqrs.events.
//
// The statements take turns, one append each, on one connection: a slow moment of a shared
// host then costs every variant alike, and the differences between variants stay readable even
// when the absolute figures move. With --turn T each variant runs T appends in a row, so that its
// statements find the caches holding its own table, as a store's do; the turns are then far
// enough apart for the host's drift to show between variants. Server CPU per statement comes from
// the backend's /proc/<pid>/schedstat (nanoseconds), so the server must run on this host; wall time
// includes the round trip and the commit. With --own-connections each variant runs on a
// connection of its own and the program lists their server processes, for counting each
// variant's instructions under valgrind (bench/backend_instructions), which the host's drift
// does not move.
//
// usage: append_costs [--appends N] [--events E] [--turn T] [--own-connections]
//                     [--url CONNINFO] [--keep]
//
// The server is DATABASE_URL (or --url; libpq's PG* defaults when both are absent). The run
// creates database cqrs_bench_<pid> there, migrates it, and drops it at the end (also after
// Ctrl-C).
#include <fcntl.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/uuid.hpp"

namespace {

using namespace cqrs::bench;
using cqrs::pg::append_array_element;

std::atomic<bool> g_interrupted{false};  // Ctrl-C: stop, and drop the database

void on_signal(int) { g_interrupted = true; }

constexpr int kAppendsPerStream = 10;  // as in store_bench: a new stream every 10 appends
constexpr int kWarmupAppends = 100;    // per variant, not measured

struct Options {
  int appends = 3000;            // measured per variant
  int events = 1;                // per append
  int turn = 1;                  // appends of one variant in a row
  bool own_connections = false;  // each variant on a connection (a server process) of its own
  std::string base_conninfo;
  bool keep_database = false;
};

// A plain INSERT as the baselines run it, or the shape of the store's statement for an append
// after a known version (append_after, append_after_many): the stream's lock, the run lengths,
// RETURNING.
enum class Shape { kPlain, kStore };

// How an append of many events sends its arrays: as text literals (as the baselines do) or in
// binary format (as the store does, see cqrs::pg::BinaryArray).
enum class Arrays { kText, kBinary };

struct Variant {
  const char* label;
  const char* table;
  Shape shape;
  Arrays arrays;
};

// The tables, each made from the migrated cqrs.events or the baselines' DDL. All start empty
// and grow alike, since each variant appends the same number of rows.
constexpr const char* kVariantTablesDdl[] = {
    kRawEventTableDdl,
    "CREATE TABLE bench_raw_binary (LIKE bench_raw INCLUDING ALL EXCLUDING DEFAULTS)",
    "ALTER TABLE bench_raw_binary ALTER id ADD GENERATED ALWAYS AS IDENTITY,"
    " ALTER event_version SET DEFAULT 1, ALTER created_at SET DEFAULT now()",
    kFloorEventTableDdl,
    "CREATE TABLE bench_floor_binary (LIKE bench_floor INCLUDING ALL)",
    // cqrs.events without its run index ($all order and type).
    "CREATE TABLE events_bare (LIKE cqrs.events INCLUDING ALL)",
    "DROP INDEX events_bare_transaction_id_global_position_event_type_idx",
    "CREATE TABLE events_bare_store (LIKE events_bare INCLUDING ALL)",
    "CREATE TABLE events_all (LIKE cqrs.events INCLUDING ALL)",
    // The separate index by type of schema/010-014, for comparison.
    "CREATE TABLE events_order_type (LIKE events_all INCLUDING ALL)",
    "CREATE INDEX ON events_order_type (event_type, transaction_id, global_position)"
    " WHERE run_length > 0",
    // The correlation index of schema/007-017, which schema/018 moved behind the appends.
    "CREATE TABLE events_correlation (LIKE events_all INCLUDING ALL)",
    "CREATE INDEX ON events_correlation ((metadata->>'correlation_id')) WHERE run_length > 0",
    // cqrs.events as before schema/014: the column rules as table CHECK constraints.
    "CREATE TABLE events_checks (LIKE cqrs.events INCLUDING ALL)",
    "ALTER TABLE events_checks ALTER stream_version TYPE bigint, ALTER event_type TYPE text,"
    " ALTER event_version TYPE int, ALTER metadata TYPE jsonb,"
    " ADD CHECK (stream_version > 0), ADD CHECK (event_type <> ''),"
    " ADD CHECK (event_version >= 1), ADD CHECK (jsonb_typeof(metadata) = 'object')",
    "CREATE TABLE events_text (LIKE cqrs.events INCLUDING ALL)",
};

constexpr Variant kVariants[] = {
    {"raw: bare table, plain INSERT", "bench_raw", Shape::kPlain, Arrays::kText},
    {"raw, arrays in binary format", "bench_raw_binary", Shape::kPlain, Arrays::kBinary},
    {"floor: plain INSERT", "bench_floor", Shape::kPlain, Arrays::kText},
    {"floor, arrays in binary format", "bench_floor_binary", Shape::kPlain, Arrays::kBinary},
    {"events, no run indexes, plain INSERT", "events_bare", Shape::kPlain, Arrays::kBinary},
    {"events, no run indexes, store's statement", "events_bare_store", Shape::kStore,
     Arrays::kBinary},
    {"  + $all index (order, type) (= cqrs.events)", "events_all", Shape::kStore, Arrays::kBinary},
    {"    (+ the separate type index of schema/010-014)", "events_order_type", Shape::kStore,
     Arrays::kBinary},
    {"    (+ the correlation index of schema/007-017)", "events_correlation", Shape::kStore,
     Arrays::kBinary},
    {"cqrs.events with CHECKs, not domains", "events_checks", Shape::kStore, Arrays::kBinary},
    {"cqrs.events, arrays as text literals", "events_text", Shape::kStore, Arrays::kText},
};
constexpr size_t kVariantCount = std::size(kVariants);
constexpr size_t kFloorVariant = 2;  // "CPU over the floor" is measured from it
static_assert(std::string_view(kVariants[kFloorVariant].table) == "bench_floor");

std::string statement_sql(const Variant& variant, bool many) {
  const std::string columns =
      std::string("INSERT INTO ") + variant.table +
      " (stream_id, stream_version, event_id, event_type, event_version, data, metadata";
  const char* lock =
      " FROM (SELECT pg_advisory_xact_lock(1668379251, hashtext($1)) AS locked) AS l";
  if (!many) {
    if (variant.shape == Shape::kPlain) {
      return columns + ") VALUES ($1, $2::bigint + 1, $3, $4, $5, $6, $7)";
    }
    return columns + ") SELECT $1, $2::bigint + 1, $3::uuid, $4, $5::int, $6::jsonb, $7::jsonb" +
           lock + " RETURNING global_position, transaction_id";
  }
  const std::string values =
      " SELECT $1, $2::bigint + e.ord, e.event_id, e.event_type, e.event_version, e.data,"
      " coalesce(e.metadata, ($7::jsonb[])[1])";
  if (variant.shape == Shape::kPlain) {
    return columns + ")" + values +
           " FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[])"
           " WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, ord)";
  }
  return columns + ", run_length)" + values + ", e.run_length" +
         " FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::int[])"
         " WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, run_length,"
         " ord) WHERE (SELECT pg_advisory_xact_lock(1668379251, hashtext($1))::text) IS NOT NULL"
         " ORDER BY e.ord"
         " RETURNING global_position,"
         " CASE WHEN stream_version = $2::bigint + 1 THEN pg_current_xact_id()::text END";
}

// The metadata a new command's events share: its time-ordered id as command, correlation and
// causation, as cqrsd fills it for a command that names no correlation.
std::string command_metadata() {
  std::string command_id = cqrs::Uuid::time_ordered().to_string();
  return R"({"command_id":")" + command_id + R"(","correlation_id":")" + command_id +
         R"(","causation_id":")" + command_id + R"("})";
}

// The next card's payload.
std::string card_payload(int64_t& card) {
  return R"({"card_id":"c)" + std::to_string(++card) + R"(","amount":5000,"currency":"EUR"})";
}

// The parameters of one append of `events` events to `stream` after version `base`: the same
// rows store_bench appends (a command's events, sharing its metadata, one run).
std::vector<std::string> append_values(const std::string& stream, int64_t base, int events,
                                       int64_t& card) {
  std::string metadata = command_metadata();
  auto data = [&] { return card_payload(card); };
  if (events == 1) {
    return {stream,
            std::to_string(base),
            cqrs::Uuid::time_ordered().to_string(),
            "GiftCardIssued",
            "1",
            data(),
            metadata};
  }
  std::string ids = "{", types = "{", versions = "{", payloads = "{", runs = "{";
  for (int idx = 0; idx < events; ++idx) {
    append_array_element(ids, cqrs::Uuid::time_ordered().to_string());
    append_array_element(types, "GiftCardIssued");
    append_array_element(versions, "1");
    append_array_element(payloads, data());
    append_array_element(runs, idx == 0 ? std::to_string(events) : "0");
  }
  std::string shared = "{";
  append_array_element(shared, metadata);
  std::vector<std::string> values = {
      stream, std::to_string(base), ids, types, versions, payloads, shared, runs};
  for (size_t idx = 2; idx < values.size(); ++idx) values[idx].push_back('}');
  return values;
}

// The same rows as append_values, with the arrays (every parameter after the second) in binary
// format.
std::vector<std::string> binary_append_values(const std::string& stream, int64_t base, int events,
                                              int64_t& card) {
  using cqrs::pg::BinaryArray;
  BinaryArray ids(BinaryArray::kUuid, events), types(BinaryArray::kText, events),
      versions(BinaryArray::kInt4, events), payloads(BinaryArray::kJsonb, events),
      runs(BinaryArray::kInt4, events), shared(BinaryArray::kJsonb, 1);
  for (int idx = 0; idx < events; ++idx) {
    ids.add_uuid(cqrs::Uuid::time_ordered().bytes());
    types.add_text("GiftCardIssued");
    versions.add_int4(1);
    payloads.add_jsonb(card_payload(card));
    runs.add_int4(idx == 0 ? events : 0);
  }
  shared.add_jsonb(command_metadata());
  return {stream,          std::to_string(base), ids.take(),    types.take(),
          versions.take(), payloads.take(),      shared.take(), runs.take()};
}

// Nanoseconds of CPU the process has used, from a descriptor open on its schedstat; -1 when
// it cannot be read (the server runs elsewhere).
int64_t cpu_ns(int fd) {
  if (fd < 0) return -1;
  char text[64];
  ssize_t size = pread(fd, text, sizeof text - 1, 0);
  if (size <= 0) return -1;
  text[size] = '\0';
  return std::strtoll(text, nullptr, 10);
}

// A descriptor open on the schedstat of `conn`'s server process, or -1 when that process is not
// on this host (its pid then names another process here, or none: its name tells).
int open_backend_cpu(PGconn* conn) {
  std::string proc = "/proc/" + std::to_string(PQbackendPID(conn));
  std::string comm;
  if (std::FILE* file = std::fopen((proc + "/comm").c_str(), "r")) {
    char text[32] = {};
    if (std::fgets(text, sizeof text, file) != nullptr) comm = text;
    std::fclose(file);
  }
  return comm.starts_with("postgres") ? open((proc + "/schedstat").c_str(), O_RDONLY) : -1;
}

// The schedstat descriptors a run opened (open_backend_cpu), closed when it ends however it ends.
class CpuReaders {
 public:
  CpuReaders() = default;
  CpuReaders(const CpuReaders&) = delete;
  CpuReaders& operator=(const CpuReaders&) = delete;
  ~CpuReaders() {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }
  int open_for(PGconn* conn) { return fds_.emplace_back(open_backend_cpu(conn)); }

 private:
  std::vector<int> fds_;
};

struct Samples {
  std::vector<double> cpu_us;
  std::vector<double> wall_us;
};

double mean(const std::vector<double>& values) {
  return values.empty() ? 0 : std::accumulate(values.begin(), values.end(), 0.0) / values.size();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

int run(const Options& options, const std::string& conninfo) {
  std::string error;
  {
    auto conn = cqrs::pg::Connection::open(conninfo);
    if (!conn) {
      std::fprintf(stderr, "append_costs: %s\n", conn.error().to_string().c_str());
      return 1;
    }
    if (auto migrated = cqrs::pg::migrate(**conn); !migrated) {
      std::fprintf(stderr, "append_costs: migrate: %s\n", migrated.error().to_string().c_str());
      return 1;
    }
  }
  PgConnPtr conn = connect_raw(conninfo, error);
  if (!conn) {
    std::fprintf(stderr, "append_costs: %s\n", error.c_str());
    return 1;
  }
  for (const char* ddl : kVariantTablesDdl) {
    if (!exec_sql(conn.get(), ddl, error)) {
      std::fprintf(stderr, "append_costs: %s\n", error.c_str());
      return 1;
    }
  }
  const bool many = options.events > 1;
  // The connection each variant runs on, and its server process's CPU.
  std::vector<PgConnPtr> own(options.own_connections ? kVariantCount : 0);
  std::vector<PGconn*> conns(kVariantCount, conn.get());
  std::vector<int> cpu_fds(kVariantCount, -1);
  CpuReaders readers;
  const int shared_fd = options.own_connections ? -1 : readers.open_for(conn.get());
  for (size_t idx = 0; idx < kVariantCount; ++idx) {
    if (options.own_connections) {
      own[idx] = connect_raw(conninfo, error);
      if (!own[idx]) {
        std::fprintf(stderr, "append_costs: %s\n", error.c_str());
        return 1;
      }
      conns[idx] = own[idx].get();
      cpu_fds[idx] = readers.open_for(conns[idx]);
    } else {
      cpu_fds[idx] = shared_fd;
    }
    std::string name = "v" + std::to_string(idx);
    std::string sql = statement_sql(kVariants[idx], many);
    if (!checked(conns[idx], PQprepare(conns[idx], name.c_str(), sql.c_str(), 0, nullptr), error)) {
      std::fprintf(stderr, "append_costs: %s: %s\n", kVariants[idx].label, error.c_str());
      return 1;
    }
  }

  std::printf("machine: %s\n", machine_description(conn.get()).c_str());
  std::printf(
      "settings: %d appends of %d event%s per variant (after %d unmeasured), the variants "
      "taking turns of %d append%s on %s; a new stream every %d appends\n\n",
      options.appends, options.events, options.events == 1 ? "" : "s", kWarmupAppends, options.turn,
      options.turn == 1 ? "" : "s",
      options.own_connections ? "a connection each" : "one connection", kAppendsPerStream);
  if (cpu_fds[0] < 0) {
    std::printf("(the server's /proc is not readable here: wall times only)\n\n");
  }
  if (options.own_connections) {
    // For tools that count per server process (bench/backend_instructions).
    for (size_t idx = 0; idx < kVariantCount; ++idx) {
      std::printf("server process %d: %s\n", PQbackendPID(conns[idx]), kVariants[idx].label);
    }
    std::printf("\n");
  }

  std::vector<Samples> samples(kVariantCount);
  int64_t card = 0;
  const int rounds = kWarmupAppends + options.appends;
  // Each variant's turn is `turn` appends in a row; the turns alternate. With one append a turn,
  // every statement finds the caches holding the other variants' tables; with longer turns,
  // its own, as a store that appends to one table does.
  for (int first = 0; first < rounds && !g_interrupted; first += options.turn) {
    const int last = std::min(first + options.turn, rounds);
    for (size_t idx = 0; idx < kVariantCount; ++idx) {
      for (int round = first; round < last && !g_interrupted; ++round) {
        const std::string stream_suffix = "-" + std::to_string(round / kAppendsPerStream);
        const int64_t base = static_cast<int64_t>(round % kAppendsPerStream) * options.events;
        const bool binary = many && kVariants[idx].arrays == Arrays::kBinary;
        const std::string stream = "cost-" + std::to_string(idx) + stream_suffix;
        std::vector<std::string> values =
            binary ? binary_append_values(stream, base, options.events, card)
                   : append_values(stream, base, options.events, card);
        std::vector<int> lengths, formats;
        for (size_t at = 0; binary && at < values.size(); ++at) {
          lengths.push_back(static_cast<int>(values[at].size()));
          formats.push_back(at >= 2 ? 1 : 0);
        }
        // A plain INSERT of many events takes no run lengths (the last parameter).
        if (many && kVariants[idx].shape == Shape::kPlain) values.pop_back();
        std::vector<const char*> pointers;
        for (const std::string& value : values) pointers.push_back(value.c_str());
        std::string name = "v" + std::to_string(idx);
        int64_t cpu_before = cpu_ns(cpu_fds[idx]);
        auto started = std::chrono::steady_clock::now();
        PgResultPtr result =
            checked(conns[idx],
                    PQexecPrepared(conns[idx], name.c_str(), static_cast<int>(pointers.size()),
                                   pointers.data(), binary ? lengths.data() : nullptr,
                                   binary ? formats.data() : nullptr, 0),
                    error);
        auto ended = std::chrono::steady_clock::now();
        int64_t cpu_after = cpu_ns(cpu_fds[idx]);
        if (!result) {
          std::fprintf(stderr, "append_costs: %s: %s\n", kVariants[idx].label, error.c_str());
          return 1;
        }
        if (round < kWarmupAppends) continue;
        samples[idx].wall_us.push_back(
            std::chrono::duration<double, std::micro>(ended - started).count());
        if (cpu_before >= 0 && cpu_after >= 0) {
          samples[idx].cpu_us.push_back(static_cast<double>(cpu_after - cpu_before) / 1000.0);
        }
      }
    }
  }
  if (g_interrupted) {
    std::fprintf(stderr, "append_costs: interrupted\n");
    return 130;
  }

  const Samples& floor = samples[kFloorVariant];
  std::printf(
      "| Variant | Server CPU, mean | median | Wall, mean | median | CPU over the floor (text) "
      "|\n");
  std::printf("|---|--:|--:|--:|--:|--:|\n");
  for (size_t idx = 0; idx < kVariantCount; ++idx) {
    const Samples& each = samples[idx];
    std::printf("| %s | %s µs | %s µs | %s µs | %s µs | %+.1f µs |\n", kVariants[idx].label,
                fixed(mean(each.cpu_us), 1).c_str(), fixed(median(each.cpu_us), 1).c_str(),
                fixed(mean(each.wall_us), 1).c_str(), fixed(median(each.wall_us), 1).c_str(),
                mean(each.cpu_us) - mean(floor.cpu_us));
  }
  return 0;
}

void print_usage() {
  std::fprintf(stderr,
               "usage: append_costs [--appends N] [--events E] [--turn T] [--own-connections] "
               "[--url CONNINFO] [--keep]\n"
               "  --appends N  measured appends per variant (default 3000)\n"
               "  --turn T     appends of one variant in a row before the next's (default 1)\n"
               "  --own-connections  each variant on a connection of its own (one server "
               "process each,\n"
               "               listed with its pid: see bench/backend_instructions)\n"
               "  --events E   events per append (default 1; more use the store's array "
               "statements)\n"
               "  --url C      server to use (default: $DATABASE_URL, else libpq PG* defaults)\n"
               "  --keep       keep the benchmark database for inspection\n");
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  options.base_conninfo = default_conninfo();
  for (int idx = 1; idx < argc; ++idx) {
    if (take_database_option(argc, argv, idx, options.base_conninfo, options.keep_database)) {
      continue;
    }
    std::string_view arg = argv[idx];
    if (arg == "--appends" && idx + 1 < argc) {
      options.appends = std::atoi(argv[++idx]);
      if (options.appends < 1) return std::nullopt;
    } else if (arg == "--turn" && idx + 1 < argc) {
      options.turn = std::atoi(argv[++idx]);
      if (options.turn < 1) return std::nullopt;
    } else if (arg == "--own-connections") {
      options.own_connections = true;
    } else if (arg == "--events" && idx + 1 < argc) {
      options.events = std::atoi(argv[++idx]);
      if (options.events < 1) return std::nullopt;
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
  return with_bench_database(options->base_conninfo, "append_costs", options->keep_database,
                             [&](const std::string& conninfo) { return run(*options, conninfo); });
}
