// HandlerRunner against Postgres: exactly-once projections, out-of-order commits, retries with
// backoff, dead letters and stops, upcasting, start positions, one runner per handler across
// processes (advisory lock) and process managers' deterministic command ids.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "cqrs/handlers/runner.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/postgres_event_store.hpp"
#include "support/test_database.hpp"

namespace cqrs {
namespace {

using Next = HandlerRunner::Step::Next;
using namespace std::chrono_literals;

// Projects every "Item" event into seen(event_id, stream_id, version, label); throws on the
// events whose data is {"poison": true}.
class ItemProjector : public Projector {
 public:
  explicit ItemProjector(HandlerOptions options = {}, std::string channel = {})
      : options_(options), channel_(std::move(channel)) {}
  std::string name() const override { return "items"; }
  std::vector<std::string> event_types() const override { return {"Item"}; }
  HandlerOptions options() const override { return options_; }
  Result<void> project(const Event& event, ProjectionSql& sql) override {
    if (event.data.value("poison", false)) throw std::runtime_error("poisoned item");
    if (event.data.value("update_missing", false)) {
      sql.queue("UPDATE seen SET label = 'x' WHERE event_id = $1::uuid",
                pg::Params().add(Uuid::random().to_string()), "seen has no such row");
      return {};
    }
    sql.queue(
        "INSERT INTO seen (event_id, stream_id, version, label) VALUES ($1::uuid, $2, $3, $4)",
        pg::Params()
            .add(event.record.event_id.to_string())
            .add(event.stream_id())
            .add(event.record.stream_version)
            .add(event.data.value("label", "")));
    return {};
  }
  std::string reset_sql() const override { return "TRUNCATE seen"; }
  std::string change_channel() const override { return channel_; }

 private:
  HandlerOptions options_;
  std::string channel_;
};

class HandlerRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::TestDatabase::create();
    ASSERT_NE(db_, nullptr);
    sql_ = db_->connect();
    ASSERT_TRUE(
        sql_->exec("CREATE TABLE seen (event_id uuid PRIMARY KEY, stream_id text, "
                   "version bigint, label text)"));
    auto store = pg::PostgresEventStore::open(db_->url());
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    store_ = std::move(store).value();
  }

  // Appends and, unless told otherwise, waits until $all readers can see the events: a
  // transaction running anywhere in the cluster (another test's, say) holds them back.
  void append(const std::string& stream, std::vector<std::string> datas,
              const std::string& type = "Item", int version = 1, bool wait_visible = true) {
    std::vector<EventData> events;
    for (auto& data : datas) {
      EventData event;
      event.event_id = Uuid::time_ordered();
      event.type = type;
      event.type_version = version;
      event.data = data;
      event.metadata = R"({"correlation_id":"corr-1"})";
      events.push_back(std::move(event));
    }
    auto done = store_->append(stream, ExpectedVersion::any(), events);
    ASSERT_TRUE(done.ok()) << done.error().to_string();
    if (wait_visible) {
      ASSERT_TRUE(settled());
    }
  }

  // `others` appends of one "Other" event each, then one Item labelled "rare", visible.
  void append_others_then_an_item(int others) {
    for (int idx = 0; idx < others; ++idx) {
      append("o" + std::to_string(idx), {R"({"label":"other"})"}, "Other", 1, false);
    }
    append("a", {R"({"label":"rare"})"});
  }

  // True once no stored event is held back by the watermark (false after 15 s).
  bool settled() {
    auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto held = store_->events_behind_watermark_exist();
      if (held.ok() && !*held) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  int64_t count(const std::string& query) {
    auto rows = sql_->exec(query);
    EXPECT_TRUE(rows.ok()) << (rows ? "" : rows.error().to_string());
    return rows ? rows->int64(0, 0) : -1;
  }

  // Steps until the runner waits (or stops, or asks for a retry); returns the last step.
  HandlerRunner::Step drain(HandlerRunner& runner, int max_steps = 50) {
    HandlerRunner::Step step;
    for (int idx = 0; idx < max_steps; ++idx) {
      step = runner.step();
      if (step.next != Next::kContinue) break;
    }
    return step;
  }

  // One append of five items is one run in the type index (schema/012) and in $all's (schema/013),
  // followed by one event of another type. A handler of `Projector`, reading pages of two, counts
  // `expected` events of lag at first and the rest of the run after its first page (a checkpoint
  // inside the run); restarted there, it projects exactly the rest, each once.
  template <class Projector>
  void resume_inside_a_run(int expected) {
    append("a", {R"({"label":"1"})", R"({"label":"2"})", R"({"label":"3"})", R"({"label":"4"})",
                 R"({"label":"5"})"});
    append("b", {R"({"label":"other"})"}, "Other");
    HandlerOptions options;
    options.batch_size = 2;
    auto runner = std::make_unique<HandlerRunner>(std::make_shared<Projector>(options), db_->url());
    auto lag = runner->lag();
    ASSERT_TRUE(lag.ok()) << lag.error().to_string();
    EXPECT_EQ(*lag, expected);
    runner->step();
    ASSERT_EQ(count("SELECT count(*) FROM seen"), 2);
    lag = runner->lag();
    ASSERT_TRUE(lag.ok()) << lag.error().to_string();
    EXPECT_EQ(*lag, expected - 2);
    runner = std::make_unique<HandlerRunner>(std::make_shared<Projector>(options), db_->url());
    drain(*runner);
    EXPECT_EQ(count("SELECT count(*) FROM seen"), expected);
    EXPECT_EQ(count("SELECT count(DISTINCT label) FROM seen"), expected);
    lag = runner->lag();
    ASSERT_TRUE(lag.ok());
    EXPECT_EQ(*lag, 0);
  }

  std::unique_ptr<testing::TestDatabase> db_;
  std::unique_ptr<pg::Connection> sql_;
  std::unique_ptr<pg::PostgresEventStore> store_;
};

TEST_F(HandlerRunnerTest, ProjectsEveryEventOnceAndSkipsOtherTypes) {
  append("a", {R"({"label":"a1"})", R"({"label":"a2"})"});
  append("b", {R"({"label":"b1"})"}, "Other");
  append("c", {R"({"label":"c1"})"});
  HandlerOptions options;
  options.batch_size = 2;  // several pages
  auto runner =
      std::make_unique<HandlerRunner>(std::make_shared<ItemProjector>(options), db_->url());
  auto step = drain(*runner);
  EXPECT_EQ(step.next, Next::kWait);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 3);
  EXPECT_EQ(runner->status().state, HandlerState::kRunning);
  ASSERT_TRUE(runner->status().position.has_value());
  // The checkpoint is committed: a new runner (a restart) projects nothing twice.
  append("a", {R"({"label":"a3"})"});
  runner = std::make_unique<HandlerRunner>(std::make_shared<ItemProjector>(options), db_->url());
  drain(*runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 4);
}

// A handler of every type: it reads $all itself.
struct EveryTypeProjector : ItemProjector {
  using ItemProjector::ItemProjector;
  std::vector<std::string> event_types() const override { return {}; }
};

TEST_F(HandlerRunnerTest, ACheckpointInsideARunResumesWithTheRestOfIt) {
  resume_inside_a_run<ItemProjector>(5);
}

TEST_F(HandlerRunnerTest, ACheckpointInsideARunOfAllResumesWithTheRestOfIt) {
  resume_inside_a_run<EveryTypeProjector>(6);
}

TEST_F(HandlerRunnerTest, NeverSkipsAnEventCommittedOutOfOrder) {
  HandlerRunner runner(std::make_shared<ItemProjector>(), db_->url());
  auto held = db_->connect();
  ASSERT_TRUE(held->exec("BEGIN"));
  // T1 takes a position and stays open; T2 appends later and commits first.
  ASSERT_TRUE(
      held->exec("SELECT cqrs.append_to_stream('t1', -1, ARRAY[gen_random_uuid()],"
                 " ARRAY['Item'], ARRAY[1], ARRAY['{\"label\":\"t1\"}'::jsonb],"
                 " ARRAY['{}'::jsonb])"));
  append("t2", {R"({"label":"t2"})"}, "Item", 1, /*wait_visible=*/false);
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 0) << "read past a running transaction";
  ASSERT_TRUE(held->exec("COMMIT"));
  ASSERT_TRUE(settled());
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM seen WHERE label IN ('t1','t2')"), 2);
}

// A handler of a rare type behind many events of other types reads them a window of
// transactions at a time (typed_read_window), and goes on to the next window at once: it never
// waits between windows.
TEST_F(HandlerRunnerTest, AHandlerOfARareTypeReadsWindowAfterWindowWithoutWaiting) {
  append_others_then_an_item(20);
  HandlerOptions options;
  options.typed_read_window = 3;
  HandlerRunner runner(std::make_shared<ItemProjector>(options), db_->url());
  int steps = 0;
  HandlerRunner::Step step;
  while (steps < 100) {
    step = runner.step();
    ++steps;
    if (count("SELECT count(*) FROM seen") > 0) break;
    ASSERT_EQ(step.next, Next::kContinue) << "step " << steps << " waited before the item";
  }
  EXPECT_EQ(count("SELECT count(*) FROM seen WHERE label = 'rare'"), 1);
  EXPECT_GE(steps, 21 / 3) << "each step reads at most a window of 3 transactions";
  step = drain(runner);
  EXPECT_EQ(step.next, Next::kWait);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 1);
}

// The lag of a handler of some types counts only its types, through walks of the $all index
// (one per type), not a scan of the whole table: status requests and metrics count every
// handler's lag. (With the types as one `= ANY` filter, PostgreSQL chose a parallel sequential
// scan for a handler behind; the statement now walks per type, and runs with sequential scans
// off besides, which this test does not tell apart.)
TEST_F(HandlerRunnerTest, TheLagOfAHandlerOfSomeTypesWalksTheIndexNotTheTable) {
  ASSERT_TRUE(
      sql_->exec("INSERT INTO cqrs.events (stream_id, stream_version, event_id, event_type,"
                 " data) SELECT 'o-' || g, 1, gen_random_uuid(), 'Other', '{}'"
                 " FROM generate_series(1, 20000) AS g"));
  append("a", {R"({"label":"1"})", R"({"label":"2"})", R"({"label":"3"})"});
  append("b", {R"({"label":"4"})"});
  ASSERT_TRUE(sql_->exec("ANALYZE cqrs.events"));
  store_.reset();  // from here on only the runner's session reads cqrs.events
  HandlerRunner runner(std::make_shared<ItemProjector>(), db_->url());
  auto lag = runner.lag();  // opens the runner's connection
  ASSERT_TRUE(lag.ok()) << lag.error().to_string();
  EXPECT_EQ(*lag, 4) << "the items, not the 20,000 others";
  auto scans = testing::scans_during(*sql_, "cqrs.events", [&] {
    lag = runner.lag();
    ASSERT_TRUE(lag.ok()) << lag.error().to_string();
    EXPECT_EQ(*lag, 4);
  });
  EXPECT_GT(scans.index, 0) << "the lag's walks of the $all index";
  EXPECT_EQ(scans.sequential, 0) << "the lag read the whole table";
}

// A window below one transaction counts as one, as other options below their minimum do: the
// handler runs instead of failing to open its store at every retry.
TEST_F(HandlerRunnerTest, ATypedReadWindowBelowOneCountsAsOne) {
  append_others_then_an_item(5);
  HandlerOptions options;
  options.typed_read_window = 0;
  HandlerRunner runner(std::make_shared<ItemProjector>(options), db_->url());
  auto step = drain(runner, 100);
  EXPECT_EQ(step.next, Next::kWait) << runner.status().last_error;
  EXPECT_EQ(count("SELECT count(*) FROM seen WHERE label = 'rare'"), 1);
}

TEST_F(HandlerRunnerTest, RetriesWithBackoffThenDeadLettersAndMovesOn) {
  append("a", {R"({"label":"ok1"})", R"({"poison":true})", R"({"label":"ok2"})"});
  HandlerOptions options;
  options.max_attempts = 3;
  options.backoff_base = 100ms;
  options.backoff_max = 150ms;
  options.on_failure = FailurePolicy::kDeadLetter;
  HandlerRunner runner(std::make_shared<ItemProjector>(options), db_->url());
  auto first = runner.step();
  EXPECT_EQ(first.next, Next::kRetryAfter);
  EXPECT_EQ(first.delay, 100ms);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 1) << "the event before the poison is kept";
  EXPECT_EQ(runner.status().state, HandlerState::kRetrying);
  EXPECT_NE(runner.status().last_error.find("poisoned item"), std::string::npos);
  auto second = runner.step();
  EXPECT_EQ(second.next, Next::kRetryAfter);
  EXPECT_EQ(second.delay, 150ms) << "doubled, then capped";
  auto third = runner.step();
  EXPECT_EQ(third.next, Next::kContinue) << "dead-lettered after max_attempts";
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.dead_letters WHERE handler_name = 'items' AND "
                  "attempts = 3 AND error LIKE '%poisoned item%' AND stream_id = 'a' AND "
                  "stream_version = 2"),
            1);
  EXPECT_EQ(runner.status().state, HandlerState::kRunning);
}

TEST_F(HandlerRunnerTest, AStatementMissingItsRowFailsOnlyItsEventInABatch) {
  append("a", {R"({"label":"a1"})", R"({"update_missing":true})", R"({"label":"a2"})"});
  HandlerOptions options;
  options.max_attempts = 1;
  options.on_failure = FailurePolicy::kDeadLetter;
  HandlerRunner runner(std::make_shared<ItemProjector>(options), db_->url());
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2) << "the other events of the batch are kept";
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.dead_letters WHERE stream_version = 2 AND "
                  "error LIKE '%seen has no such row%'"),
            1);
}

TEST_F(HandlerRunnerTest, StopPolicyStopsAcrossRestartsUntilRestarted) {
  append("a", {R"({"label":"ok1"})", R"({"poison":true})"});
  HandlerOptions options;
  options.max_attempts = 1;
  options.on_failure = FailurePolicy::kStop;
  auto projector = std::make_shared<ItemProjector>(options);
  {
    HandlerRunner runner(projector, db_->url());
    EXPECT_EQ(runner.step().next, Next::kStopped);
    EXPECT_EQ(runner.status().state, HandlerState::kStopped);
    EXPECT_EQ(runner.step().next, Next::kStopped) << "a stopped handler does not hot-loop";
  }
  HandlerRunner restarted(projector, db_->url());
  EXPECT_EQ(restarted.step().next, Next::kStopped) << "the stop was not kept";
  EXPECT_NE(restarted.status().last_error.find("poisoned item"), std::string::npos);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 1);
  ASSERT_TRUE(restarted.restart().ok());
  EXPECT_EQ(restarted.step().next, Next::kStopped) << "still poisoned: stops again";
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.checkpoints WHERE stopped_error IS NOT NULL"), 1);
}

TEST_F(HandlerRunnerTest, UpcastsStoredVersionsBeforeHandling) {
  append("a", {R"({"name":"old"})"}, "Item", 1);
  Upcasters upcasters;
  upcasters.add("Item", 1, [](nlohmann::json data) {
    data["label"] = "upcast-" + data.value("name", "");
    return data;
  });
  HandlerRunner runner(std::make_shared<ItemProjector>(), db_->url(), &upcasters);
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen WHERE label = 'upcast-old'"), 1);
}

TEST_F(HandlerRunnerTest, StartFromCurrentSkipsThePast) {
  append("a", {R"({"label":"past"})"});
  HandlerOptions options;
  options.start_from = StartFrom::current();
  HandlerRunner runner(std::make_shared<ItemProjector>(options), db_->url());
  drain(runner);
  append("a", {R"({"label":"future"})"});
  drain(runner);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM seen WHERE label = 'future'"), 1);
}

TEST_F(HandlerRunnerTest, OneRunnerPerHandlerAndTakeoverWhenItGoes) {
  append("a", {R"({"label":"1"})"});
  auto first = std::make_unique<HandlerRunner>(std::make_shared<ItemProjector>(), db_->url());
  HandlerRunner second(std::make_shared<ItemProjector>(), db_->url());
  EXPECT_EQ(first->step().next, Next::kWait);
  EXPECT_EQ(second.step().next, Next::kStandby);
  EXPECT_EQ(second.status().state, HandlerState::kStandby);
  EXPECT_FALSE(second.reset().ok()) << "reset must run where the handler runs";
  first.reset();  // its connection closes, and with it the lock
  append("a", {R"({"label":"2"})"});
  drain(second);
  EXPECT_EQ(second.status().state, HandlerState::kRunning);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2);
}

// A runner whose connection the server closed lost its handler's lock with it: after it
// reconnects it must not run as if it held the lock (the new session may even get the old
// server process id), but stand by while another runner took over.
TEST_F(HandlerRunnerTest, ARunnerWhoseConnectionClosedStandsByWhileAnotherTookOver) {
  append("a", {R"({"label":"1"})"});
  HandlerRunner first(std::make_shared<ItemProjector>(), db_->url());
  HandlerRunner second(std::make_shared<ItemProjector>(), db_->url());
  drain(first);
  ASSERT_EQ(first.status().state, HandlerState::kRunning);
  EXPECT_EQ(second.step().next, Next::kStandby);
  auto killed = sql_->exec(
      "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_locks"  // waits for it to end
      " WHERE locktype = 'advisory' AND granted AND database ="
      " (SELECT oid FROM pg_database WHERE datname = current_database())");
  ASSERT_TRUE(killed.ok()) << killed.error().to_string();
  ASSERT_EQ(killed->int64(0, 0), 1) << "the first runner holds the only advisory lock";
  for (int attempt = 0; attempt < 50 && second.status().state != HandlerState::kRunning;
       ++attempt) {
    if (second.step().next == Next::kStandby) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_EQ(second.status().state, HandlerState::kRunning) << "the second takes over";
  drain(second);
  bool standing_by = false;
  for (int attempt = 0; attempt < 5 && !standing_by; ++attempt) {
    first.step();  // the first notices the closed connection, then reconnects
    standing_by = first.status().state == HandlerState::kStandby;
  }
  EXPECT_TRUE(standing_by) << "the first runs again without its lock";
  append("a", {R"({"label":"2"})"});
  drain(second);
  EXPECT_EQ(first.step().next, Next::kStandby);
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2) << "each event handled once";
}

TEST_F(HandlerRunnerTest, ResetRebuildsTheSameRows) {
  append("a", {R"({"label":"x"})", R"({"label":"y"})"});
  HandlerRunner runner(std::make_shared<ItemProjector>(), db_->url());
  drain(runner);
  auto before = sql_->exec("SELECT string_agg(event_id || label, ',' ORDER BY event_id) FROM seen");
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(runner.reset().ok());
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 0);
  drain(runner);
  auto after = sql_->exec("SELECT string_agg(event_id || label, ',' ORDER BY event_id) FROM seen");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->text(0, 0), after->text(0, 0));
}

// A projector with a change channel announces each committed batch that projected something, and
// each reset, after the commit; pages with nothing of its types and rolled-back work announce
// nothing.
TEST_F(HandlerRunnerTest, ChangeChannelIsNotifiedAfterEachCommittedBatchAndReset) {
  auto listener = db_->connect();
  ASSERT_TRUE(listener->listen("seen_changed"));
  auto pending = [&](int timeout_ms) -> size_t {
    auto received = listener->wait_notifications(timeout_ms);
    EXPECT_TRUE(received.ok());
    return received ? received->size() : 0;
  };
  HandlerOptions options;
  options.max_attempts = 5;
  options.backoff_base = 10ms;
  HandlerRunner runner(std::make_shared<ItemProjector>(options, "seen_changed"), db_->url());

  append("a", {R"({"label":"a1"})", R"({"label":"a2"})"});
  drain(runner);
  EXPECT_EQ(pending(5000), 1u) << "one notification for the batch";
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 2) << "announced after its commit";

  append("b", {R"({"label":"b1"})"}, "Other");
  drain(runner);
  EXPECT_EQ(pending(300), 0u) << "a page without the projector's types changes nothing";

  append("c", {R"({"poison":true})"});
  EXPECT_EQ(runner.step().next, Next::kRetryAfter);
  EXPECT_EQ(pending(300), 0u) << "a rolled-back batch changes nothing";

  ASSERT_TRUE(runner.reset().ok());
  EXPECT_EQ(pending(5000), 1u) << "a reset empties the read model";
  EXPECT_EQ(count("SELECT count(*) FROM seen"), 0);
}

// Counts deliveries per event id; fails the first delivery of events marked {"flaky": true}.
class CountingHandler : public EventHandler {
 public:
  std::string name() const override { return "counter"; }
  HandlerOptions options() const override {
    HandlerOptions options;
    options.backoff_base = 1ms;
    return options;
  }
  Result<void> handle(const Event& event) override {
    int seen = ++deliveries[event.record.event_id.to_string()];
    if (event.data.value("flaky", false) && seen == 1) {
      return Error::unavailable("the mail server is down");
    }
    return {};
  }
  std::map<std::string, int> deliveries;
};

TEST_F(HandlerRunnerTest, EventHandlerGetsEveryEventAndRetriesAFailure) {
  append("a", {R"({"n":1})", R"({"flaky":true})", R"({"n":3})"});
  auto handler = std::make_shared<CountingHandler>();
  HandlerRunner runner(handler, db_->url());
  EXPECT_EQ(runner.step().next, Next::kRetryAfter);
  drain(runner);
  ASSERT_EQ(handler->deliveries.size(), 3u);
  int total = 0;
  for (const auto& [id, times] : handler->deliveries) total += times;
  EXPECT_EQ(total, 4) << "one retry of the flaky event, nothing else twice";
  // The checkpoint holds: a restarted runner delivers nothing again.
  auto again = std::make_shared<CountingHandler>();
  HandlerRunner restarted(again, db_->url());
  drain(restarted);
  EXPECT_TRUE(again->deliveries.empty());
}

// Starts an instance per "Opened" event (key = data.id), sends one command per event, and stops
// on "Closed".
class EchoProcess : public ProcessManager {
 public:
  std::string name() const override { return "echo"; }
  std::vector<std::string> event_types() const override { return {"Opened", "Poked", "Closed"}; }
  Interest interested(const Event& event) const override {
    std::string id = event.data.value("id", "");
    if (event.type() == "Opened") return Interest::start(id);
    if (event.type() == "Closed") return Interest::stop(id);
    return Interest::continue_with(id);
  }
  std::vector<CommandRequest> handle(const nlohmann::json& state,
                                     const Event& event) const override {
    return {CommandRequest{"Echo",
                           {{"id", event.data.value("id", "")}, {"seen", state.value("seen", 0)}}}};
  }
  nlohmann::json apply(nlohmann::json state, const Event&) const override {
    state["seen"] = state.value("seen", 0) + 1;
    return state;
  }
};

TEST_F(HandlerRunnerTest, ProcessManagerDispatchesWithDerivedIdsAndKeepsState) {
  append("p-1", {R"({"id":"1"})"}, "Opened");
  append("p-1", {R"({"id":"1"})"}, "Poked");
  append("p-2", {R"({"id":"2"})"}, "Poked");  // no instance 2: ignored
  append("p-1", {R"({"id":"1"})"}, "Closed");
  std::vector<DispatchRequest> sent;
  Dispatcher dispatcher = [&](const DispatchRequest& request) -> Result<std::string> {
    sent.push_back(request);
    return std::string(R"({"status":"ok"})");
  };
  auto runner = std::make_unique<HandlerRunner>(std::make_shared<EchoProcess>(), db_->url(),
                                                nullptr, dispatcher);
  drain(*runner);
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].data["seen"], 0);
  EXPECT_EQ(sent[1].data["seen"], 1) << "state from the previous event";
  EXPECT_EQ(sent[2].data["seen"], 2);
  EXPECT_EQ(sent[0].correlation_id, "corr-1");
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.process_instances"), 0) << "stop deletes";

  // Redelivery (checkpoint removed) derives the same command ids: dispatch is idempotent.
  ASSERT_TRUE(sql_->exec("DELETE FROM cqrs.checkpoints"));
  std::vector<DispatchRequest> first = sent;
  sent.clear();
  runner = std::make_unique<HandlerRunner>(std::make_shared<EchoProcess>(), db_->url(), nullptr,
                                           dispatcher);
  drain(*runner);
  ASSERT_EQ(sent.size(), 3u);
  for (size_t idx = 0; idx < sent.size(); ++idx) {
    EXPECT_EQ(sent[idx].command_id, first[idx].command_id);
    EXPECT_EQ(sent[idx].causation_id, first[idx].causation_id);
  }
}

TEST_F(HandlerRunnerTest, ProcessManagerRetriesWhenDispatchFails) {
  append("p-1", {R"({"id":"1"})"}, "Opened");
  int calls = 0;
  Dispatcher flaky = [&](const DispatchRequest&) -> Result<std::string> {
    if (++calls == 1) return Error::unavailable("cqrsd is busy");
    return std::string(R"({"status":"ok"})");
  };
  HandlerRunner runner(std::make_shared<EchoProcess>(), db_->url(), nullptr, flaky);
  EXPECT_EQ(runner.step().next, Next::kRetryAfter);
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.process_instances"), 0);
  drain(runner);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(count("SELECT count(*) FROM cqrs.process_instances"), 1);
}

}  // namespace
}  // namespace cqrs
