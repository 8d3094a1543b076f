// Helpers the benchmarks share: raw libpq handles for the baselines, a database URL with another
// database name, and number formatting.
#pragma once

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cqrs::bench {

struct PgConnCloser {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultClearer {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnCloser>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultClearer>;

// `text` without trailing newlines and spaces ("" for null).
std::string trimmed(const char* text);

// Connects; on failure returns nullptr and sets `error`.
PgConnPtr connect_raw(const std::string& conninfo, std::string& error);

// Takes ownership of `raw_result`; on failure returns nullptr and sets `error`.
PgResultPtr checked(PGconn* conn, PGresult* raw_result, std::string& error);
PgResultPtr exec_sql(PGconn* conn, const std::string& sql, std::string& error);

// The first field of a one-row query, or "?" on error.
std::string query_value(PGconn* conn, const std::string& sql);

// `conninfo` (URL or keyword string) with its dbname replaced; every other setting is kept.
std::optional<std::string> with_dbname(const std::string& conninfo, std::string_view dbname,
                                       std::string& error);

// Creates the database cqrs_bench_<pid><suffix> on the server `base_conninfo` names and returns
// its conninfo (dbname set to its name). Prints "<program>: <reason>" and returns nullopt on
// failure.
std::optional<std::string> create_bench_database(const std::string& base_conninfo,
                                                 const char* program, std::string& dbname,
                                                 std::string_view suffix = "");
// Drops it again (WITH FORCE); false, after printing why, when that fails.
bool drop_bench_database(const std::string& base_conninfo, const std::string& dbname,
                         const char* program);
// The server a benchmark uses unless told otherwise: $DATABASE_URL, or "" (libpq's PG*
// defaults).
std::string default_conninfo();
// Takes the options every benchmark accepts, --url C and --keep, from argv[idx]; true when it
// was one of them (idx then points at its last word).
bool take_database_option(int argc, char** argv, int& idx, std::string& conninfo, bool& keep);

// Runs `run` with the conninfo of a new benchmark database (create_bench_database) and drops
// the database afterwards, unless `keep`. Returns run's exit code, or 1 when the database could
// not be made or dropped.
int with_bench_database(const std::string& base_conninfo, const char* program, bool keep,
                        const std::function<int(const std::string& conninfo)>& run,
                        std::string_view suffix = "");

// The raw baselines' bare table: the event's columns, one index (the primary key).
inline constexpr const char* kRawEventTableDdl =
    "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, stream_id text NOT NULL, "
    "stream_version bigint NOT NULL, event_id uuid NOT NULL, event_type text NOT NULL, "
    "event_version int NOT NULL DEFAULT 1, data jsonb NOT NULL, metadata jsonb NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now())";

// The floor: a table with only what the event store's schema requires of cqrs.events, and no more.
// The two unique constraints are part of the store's contract (an event id is stored once; a
// stream's versions are unique), and each row records its transaction, which $all's order
// needs. global_position is unique by construction (an identity), as in cqrs.events. The index
// that $all is read through is left out: a store can hold one entry per run of an append's
// events, as cqrs.events does (schema/013), so that index's cost is not a bound for appends of
// many events (for single events the floor is looser by that entry). No version check, no function,
// no command record, no NOTIFY: a plain INSERT of the same rows. No store that keeps those
// constraints can append faster.
inline constexpr const char* kFloorEventTableDdl =
    "CREATE TABLE bench_floor (global_position bigint GENERATED ALWAYS AS IDENTITY, "
    "transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), stream_id text NOT NULL, "
    "stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE, event_type text NOT NULL, "
    "event_version int NOT NULL DEFAULT 1, data jsonb NOT NULL, metadata jsonb NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stream_id, stream_version))";

// The machine and the server settings, for the header of a benchmark's output.
std::string machine_description(PGconn* conn);

// ---- /proc: memory and CPU of the processes under test -----------------------------------------

// RSS and peak RSS of `pid` in bytes (0 when unreadable).
double rss_bytes(pid_t pid);
double peak_rss_bytes(pid_t pid);

// CPU seconds (user + system) `pid` has used so far; 0 when unreadable.
double process_cpu_seconds(pid_t pid);
// CPU seconds the calling thread has used so far.
double thread_cpu_seconds();

// CPU time used so far by cqrsd, by this process and by every process named "postgres".
struct CpuSample {
  std::chrono::steady_clock::time_point at;
  double daemon = 0;                 // cqrsd
  double self = 0;                   // this process: the client (and the raw baseline's threads)
  std::map<pid_t, double> postgres;  // every process named "postgres" (server and backends)
  double busy = 0;                   // the whole machine
};
CpuSample sample_cpu(pid_t daemon_pid);

// CPU used between two samples: `seconds` of CPU each, and the wall time between them.
struct CpuUse {
  double wall = 0;
  double daemon = 0;
  double client = 0;
  double postgres = 0;  // processes alive at the second sample (the server and its backends)
  double other = 0;     // everything else: other processes on the box, Postgres processes that
                        // ended in between
  // In % of one core (the machine has nproc * 100 %).
  double percent(double seconds) const { return wall > 0 ? seconds / wall * 100 : 0; }
};
CpuUse cpu_between(const CpuSample& from, const CpuSample& to);

// % of a core used by other processes during a phase that spoils its figures.
inline constexpr double kForeignCpuWarning = 15;

// `value` with `decimals` digits after the point.
std::string fixed(double value, int decimals);

}  // namespace cqrs::bench
