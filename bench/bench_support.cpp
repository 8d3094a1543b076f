// Shared benchmark helpers.
#include "bench_support.hpp"

#include <unistd.h>

#include <cstdio>

#include "cqrs/pg/connection.hpp"

namespace cqrs::bench {

std::string trimmed(const char* text) {
  std::string out = text == nullptr ? "" : text;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

PgConnPtr connect_raw(const std::string& conninfo, std::string& error) {
  PgConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    error = "cannot connect: " + (conn ? trimmed(PQerrorMessage(conn.get())) : "out of memory");
    return nullptr;
  }
  return conn;
}

PgResultPtr checked(PGconn* conn, PGresult* raw_result, std::string& error) {
  PgResultPtr result(raw_result);
  ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    error = trimmed(result ? PQresultErrorMessage(result.get()) : PQerrorMessage(conn));
    return nullptr;
  }
  return result;
}

PgResultPtr exec_sql(PGconn* conn, const std::string& sql, std::string& error) {
  return checked(conn, PQexec(conn, sql.c_str()), error);
}

std::string query_value(PGconn* conn, const std::string& sql) {
  std::string error;
  PgResultPtr result = exec_sql(conn, sql, error);
  if (!result || PQntuples(result.get()) == 0) return "?";
  return PQgetvalue(result.get(), 0, 0);
}

std::optional<std::string> with_dbname(const std::string& conninfo, std::string_view dbname,
                                       std::string& error) {
  auto out = pg::with_database(conninfo, dbname);
  if (!out) {
    error = out.error().message();
    return std::nullopt;
  }
  return *out;
}

std::optional<std::string> create_bench_database(const std::string& base_conninfo,
                                                 const char* program, std::string& dbname) {
  std::string error;
  PgConnPtr server = connect_raw(base_conninfo, error);
  if (!server) {
    std::fprintf(stderr, "%s: %s (set DATABASE_URL or pass --url)\n", program, error.c_str());
    return std::nullopt;
  }
  dbname = "cqrs_bench_" + std::to_string(getpid());
  std::optional<std::string> conninfo = with_dbname(base_conninfo, dbname, error);
  if (!conninfo) {
    std::fprintf(stderr, "%s: %s\n", program, error.c_str());
    return std::nullopt;
  }
  if (!exec_sql(server.get(), "CREATE DATABASE " + pg::quote_identifier(dbname), error)) {
    std::fprintf(stderr, "%s: CREATE DATABASE %s: %s\n", program, dbname.c_str(), error.c_str());
    return std::nullopt;
  }
  return conninfo;
}

bool drop_bench_database(const std::string& base_conninfo, const std::string& dbname,
                         const char* program) {
  std::string error;
  PgConnPtr server = connect_raw(base_conninfo, error);
  if (server &&
      exec_sql(server.get(),
               "DROP DATABASE IF EXISTS " + pg::quote_identifier(dbname) + " WITH (FORCE)",
               error)) {
    return true;
  }
  std::fprintf(stderr, "%s: DROP DATABASE %s: %s\n", program, dbname.c_str(), error.c_str());
  return false;
}

std::string fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

}  // namespace cqrs::bench
