// Schema migrations: applied once, in order, atomically, safely from concurrent processes, and
// refused when the database is newer than the code.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <span>
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

  // Migrates to `version` exactly, so that the next migration runs on a store with rows.
  void migrate_up_to(int version) {
    const std::vector<Migration>& all = embedded_migrations();
    auto next = std::find_if(all.begin(), all.end(),
                             [&](const Migration& m) { return m.version > version; });
    ASSERT_NE(next, all.end());
    ASSERT_EQ(next->version, version + 1);
    std::span<const Migration> up_to(all.data(), next - all.begin());
    ASSERT_TRUE(migrate(*conn_, up_to).ok());
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

// schema/014 turns four columns of cqrs.events into domains on a store that already has events:
// the rows stay as they are (the table keeps its storage: no rewrite), every rule is checked
// against them, and the planner's statistics of the changed columns are gathered again.
TEST_F(Migrations, EventDomainsKeepTheStoredEventsAndTheirStatistics) {
  migrate_up_to(13);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(conn_
                  ->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, event_version, data, metadata)"
                         " SELECT 's-' || (g / 10), g % 10 + 1, gen_random_uuid(), 'Happened', "
                         "1 + g % 2, jsonb_build_object('n', g), "
                         "jsonb_build_object('correlation_id', 'c-' || (g / 10))"
                         " FROM generate_series(0, 1999) AS g")
                  .ok());
  ASSERT_TRUE(conn_->exec("ANALYZE cqrs.events").ok());
  const char* kState =
      "SELECT (SELECT relfilenode FROM pg_class WHERE oid = 'cqrs.events'::regclass)::text,"
      " (SELECT md5(string_agg(e::text, ',' ORDER BY global_position)) FROM cqrs.events AS e)";
  auto before = conn_->exec(kState);
  ASSERT_TRUE(before.ok()) << before.error().to_string();

  auto report = migrate(*conn_);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_EQ(report->version_before, 13);
  auto after = conn_->exec(kState);
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_EQ(after->text(0, 0), before->text(0, 0)) << "cqrs.events was rewritten";
  EXPECT_EQ(after->text(0, 1), before->text(0, 1)) << "a stored event changed";

  auto statistics = conn_->exec(
      "SELECT count(*) FROM pg_stats WHERE schemaname = 'cqrs' AND tablename = 'events'"
      " AND attname IN ('stream_version', 'event_type', 'event_version', 'metadata')");
  ASSERT_TRUE(statistics.ok());
  EXPECT_EQ(statistics->int64(0, 0), 4) << "the changed columns have no statistics";
  auto rules = conn_->exec(
      "SELECT count(*) FILTER (WHERE convalidated) FROM pg_constraint"
      " WHERE connamespace = 'cqrs'::regnamespace AND contypid <> 0");
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->int64(0, 0), 4);
  auto refused = conn_->exec(
      "INSERT INTO cqrs.events (stream_id, stream_version, event_id, event_type, data)"
      " VALUES ('s-1', 0, gen_random_uuid(), 'Happened', '{}')");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("stream_version_positive"), std::string::npos)
      << refused.error().message();

  auto store = PostgresEventStore::open(db_->url());
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  auto events = (*store)->read_stream("s-7", 1, 100, Direction::kForward);
  ASSERT_TRUE(events.ok()) << events.error().to_string();
  ASSERT_EQ(events->size(), 10u);
  EXPECT_EQ(events->back().stream_version, 10);
}

// schema/015 moves the reads by type onto the $all index: on a store that already has events, the
// rebuilt index holds them (with their types), and the index by type is gone.
TEST_F(Migrations, ReadsByTypeFindTheEventsStoredBeforeTheOrderIndexCarriedTypes) {
  migrate_up_to(14);
  if (HasFatalFailure()) return;
  // 300 streams of 5 events, one in ten of them 'Rare', each stream appended as one run.
  ASSERT_TRUE(conn_
                  ->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, run_length)"
                         " SELECT 's-' || (g / 5), g % 5 + 1, gen_random_uuid(),"
                         " CASE WHEN (g / 5) % 10 = 0 THEN 'Rare' ELSE 'Common' END,"
                         " jsonb_build_object('n', g), CASE WHEN g % 5 = 0 THEN 5 ELSE 0 END"
                         " FROM generate_series(0, 1499) AS g")
                  .ok());

  auto report = migrate(*conn_);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_EQ(report->version_before, 14);
  auto indexes = conn_->exec(
      "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes"
      " WHERE schemaname = 'cqrs' AND tablename = 'events'");
  ASSERT_TRUE(indexes.ok());
  // (The correlation index left for a table in schema/018.)
  EXPECT_EQ(indexes->text(0, 0), "events_event_id_key,events_order_idx,events_pkey");

  auto store = PostgresEventStore::open(db_->url());
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  // $all readers see the events once no older transaction runs in the cluster (another test's).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    auto held = (*store)->events_behind_watermark_exist();
    if (held.ok() && !*held) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<std::string> rare{"Rare"};
  auto page = (*store)->read_all_of_types(Position{}, 1000, rare);
  ASSERT_TRUE(page.ok()) << page.error().to_string();
  ASSERT_EQ(page->events.size(), 150u);
  for (const RecordedEvent& event : page->events) {
    EXPECT_EQ(event.type, "Rare");
    EXPECT_EQ(std::stoi(event.stream_id.substr(2)) % 10, 0) << event.stream_id;
  }
  auto everything = (*store)->read_all(Position{}, 2000);
  ASSERT_TRUE(everything.ok()) << everything.error().to_string();
  EXPECT_EQ(everything->events.size(), 1500u);
}

// schema/018 moves the correlation index into a table filled behind the appends: on a store
// that already has events, the table holds every run that names a correlation, its position
// covers them, and a trace finds them all.
TEST_F(Migrations, CorrelationsStoredBeforeTheirTableAreFoundAndNotIndexedTwice) {
  migrate_up_to(17);
  if (HasFatalFailure()) return;
  // 200 streams of 10 events; one event in five names no correlation.
  ASSERT_TRUE(conn_
                  ->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, "
                         "event_type, data, metadata)"
                         " SELECT 's-' || (g / 10), g % 10 + 1, gen_random_uuid(), 'Happened', "
                         "jsonb_build_object('n', g), CASE WHEN g % 5 = 0 THEN '{}'::jsonb ELSE "
                         "jsonb_build_object('correlation_id', 'c-' || (g / 10)) END"
                         " FROM generate_series(0, 1999) AS g")
                  .ok());

  auto report = migrate(*conn_);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_EQ(report->version_before, 17);
  auto rows = conn_->exec(
      "SELECT (SELECT count(*) FROM cqrs.correlations),"
      " (SELECT count(*) FROM pg_indexes WHERE indexname = 'events_by_correlation')");
  ASSERT_TRUE(rows.ok()) << rows.error().to_string();
  EXPECT_EQ(rows->int64(0, 0), 1600);
  EXPECT_EQ(rows->int64(0, 1), 0);

  auto store = PostgresEventStore::open(db_->url());
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  auto traced = (*store)->read_correlated("c-7", 100);
  ASSERT_TRUE(traced.ok()) << traced.error().to_string();
  ASSERT_EQ(traced->size(), 8u);
  EXPECT_EQ(traced->front().stream_id, "s-7");
  EXPECT_EQ(traced->front().stream_version, 2);
  // The position covers what was below the migration's watermark (all of it, unless another
  // session's transaction ran then): indexing the rest adds no row twice.
  for (int round = 0; round < 300; ++round) {
    auto done = (*store)->index_correlations(1000);
    ASSERT_TRUE(done.ok()) << done.error().to_string();
    auto lag = (*store)->correlation_index_lag();
    ASSERT_TRUE(lag.ok());
    if (*lag == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(*(*store)->correlation_index_lag(), 0);
  auto after = conn_->exec("SELECT count(*) FROM cqrs.correlations");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->int64(0, 0), 1600);
  auto again = (*store)->read_correlated("c-7", 100);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size(), 8u);
}

}  // namespace
}  // namespace cqrs::pg
