// Schema migrations: applied once, in order, atomically, safely from concurrent processes, and
// refused when the database is newer than the code.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "support/test_database.hpp"

namespace cqrs::pg {
namespace {

class Migrations : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::TestDatabase::create(/*migrated=*/false);
    ASSERT_NE(db_, nullptr);
    conn_ = db_->connect();
    ASSERT_NE(conn_, nullptr);
  }

  int64_t recorded_count() {
    auto rows = conn_->exec("SELECT count(*) FROM cqrs.schema_migrations");
    EXPECT_TRUE(rows.ok()) << rows.error().to_string();
    return rows.ok() ? rows->int64(0, 0) : -1;
  }

  std::unique_ptr<testing::TestDatabase> db_;
  std::unique_ptr<Connection> conn_;
};

TEST_F(Migrations, FreshDatabaseGetsEveryMigration) {
  auto report = migrate(*conn_);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_EQ(report->version_before, 0);
  EXPECT_EQ(report->version_after, embedded_migrations().back().version);
  EXPECT_EQ(report->applied.size(), embedded_migrations().size());
  EXPECT_EQ(recorded_count(), std::ssize(embedded_migrations()));
  EXPECT_TRUE(check_schema(*conn_).ok());
}

TEST_F(Migrations, RerunningIsANoOp) {
  ASSERT_TRUE(migrate(*conn_).ok());
  auto again = migrate(*conn_);
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_TRUE(again->applied.empty());
  EXPECT_EQ(again->version_before, again->version_after);
  EXPECT_EQ(recorded_count(), std::ssize(embedded_migrations()));
}

TEST_F(Migrations, DatabaseNewerThanTheCodeIsRefused) {
  ASSERT_TRUE(migrate(*conn_).ok());
  ASSERT_TRUE(conn_
                  ->exec("INSERT INTO cqrs.schema_migrations (version, name) "
                         "VALUES (999, 'from_the_future')")
                  .ok());
  auto report = migrate(*conn_);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.error().code(), errc::kSchemaTooNew);
  EXPECT_NE(report.error().message().find("999"), std::string::npos) << report.error().message();

  auto store = PostgresEventStore::open(db_->url());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), errc::kSchemaTooNew);
}

TEST_F(Migrations, ConcurrentMigratorsApplyEachMigrationOnce) {
  constexpr int kMigrators = 6;
  std::atomic<int> failures{0};
  std::atomic<size_t> applied_total{0};
  std::vector<std::thread> threads;
  for (int idx = 0; idx < kMigrators; ++idx) {
    threads.emplace_back([&] {
      auto report = migrate(db_->url());
      if (!report.ok()) {
        ++failures;
        ADD_FAILURE() << report.error().to_string();
        return;
      }
      applied_total += report->applied.size();
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(applied_total.load(), embedded_migrations().size());
  EXPECT_EQ(recorded_count(), std::ssize(embedded_migrations()));
  EXPECT_TRUE(check_schema(*conn_).ok());
}

TEST_F(Migrations, FailingMigrationIsRolledBackAndNamed) {
  std::vector<Migration> migrations = {
      {1, "first", "CREATE TABLE cqrs.first_table (id int)"},
      {2, "broken", "CREATE TABLE cqrs.half_done (id int); SELECT no_such_function()"},
  };
  auto report = migrate(*conn_, migrations);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.error().code(), errc::kMigrationFailed);
  EXPECT_NE(report.error().message().find("2_broken"), std::string::npos)
      << report.error().message();
  EXPECT_EQ(recorded_count(), 1);
  auto half = conn_->exec("SELECT to_regclass('cqrs.half_done') IS NULL");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->text(0, 0), "t") << "a failed migration left a table behind";
}

TEST_F(Migrations, DatabaseMigratedByAnotherProjectIsRefused) {
  std::vector<Migration> ours = {{1, "event_store", "SELECT 1"}};
  std::vector<Migration> theirs = {{1, "something_else", "SELECT 1"}};
  ASSERT_TRUE(migrate(*conn_, theirs).ok());
  auto report = migrate(*conn_, ours);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.error().code(), errc::kMigrationFailed);
  EXPECT_NE(report.error().message().find("something_else"), std::string::npos);
}

}  // namespace
}  // namespace cqrs::pg
