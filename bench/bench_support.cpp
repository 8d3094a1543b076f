// Shared benchmark helpers.
#include "bench_support.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

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
                                                 const char* program, std::string& dbname,
                                                 std::string_view suffix) {
  std::string error;
  PgConnPtr server = connect_raw(base_conninfo, error);
  if (!server) {
    std::fprintf(stderr, "%s: %s (set DATABASE_URL or pass --url)\n", program, error.c_str());
    return std::nullopt;
  }
  dbname = "cqrs_bench_" + std::to_string(getpid()) + std::string(suffix);
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

// ---- /proc
// ---------------------------------------------------------------------------------------

namespace {

// A "VmRSS:"-style line of /proc/<pid>/status, in bytes; 0 when unreadable.
double proc_status_bytes(pid_t pid, std::string_view field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field, 0) == 0) return std::atof(line.c_str() + field.size()) * 1024.0;
  }
  return 0;
}

}  // namespace

double rss_bytes(pid_t pid) { return proc_status_bytes(pid, "VmRSS:"); }
double peak_rss_bytes(pid_t pid) { return proc_status_bytes(pid, "VmHWM:"); }

namespace {

struct ProcStat {
  std::string comm;
  double cpu_seconds = 0;  // utime + stime
};

// /proc/<pid>/stat: the command name and the CPU time used so far.
std::optional<ProcStat> read_proc_stat(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat out;
  out.comm = text.substr(open + 1, close - open - 1);
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double utime = 0;
  for (int number = 3; fields >> field; ++number) {  // field 3 is the state
    if (number == 14) utime = std::atof(field.c_str());
    if (number == 15) {
      out.cpu_seconds =
          (utime + std::atof(field.c_str())) / static_cast<double>(sysconf(_SC_CLK_TCK));
      break;
    }
  }
  return out;
}

}  // namespace

double process_cpu_seconds(pid_t pid) {
  std::optional<ProcStat> stat = read_proc_stat(pid);
  return stat ? stat->cpu_seconds : 0;
}

double thread_cpu_seconds() {
  timespec now{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now) != 0) return 0;
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

CpuSample sample_cpu(pid_t daemon_pid) {
  CpuSample sample;
  sample.at = std::chrono::steady_clock::now();
  sample.daemon = daemon_pid > 0 ? process_cpu_seconds(daemon_pid) : 0;
  sample.self = process_cpu_seconds(getpid());
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ignored)) {
    std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto pid = static_cast<pid_t>(std::atol(name.c_str()));
    if (std::optional<ProcStat> stat = read_proc_stat(pid); stat && stat->comm == "postgres") {
      sample.postgres[pid] = stat->cpu_seconds;
    }
  }
  // Time charged to processes only: irq/softirq (loopback networking, mostly) and steal are not.
  std::ifstream stat("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0;
  stat >> cpu >> user >> nice >> system;
  sample.busy = (user + nice + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return sample;
}

CpuUse cpu_between(const CpuSample& from, const CpuSample& to) {
  CpuUse use;
  use.wall = std::chrono::duration<double>(to.at - from.at).count();
  if (use.wall <= 0) return {};
  use.daemon = to.daemon - from.daemon;
  use.client = to.self - from.self;
  // A backend that started in between (a store connection opened on first use, an autovacuum
  // worker) counts from zero.
  for (const auto& [pid, seconds] : to.postgres) {
    auto before = from.postgres.find(pid);
    use.postgres += seconds - (before != from.postgres.end() ? before->second : 0.0);
  }
  use.other = std::max(0.0, to.busy - from.busy - use.daemon - use.client - use.postgres);
  return use;
}

std::string machine_description(PGconn* conn) {
  utsname names{};
  uname(&names);
  std::string cpu = "?";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return "nproc " + std::to_string(std::thread::hardware_concurrency()) + " (" + cpu + "), " +
         names.machine + ", " + names.sysname + " " + names.release + "; PostgreSQL " +
         query_value(conn, "SHOW server_version") +
         " on the same host, fsync=" + query_value(conn, "SHOW fsync") +
         ", synchronous_commit=" + query_value(conn, "SHOW synchronous_commit") +
         ", shared_buffers=" + query_value(conn, "SHOW shared_buffers") +
         ", max_connections=" + query_value(conn, "SHOW max_connections");
}

std::string default_conninfo() {
  const char* url = std::getenv("DATABASE_URL");
  return url == nullptr ? "" : url;
}

bool take_database_option(int argc, char** argv, int& idx, std::string& conninfo, bool& keep) {
  std::string_view arg = argv[idx];
  if (arg == "--url" && idx + 1 < argc) {
    conninfo = argv[++idx];
    return true;
  }
  if (arg == "--keep") {
    keep = true;
    return true;
  }
  return false;
}

int with_bench_database(const std::string& base_conninfo, const char* program, bool keep,
                        const std::function<int(const std::string& conninfo)>& run,
                        std::string_view suffix) {
  std::string dbname;
  std::optional<std::string> conninfo =
      create_bench_database(base_conninfo, program, dbname, suffix);
  if (!conninfo) return 1;
  int code = run(*conninfo);
  if (keep) {
    std::fprintf(stderr, "%s: kept database %s\n", program, dbname.c_str());
    return code;
  }
  if (!drop_bench_database(base_conninfo, dbname, program)) code = code == 0 ? 1 : code;
  return code;
}

}  // namespace cqrs::bench
