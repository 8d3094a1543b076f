// TestDatabase: CREATE DATABASE / DROP DATABASE around each test.
#include "support/test_database.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "cqrs/pg/migrate.hpp"
#include "cqrs/uuid.hpp"

namespace cqrs::testing {

std::string database_url() {
  const char* url = std::getenv("DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    ADD_FAILURE() << "DATABASE_URL is not set: run the suite through scripts/test, or export "
                     "DATABASE_URL (eval \"$(scripts/pg env)\" after scripts/pg start)";
    return "";
  }
  return url;
}

std::unique_ptr<TestDatabase> TestDatabase::create(bool migrated) {
  std::string admin_url = database_url();
  if (admin_url.empty()) return nullptr;
  static std::atomic<int> counter{0};
  std::string name = "cqrs_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++) +
                     "_" + Uuid::random().to_string().substr(0, 8);
  auto admin = pg::Connection::open(admin_url);
  if (!admin) {
    ADD_FAILURE() << admin.error().to_string();
    return nullptr;
  }
  if (auto created = (*admin)->exec("CREATE DATABASE " + pg::quote_identifier(name)); !created) {
    ADD_FAILURE() << "CREATE DATABASE " << name << ": " << created.error().to_string();
    return nullptr;
  }
  auto url = pg::with_database(admin_url, name);
  if (!url) {
    ADD_FAILURE() << url.error().to_string();
    return nullptr;
  }
  std::unique_ptr<TestDatabase> db(new TestDatabase(admin_url, name, *url));
  if (migrated) {
    auto report = pg::migrate(db->url());
    if (!report) {
      ADD_FAILURE() << "migrating " << name << ": " << report.error().to_string();
      return nullptr;
    }
  }
  return db;
}

TestDatabase::~TestDatabase() {
  auto admin = pg::Connection::open(admin_url_);
  if (!admin) return;
  (void)(*admin)->exec("DROP DATABASE IF EXISTS " + pg::quote_identifier(name_) + " WITH (FORCE)");
}

std::unique_ptr<pg::Connection> TestDatabase::connect() const {
  auto conn = pg::Connection::open(url_);
  if (!conn) {
    ADD_FAILURE() << conn.error().to_string();
    return nullptr;
  }
  return std::move(conn).value();
}

TableScans scans_during(pg::Connection& sql, std::string_view table,
                        const std::function<void()>& work) {
  auto scans = [&] {
    auto rows = sql.exec(
        "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        " WHERE relid = $1::regclass",
        pg::Params().add(std::string(table)));
    EXPECT_TRUE(rows.ok() && rows->rows() == 1)
        << (rows.ok() ? "no such table" : rows.error().to_string());
    return rows.ok() && rows->rows() == 1 ? TableScans{rows->int64(0, 0), rows->int64(0, 1)}
                                          : TableScans{};
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  TableScans before = scans();
  work();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  TableScans after = scans();
  while (after.index == before.index && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = scans();
  }
  return {after.sequential - before.sequential, after.index - before.index};
}

}  // namespace cqrs::testing
