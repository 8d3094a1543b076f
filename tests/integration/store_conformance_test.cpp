// The event store contract, run against every implementation (InMemoryEventStore and
// PostgresEventStore on a fresh database per test). A store that passes is interchangeable.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cqrs/append_validation.hpp"
#include "cqrs/event_store.hpp"
#include "cqrs/memory_event_store.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "support/test_database.hpp"

namespace cqrs {
namespace {

// Opens handles onto one store. Each call may return a different handle (Postgres: one
// connection each), all backed by the same data.
class StoreProvider {
 public:
  virtual ~StoreProvider() = default;
  virtual std::shared_ptr<EventStore> open() = 0;
  // $all shows an event once no older transaction in the cluster is running; tests that read
  // $all right after appending poll until what they expect has settled.
  virtual bool settles_later() const = 0;
};

class MemoryStores final : public StoreProvider {
 public:
  std::shared_ptr<EventStore> open() override { return store_; }
  bool settles_later() const override { return false; }

 private:
  std::shared_ptr<InMemoryEventStore> store_ = std::make_shared<InMemoryEventStore>();
};

class PostgresStores final : public StoreProvider {
 public:
  std::shared_ptr<EventStore> open() override {
    if (!db_) return nullptr;
    auto store = pg::PostgresEventStore::open(db_->url());
    if (!store) {
      ADD_FAILURE() << store.error().to_string();
      return nullptr;
    }
    return std::shared_ptr<EventStore>(std::move(store).value());
  }
  bool settles_later() const override { return true; }

 private:
  std::unique_ptr<testing::TestDatabase> db_ = testing::TestDatabase::create();
};

enum class Backend { kMemory, kPostgres };

void PrintTo(Backend backend, std::ostream* out) {
  *out << (backend == Backend::kMemory ? "memory" : "postgres");
}

EventData event(std::string type, std::string data = R"({"n":1})") {
  EventData out;
  out.type = std::move(type);
  out.data = std::move(data);
  return out;
}

std::vector<EventData> events(int count, std::string_view prefix = "E") {
  std::vector<EventData> out;
  for (int idx = 0; idx < count; ++idx) {
    out.push_back(event(std::string(prefix) + std::to_string(idx + 1),
                        R"({"idx":)" + std::to_string(idx + 1) + "}"));
  }
  return out;
}

class StoreConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kMemory) {
      stores_ = std::make_unique<MemoryStores>();
    } else {
      stores_ = std::make_unique<PostgresStores>();
    }
    store_ = stores_->open();
    ASSERT_NE(store_, nullptr) << "cannot open the store under test";
  }

  AppendResult append_ok(std::string_view stream, ExpectedVersion expected,
                         const std::vector<EventData>& batch) {
    auto result = store_->append(stream, expected, batch);
    EXPECT_TRUE(result.ok()) << result.error().to_string();
    return result.ok() ? *result : AppendResult{};
  }

  Error append_error(std::string_view stream, ExpectedVersion expected,
                     const std::vector<EventData>& batch) {
    auto result = store_->append(stream, expected, batch);
    EXPECT_FALSE(result.ok()) << "append to " << stream << " unexpectedly succeeded";
    return result.ok() ? Error::internal("none", "append succeeded") : result.error();
  }

  std::vector<RecordedEvent> read(std::string_view stream, int64_t from = 1, size_t count = 1000,
                                  Direction direction = Direction::kForward) {
    auto result = store_->read_stream(stream, from, count, direction);
    EXPECT_TRUE(result.ok()) << result.error().to_string();
    return result.ok() ? *result : std::vector<RecordedEvent>{};
  }

  // All of $all from the origin, once at least `expected` events have settled (or 15 s passed).
  std::vector<RecordedEvent> read_all_events(size_t expected, size_t page_size = 1000) {
    std::vector<RecordedEvent> all;
    Position position;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (true) {
      auto page = store_->read_all(position, page_size);
      EXPECT_TRUE(page.ok()) << page.error().to_string();
      if (!page.ok()) break;
      all.insert(all.end(), page->events.begin(), page->events.end());
      position = page->next;
      if (!page->events.empty()) continue;
      if (all.size() >= expected || !stores_->settles_later() ||
          std::chrono::steady_clock::now() > deadline) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return all;
  }

  // One read_all page after `after`, once it holds `expected` events (or 15 s passed).
  AllPage settled_page(Position after, size_t max_count, size_t expected) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (true) {
      auto page = store_->read_all(after, max_count);
      EXPECT_TRUE(page.ok()) << page.error().to_string();
      if (!page.ok()) return AllPage{};
      if (page->events.size() >= expected || std::chrono::steady_clock::now() > deadline) {
        return *page;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Asserts that $all holds nothing but a marker appended now (so earlier failed appends left
  // nothing behind, also on stores where $all settles later).
  void expect_all_holds_only_a_new_marker() {
    EventData marker;
    marker.type = "Marker";
    ASSERT_TRUE(store_->append("marker", ExpectedVersion::any(), std::span(&marker, 1)).ok());
    auto all = read_all_events(1);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].event_id, marker.event_id);
  }

  int64_t version_of(std::string_view stream) {
    auto version = store_->stream_version(stream);
    EXPECT_TRUE(version.ok()) << version.error().to_string();
    return version.ok() ? *version : -1;
  }

  std::unique_ptr<StoreProvider> stores_;
  std::shared_ptr<EventStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Stores, StoreConformance,
                         ::testing::Values(Backend::kMemory, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& param_info) {
                           return param_info.param == Backend::kMemory ? "Memory" : "Postgres";
                         });

// --- expected versions -------------------------------------------------------------------------

TEST_P(StoreConformance, AnyOnNewStreamCreatesIt) {
  auto result = this->append_ok("s-1", ExpectedVersion::any(), events(1));
  EXPECT_EQ(result.stream_version, 1);
  EXPECT_EQ(this->version_of("s-1"), 1);
}

TEST_P(StoreConformance, AnyOnExistingStreamAppendsAtTheEnd) {
  this->append_ok("s-1", ExpectedVersion::any(), events(2));
  auto result = this->append_ok("s-1", ExpectedVersion::any(), events(1));
  EXPECT_EQ(result.stream_version, 3);
}

TEST_P(StoreConformance, NoStreamOnNewStreamCreatesIt) {
  EXPECT_EQ(this->append_ok("s-1", ExpectedVersion::no_stream(), events(2)).stream_version, 2);
}

TEST_P(StoreConformance, NoStreamOnExistingStreamFailsWithStreamExists) {
  this->append_ok("s-1", ExpectedVersion::any(), events(1));
  Error error = this->append_error("s-1", ExpectedVersion::no_stream(), events(1));
  EXPECT_EQ(error.code(), errc::kStreamExists);
  EXPECT_EQ(error.kind(), ErrorKind::kConflict);
  EXPECT_EQ(this->version_of("s-1"), 1);
}

TEST_P(StoreConformance, StreamExistsOnNewStreamFailsWithStreamNotFound) {
  Error error = this->append_error("s-1", ExpectedVersion::stream_exists(), events(1));
  EXPECT_EQ(error.code(), errc::kStreamNotFound);
  EXPECT_EQ(this->version_of("s-1"), 0);
}

TEST_P(StoreConformance, StreamExistsOnExistingStreamAppends) {
  this->append_ok("s-1", ExpectedVersion::any(), events(1));
  EXPECT_EQ(this->append_ok("s-1", ExpectedVersion::stream_exists(), events(1)).stream_version, 2);
}

TEST_P(StoreConformance, ExactZeroOnNewStreamCreatesIt) {
  EXPECT_EQ(this->append_ok("s-1", ExpectedVersion::exact(0), events(1)).stream_version, 1);
}

TEST_P(StoreConformance, ExactZeroOnExistingStreamReportsActualVersion) {
  this->append_ok("s-1", ExpectedVersion::any(), events(3));
  Error error = this->append_error("s-1", ExpectedVersion::exact(0), events(1));
  EXPECT_EQ(error.code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(error.actual_version(), 3);
}

TEST_P(StoreConformance, ExactMatchingVersionAppends) {
  this->append_ok("s-1", ExpectedVersion::any(), events(2));
  auto result = this->append_ok("s-1", ExpectedVersion::exact(2), events(2));
  EXPECT_EQ(result.stream_version, 4);
}

TEST_P(StoreConformance, ExactStaleVersionReportsActualVersion) {
  this->append_ok("s-1", ExpectedVersion::any(), events(3));
  Error error = this->append_error("s-1", ExpectedVersion::exact(1), events(1));
  EXPECT_EQ(error.code(), errc::kWrongExpectedVersion);
  ASSERT_TRUE(error.actual_version().has_value());
  EXPECT_EQ(*error.actual_version(), 3);
  EXPECT_NE(error.message().find("s-1"), std::string::npos) << error.message();
}

TEST_P(StoreConformance, ExactFutureVersionReportsActualVersion) {
  this->append_ok("s-1", ExpectedVersion::any(), events(1));
  Error error = this->append_error("s-1", ExpectedVersion::exact(5), events(1));
  EXPECT_EQ(error.code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(error.actual_version(), 1);
}

TEST_P(StoreConformance, ExactVersionOnNewStreamReportsVersionZero) {
  Error error = this->append_error("s-1", ExpectedVersion::exact(2), events(1));
  EXPECT_EQ(error.code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(error.actual_version(), 0);
}

TEST_P(StoreConformance, NegativeExactVersionIsInvalidArgument) {
  Error error = this->append_error("s-1", ExpectedVersion::exact(-4), events(1));
  EXPECT_EQ(error.code(), errc::kInvalidArgument);
  EXPECT_EQ(this->version_of("s-1"), 0);
}

TEST_P(StoreConformance, StreamWhoseOnlyAppendFailedIsStillNew) {
  this->append_error("s-1", ExpectedVersion::stream_exists(), events(1));
  this->append_error("s-1", ExpectedVersion::exact(3), events(1));
  EXPECT_EQ(this->version_of("s-1"), 0);
  EXPECT_TRUE(this->read("s-1").empty());
  EXPECT_EQ(this->append_ok("s-1", ExpectedVersion::no_stream(), events(1)).stream_version, 1);
}

TEST_P(StoreConformance, FailedAppendsWriteNothing) {
  this->append_ok("s-1", ExpectedVersion::any(), events(2));
  this->append_error("s-1", ExpectedVersion::no_stream(), events(3));
  this->append_error("s-1", ExpectedVersion::exact(7), events(3));
  EXPECT_EQ(this->read("s-1").size(), 2u);
  EXPECT_EQ(this->read_all_events(2).size(), 2u);
}

// --- atomicity of multi-event appends ----------------------------------------------------------

TEST_P(StoreConformance, MultiEventAppendGetsConsecutiveVersionsInOrder) {
  this->append_ok("s-1", ExpectedVersion::any(), events(1, "A"));
  this->append_ok("s-1", ExpectedVersion::exact(1), events(3, "B"));
  auto stored = this->read("s-1");
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_EQ(stored[0].type, "A1");
  for (int idx = 0; idx < 4; ++idx) EXPECT_EQ(stored[idx].stream_version, idx + 1);
  EXPECT_EQ(stored[1].type, "B1");
  EXPECT_EQ(stored[3].type, "B3");
}

TEST_P(StoreConformance, MultiEventAppendReturnsIncreasingPositions) {
  this->append_ok("other", ExpectedVersion::any(), events(2));
  auto result = this->append_ok("s-1", ExpectedVersion::any(), events(5));
  ASSERT_EQ(result.global_positions.size(), 5u);
  EXPECT_TRUE(std::is_sorted(result.global_positions.begin(), result.global_positions.end()));
  EXPECT_GT(result.global_positions.front(), 0);
  auto stored = this->read("s-1");
  for (size_t idx = 0; idx < stored.size(); ++idx) {
    EXPECT_EQ(stored[idx].global_position, result.global_positions[idx]);
  }
}

TEST_P(StoreConformance, InvalidEventInBatchWritesNoneOfIt) {
  auto batch = events(3);
  batch[2].data = "{not json";
  Error error = this->append_error("s-1", ExpectedVersion::any(), batch);
  EXPECT_EQ(error.code(), errc::kInvalidPayload);
  EXPECT_EQ(this->version_of("s-1"), 0);
  this->expect_all_holds_only_a_new_marker();
}

TEST_P(StoreConformance, StoredDuplicateIdInBatchWritesNoneOfIt) {
  auto first = this->append_ok("s-1", ExpectedVersion::any(), events(1));
  auto stored = this->read("s-1");
  auto batch = events(3);
  batch[1].event_id = stored[0].event_id;
  Error error = this->append_error("s-2", ExpectedVersion::any(), batch);
  EXPECT_EQ(error.code(), errc::kDuplicateEvent);
  EXPECT_EQ(this->version_of("s-2"), 0);
  EXPECT_EQ(this->read_all_events(1).size(), 1u);
  // The stream is not poisoned: a correct append works afterwards.
  EXPECT_EQ(this->append_ok("s-2", ExpectedVersion::no_stream(), events(1)).stream_version, 1);
}

TEST_P(StoreConformance, EmptyAppendIsInvalidArgument) {
  Error error = this->append_error("s-1", ExpectedVersion::any(), {});
  EXPECT_EQ(error.code(), errc::kInvalidArgument);
}

// --- reading streams ---------------------------------------------------------------------------

TEST_P(StoreConformance, ReadForwardFromTheStart) {
  this->append_ok("s-1", ExpectedVersion::any(), events(5));
  auto stored = this->read("s-1", 1, 100);
  ASSERT_EQ(stored.size(), 5u);
  EXPECT_EQ(stored.front().stream_version, 1);
  EXPECT_EQ(stored.back().stream_version, 5);
}

TEST_P(StoreConformance, ReadForwardFromTheMiddleWithALimit) {
  this->append_ok("s-1", ExpectedVersion::any(), events(10));
  auto stored = this->read("s-1", 4, 3);
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].stream_version, 4);
  EXPECT_EQ(stored[2].stream_version, 6);
}

TEST_P(StoreConformance, ReadForwardFromZeroStartsAtVersionOne) {
  this->append_ok("s-1", ExpectedVersion::any(), events(2));
  auto stored = this->read("s-1", 0, 10);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].stream_version, 1);
}

TEST_P(StoreConformance, ReadBackwardFromTheEnd) {
  this->append_ok("s-1", ExpectedVersion::any(), events(5));
  auto stored = this->read("s-1", -1, 2, Direction::kBackward);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].stream_version, 5);
  EXPECT_EQ(stored[1].stream_version, 4);
}

TEST_P(StoreConformance, ReadBackwardFromAVersion) {
  this->append_ok("s-1", ExpectedVersion::any(), events(5));
  auto stored = this->read("s-1", 3, 10, Direction::kBackward);
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].stream_version, 3);
  EXPECT_EQ(stored[2].stream_version, 1);
}

TEST_P(StoreConformance, ReadPastTheEndIsEmpty) {
  this->append_ok("s-1", ExpectedVersion::any(), events(3));
  EXPECT_TRUE(this->read("s-1", 4, 10).empty());
}

TEST_P(StoreConformance, ReadOfMissingStreamIsEmptyAndVersionZero) {
  EXPECT_TRUE(this->read("nope", 1, 10).empty());
  EXPECT_TRUE(this->read("nope", -1, 10, Direction::kBackward).empty());
  EXPECT_EQ(this->version_of("nope"), 0);
}

TEST_P(StoreConformance, ReadWithZeroCountIsEmpty) {
  this->append_ok("s-1", ExpectedVersion::any(), events(3));
  EXPECT_TRUE(this->read("s-1", 1, 0).empty());
}

TEST_P(StoreConformance, RecordedEventCarriesEverythingAppended) {
  EventData appended = event("GiftCardIssued", R"({"card_id":"c1","amount":500})");
  appended.type_version = 3;
  appended.metadata = R"({"command_id":"abc","correlation_id":"xyz"})";
  auto before = std::chrono::system_clock::now() - std::chrono::seconds(5);
  this->append_ok("giftcard-c1", ExpectedVersion::no_stream(), {appended});
  auto stored = this->read("giftcard-c1");
  ASSERT_EQ(stored.size(), 1u);
  const RecordedEvent& got = stored[0];
  EXPECT_EQ(got.event_id, appended.event_id);
  EXPECT_EQ(got.stream_id, "giftcard-c1");
  EXPECT_EQ(got.stream_version, 1);
  EXPECT_EQ(got.type, "GiftCardIssued");
  EXPECT_EQ(got.type_version, 3);
  EXPECT_NE(got.data.find(R"("amount")"), std::string::npos) << got.data;
  EXPECT_NE(got.data.find("500"), std::string::npos) << got.data;
  EXPECT_NE(got.metadata.find("xyz"), std::string::npos) << got.metadata;
  int64_t before_us =
      std::chrono::duration_cast<std::chrono::microseconds>(before.time_since_epoch()).count();
  EXPECT_GT(got.created_at_us, before_us);
  EXPECT_GT(got.commit_id, 0u);
}

// --- $all --------------------------------------------------------------------------------------

TEST_P(StoreConformance, ReadAllReturnsEveryStreamInAppendOrder) {
  this->append_ok("a", ExpectedVersion::any(), events(2, "A"));
  this->append_ok("b", ExpectedVersion::any(), events(1, "B"));
  this->append_ok("a", ExpectedVersion::any(), events(1, "C"));
  auto all = this->read_all_events(4);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].type, "A1");
  EXPECT_EQ(all[1].type, "A2");
  EXPECT_EQ(all[2].type, "B1");
  EXPECT_EQ(all[3].type, "C1");
  for (size_t idx = 1; idx < all.size(); ++idx) {
    EXPECT_LT(all[idx - 1].position(), all[idx].position());
  }
}

TEST_P(StoreConformance, AppendReportsThePositionReadAllGivesItsLastEvent) {
  this->append_ok("a", ExpectedVersion::any(), events(1));
  auto appended = this->store_->append("b", ExpectedVersion::any(), events(2));
  ASSERT_TRUE(appended.ok());
  auto written = this->store_->write(
      std::vector<WriteRequest>{WriteRequest{"c", ExpectedVersion::any(), events(1), {}, {}}});
  ASSERT_TRUE(written[0].ok());
  auto all = this->read_all_events(4);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(appended->last_position(), all[2].position());
  EXPECT_EQ(written[0].appended->last_position(), all[3].position());
}

TEST_P(StoreConformance, ReadAllPagesResumeFromTheCheckpoint) {
  for (int stream_idx = 0; stream_idx < 7; ++stream_idx) {
    this->append_ok("s-" + std::to_string(stream_idx), ExpectedVersion::any(), events(3));
  }
  auto all = this->read_all_events(21, 4);
  ASSERT_EQ(all.size(), 21u);
  std::set<Uuid> ids;
  for (const auto& recorded : all) ids.insert(recorded.event_id);
  EXPECT_EQ(ids.size(), 21u);
}

TEST_P(StoreConformance, ReadAllAfterTheHeadIsEmptyAndKeepsTheCheckpoint) {
  this->append_ok("a", ExpectedVersion::any(), events(2));
  auto page = this->settled_page(Position{}, 100, 2);
  ASSERT_EQ(page.events.size(), 2u);
  auto after = this->store_->read_all(page.next, 100);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->events.empty());
  EXPECT_EQ(after->next, page.next);
}

// A page of no events: none, the same checkpoint, and no promise of more (a reader that loops
// while `more` would otherwise never end).
TEST_P(StoreConformance, ReadAllOfNoEventsPromisesNoMore) {
  this->append_ok("a", ExpectedVersion::any(), events(3));
  auto page = this->store_->read_all(Position{}, 0);
  ASSERT_TRUE(page.ok()) << page.error().to_string();
  EXPECT_TRUE(page->events.empty());
  EXPECT_FALSE(page->more);
  EXPECT_EQ(page->next, Position{});
}

// The head is the position of the last event a reader of $all sees: the origin when there is
// none, then that of the newest append's last event.
TEST_P(StoreConformance, HeadIsThePositionOfTheLastEventOfAll) {
  auto empty = this->store_->head();
  ASSERT_TRUE(empty.ok()) << empty.error().to_string();
  EXPECT_EQ(*empty, Position{});
  this->append_ok("a", ExpectedVersion::any(), events(2));
  this->append_ok("b", ExpectedVersion::any(), events(3));
  auto page = this->settled_page(Position{}, 100, 5);
  ASSERT_EQ(page.events.size(), 5u);
  auto head = this->store_->head();
  ASSERT_TRUE(head.ok()) << head.error().to_string();
  EXPECT_EQ(*head, page.events.back().position());
}

TEST_P(StoreConformance, ReadAllOnAnEmptyStoreIsEmpty) {
  auto page = this->store_->read_all(Position{}, 100);
  ASSERT_TRUE(page.ok()) << page.error().to_string();
  EXPECT_TRUE(page->events.empty());
  EXPECT_EQ(page->next, Position{});
}

// --- concurrency -------------------------------------------------------------------------------

TEST_P(StoreConformance, SixteenWritersRacingExactVersionsLeaveNoGaps) {
  constexpr int kThreads = 16;
  constexpr int64_t kTarget = 120;
  std::vector<std::shared_ptr<EventStore>> handles;
  for (int idx = 0; idx < kThreads; ++idx) {
    handles.push_back(this->stores_->open());
    ASSERT_NE(handles.back(), nullptr);
  }
  std::atomic<int> wins{0};
  std::atomic<int> unexpected_errors{0};
  std::vector<std::atomic<int>> winners_per_version(kTarget + 1);
  std::vector<std::thread> threads;
  for (int thread_idx = 0; thread_idx < kThreads; ++thread_idx) {
    threads.emplace_back([&, thread_idx] {
      EventStore& store = *handles[thread_idx];
      while (true) {
        auto current = store.stream_version("race");
        if (!current.ok()) {
          ++unexpected_errors;
          return;
        }
        if (*current >= kTarget) return;
        auto result = store.append("race", ExpectedVersion::exact(*current), events(1));
        if (result.ok()) {
          ++wins;
          ++winners_per_version[result->stream_version];
        } else if (!result.error().is(errc::kWrongExpectedVersion)) {
          ++unexpected_errors;
          return;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(unexpected_errors.load(), 0);
  EXPECT_EQ(wins.load(), kTarget);
  for (int64_t version = 1; version <= kTarget; ++version) {
    EXPECT_EQ(winners_per_version[version].load(), 1) << "version " << version;
  }
  auto stored = this->read("race", 1, 1000);
  ASSERT_EQ(std::ssize(stored), kTarget);
  for (int64_t idx = 0; idx < kTarget; ++idx) EXPECT_EQ(stored[idx].stream_version, idx + 1);
}

TEST_P(StoreConformance, ConcurrentAnyAppendsAllLandWithoutGaps) {
  constexpr int kThreads = 8;
  constexpr int kAppendsEach = 40;
  std::vector<std::shared_ptr<EventStore>> handles;
  for (int idx = 0; idx < kThreads; ++idx) handles.push_back(this->stores_->open());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int thread_idx = 0; thread_idx < kThreads; ++thread_idx) {
    threads.emplace_back([&, thread_idx] {
      for (int idx = 0; idx < kAppendsEach; ++idx) {
        // Mixed sizes: a racing append must never half-land on top of another.
        if (!handles[thread_idx]
                 ->append("shared", ExpectedVersion::any(), events(1 + idx % 3))
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  auto stored = this->read("shared", 1, 10000);
  size_t per_thread = 0;
  for (int idx = 0; idx < kAppendsEach; ++idx) per_thread += 1 + idx % 3;
  ASSERT_EQ(stored.size(), per_thread * kThreads);
  for (size_t idx = 0; idx < stored.size(); ++idx) {
    EXPECT_EQ(stored[idx].stream_version, static_cast<int64_t>(idx) + 1);
  }
}

// --- event ids and payloads --------------------------------------------------------------------

TEST_P(StoreConformance, DuplicateEventIdAcrossStreamsIsRejected) {
  EventData first = event("E");
  this->append_ok("a", ExpectedVersion::any(), {first});
  EventData again = event("E");
  again.event_id = first.event_id;
  Error error = this->append_error("b", ExpectedVersion::any(), {again});
  EXPECT_EQ(error.code(), errc::kDuplicateEvent);
  EXPECT_NE(error.message().find(first.event_id.to_string()), std::string::npos) << error.message();
}

TEST_P(StoreConformance, DuplicateEventIdWithinOneAppendIsRejected) {
  auto batch = events(2);
  batch[1].event_id = batch[0].event_id;
  Error error = this->append_error("a", ExpectedVersion::any(), batch);
  EXPECT_EQ(error.code(), errc::kDuplicateEvent);
  EXPECT_EQ(this->version_of("a"), 0);
}

TEST_P(StoreConformance, OneMebibytePayloadRoundTrips) {
  std::string big(1 << 20, 'x');
  for (size_t idx = 0; idx < big.size(); idx += 97) big[idx] = static_cast<char>('a' + idx % 26);
  std::string data = R"({"blob":")" + big + R"("})";
  this->append_ok("big", ExpectedVersion::any(), {event("Big", data)});
  auto stored = this->read("big");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_NE(stored[0].data.find(big), std::string::npos);
  EXPECT_GE(stored[0].data.size(), big.size());
}

TEST_P(StoreConformance, NonAsciiStreamIdsRoundTrip) {
  const std::string stream = "konto-Müller-東京-🎁";
  this->append_ok(stream, ExpectedVersion::no_stream(), {event("Opened", R"({"name":"Zoë"})")});
  auto stored = this->read(stream);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].stream_id, stream);
  EXPECT_NE(stored[0].data.find("Zoë"), std::string::npos);
  EXPECT_EQ(this->version_of(stream), 1);
  EXPECT_EQ(this->version_of("konto-Muller-東京-🎁"), 0);
}

// Several events travel as array literals: quotes, backslashes, braces and commas in any field
// must arrive as they were sent, through an append and through a group commit.
// Every way a value reaches the Postgres store: as a plain parameter, or as an element of an
// array literal (several events; group commits). The first append goes through
// cqrs.append_to_stream (the stream is new to this store), the second after the version the store
// knows, and the write of two requests through cqrs.append_batch, where stream ids, types and
// command results are array elements too. "NULL" and padded values must come back as they went.
TEST_P(StoreConformance, QuotesBackslashesAndBracesRoundTripInEveryField) {
  const std::string stream = R"(odd "stream" \ {a,b})";
  const std::string type = R"(Type "quoted" \ {x,y})";
  const std::string other_stream = "NULL";
  const std::string other_type = " NULL ";
  const std::string data = R"({"s":"say \"hi\" \\ {1,2}","\\k":"\"","e":""})";
  const std::string metadata = R"({"note":"a \"b\" \\ c","correlation_id":"\\\""})";
  const std::string said = R"("ok" \ {1,2} NULL)";
  auto make = [&](std::string_view event_type, int count, bool shared) {
    std::vector<EventData> out;
    for (int idx = 0; idx < count; ++idx) {
      EventData made = event(std::string(event_type), data);
      made.metadata = shared ? metadata : R"({"n":")" + std::to_string(idx) + R"(\\\""})";
      out.push_back(std::move(made));
    }
    return out;
  };
  this->append_ok(stream, ExpectedVersion::any(), make(type, 3, true));
  this->append_ok(stream, ExpectedVersion::exact(3), make(type, 2, false));
  const Uuid first_command = Uuid::random();
  const Uuid second_command = Uuid::random();
  auto result_of = [&](int idx) { return nlohmann::json{{"said", said}, {"n", idx}}.dump(); };
  auto written = this->store_->write(
      std::vector<WriteRequest>{WriteRequest{stream,
                                             ExpectedVersion::exact(5),
                                             make(type, 2, true),
                                             CommandRecord{first_command, "", result_of(1)},
                                             {}},
                                WriteRequest{other_stream,
                                             ExpectedVersion::no_stream(),
                                             make(other_type, 2, false),
                                             CommandRecord{second_command, "", result_of(2)},
                                             {}}});
  ASSERT_EQ(written.size(), 2u);
  ASSERT_TRUE(written[0].ok()) << written[0].error->to_string();
  ASSERT_TRUE(written[1].ok()) << written[1].error->to_string();

  auto stored = this->read(stream);
  ASSERT_EQ(stored.size(), 7u);
  for (size_t idx = 0; idx < stored.size(); ++idx) {
    EXPECT_EQ(stored[idx].stream_id, stream);
    EXPECT_EQ(stored[idx].type, type);
    EXPECT_EQ(nlohmann::json::parse(stored[idx].data), nlohmann::json::parse(data)) << idx;
    std::string expected_metadata =
        idx == 3 || idx == 4 ? R"({"n":")" + std::to_string(idx - 3) + R"(\\\""})" : metadata;
    EXPECT_EQ(nlohmann::json::parse(stored[idx].metadata), nlohmann::json::parse(expected_metadata))
        << idx;
  }
  auto others = this->read(other_stream);
  ASSERT_EQ(others.size(), 2u);
  for (size_t idx = 0; idx < others.size(); ++idx) {
    EXPECT_EQ(others[idx].stream_id, other_stream);
    EXPECT_EQ(others[idx].type, other_type);
    EXPECT_EQ(nlohmann::json::parse(others[idx].metadata),
              nlohmann::json::parse(R"({"n":")" + std::to_string(idx) + R"(\\\""})"))
        << idx;
  }
  int idx = 0;
  for (const Uuid& command : {first_command, second_command}) {
    ++idx;
    auto found = this->store_->find_command(command);
    ASSERT_TRUE(found.ok()) << found.error().to_string();
    ASSERT_TRUE(found->has_value()) << idx;
    EXPECT_EQ((*found)->stream_id, idx == 1 ? stream : other_stream);
    auto result = nlohmann::json::parse((*found)->result);
    EXPECT_EQ(result.at("said"), said) << (*found)->result;
    EXPECT_EQ(result.at("n"), idx) << (*found)->result;
  }
}

TEST_P(StoreConformance, InvalidJsonPayloadIsRejectedWithAClearError) {
  Error error = this->append_error("a", ExpectedVersion::any(), {event("E", R"({"a": 1,})")});
  EXPECT_EQ(error.code(), errc::kInvalidPayload);
  EXPECT_EQ(error.kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(error.message().find("data"), std::string::npos) << error.message();
  EXPECT_NE(error.message().find("not valid JSON"), std::string::npos) << error.message();
  EXPECT_NE(error.message().find("E"), std::string::npos) << error.message();
}

TEST_P(StoreConformance, MetadataMustBeAJsonObject) {
  EventData bad = event("E");
  bad.metadata = "[1,2]";
  Error error = this->append_error("a", ExpectedVersion::any(), {bad});
  EXPECT_EQ(error.code(), errc::kInvalidPayload);
  EXPECT_NE(error.message().find("metadata must be a JSON object"), std::string::npos)
      << error.message();
}

TEST_P(StoreConformance, NulCharacterInPayloadIsRejected) {
  Error error =
      this->append_error("a", ExpectedVersion::any(), {event("E", R"({"a":"x\u0000y"})")});
  EXPECT_EQ(error.code(), errc::kInvalidPayload);
  EXPECT_NE(error.message().find("NUL"), std::string::npos) << error.message();
}

TEST_P(StoreConformance, MalformedStreamIdsAreInvalidArguments) {
  EXPECT_EQ(this->append_error("", ExpectedVersion::any(), events(1)).code(),
            errc::kInvalidArgument);
  EXPECT_EQ(this->append_error("bad-\xC3\x28", ExpectedVersion::any(), events(1)).code(),
            errc::kInvalidArgument);
  EXPECT_EQ(
      this->append_error(std::string(kMaxStreamIdBytes + 1, 's'), ExpectedVersion::any(), events(1))
          .code(),
      errc::kInvalidArgument);
  this->expect_all_holds_only_a_new_marker();
}

// What the stores index of an event (its type and its correlation) fits the indexes at the
// limit, and beyond it is refused before anything is stored. The text is varied, as
// incompressible text is what an index could not hold.
TEST_P(StoreConformance, LongTypesAndCorrelationIdsAreStoredUpToTheirLimits) {
  auto varied = [](size_t bytes, char base) {
    std::string text;
    uint32_t state = 12345;
    for (size_t idx = 0; idx < bytes; ++idx) {
      state = state * 1103515245u + 12345u;  // a linear congruential sequence: no repeats
      text += static_cast<char>(base + (state >> 16) % 26);
    }
    return text;
  };
  const std::string type = varied(kMaxEventTypeBytes, 'A');
  const std::string correlation = varied(kMaxCorrelationIdBytes, 'a');
  EventData longest = event(type);
  longest.metadata = R"({"correlation_id":")" + correlation + R"("})";
  this->append_ok("long", ExpectedVersion::no_stream(), {longest});
  auto found = this->store_->read_correlated(correlation, 10);
  ASSERT_TRUE(found.ok()) << found.error().to_string();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].type, type);

  EventData too_long_type = event(type + "A");
  Error error = this->append_error("long", ExpectedVersion::any(), {too_long_type});
  EXPECT_EQ(error.code(), errc::kInvalidArgument);
  EXPECT_NE(error.message().find("...) is 1025 bytes long"), std::string::npos) << error.message();
  EXPECT_NE(error.message().find("event 0: event type ("), std::string::npos) << error.message();
  EventData too_long_correlation = event("E");
  too_long_correlation.metadata = R"({"correlation_id":")" + correlation + R"(a"})";
  error = this->append_error("long", ExpectedVersion::any(), {too_long_correlation});
  EXPECT_EQ(error.code(), errc::kInvalidPayload);
  EXPECT_NE(error.message().find("correlation_id is 1025 bytes long"), std::string::npos)
      << error.message();
  EXPECT_EQ(this->version_of("long"), 1);
}

// Sizes are refused with codes of their own, before anything is stored.
TEST_P(StoreConformance, EventsAndAppendsOverTheSizeLimitsAreRefused) {
  EventData huge = event("Huge");
  huge.data = "\"" + std::string(kMaxEventBytes, 'h') + "\"";
  Error error = this->append_error("big", ExpectedVersion::any(), {huge});
  EXPECT_EQ(error.code(), errc::kEventTooLarge);
  EXPECT_EQ(error.kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(error.message().find("the limit is 16777216"), std::string::npos) << error.message();

  WriteRequest request{"big", ExpectedVersion::any(), {huge}, std::nullopt, {}};
  auto written = this->store_->write(std::span(&request, 1));
  ASSERT_FALSE(written[0].ok());
  EXPECT_EQ(written[0].error->code(), errc::kEventTooLarge);
  this->expect_all_holds_only_a_new_marker();
}

TEST_P(StoreConformance, ScalarAndArrayPayloadsAreAccepted) {
  this->append_ok("a", ExpectedVersion::any(),
                  {event("Num", "42"), event("Arr", R"([1,"two",null])"), event("Str", R"("s")")});
  auto stored = this->read("a");
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].data, "42");
}

// --- metadata that a command's events share ---------------------------------------------------

// `count` events that all carry `metadata`, as one command's events do.
std::vector<EventData> events_sharing(int count, const std::string& metadata) {
  std::vector<EventData> out = events(count);
  for (EventData& each : out) each.metadata = metadata;
  return out;
}

// Metadata naming the command `name`, as cqrsd fills it.
std::string command_metadata(const std::string& name) {
  return R"({"command_id":")" + name + R"(","correlation_id":"c-)" + name +
         R"(","causation_id":")" + name + R"(","user":"ünïcode"})";
}

// Each stored event's metadata, parsed, in stream order.
std::vector<nlohmann::json> stored_metadata(const std::vector<RecordedEvent>& stored) {
  std::vector<nlohmann::json> out;
  for (const RecordedEvent& each : stored) out.push_back(nlohmann::json::parse(each.metadata));
  return out;
}

// Appends through every path a store may take (Postgres: the function for a new stream, a plain
// INSERT after a known version) store shared metadata on each event, and an append whose
// events differ keeps each its own.
TEST_P(StoreConformance, EveryEventOfAnAppendKeepsItsMetadataWhetherSharedOrNot) {
  std::string first = command_metadata("one"), second = command_metadata("two");
  this->append_ok("s", ExpectedVersion::no_stream(), events_sharing(3, first));
  this->append_ok("s", ExpectedVersion::exact(3), events_sharing(3, second));
  std::vector<EventData> mixed = events(3);
  for (size_t idx = 0; idx < mixed.size(); ++idx) {
    mixed[idx].metadata = command_metadata("mixed-" + std::to_string(idx));
  }
  this->append_ok("s", ExpectedVersion::exact(6), mixed);
  // Two events that share metadata, then a third whose metadata differs.
  std::vector<EventData> partly = events_sharing(3, first);
  partly[2].metadata = second;
  this->append_ok("s", ExpectedVersion::any(), partly);

  auto got = stored_metadata(this->read("s"));
  ASSERT_EQ(got.size(), 12u);
  for (int idx = 0; idx < 3; ++idx) EXPECT_EQ(got[idx], nlohmann::json::parse(first)) << idx;
  for (int idx = 3; idx < 6; ++idx) EXPECT_EQ(got[idx], nlohmann::json::parse(second)) << idx;
  for (int idx = 6; idx < 9; ++idx) {
    EXPECT_EQ(got[idx]["command_id"], "mixed-" + std::to_string(idx - 6)) << idx;
  }
  EXPECT_EQ(got[9], nlohmann::json::parse(first));
  EXPECT_EQ(got[10], nlohmann::json::parse(first));
  EXPECT_EQ(got[11], nlohmann::json::parse(second));
  auto all = this->read_all_events(12);
  ASSERT_EQ(all.size(), 12u);
  EXPECT_EQ(stored_metadata(all), got) << "$all hands back the same metadata";
}

// --- group commit (write) ----------------------------------------------------------------------

WriteRequest request(std::string stream, ExpectedVersion expected, int count,
                     std::optional<CommandRecord> command = std::nullopt) {
  return WriteRequest{std::move(stream), expected, events(count), std::move(command), {}};
}

TEST_P(StoreConformance, WriteAppliesEachRequestAndIsolatesConflicts) {
  this->append_ok("s2", ExpectedVersion::any(), events(2));
  std::vector<WriteRequest> requests = {request("s1", ExpectedVersion::no_stream(), 2),
                                        request("s2", ExpectedVersion::exact(1), 1),
                                        request("s3", ExpectedVersion::exact(0), 1)};
  auto results = this->store_->write(requests);
  ASSERT_EQ(results.size(), 3u);
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(results[0].appended->stream_version, 2);
  EXPECT_EQ(results[0].appended->global_positions.size(), 2u);
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error->code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(results[1].error->actual_version(), 2);
  ASSERT_TRUE(results[2].ok());
  EXPECT_EQ(this->version_of("s1"), 2);
  EXPECT_EQ(this->version_of("s2"), 2);
  EXPECT_EQ(this->version_of("s3"), 1);
}

TEST_P(StoreConformance, WriteWithAStoredEventIdFailsOnlyThatRequest) {
  this->append_ok("a", ExpectedVersion::any(), events(1));
  Uuid taken = this->read("a")[0].event_id;
  std::vector<WriteRequest> requests = {request("b", ExpectedVersion::any(), 1),
                                        request("c", ExpectedVersion::any(), 2),
                                        request("d", ExpectedVersion::any(), 1)};
  requests[1].events[1].event_id = taken;
  auto results = this->store_->write(requests);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].ok());
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error->code(), errc::kDuplicateEvent);
  EXPECT_TRUE(results[2].ok());
  EXPECT_EQ(this->version_of("b"), 1);
  EXPECT_EQ(this->version_of("c"), 0);
  EXPECT_EQ(this->version_of("d"), 1);
}

TEST_P(StoreConformance, WriteRejectsAnInvalidRequestAlone) {
  std::vector<WriteRequest> requests = {request("a", ExpectedVersion::any(), 1),
                                        request("b", ExpectedVersion::any(), 1)};
  requests[0].events[0].data = "{broken";
  auto results = this->store_->write(requests);
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error->code(), errc::kInvalidPayload);
  EXPECT_TRUE(results[1].ok());
}

// A group commit's requests each keep their own metadata, shared or not, and a group of one
// request after a known version (Postgres: one INSERT with its command record) does too.
TEST_P(StoreConformance, AGroupCommitKeepsEachRequestsMetadata) {
  std::string shared_a = command_metadata("a"), shared_d = command_metadata("d");
  std::vector<WriteRequest> requests = {
      WriteRequest{"a",
                   ExpectedVersion::no_stream(),
                   events_sharing(3, shared_a),
                   CommandRecord{Uuid::random(), "", R"({"status":"ok"})"},
                   {}},
      request("b", ExpectedVersion::any(), 2),
      WriteRequest{
          "c", ExpectedVersion::any(), events_sharing(1, command_metadata("c")), std::nullopt, {}},
      WriteRequest{"d", ExpectedVersion::any(), events_sharing(2, shared_d), std::nullopt, {}}};
  requests[1].events[0].metadata = command_metadata("b1");
  requests[1].events[1].metadata = command_metadata("b2");
  auto results = this->store_->write(requests);
  ASSERT_EQ(results.size(), 4u);
  for (const WriteResult& result : results) {
    ASSERT_TRUE(result.ok()) << result.error->to_string();
  }
  std::string later = command_metadata("a-later");
  auto again = this->store_->write(std::vector<WriteRequest>{
      WriteRequest{"a",
                   ExpectedVersion::exact(3),
                   events_sharing(2, later),
                   CommandRecord{Uuid::random(), "", R"({"status":"ok"})"},
                   {}}});
  ASSERT_TRUE(again[0].ok()) << again[0].error->to_string();

  auto a = stored_metadata(this->read("a"));
  ASSERT_EQ(a.size(), 5u);
  for (int idx = 0; idx < 3; ++idx) EXPECT_EQ(a[idx], nlohmann::json::parse(shared_a)) << idx;
  for (int idx = 3; idx < 5; ++idx) EXPECT_EQ(a[idx], nlohmann::json::parse(later)) << idx;
  auto b = stored_metadata(this->read("b"));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]["command_id"], "b1");
  EXPECT_EQ(b[1]["command_id"], "b2");
  auto c = stored_metadata(this->read("c"));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0]["command_id"], "c");
  auto d = stored_metadata(this->read("d"));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0], nlohmann::json::parse(shared_d));
  EXPECT_EQ(d[1], nlohmann::json::parse(shared_d));
}

TEST_P(StoreConformance, WriteRecordsTheCommandAndRefusesItsDuplicate) {
  Uuid command_id = Uuid::random();
  CommandRecord record{command_id, "", R"({"status":"ok","version":1})"};
  auto first = this->store_->write(
      std::vector<WriteRequest>{request("a", ExpectedVersion::exact(0), 1, record)});
  ASSERT_TRUE(first[0].ok()) << first[0].error->to_string();

  CommandRecord again{command_id, "", R"({"status":"ok","version":2})"};
  auto second = this->store_->write(
      std::vector<WriteRequest>{request("a", ExpectedVersion::exact(1), 1, again)});
  ASSERT_FALSE(second[0].ok());
  EXPECT_EQ(second[0].error->code(), errc::kDuplicateCommand);
  ASSERT_TRUE(second[0].existing_result.has_value());
  auto existing = nlohmann::json::parse(*second[0].existing_result);
  EXPECT_EQ(existing["version"], 1);
  EXPECT_EQ(existing["position"], first[0].appended->last_position().to_string())
      << "the recorded result carries the position of the command's last event";
  EXPECT_EQ(this->version_of("a"), 1) << "a duplicate command appended events";

  auto found = this->store_->find_command(command_id);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->stream_id, "a");
}

TEST_P(StoreConformance, WriteWithoutEventsOnlyRecordsTheCommand) {
  this->append_ok("a", ExpectedVersion::any(), events(3));
  Uuid command_id = Uuid::random();
  auto results = this->store_->write(std::vector<WriteRequest>{request(
      "a", ExpectedVersion::any(), 0, CommandRecord{command_id, "", R"({"status":"rejected"})"})});
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(results[0].appended->stream_version, 3);
  EXPECT_TRUE(results[0].appended->global_positions.empty());
  EXPECT_EQ(this->version_of("a"), 3);
  auto found = this->store_->find_command(command_id);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_NE((*found)->result.find("rejected"), std::string::npos);
}

TEST_P(StoreConformance, WriteAppliesRequestsOfOneStreamInOrder) {
  std::vector<WriteRequest> requests = {
      request("a", ExpectedVersion::no_stream(), 1), request("b", ExpectedVersion::no_stream(), 1),
      request("a", ExpectedVersion::exact(1), 2), request("a", ExpectedVersion::exact(1), 1),
      request("a", ExpectedVersion::exact(3), 1)};
  auto results = this->store_->write(requests);
  ASSERT_EQ(results.size(), 5u);
  ASSERT_TRUE(results[0].ok());
  ASSERT_TRUE(results[1].ok());
  ASSERT_TRUE(results[2].ok()) << results[2].error->to_string();
  EXPECT_EQ(results[2].appended->stream_version, 3);
  ASSERT_FALSE(results[3].ok()) << "the second exact(1) must see the first one's events";
  EXPECT_EQ(results[3].error->code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(results[3].error->actual_version(), 3);
  ASSERT_TRUE(results[4].ok());
  EXPECT_EQ(results[4].appended->stream_version, 4);
  auto stored = this->read("a");
  ASSERT_EQ(stored.size(), 4u);
  for (size_t idx = 0; idx < stored.size(); ++idx) {
    EXPECT_EQ(stored[idx].stream_version, static_cast<int64_t>(idx + 1));
  }
}

TEST_P(StoreConformance, WriteAnswersARepeatedCommandIdFromTheFirst) {
  Uuid command_id = Uuid::random();
  std::vector<WriteRequest> requests = {
      request("a", ExpectedVersion::any(), 1, CommandRecord{command_id, "", R"({"first":true})"}),
      request("b", ExpectedVersion::any(), 1, CommandRecord{command_id, "", R"({"first":false})"})};
  auto results = this->store_->write(requests);
  ASSERT_TRUE(results[0].ok());
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error->code(), errc::kDuplicateCommand);
  ASSERT_TRUE(results[1].existing_result.has_value());
  EXPECT_NE(results[1].existing_result->find("true"), std::string::npos);
  EXPECT_EQ(this->version_of("b"), 0) << "a repeated command id appended events";
}

TEST_P(StoreConformance, ConflictingWriteDoesNotRecordItsCommand) {
  this->append_ok("a", ExpectedVersion::any(), events(1));
  Uuid command_id = Uuid::random();
  auto results = this->store_->write(std::vector<WriteRequest>{
      request("a", ExpectedVersion::exact(0), 1, CommandRecord{command_id, "", "{}"})});
  ASSERT_FALSE(results[0].ok());
  auto found = this->store_->find_command(command_id);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value()) << "a failed write recorded its command";
}

// --- checkpoints, snapshots, command records ---------------------------------------------------

TEST_P(StoreConformance, CheckpointsRoundTripPerHandler) {
  auto missing = this->store_->load_checkpoint("projector-a");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  ASSERT_TRUE(this->store_->save_checkpoint("projector-a", Position{42, 7}).ok());
  ASSERT_TRUE(this->store_->save_checkpoint("projector-b", Position{1, 1}).ok());
  ASSERT_TRUE(this->store_->save_checkpoint("projector-a", Position{43, 9}).ok());
  auto loaded = this->store_->load_checkpoint("projector-a");
  ASSERT_TRUE(loaded.ok());
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ(**loaded, (Position{43, 9}));
  EXPECT_EQ(**this->store_->load_checkpoint("projector-b"), (Position{1, 1}));
}

// Names and ids the stores look things up by follow one rule in both: non-empty UTF-8 without
// NUL, up to its limit. Postgres used to answer invalid UTF-8 with invalid_payload where the
// in-memory store found nothing, and cut a correlation id at a NUL (libpq's text parameters end
// there), which could find another correlation's events.
TEST_P(StoreConformance, LookupKeysFollowOneRuleInBothStores) {
  this->append_ok("a", ExpectedVersion::any(), events(1));
  const std::string bad_utf8 = "a\xff";
  const std::string with_nul("a\0b", 3);
  const std::string too_long(kMaxCorrelationIdBytes + 1, 'c');
  for (const std::string& key : {std::string(), bad_utf8, with_nul}) {
    SCOPED_TRACE(::testing::PrintToString(key));
    auto snapshot = this->store_->load_snapshot(key);
    ASSERT_FALSE(snapshot.ok());
    EXPECT_EQ(snapshot.error().code(), errc::kInvalidArgument);
    auto checkpoint = this->store_->load_checkpoint(key);
    ASSERT_FALSE(checkpoint.ok());
    EXPECT_EQ(checkpoint.error().code(), errc::kInvalidArgument);
    auto saved = this->store_->save_checkpoint(key, Position{});
    ASSERT_FALSE(saved.ok());
    EXPECT_EQ(saved.error().code(), errc::kInvalidArgument);
  }
  for (const std::string& key : {std::string(), bad_utf8, with_nul, too_long}) {
    SCOPED_TRACE(key.size());
    auto correlated = this->store_->read_correlated(key, 10);
    ASSERT_FALSE(correlated.ok());
    EXPECT_EQ(correlated.error().code(), errc::kInvalidArgument);
  }
  auto fine = this->store_->read_correlated("no such correlation", 10);
  ASSERT_TRUE(fine.ok()) << fine.error().to_string();
  EXPECT_TRUE(fine->empty());
}

TEST_P(StoreConformance, CheckpointFromReadAllResumesWithoutRepeats) {
  this->append_ok("a", ExpectedVersion::any(), events(3));
  auto page = this->settled_page(Position{}, 2, 2);
  ASSERT_EQ(page.events.size(), 2u);
  ASSERT_TRUE(this->store_->save_checkpoint("h", page.next).ok());
  this->append_ok("a", ExpectedVersion::any(), events(1, "Late"));
  auto resumed_from = this->store_->load_checkpoint("h");
  ASSERT_TRUE(resumed_from.ok() && resumed_from->has_value());
  auto rest = this->settled_page(**resumed_from, 100, 2);
  ASSERT_EQ(rest.events.size(), 2u);
  EXPECT_EQ(rest.events[0].stream_version, 3);
  EXPECT_EQ(rest.events[1].type, "Late1");
}

TEST_P(StoreConformance, SnapshotsRoundTrip) {
  auto missing = this->store_->load_snapshot("giftcard-1");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  Snapshot snapshot{"giftcard-1", 10, "GiftCard", 2, R"({"remaining":40})"};
  ASSERT_TRUE(this->store_->save_snapshot(snapshot).ok());
  auto loaded = this->store_->load_snapshot("giftcard-1");
  ASSERT_TRUE(loaded.ok());
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->stream_version, 10);
  EXPECT_EQ((*loaded)->state_type, "GiftCard");
  EXPECT_EQ((*loaded)->state_version, 2);
  EXPECT_NE((*loaded)->data.find("40"), std::string::npos);
}

TEST_P(StoreConformance, NewerSnapshotReplacesOlderButNotTheReverse) {
  ASSERT_TRUE(this->store_->save_snapshot({"s", 5, "T", 1, R"({"v":5})"}).ok());
  ASSERT_TRUE(this->store_->save_snapshot({"s", 9, "T", 1, R"({"v":9})"}).ok());
  ASSERT_TRUE(this->store_->save_snapshot({"s", 7, "T", 1, R"({"v":7})"}).ok());
  auto loaded = this->store_->load_snapshot("s");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->stream_version, 9);
}

TEST_P(StoreConformance, LoadStreamsAnswersEachLoadInOrder) {
  this->append_ok("snap", ExpectedVersion::any(), events(5));
  this->append_ok("plain", ExpectedVersion::any(), events(3));
  ASSERT_TRUE(this->store_->save_snapshot({"snap", 3, "T", 2, R"({"v":3})"}).ok());
  std::vector<StreamLoad> loads = {{"snap", 0, true}, {"plain", 0, true}, {"missing", 0, true},
                                   {"snap", 4, true}, {"snap", 1, false}, {"", 0, true},
                                   {"plain", 2, true}};
  auto loaded = this->store_->load_streams(loads);
  ASSERT_EQ(loaded.size(), loads.size());

  ASSERT_FALSE(loaded[0].error);
  ASSERT_TRUE(loaded[0].snapshot.has_value());
  EXPECT_EQ(loaded[0].snapshot->stream_version, 3);
  EXPECT_EQ(loaded[0].snapshot->state_type, "T");
  EXPECT_EQ(loaded[0].snapshot->state_version, 2);
  EXPECT_EQ(nlohmann::json::parse(loaded[0].snapshot->data), nlohmann::json({{"v", 3}}));
  ASSERT_EQ(loaded[0].events.size(), 2u);
  EXPECT_EQ(loaded[0].events[0].stream_version, 4);
  EXPECT_EQ(loaded[0].events[1].stream_version, 5);
  EXPECT_EQ(loaded[0].events[0].stream_id, "snap");

  EXPECT_FALSE(loaded[1].snapshot.has_value());
  ASSERT_EQ(loaded[1].events.size(), 3u);
  EXPECT_EQ(loaded[1].events[2].stream_version, 3);

  EXPECT_FALSE(loaded[2].error);
  EXPECT_FALSE(loaded[2].snapshot.has_value());
  EXPECT_TRUE(loaded[2].events.empty());

  EXPECT_FALSE(loaded[3].snapshot.has_value()) << "a snapshot not newer than after is skipped";
  ASSERT_EQ(loaded[3].events.size(), 1u);
  EXPECT_EQ(loaded[3].events[0].stream_version, 5);

  EXPECT_FALSE(loaded[4].snapshot.has_value()) << "with_snapshot=false must ignore snapshots";
  ASSERT_EQ(loaded[4].events.size(), 4u);
  EXPECT_EQ(loaded[4].events[0].stream_version, 2);

  ASSERT_TRUE(loaded[5].error.has_value());
  EXPECT_EQ(loaded[5].error->code(), errc::kInvalidArgument);

  ASSERT_EQ(loaded[6].events.size(), 1u);
  EXPECT_EQ(loaded[6].events[0].stream_version, 3);
}

TEST_P(StoreConformance, SnapshotWithInvalidJsonIsRejected) {
  auto saved = this->store_->save_snapshot({"s", 1, "T", 1, "{oops"});
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.error().code(), errc::kInvalidPayload);
  EXPECT_NE(saved.error().message().find("snapshot data"), std::string::npos);
}

// Checks that `error` has `code` and names `named` in its message.
void expect_refusal(const Error& error, std::string_view code, std::string_view named) {
  EXPECT_EQ(error.code(), code) << error.message();
  EXPECT_NE(error.message().find(named), std::string::npos) << error.message();
}

// A snapshot is refused whole, with the field named, before anything is stored; the one saved
// before stays.
TEST_P(StoreConformance, SnapshotsWithInvalidFieldsAreRefusedAndNameTheField) {
  ASSERT_TRUE(this->store_->save_snapshot({"s", 3, "T", 1, R"({"v":3})"}).ok());
  struct Case {
    Snapshot snapshot;
    std::string_view code;
    std::string named;
  };
  const std::string long_type(kMaxEventTypeBytes + 1, 't');
  const std::string too_large = "\"" + std::string(kMaxSnapshotBytes - 1, 'x') + "\"";
  const std::string about_s = "the snapshot of stream 's': ";
  const Case cases[] = {
      {{"s", 0, "T", 1, "{}"}, errc::kInvalidArgument, about_s + "stream version must be >= 1"},
      {{"s", -4, "T", 1, "{}"}, errc::kInvalidArgument, about_s + "stream version"},
      {{"s", 9, "", 1, "{}"}, errc::kInvalidArgument, about_s + "state type must be non-empty"},
      {{"s", 9, std::string("T\0x", 3), 1, "{}"}, errc::kInvalidArgument, about_s + "state type"},
      {{"s", 9, "\xff\xfe", 1, "{}"}, errc::kInvalidArgument, about_s + "state type"},
      {{"s", 9, long_type, 1, "{}"}, errc::kInvalidArgument, about_s + "state type (tttt"},
      {{"s", 9, "T", 0, "{}"}, errc::kInvalidArgument, about_s + "state version must be >= 1"},
      {{"", 9, "T", 1, "{}"}, errc::kInvalidArgument, "stream id must not be empty"},
      {{std::string(kMaxStreamIdBytes + 1, 's'), 9, "T", 1, "{}"},
       errc::kInvalidArgument,
       "stream id is 1025 bytes long"},
      {{"s\xc3", 9, "T", 1, "{}"}, errc::kInvalidArgument, "stream id must be UTF-8"},
      {{"s", 9, "T", 1, too_large},
       errc::kSnapshotTooLarge,
       about_s + "state is 16777217 bytes of JSON; the limit is 16777216"},
      {{"s", 9, "T", 1, "{oops"}, errc::kInvalidPayload, about_s + "snapshot data"},
  };
  for (const Case& each : cases) {
    auto saved = this->store_->save_snapshot(each.snapshot);
    ASSERT_FALSE(saved.ok()) << each.named;
    expect_refusal(saved.error(), each.code, each.named);
    EXPECT_EQ(saved.error().kind(), ErrorKind::kInvalidInput) << saved.error().message();
  }
  auto loaded = this->store_->load_snapshot("s");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->stream_version, 3);
  EXPECT_EQ(nlohmann::json::parse((*loaded)->data), nlohmann::json({{"v", 3}}));
}

// At its limits a snapshot is stored and loaded back whole.
TEST_P(StoreConformance, SnapshotsAreStoredUpToTheirLimits) {
  const std::string type(kMaxEventTypeBytes, 'T');
  const std::string data = "\"" + std::string(kMaxSnapshotBytes - 2, 'x') + "\"";
  ASSERT_TRUE(this->store_->save_snapshot({"s", 7, type, 3, data}).ok());
  auto loaded = this->store_->load_snapshot("s");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->state_type, type);
  EXPECT_EQ((*loaded)->state_version, 3);
  EXPECT_EQ((*loaded)->data.size(), kMaxSnapshotBytes);
}

// record_command refuses a record with an invalid stream id, a nil command id, or a result that
// is not JSON or over the limit; write() refuses the same in a request's record (whose stream
// is the request's). Nothing is recorded.
TEST_P(StoreConformance, CommandRecordsWithInvalidFieldsAreRefused) {
  const std::string too_large = "\"" + std::string(kMaxEventBytes - 1, 'x') + "\"";
  struct Case {
    CommandRecord record;
    std::string_view code;
    std::string_view named;
  };
  const Case cases[] = {
      {{Uuid::random(), "", "{}"}, errc::kInvalidArgument, "stream id must not be empty"},
      {{Uuid::random(), std::string("s\0t", 3), "{}"},
       errc::kInvalidArgument,
       "stream id must be UTF-8 text without NUL"},
      {{Uuid(), "s", "{}"}, errc::kInvalidArgument, "command id must not be nil"},
      {{Uuid::random(), "s", too_large},
       errc::kEventTooLarge,
       "the command result is 16777217 bytes; the limit is 16777216"},
      {{Uuid::random(), "s", "{oops"}, errc::kInvalidPayload, "command result"},
  };
  for (const Case& each : cases) {
    auto recorded = this->store_->record_command(each.record);
    ASSERT_FALSE(recorded.ok()) << each.named;
    expect_refusal(recorded.error(), each.code, each.named);
    EXPECT_EQ(recorded.error().kind(), ErrorKind::kInvalidInput) << recorded.error().message();
    if (each.record.stream_id.empty() || each.record.stream_id.find('\0') != std::string::npos) {
      continue;  // write() stores the record under its request's stream
    }
    WriteRequest request{"s", ExpectedVersion::any(), events(1), each.record, {}};
    auto written = this->store_->write(std::span(&request, 1));
    ASSERT_FALSE(written[0].ok()) << each.named;
    expect_refusal(*written[0].error, each.code, each.named);
  }
  for (const Case& each : cases) {
    auto found = this->store_->find_command(each.record.command_id);
    ASSERT_TRUE(found.ok());
    EXPECT_FALSE(found->has_value()) << each.named;
  }
  EXPECT_EQ(this->version_of("s"), 0);
}

TEST_P(StoreConformance, CommandRecordIsKeptFromTheFirstWrite) {
  Uuid command_id = Uuid::random();
  auto first = this->store_->record_command({command_id, "s", R"({"version":1})"});
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(*first);
  auto second = this->store_->record_command({command_id, "s", R"({"version":2})"});
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(*second);
  auto found = this->store_->find_command(command_id);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->stream_id, "s");
  EXPECT_NE((*found)->result.find("1"), std::string::npos);
  EXPECT_EQ((*found)->result.find("2"), std::string::npos);
}

TEST_P(StoreConformance, UnknownCommandIsNotFound) {
  auto found = this->store_->find_command(Uuid::random());
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
}

// --- unique claims -------------------------------------------------------------------------------

WriteRequest claiming(std::string stream, int count, std::vector<UniqueClaim> claims,
                      ExpectedVersion expected = ExpectedVersion::any()) {
  WriteRequest out = request(std::move(stream), expected, count);
  out.claims = std::move(claims);
  return out;
}

UniqueClaim claim(std::string scope, std::string value) {
  return UniqueClaim{std::move(scope), std::move(value), false};
}

UniqueClaim release(std::string scope, std::string value) {
  return UniqueClaim{std::move(scope), std::move(value), true};
}

// A request without events records an outcome decided against a version of the stream: when
// the stream has moved on since, the outcome may be wrong (a rejection for a balance another
// writer raised), so it fails like an append and nothing is recorded. Alone or in a group.
TEST_P(StoreConformance, WriteWithoutEventsChecksItsExpectedVersion) {
  this->append_ok("a", ExpectedVersion::any(), events(3));
  std::vector<Uuid> ids = {Uuid::random(), Uuid::random(), Uuid::random(), Uuid::random()};
  auto outcome = [&](std::string stream, ExpectedVersion expected, size_t idx) {
    return request(std::move(stream), expected, 0,
                   CommandRecord{ids[idx], "", R"({"status":"rejected"})"});
  };
  std::vector<WriteRequest> group = {
      outcome("a", ExpectedVersion::exact(2), 0), outcome("a", ExpectedVersion::no_stream(), 1),
      outcome("nowhere", ExpectedVersion::stream_exists(), 2),
      outcome("a", ExpectedVersion::exact(3), 3), request("b", ExpectedVersion::exact(0), 1)};
  auto results = this->store_->write(group);
  ASSERT_EQ(results.size(), 5u);
  ASSERT_FALSE(results[0].ok()) << "an outcome decided against version 2 of a stream at 3";
  EXPECT_EQ(results[0].error->code(), errc::kWrongExpectedVersion);
  EXPECT_EQ(results[0].error->actual_version(), 3);
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error->code(), errc::kStreamExists);
  ASSERT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error->code(), errc::kStreamNotFound);
  ASSERT_TRUE(results[3].ok()) << results[3].error->to_string();
  EXPECT_EQ(results[3].appended->stream_version, 3);
  ASSERT_TRUE(results[4].ok()) << results[4].error->to_string();
  for (size_t idx = 0; idx < 3; ++idx) {
    auto found = this->store_->find_command(ids[idx]);
    ASSERT_TRUE(found.ok());
    EXPECT_FALSE(found->has_value()) << "outcome " << idx << " was recorded";
  }
  auto kept = this->store_->find_command(ids[3]);
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->has_value()) << "the outcome decided against the current version";

  Uuid alone_id = Uuid::random();
  auto alone = this->store_->write(std::vector<WriteRequest>{
      request("a", ExpectedVersion::exact(1), 0, CommandRecord{alone_id, "", "{}"})});
  ASSERT_FALSE(alone[0].ok());
  EXPECT_EQ(alone[0].error->code(), errc::kWrongExpectedVersion);
  EXPECT_FALSE(this->store_->find_command(alone_id)->has_value());

  // With a claim: neither recorded nor claimed.
  auto claimed = this->store_->write(std::vector<WriteRequest>{
      claiming("a", 0, {claim("email", "stale@example.com")}, ExpectedVersion::exact(2))});
  ASSERT_FALSE(claimed[0].ok());
  EXPECT_EQ(claimed[0].error->code(), errc::kWrongExpectedVersion);
  auto elsewhere = this->store_->write(
      std::vector<WriteRequest>{claiming("c", 1, {claim("email", "stale@example.com")})});
  EXPECT_TRUE(elsewhere[0].ok()) << "the stale write claimed the value";

  auto negative =
      this->store_->write(std::vector<WriteRequest>{request("a", ExpectedVersion::exact(-4), 0)});
  ASSERT_FALSE(negative[0].ok());
  EXPECT_EQ(negative[0].error->code(), errc::kInvalidArgument);
}

TEST_P(StoreConformance, AClaimedValueIsTakenUntilItsOwnerReleasesIt) {
  auto first = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-a", 1, {claim("email", "ada@example.com")})});
  ASSERT_TRUE(first[0].ok()) << first[0].error->to_string();

  auto taken = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-b", 1, {claim("email", "ada@example.com")})});
  ASSERT_FALSE(taken[0].ok());
  EXPECT_EQ(taken[0].error->code(), errc::kAlreadyTaken);
  EXPECT_NE(taken[0].error->message().find("acct-a"), std::string::npos)
      << taken[0].error->message();
  ASSERT_TRUE(taken[0].taken.has_value());
  EXPECT_EQ(*taken[0].taken, claim("email", "ada@example.com"));
  EXPECT_EQ(this->version_of("acct-b"), 0) << "a refused claim appended its events";

  // The same value in another scope is free; the owner claiming it again changes nothing.
  auto other_scope = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-b", 1, {claim("nickname", "ada@example.com")})});
  EXPECT_TRUE(other_scope[0].ok());
  auto again = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-a", 1, {claim("email", "ada@example.com")})});
  EXPECT_TRUE(again[0].ok());

  // Only the owner's release frees it.
  auto foreign_release = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-b", 1, {release("email", "ada@example.com")})});
  ASSERT_TRUE(foreign_release[0].ok());
  auto still_taken = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-c", 1, {claim("email", "ada@example.com")})});
  EXPECT_EQ(still_taken[0].error->code(), errc::kAlreadyTaken);
  auto released = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-a", 1, {release("email", "ada@example.com")})});
  ASSERT_TRUE(released[0].ok());
  auto reclaimed = this->store_->write(
      std::vector<WriteRequest>{claiming("acct-c", 1, {claim("email", "ada@example.com")})});
  EXPECT_TRUE(reclaimed[0].ok());
  EXPECT_EQ(this->version_of("acct-c"), 1);
}

TEST_P(StoreConformance, AClaimConflictInAGroupFailsOnlyThatRequest) {
  std::vector<WriteRequest> requests = {claiming("g1", 1, {claim("email", "x@example.com")}),
                                        request("g2", ExpectedVersion::any(), 2),
                                        claiming("g3", 1, {claim("email", "x@example.com")}),
                                        request("g4", ExpectedVersion::any(), 1)};
  auto results = this->store_->write(requests);
  ASSERT_EQ(results.size(), 4u);
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].ok());
  ASSERT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error->code(), errc::kAlreadyTaken);
  EXPECT_TRUE(results[3].ok());
  EXPECT_EQ(this->version_of("g1"), 1);
  EXPECT_EQ(this->version_of("g2"), 2);
  EXPECT_EQ(this->version_of("g3"), 0);
  EXPECT_EQ(this->version_of("g4"), 1);
}

TEST_P(StoreConformance, AFailedAppendClaimsNothing) {
  auto conflicting = this->store_->write(std::vector<WriteRequest>{
      claiming("f1", 1, {claim("email", "f@example.com")}, ExpectedVersion::exact(3))});
  ASSERT_FALSE(conflicting[0].ok());
  EXPECT_EQ(conflicting[0].error->code(), errc::kWrongExpectedVersion);
  auto other = this->store_->write(
      std::vector<WriteRequest>{claiming("f2", 1, {claim("email", "f@example.com")})});
  EXPECT_TRUE(other[0].ok()) << "the failed append kept its claim";
}

TEST_P(StoreConformance, ATakenClaimIsNamedAndTheRequestsOtherClaimsAreUndone) {
  auto owner =
      this->store_->write(std::vector<WriteRequest>{claiming("o1", 1, {claim("phone", "+100")})});
  ASSERT_TRUE(owner[0].ok());
  auto refused = this->store_->write(std::vector<WriteRequest>{
      claiming("o2", 1, {claim("email", "o@example.com"), claim("phone", "+100")})});
  ASSERT_FALSE(refused[0].ok());
  ASSERT_TRUE(refused[0].taken.has_value());
  EXPECT_EQ(*refused[0].taken, claim("phone", "+100"));
  auto free_email = this->store_->write(
      std::vector<WriteRequest>{claiming("o3", 1, {claim("email", "o@example.com")})});
  EXPECT_TRUE(free_email[0].ok()) << "the refused request kept its first claim";
}

}  // namespace
}  // namespace cqrs
