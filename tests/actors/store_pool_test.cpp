// The store pool's write dispatch: one write batch in flight, the writes that arrive meanwhile go
// together in the next batch, and a batch that stalls lets another start beside it. A real actor
// system (the workers are detached threads) over an in-memory store whose writes can be held.
#define GTEST_DONT_DEFINE_FAIL 1
#include "actors/store_pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "cqrs/memory_event_store.hpp"

namespace cqrs::actors {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// An in-memory store that records each write batch's size and, while `hold` is set, keeps
// every write waiting until released.
class GatedStore final : public EventStore {
 public:
  struct Gate {
    std::mutex mutex;
    std::condition_variable changed;
    bool hold = false;
    std::vector<size_t> batches;  // sizes, in the order the writes began
    int running = 0;              // writes inside write() now
    int most_running = 0;
    bool throw_next = false;  // the next write throws (a bug in a store)
    int opens = 0;            // stores the factory made
  };

  explicit GatedStore(std::shared_ptr<Gate> gate, std::shared_ptr<InMemoryEventStore> inner)
      : gate_(std::move(gate)), inner_(std::move(inner)) {}

  std::vector<WriteResult> write(std::span<const WriteRequest> requests) override {
    {
      std::unique_lock lock(gate_->mutex);
      if (std::exchange(gate_->throw_next, false)) throw std::runtime_error("simulated store bug");
      gate_->batches.push_back(requests.size());
      gate_->most_running = std::max(gate_->most_running, ++gate_->running);
      gate_->changed.notify_all();
      gate_->changed.wait(lock, [&] { return !gate_->hold; });
    }
    auto results = inner_->write(requests);
    std::lock_guard lock(gate_->mutex);
    --gate_->running;
    gate_->changed.notify_all();
    return results;
  }
  Result<AppendResult> append(std::string_view stream_id, ExpectedVersion expected,
                              std::span<const EventData> events) override {
    return inner_->append(stream_id, expected, events);
  }
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream_id, int64_t from_version,
                                                 size_t max_count, Direction direction) override {
    return inner_->read_stream(stream_id, from_version, max_count, direction);
  }
  Result<int64_t> stream_version(std::string_view stream_id) override {
    return inner_->stream_version(stream_id);
  }
  Result<AllPage> read_all(Position after, size_t max_count) override {
    return inner_->read_all(after, max_count);
  }
  Result<std::optional<Position>> load_checkpoint(std::string_view handler) override {
    return inner_->load_checkpoint(handler);
  }
  Result<void> save_checkpoint(std::string_view handler, Position position) override {
    return inner_->save_checkpoint(handler, position);
  }
  Result<void> save_snapshot(const Snapshot& snapshot) override {
    return inner_->save_snapshot(snapshot);
  }
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream_id) override {
    return inner_->load_snapshot(stream_id);
  }
  Result<bool> record_command(const CommandRecord& record) override {
    return inner_->record_command(record);
  }
  Result<std::optional<CommandRecord>> find_command(const Uuid& command_id) override {
    return inner_->find_command(command_id);
  }

 private:
  std::shared_ptr<Gate> gate_;
  std::shared_ptr<InMemoryEventStore> inner_;
};

WriteRequest one_event(const std::string& stream_id) {
  WriteRequest request;
  request.stream_id = stream_id;
  request.expected = ExpectedVersion::no_stream();
  EventData event;
  event.type = "Happened";
  event.data = "{}";
  request.events.push_back(event);
  return request;
}

WriteRequest events_for(const std::string& stream_id, size_t count) {
  WriteRequest request = one_event(stream_id);
  request.events.resize(count, request.events.front());
  for (EventData& event : request.events) event.event_id = Uuid::time_ordered();
  return request;
}

class StorePoolTest : public ::testing::Test {
 protected:
  // A new GatedStore over the shared in-memory store at each call, counted in the gate.
  StoreFactory gated_factory() {
    return [gate = gate_, inner = inner_]() -> Result<std::shared_ptr<EventStore>> {
      {
        std::lock_guard lock(gate->mutex);
        ++gate->opens;
      }
      return std::shared_ptr<EventStore>(std::make_shared<GatedStore>(gate, inner));
    };
  }

  void start(std::chrono::milliseconds write_stall) {
    StoreFactory factory = gated_factory();
    StorePoolConfig config;
    config.workers = 4;
    config.max_batch = 64;
    config.max_batch_events = 128;
    config.write_stall = write_stall;
    pool_ = spawn_store_pool(system_, factory, config);
  }

  // Sends writes to streams s<first>.. (their replies are dropped: the store tells the outcome).
  void send_writes(int first, int count) {
    for (int idx = first; idx < first + count; ++idx) {
      caf::anon_send(pool_, write_atom::value, one_event("s" + std::to_string(idx)));
    }
  }

  // Waits until `done` holds for the gate, at most `limit`.
  bool wait_gate(const std::function<bool(GatedStore::Gate&)>& done,
                 std::chrono::milliseconds limit) {
    std::unique_lock lock(gate_->mutex);
    return gate_->changed.wait_for(lock, limit, [&] { return done(*gate_); });
  }

  // Starts the pool and a first write batch (one write) that stays in flight until release().
  bool start_holding_one(std::chrono::milliseconds write_stall) {
    start(write_stall);
    {
      std::lock_guard lock(gate_->mutex);
      gate_->hold = true;
    }
    send_writes(0, 1);
    return wait_gate([](auto& gate) { return gate.batches.size() == 1; }, 10s);
  }

  // What the gate saw so far, read under its lock.
  struct Seen {
    std::vector<size_t> batches;
    int running = 0;
    int most_running = 0;
  };
  Seen seen() {
    std::lock_guard lock(gate_->mutex);
    return {gate_->batches, gate_->running, gate_->most_running};
  }

  void release() {
    std::lock_guard lock(gate_->mutex);
    gate_->hold = false;
    gate_->changed.notify_all();
  }

  // Every stream s0..s<count-1> got its event.
  bool all_stored(int count) {
    for (int idx = 0; idx < count; ++idx) {
      auto version = inner_->stream_version("s" + std::to_string(idx));
      if (!version || *version != 1) return false;
    }
    return true;
  }

  void TearDown() override {
    release();
    caf::anon_send_exit(pool_, caf::exit_reason::user_shutdown);
  }

  caf::actor_system_config config_;
  caf::actor_system system_{config_};
  std::shared_ptr<GatedStore::Gate> gate_ = std::make_shared<GatedStore::Gate>();
  std::shared_ptr<InMemoryEventStore> inner_ = std::make_shared<InMemoryEventStore>();
  caf::actor pool_;
};

TEST_F(StorePoolTest, WritesArrivingWhileABatchRunsGoTogetherInTheNext) {
  ASSERT_TRUE(start_holding_one(10s));  // no batch stalls within the test
  send_writes(1, 9);
  // Three workers are idle, but the nine wait for the batch in flight.
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(seen().batches, std::vector<size_t>{1});
  release();
  ASSERT_TRUE(
      wait_gate([](auto& gate) { return gate.running == 0 && gate.batches.size() >= 2; }, 10s));
  EXPECT_EQ(seen().batches, (std::vector<size_t>{1, 9}));
  EXPECT_EQ(seen().most_running, 1);
  EXPECT_TRUE(all_stored(10));
}

TEST_F(StorePoolTest, AStalledBatchLetsTheNextStartBesideIt) {
  ASSERT_TRUE(start_holding_one(100ms));
  auto sent = Clock::now();
  send_writes(1, 3);
  // The first batch is still held: after the stall time the three start on another worker.
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.batches.size() == 2; }, 10s));
  EXPECT_GE(Clock::now() - sent, 80ms);  // not at once (timer slack aside)
  Seen now = seen();
  EXPECT_EQ(now.batches, (std::vector<size_t>{1, 3}));
  EXPECT_EQ(now.running, 2);
  release();
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.running == 0; }, 10s));
  EXPECT_TRUE(all_stored(4));
}

TEST_F(StorePoolTest, AFullBatchWaitingStartsBesideTheOneInFlight) {
  ASSERT_TRUE(start_holding_one(10s));
  send_writes(1, 64);  // max_batch: a whole batch is waiting
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.batches.size() == 2; }, 2s));
  EXPECT_EQ(seen().batches, (std::vector<size_t>{1, 64}));
  release();
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.running == 0; }, 10s));
  EXPECT_TRUE(all_stored(65));
}

// Writes of many events make a whole batch by their events: they start beside the batch in
// flight, one batch per write once a write alone comes near max_batch_events.
TEST_F(StorePoolTest, WritesOfManyEventsStartBesideTheBatchInFlight) {
  ASSERT_TRUE(start_holding_one(10s));
  for (int idx = 1; idx <= 3; ++idx) {
    caf::anon_send(pool_, write_atom::value, events_for("s" + std::to_string(idx), 100));
  }
  // 300 events wait (max_batch_events 128): two writes start beside the first, one each; the
  // third, 100 events, is no whole batch on its own and waits.
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.batches.size() == 3; }, 2s));
  std::this_thread::sleep_for(200ms);
  Seen now = seen();
  EXPECT_EQ(now.batches, (std::vector<size_t>{1, 1, 1}));
  EXPECT_EQ(now.running, 3);
  release();
  ASSERT_TRUE(
      wait_gate([](auto& gate) { return gate.running == 0 && gate.batches.size() == 4; }, 10s));
  EXPECT_EQ(seen().batches, (std::vector<size_t>{1, 1, 1, 1}));
  for (int idx = 1; idx <= 3; ++idx) {
    auto version = inner_->stream_version("s" + std::to_string(idx));
    ASSERT_TRUE(version.ok());
    EXPECT_EQ(*version, 100);
  }
}

// Writes of few events go together up to max_batch_events.
TEST_F(StorePoolTest, ABatchHoldsAtMostMaxBatchEventsUnlessOneWriteHasMore) {
  ASSERT_TRUE(start_holding_one(10s));
  caf::anon_send(pool_, write_atom::value, events_for("s1", 60));
  caf::anon_send(pool_, write_atom::value, events_for("s2", 60));
  caf::anon_send(pool_, write_atom::value, events_for("s3", 60));
  caf::anon_send(pool_, write_atom::value, events_for("s4", 200));
  // 380 events wait: 60 + 60 start beside the first, then 60 alone (60 + 200 > 128). The
  // 200-event write, a batch on its own, waits: the fourth worker is kept for loads.
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.batches.size() == 3; }, 2s));
  std::vector<size_t> sizes = seen().batches;  // the two start on two workers at once
  std::sort(sizes.begin() + 1, sizes.end());
  EXPECT_EQ(sizes, (std::vector<size_t>{1, 1, 2}));
  release();
  ASSERT_TRUE(
      wait_gate([](auto& gate) { return gate.running == 0 && gate.batches.size() == 4; }, 10s));
  EXPECT_EQ(seen().batches.back(), 1u);
  auto version = inner_->stream_version("s4");
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 200);
}

// However many writes wait, one worker stays free for aggregate loads.
TEST_F(StorePoolTest, AWorkerStaysFreeForLoadsWhileWritesWait) {
  ASSERT_TRUE(start_holding_one(10s));
  for (int idx = 1; idx <= 5; ++idx) {
    caf::anon_send(pool_, write_atom::value, events_for("s" + std::to_string(idx), 100));
  }
  ASSERT_TRUE(wait_gate([](auto& gate) { return gate.running == 3; }, 2s));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(seen().running, 3);  // of four workers
  caf::scoped_actor self{system_};
  bool loaded = false;
  self->request(pool_, std::chrono::seconds(2), load_atom::value, LoadJob{"s0", 0, false})
      .receive([&](LoadOutcome& outcome) { loaded = !outcome.error.has_value(); },
               [&](caf::error&) { loaded = false; });
  EXPECT_TRUE(loaded) << "the load waited for a write batch";
  release();
  ASSERT_TRUE(
      wait_gate([](auto& gate) { return gate.running == 0 && gate.batches.size() == 6; }, 10s));
  for (int idx = 1; idx <= 5; ++idx) {
    auto version = inner_->stream_version("s" + std::to_string(idx));
    ASSERT_TRUE(version.ok());
    EXPECT_EQ(*version, 100);
  }
}

// A store that throws (a bug, memory running out) fails the requests of that job with
// store_unavailable (whether they were stored is unknown), and the worker goes on with a store
// it opens again: the exception used to end the worker, and with it the pool linked to it.
TEST_F(StorePoolTest, AStoreThatThrowsFailsItsJobAndTheWorkerGoesOn) {
  StorePoolConfig config;
  config.workers = 1;
  pool_ = spawn_store_pool(system_, gated_factory(), config);
  {
    std::lock_guard lock(gate_->mutex);
    gate_->throw_next = true;
  }
  caf::scoped_actor self{system_};
  auto write = [&](const std::string& stream) {
    std::optional<WriteResult> written;
    self->request(pool_, std::chrono::seconds(5), write_atom::value, one_event(stream))
        .receive([&](WriteResult& result) { written = std::move(result); },
                 [&](caf::error& failure) { ADD_FAILURE() << system_.render(failure); });
    return written;
  };
  auto failed = write("s0");
  ASSERT_TRUE(failed.has_value());
  ASSERT_FALSE(failed->ok());
  EXPECT_EQ(failed->error->code(), errc::kStoreUnavailable);
  EXPECT_NE(failed->error->message().find("simulated store bug"), std::string::npos)
      << failed->error->message();
  auto next = write("s1");
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->ok()) << next->error->to_string();
  std::optional<LoadOutcome> loaded;
  self->request(pool_, std::chrono::seconds(5), load_atom::value, LoadJob{"s1", 0, false})
      .receive([&](LoadOutcome& outcome) { loaded = std::move(outcome); },
               [&](caf::error& failure) { ADD_FAILURE() << system_.render(failure); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_FALSE(loaded->error.has_value());
  EXPECT_EQ(loaded->events.size(), 1u);
  std::lock_guard lock(gate_->mutex);
  EXPECT_EQ(gate_->opens, 2) << "the worker kept the store that threw";
}

// A factory that answers with no store is a failure like any other: writes and loads are told
// so, and a snapshot sent meanwhile is dropped without taking the worker down.
TEST(StorePoolFactory, AFactoryThatGivesNoStoreFailsWritesAndLoads) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  StoreFactory factory = []() -> Result<std::shared_ptr<EventStore>> {
    return std::shared_ptr<EventStore>();
  };
  StorePoolConfig pool_config;
  pool_config.workers = 1;
  caf::actor pool = spawn_store_pool(system, factory, pool_config);
  caf::anon_send(pool, snapshot_atom::value, Snapshot{"s0", 1, "T", 1, "{}"});
  caf::scoped_actor self{system};
  std::optional<WriteResult> written;
  self->request(pool, std::chrono::seconds(5), write_atom::value, one_event("s0"))
      .receive([&](WriteResult& result) { written = std::move(result); },
               [&](caf::error& failure) { ADD_FAILURE() << system.render(failure); });
  ASSERT_TRUE(written.has_value());
  ASSERT_FALSE(written->ok()) << "a write without a store must not look stored";
  EXPECT_EQ(written->error->code(), errc::kStoreError);
  EXPECT_NE(written->error->message().find("returned no store"), std::string::npos)
      << written->error->message();
  std::optional<LoadOutcome> loaded;
  self->request(pool, std::chrono::seconds(5), load_atom::value, LoadJob{"s0", 0, false})
      .receive([&](LoadOutcome& outcome) { loaded = std::move(outcome); },
               [&](caf::error& failure) { ADD_FAILURE() << system.render(failure); });
  ASSERT_TRUE(loaded.has_value());
  ASSERT_TRUE(loaded->error.has_value());
  EXPECT_EQ(loaded->error->code(), errc::kStoreError);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace cqrs::actors
