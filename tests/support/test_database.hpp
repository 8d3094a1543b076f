// A fresh PostgreSQL database per test, created on the server named by DATABASE_URL and dropped
// when the object goes away, so tests never see each other's events.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cqrs/pg/connection.hpp"

namespace cqrs::testing {

class TestDatabase {
 public:
  // Creates the database and, when `migrated`, applies the schema. Fails the current test
  // (ADD_FAILURE) and returns nullptr when DATABASE_URL is unset or the server is unreachable.
  static std::unique_ptr<TestDatabase> create(bool migrated = true);
  ~TestDatabase();

  const std::string& name() const { return name_; }
  // A libpq conninfo string for the fresh database.
  const std::string& url() const { return url_; }
  // A new raw connection to the fresh database (for SQL the store API does not offer).
  std::unique_ptr<pg::Connection> connect() const;

 private:
  TestDatabase(std::string admin_url, std::string name, std::string url)
      : admin_url_(std::move(admin_url)), name_(std::move(name)), url_(std::move(url)) {}
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

// DATABASE_URL, or "" (after ADD_FAILURE with instructions) when unset.
std::string database_url();

// Sequential and index scans of one table, as pg_stat_user_tables counts them.
struct TableScans {
  int64_t sequential = 0;
  int64_t index = 0;
};

// The scans of `table` (a regclass, e.g. "cqrs.events") that `work` adds. A session's counters
// reach the statistics when it goes idle, at most once a second: this waits for those of the
// sessions that ran before `work` first, and afterwards up to 10 s for `work`'s index scans to
// show (a `work` that scans no index waits the 10 s out).
TableScans scans_during(pg::Connection& sql, std::string_view table,
                        const std::function<void()>& work);

}  // namespace cqrs::testing
