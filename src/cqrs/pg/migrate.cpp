// Applies the embedded schema migrations under an advisory lock.
#include "cqrs/pg/migrate.hpp"

#include <algorithm>
#include <map>

#include "cqrs/pg/connection.hpp"

namespace cqrs::pg {
namespace {

// Arbitrary key shared by every cqrsd build: "cqrs" in ASCII.
constexpr int64_t kMigrationLockKey = 0x63717273;

// Holds the session-level advisory lock for the lifetime of the guard.
class MigrationLock {
 public:
  explicit MigrationLock(Connection& conn) : conn_(conn) {}
  ~MigrationLock() {
    if (held_ && conn_.is_ok()) {
      (void)conn_.exec("SELECT pg_advisory_unlock($1)", Params().add(kMigrationLockKey));
    }
  }
  Result<void> acquire() {
    auto locked = conn_.exec("SELECT pg_advisory_lock($1)", Params().add(kMigrationLockKey));
    if (!locked) return locked.error();
    held_ = true;
    return {};
  }

 private:
  Connection& conn_;
  bool held_ = false;
};

Error migration_error(std::string message) {
  return Error::internal(errc::kMigrationFailed, std::move(message));
}

// version -> name of the migrations recorded in the database.
Result<std::map<int, std::string>> recorded_migrations(Connection& conn) {
  auto exists = conn.exec("SELECT to_regclass('cqrs.schema_migrations') IS NOT NULL");
  if (!exists) return exists.error();
  std::map<int, std::string> recorded;
  if (exists->text(0, 0) != "t") return recorded;
  auto rows = conn.exec("SELECT version, name FROM cqrs.schema_migrations ORDER BY version");
  if (!rows) return rows.error();
  for (int row = 0; row < rows->rows(); ++row) {
    recorded.emplace(static_cast<int>(rows->int64(row, 0)), std::string(rows->text(row, 1)));
  }
  return recorded;
}

Result<void> check_compatible(const std::map<int, std::string>& recorded,
                              std::span<const Migration> migrations) {
  int newest_known = migrations.empty() ? 0 : migrations.back().version;
  if (!recorded.empty() && recorded.rbegin()->first > newest_known) {
    return Error::internal(
        errc::kSchemaTooNew,
        "the database schema is at version " + std::to_string(recorded.rbegin()->first) +
            " but this build knows migrations only up to " + std::to_string(newest_known) +
            "; run a cqrsd at least as new as the one that migrated this database");
  }
  for (const Migration& migration : migrations) {
    auto it = recorded.find(migration.version);
    if (it != recorded.end() && it->second != migration.name) {
      return migration_error("migration " + std::to_string(migration.version) +
                             " is recorded as '" + it->second + "' but this build calls it '" +
                             migration.name + "'; the database was migrated by another project");
    }
  }
  return {};
}

// A failed step, with what to do when the role lacks privileges (SQLSTATE 42501).
Error with_privilege_hint(const std::string& step, const Error& error) {
  if (error.kind() == ErrorKind::kUnavailable) return error;
  std::string message = step + " failed: " + error.message();
  if (error.message().find("SQLSTATE 42501") != std::string::npos) {
    message +=
        "; this role may not change the schema: run `cqrsd migrate` as the schema's owner "
        "role, then start cqrsd with its own role (docs/security.md)";
  }
  return migration_error(std::move(message));
}

}  // namespace

Result<MigrationReport> migrate(Connection& conn, std::span<const Migration> migrations) {
  MigrationLock lock(conn);
  if (auto locked = lock.acquire(); !locked) return locked.error();

  // Only a new database needs the bookkeeping table created; a role that may not create
  // anything (the daemon's least-privilege role, docs/security.md) can still start against a
  // migrated one.
  auto recorded = recorded_migrations(conn);
  if (!recorded) return recorded.error();
  if (recorded->empty()) {
    auto bootstrap = conn.exec(
        "CREATE SCHEMA IF NOT EXISTS cqrs;"
        "CREATE TABLE IF NOT EXISTS cqrs.schema_migrations ("
        "  version int PRIMARY KEY,"
        "  name text NOT NULL,"
        "  applied_at timestamptz NOT NULL DEFAULT now())");
    if (!bootstrap) return with_privilege_hint("creating schema cqrs", bootstrap.error());
  }
  if (auto compatible = check_compatible(*recorded, migrations); !compatible) {
    return compatible.error();
  }

  MigrationReport report;
  report.version_before = recorded->empty() ? 0 : recorded->rbegin()->first;
  report.version_after = report.version_before;
  for (const Migration& migration : migrations) {
    if (recorded->contains(migration.version)) continue;
    std::string label = std::to_string(migration.version) + "_" + migration.name;
    if (auto begun = conn.exec("BEGIN"); !begun) return begun.error();
    auto applied = conn.exec(migration.sql);
    if (applied) {
      applied = conn.exec("INSERT INTO cqrs.schema_migrations (version, name) VALUES ($1, $2)",
                          Params().add(int64_t{migration.version}).add(migration.name));
    }
    if (applied) applied = conn.exec("COMMIT");
    if (!applied) {
      if (conn.is_ok()) (void)conn.exec("ROLLBACK");
      if (applied.error().kind() == ErrorKind::kUnavailable) return applied.error();
      return with_privilege_hint("migration " + label, applied.error());
    }
    report.applied.push_back(migration.version);
    report.version_after = std::max(report.version_after, migration.version);
  }
  return report;
}

Result<MigrationReport> migrate(const std::string& conninfo) {
  auto conn = Connection::open(conninfo);
  if (!conn) return conn.error();
  return migrate(**conn);
}

Result<void> check_schema(Connection& conn) {
  const auto& migrations = embedded_migrations();
  auto recorded = recorded_migrations(conn);
  if (!recorded) return recorded.error();
  if (auto compatible = check_compatible(*recorded, migrations); !compatible) {
    return compatible.error();
  }
  for (const Migration& migration : migrations) {
    if (!recorded->contains(migration.version)) {
      return migration_error("the database lacks migration " + std::to_string(migration.version) +
                             "_" + migration.name + "; run `cqrsd migrate` first");
    }
  }
  return {};
}

}  // namespace cqrs::pg
