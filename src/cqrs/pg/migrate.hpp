// Schema migrations: schema/NNN_name.sql files, embedded at build time, applied in order.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "cqrs/result.hpp"

namespace cqrs::pg {

class Connection;

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// The migrations compiled into this build, in version order.
const std::vector<Migration>& embedded_migrations();

struct MigrationReport {
  int version_before = 0;  // highest version recorded before the run (0: none)
  int version_after = 0;
  std::vector<int> applied;  // versions applied by this run
};

// Brings the database to the newest of `migrations`: creates schema cqrs and
// cqrs.schema_migrations if missing, then applies each missing migration in its own transaction
// and records it. Re-running is a no-op. Concurrent callers (any process) serialize on a Postgres
// advisory lock, so each migration is applied exactly once.
// Errors: schema_too_new when the database records a version this build does not know (an older
// binary must not write to a newer schema); migration_failed naming the migration and the
// server's message; store_unavailable.
Result<MigrationReport> migrate(Connection& conn,
                                std::span<const Migration> migrations = embedded_migrations());
Result<MigrationReport> migrate(const std::string& conninfo);

// Checks without changing anything that the database is at exactly the newest embedded version.
// Errors: schema_too_new, migration_failed ("not migrated: run cqrsd migrate"), store_unavailable.
Result<void> check_schema(Connection& conn);

}  // namespace cqrs::pg
