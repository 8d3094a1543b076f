// Promise 2: every $all reader sees every committed event exactly once, in one total order, even
// when writer transactions commit out of order; without a global write lock and without a timer
// that skips gaps. Writers here are raw connections that hold their transactions open, and the
// store's own appends (group commits, runs of several events) under a reader that reads ahead.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "support/test_database.hpp"

namespace cqrs::pg {
namespace {

using namespace std::chrono_literals;

// Appends events inside the caller's open transaction through the store's own SQL function.
Result<QueryResult> raw_append(Connection& conn, std::string_view stream,
                               const std::vector<Uuid>& ids, std::string_view type = "Raw") {
  std::string id_array = "{";
  std::string types = "{";
  std::string versions = "{";
  std::string data = "{";
  std::string metadata = "{";
  for (size_t idx = 0; idx < ids.size(); ++idx) {
    const char* sep = idx == 0 ? "" : ",";
    id_array += sep + ids[idx].to_string();
    types += std::string(sep) + std::string(type);
    versions += std::string(sep) + "1";
    data += std::string(sep) + "\"{}\"";
    metadata += std::string(sep) + "\"{}\"";
  }
  for (std::string* literal : {&id_array, &types, &versions, &data, &metadata}) {
    literal->push_back('}');
  }
  return conn.exec(
      "SELECT status FROM cqrs.append_to_stream($1, -1, $2::uuid[], $3::text[], $4::int[], "
      "$5::jsonb[], $6::jsonb[])",
      Params().add(stream).add(id_array).add(types).add(versions).add(data).add(metadata));
}

// What a test's writer threads committed, for the reader to check against.
struct Commits {
  explicit Commits(int writers) : writers_running(writers) {}

  void add(const std::vector<Uuid>& ids) {
    std::lock_guard lock(mutex);
    committed.insert(ids.begin(), ids.end());
  }

  std::mutex mutex;
  std::set<Uuid> committed;
  std::atomic<int> writers_running;
  std::atomic<int> writer_errors{0};
};

// Follows $all from the checkpoint "reader" (only `types`, when given) in pages of `page_size`,
// saving the checkpoint after every page and resuming from the saved one, as a subscription
// that restarts at any moment would; until the writers are done and as many events arrived as
// they committed, or 120 s passed. Then joins the writers and expects every committed event
// exactly once, in increasing positions. `received` holds what was read.
void follow_all_and_expect_each_once(PostgresEventStore& reader, size_t page_size,
                                     const std::vector<std::string>& types, Commits& commits,
                                     std::vector<std::thread>& writers,
                                     std::vector<RecordedEvent>& received) {
  Position last_seen;
  bool order_ok = true;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto checkpoint = reader.load_checkpoint("reader");
    ASSERT_TRUE(checkpoint.ok());
    Position from = checkpoint->value_or(Position{});
    auto page = types.empty() ? reader.read_all(from, page_size)
                              : reader.read_all_of_types(from, page_size, types);
    ASSERT_TRUE(page.ok()) << page.error().to_string();
    for (const RecordedEvent& event : page->events) {
      if (!(last_seen < event.position())) order_ok = false;
      last_seen = event.position();
      received.push_back(event);
    }
    ASSERT_TRUE(reader.save_checkpoint("reader", page->next).ok());
    if (page->events.empty()) {
      if (commits.writers_running.load() == 0) {
        std::lock_guard lock(commits.mutex);
        if (received.size() >= commits.committed.size()) break;
      }
      std::this_thread::sleep_for(2ms);
    }
  }
  for (auto& writer : writers) writer.join();

  EXPECT_EQ(commits.writer_errors.load(), 0);
  EXPECT_TRUE(order_ok) << "positions went backwards";
  std::set<Uuid> received_ids;
  for (const RecordedEvent& event : received) {
    EXPECT_TRUE(received_ids.insert(event.event_id).second)
        << "delivered twice: " << event.event_id.to_string();
  }
  EXPECT_EQ(received_ids.size(), commits.committed.size());
  EXPECT_TRUE(received_ids == commits.committed) << "received and committed sets differ";
}

class GlobalOrder : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::TestDatabase::create();
    ASSERT_NE(db_, nullptr);
    writer_ = open_store();
    reader_ = open_store();
    ASSERT_TRUE(writer_ && reader_);
  }

  std::unique_ptr<PostgresEventStore> open_store() {
    auto store = PostgresEventStore::open(db_->url());
    EXPECT_TRUE(store.ok()) << store.error().to_string();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  Uuid append_committed(std::string_view stream) {
    EventData event;
    event.type = "Committed";
    auto appended = writer_->append(stream, ExpectedVersion::any(), std::span(&event, 1));
    EXPECT_TRUE(appended.ok()) << appended.error().to_string();
    return event.event_id;
  }

  // Reads $all from `position_` until `count` more events arrived or `timeout` passed (another
  // test's open transaction elsewhere in the cluster may hold the watermark back for a while).
  std::vector<RecordedEvent> read_until(size_t count, std::chrono::milliseconds timeout = 15s) {
    std::vector<RecordedEvent> got;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      auto page = reader_->read_all(position_, 100);
      EXPECT_TRUE(page.ok()) << page.error().to_string();
      if (!page.ok()) break;
      got.insert(got.end(), page->events.begin(), page->events.end());
      position_ = page->next;
      if (page->events.empty()) std::this_thread::sleep_for(5ms);
    }
    return got;
  }

  void expect_every_commit_seen_once(const std::vector<std::string>& types);

  std::unique_ptr<testing::TestDatabase> db_;
  std::unique_ptr<PostgresEventStore> writer_;
  std::unique_ptr<PostgresEventStore> reader_;
  Position position_;
};

TEST_F(GlobalOrder, OpenTransactionHoldsBackLaterCommitsUntilItCommits) {
  Uuid before = append_committed("before");
  auto t1 = db_->connect();
  ASSERT_TRUE(t1->exec("BEGIN").ok());
  Uuid t1_id = Uuid::random();
  ASSERT_TRUE(raw_append(*t1, "t1", {t1_id}).ok());
  Uuid t2_id = append_committed("t2");  // commits while T1 is open

  auto first = read_until(1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].event_id, before);
  // Nothing past T1 while it is open, however often the reader asks.
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto page = reader_->read_all(position_, 100);
    ASSERT_TRUE(page.ok());
    ASSERT_TRUE(page->events.empty()) << "read " << page->events[0].stream_id << " past open T1";
    std::this_thread::sleep_for(10ms);
  }

  ASSERT_TRUE(t1->exec("COMMIT").ok());
  auto rest = read_until(2);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].event_id, t1_id);  // T1 began writing first: it comes first
  EXPECT_EQ(rest[1].event_id, t2_id);
  EXPECT_TRUE(read_until(1, 200ms).empty()) << "an event was delivered twice";
}

// A reader of some types moves past events of other types, but never past an open transaction:
// T2's event of another type commits while T1, holding an event of the reader's type, is open.
TEST_F(GlobalOrder, AReaderOfSomeTypesNeverMovesPastAnOpenTransaction) {
  const std::vector<std::string> types = {"Raw"};
  auto t1 = db_->connect();
  ASSERT_TRUE(t1->exec("BEGIN").ok());
  Uuid t1_id = Uuid::random();
  ASSERT_TRUE(raw_append(*t1, "t1", {t1_id}).ok());
  Uuid t2_id = Uuid::random();
  ASSERT_TRUE(raw_append(*db_->connect(), "t2", {t2_id}, "Other").ok());
  Position position;
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto page = reader_->read_all_of_types(position, 100, types);
    ASSERT_TRUE(page.ok()) << page.error().to_string();
    ASSERT_TRUE(page->events.empty());
    position = page->next;
    std::this_thread::sleep_for(10ms);
  }

  ASSERT_TRUE(t1->exec("COMMIT").ok());
  std::vector<RecordedEvent> got;
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (got.empty() && std::chrono::steady_clock::now() < deadline) {
    auto page = reader_->read_all_of_types(position, 100, types);
    ASSERT_TRUE(page.ok());
    got = page->events;
    position = page->next;
    if (got.empty()) std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(got.size(), 1u) << "T1's event was skipped";
  EXPECT_EQ(got[0].event_id, t1_id);
  auto after = reader_->read_all_of_types(position, 100, types);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->events.empty());
}

TEST_F(GlobalOrder, RolledBackTransactionReleasesLaterCommits) {
  auto t1 = db_->connect();
  ASSERT_TRUE(t1->exec("BEGIN").ok());
  ASSERT_TRUE(raw_append(*t1, "t1", {Uuid::random()}).ok());
  Uuid t2_id = append_committed("t2");
  auto held = reader_->read_all(position_, 100);
  ASSERT_TRUE(held.ok());
  EXPECT_TRUE(held->events.empty());

  ASSERT_TRUE(t1->exec("ROLLBACK").ok());
  auto rest = read_until(1);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].event_id, t2_id);
  EXPECT_TRUE(read_until(1, 200ms).empty());
}

TEST_F(GlobalOrder, AppendsDoNotWaitForOtherStreamsOpenTransactions) {
  auto t1 = db_->connect();
  ASSERT_TRUE(t1->exec("BEGIN").ok());
  ASSERT_TRUE(raw_append(*t1, "t1", {Uuid::random()}).ok());
  auto pending = std::async(std::launch::async, [&] { return append_committed("t2"); });
  ASSERT_EQ(pending.wait_for(5s), std::future_status::ready)
      << "an append to another stream waited for T1: writers are serialized";
  pending.get();
  EXPECT_EQ(*writer_->stream_version("t2"), 1);
  ASSERT_TRUE(t1->exec("COMMIT").ok());
}

TEST_F(GlobalOrder, WatermarkLagCountsEventsHeldBack) {
  auto t1 = db_->connect();
  ASSERT_TRUE(t1->exec("BEGIN").ok());
  ASSERT_TRUE(raw_append(*t1, "t1", {Uuid::random()}).ok());
  append_committed("t2");
  append_committed("t3");
  auto behind = writer_->events_behind_watermark();
  ASSERT_TRUE(behind.ok()) << behind.error().to_string();
  EXPECT_GE(*behind, 2);  // t2 and t3 committed but held back by T1
  ASSERT_TRUE(t1->exec("COMMIT").ok());
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (*writer_->events_behind_watermark() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(*writer_->events_behind_watermark(), 0);
}

TEST_F(GlobalOrder, TransactionIdsOrderAsNumbersAcrossDigitBoundaries) {
  // Rows with explicit, long-finished transaction ids (every cluster is past xid 100 after
  // initdb): 10 is stored first (lower position), 9 second. Numerically 9 < 10, so 9 must come
  // first; compared as text it would not.
  auto raw = db_->connect();
  for (const char* xid : {"10", "9", "100"}) {
    auto inserted = raw->exec(
        "INSERT INTO cqrs.events (transaction_id, stream_id, stream_version, event_id, "
        "event_type, data) VALUES ($1::xid8, $2, 1, gen_random_uuid(), 'Old', '{}')",
        Params().add(xid).add(std::string("old-") + xid));
    ASSERT_TRUE(inserted.ok()) << inserted.error().to_string();
  }
  std::vector<uint64_t> order;
  Position position;
  for (int page_idx = 0; page_idx < 3; ++page_idx) {  // one event per page: resumes must agree
    auto page = reader_->read_all(position, 1);
    ASSERT_TRUE(page.ok()) << page.error().to_string();
    ASSERT_EQ(page->events.size(), 1u);
    order.push_back(page->events[0].commit_id);
    position = page->next;
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{9, 10, 100}));
  auto rest = reader_->read_all(position, 10);
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->events.empty()) << "an event came back twice";
}

TEST_F(GlobalOrder, HeadIsTheLastEventInNumericTransactionOrder) {
  auto empty = reader_->head();
  ASSERT_TRUE(empty.ok()) << empty.error().to_string();
  EXPECT_EQ(*empty, Position{});
  auto raw = db_->connect();
  for (const char* xid : {"100", "99", "9"}) {  // as text, "99" would be the last
    auto inserted = raw->exec(
        "INSERT INTO cqrs.events (transaction_id, stream_id, stream_version, event_id, "
        "event_type, data) VALUES ($1::xid8, $2, 1, gen_random_uuid(), 'Old', '{}')",
        Params().add(xid).add(std::string("old-") + xid));
    ASSERT_TRUE(inserted.ok()) << inserted.error().to_string();
  }
  auto head = reader_->head();
  ASSERT_TRUE(head.ok()) << head.error().to_string();
  EXPECT_EQ(head->commit_id, 100u);
  auto rest = reader_->read_all(*head, 10);
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->events.empty()) << "head is not the last readable event";
}

// 8 writers append 1-3 events per transaction with random commit delays and 5% rollbacks while
// one reader follows $all, saving its checkpoint after every page. With `types`, every other
// append is of type "Other" and the reader asks for "Raw" only (read_all_of_types), so its pages
// also move past events it does not read.
void GlobalOrder::expect_every_commit_seen_once(const std::vector<std::string>& types) {
  constexpr int kWriters = 8;
  constexpr int kAppendsEach = 2000;
  Commits commits(kWriters);
  std::vector<std::thread> writers;
  for (int writer_idx = 0; writer_idx < kWriters; ++writer_idx) {
    writers.emplace_back([&, writer_idx] {
      auto conn = Connection::open(db_->url());
      if (!conn) {
        ++commits.writer_errors;
        --commits.writers_running;
        return;
      }
      std::mt19937 random(static_cast<unsigned>(writer_idx) * 7919u + 1u);
      std::uniform_int_distribution<int> delay_us(0, 600);
      std::uniform_int_distribution<int> percent(0, 99);
      for (int append_idx = 0; append_idx < kAppendsEach; ++append_idx) {
        std::vector<Uuid> ids(1 + append_idx % 3);
        for (Uuid& id : ids) id = Uuid::random();
        std::string stream =
            "w" + std::to_string(writer_idx) + "-" + std::to_string(append_idx % 10);
        bool wanted = types.empty() || append_idx % 2 == 0;
        bool ok = (*conn)->exec("BEGIN").ok() &&
                  raw_append(**conn, stream, ids, wanted ? "Raw" : "Other").ok();
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
        bool rollback = percent(random) < 5;
        ok = ok && (*conn)->exec(rollback ? "ROLLBACK" : "COMMIT").ok();
        if (!ok) {
          ++commits.writer_errors;
          continue;
        }
        if (!rollback && wanted) commits.add(ids);
      }
      --commits.writers_running;
    });
  }

  std::vector<RecordedEvent> received;
  follow_all_and_expect_each_once(*reader_, 250, types, commits, writers, received);
  // Batches of 1-3 events; with types, half of the appends.
  EXPECT_GT(commits.committed.size(), size_t{kWriters * kAppendsEach} / (types.empty() ? 1 : 2));
}

// The store's own append paths under the same reader: eight stores of one process (so their
// single-event appends commit together in groups), appending after the versions they know as
// aggregates do, one to five events at a time (runs of several events), while a reader that
// reads ahead follows $all and saves its checkpoint after every page.
TEST_F(GlobalOrder, TheStoresOwnAppendsAreSeenExactlyOnceByAReaderThatReadsAhead) {
  constexpr int kWriters = 8;
  constexpr int kAppendsEach = 600;
  Commits commits(kWriters);
  std::vector<std::thread> writers;
  for (int writer_idx = 0; writer_idx < kWriters; ++writer_idx) {
    writers.emplace_back([&, writer_idx] {
      auto store = PostgresEventStore::open(db_->url());
      if (!store) {
        ++commits.writer_errors;
        --commits.writers_running;
        return;
      }
      std::map<std::string, int64_t> versions;
      for (int append_idx = 0; append_idx < kAppendsEach; ++append_idx) {
        // Mostly single events (the groups' share), every fourth append a run of five.
        std::vector<EventData> events(append_idx % 4 == 3 ? 5 : 1);
        for (EventData& event : events) event.type = "Stored";
        std::string stream =
            "s" + std::to_string(writer_idx) + "-" + std::to_string(append_idx % 10);
        int64_t& version = versions[stream];
        auto appended = (*store)->append(stream, ExpectedVersion::exact(version), events);
        if (!appended) {
          ++commits.writer_errors;
          continue;
        }
        version = appended->stream_version;
        std::vector<Uuid> ids;
        for (const EventData& event : events) ids.push_back(event.event_id);
        commits.add(ids);
      }
      --commits.writers_running;
    });
  }

  PostgresStoreOptions options;
  options.read_ahead = true;
  auto reader = PostgresEventStore::open(db_->url(), options);
  ASSERT_TRUE(reader.ok()) << reader.error().to_string();
  std::vector<RecordedEvent> received;
  follow_all_and_expect_each_once(**reader, 50, {}, commits, writers, received);
  EXPECT_EQ(commits.committed.size(), size_t{kWriters} * (kAppendsEach / 4) * (3 + 5));
  // For the record: how many commits held the appends of several stores (group commits).
  std::map<uint64_t, int> events_per_commit;
  for (const RecordedEvent& event : received) ++events_per_commit[event.commit_id];
  int shared_commits = 0;
  for (const auto& [commit, count] : events_per_commit) shared_commits += count > 5 ? 1 : 0;
  RecordProperty("commits_of_several_appends", shared_commits);
}

TEST_F(GlobalOrder, ConcurrentWritersWithRandomCommitDelaysAreSeenExactlyOnce) {
  expect_every_commit_seen_once({});
}

TEST_F(GlobalOrder, ConcurrentWritersAreSeenExactlyOnceByAReaderOfSomeTypes) {
  expect_every_commit_seen_once({"Raw"});
}

}  // namespace
}  // namespace cqrs::pg
