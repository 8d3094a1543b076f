// Helpers the benchmarks share: raw libpq handles for the baselines, a database URL with another
// database name, and number formatting.
#pragma once

#include <libpq-fe.h>

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

// Creates the database cqrs_bench_<pid> on the server `base_conninfo` names and returns its
// conninfo (dbname set to its name). Prints "<program>: <reason>" and returns nullopt on failure.
std::optional<std::string> create_bench_database(const std::string& base_conninfo,
                                                 const char* program, std::string& dbname);
// Drops it again (WITH FORCE); false, after printing why, when that fails.
bool drop_bench_database(const std::string& base_conninfo, const std::string& dbname,
                         const char* program);

// The raw baselines' bare table: the event's columns, one index (the primary key).
inline constexpr const char* kRawEventTableDdl =
    "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, stream_id text NOT NULL, "
    "stream_version bigint NOT NULL, event_id uuid NOT NULL, event_type text NOT NULL, "
    "event_version int NOT NULL DEFAULT 1, data jsonb NOT NULL, metadata jsonb NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now())";

// `value` with `decimals` digits after the point.
std::string fixed(double value, int decimals);

}  // namespace cqrs::bench
