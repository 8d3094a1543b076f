// The command side's actors on CAF's deterministic scheduler, with the in-memory store behind a
// cooperative stand-in for the store pool: routing, one command at a time, retries on
// concurrent writes, idle stop and reload, exceptions in domain code, idempotency, snapshots,
// and the gateway's envelope checks (also on inputs found by fuzzing).
#define GTEST_DONT_DEFINE_FAIL 1
#include <gtest/gtest.h>

#define CAF_TEST_NO_MAIN
#include <caf/all.hpp>
#include <caf/test/dsl.hpp>
#include <caf/test/unit_test_impl.hpp>
#include <deque>

#include "actors/gateway.hpp"
#include "actors/router.hpp"
#include "actors/store_pool.hpp"
#include "cqrs/memory_event_store.hpp"
#include "giftcard/giftcard.hpp"

namespace cqrs::actors {
namespace {

using namespace std::chrono_literals;

// A second aggregate whose domain code throws, for execution_failed.
struct ArmBomb {
  std::string bomb_id;
};
CQRS_MESSAGE(ArmBomb, bomb_id)
struct Detonate {
  std::string bomb_id;
};
CQRS_MESSAGE(Detonate, bomb_id)
struct BombArmed {
  std::string bomb_id;
};
CQRS_MESSAGE(BombArmed, bomb_id)
// Internal: only a process manager of the daemon may send it.
struct Disarm {
  std::string bomb_id;
};
CQRS_MESSAGE(Disarm, bomb_id)
struct Bomb {
  bool armed = false;
  Outcome execute(const ArmBomb& command) const { return BombArmed{command.bomb_id}; }
  Outcome execute(const Detonate&) const { throw std::runtime_error("boom"); }
  Outcome execute(const Disarm&) const { return Outcome(); }
  void apply(const BombArmed&) { armed = true; }
};
CQRS_JSON(Bomb, armed)

// What the stand-in pool saw and how it behaves.
struct PoolProbe {
  std::shared_ptr<InMemoryEventStore> store = std::make_shared<InMemoryEventStore>();
  int writes = 0;
  int loads = 0;
  int snapshots = 0;
  bool hold_writes = false;                 // keep write promises until released
  bool always_conflict = false;             // answer every write with wrong_expected_version
  bool lose_write_replies = false;          // store each write, then answer store_unavailable
  std::function<void()> before_next_write;  // runs once before the next write (another writer)
  std::deque<std::pair<WriteRequest, caf::typed_response_promise<WriteResult>>> held;
};

// Lets the oldest held write go through to the store (promises must be delivered from inside
// the actor that made them).
using release_atom = caf::atom_constant<caf::atom("release")>;

caf::behavior fake_pool(caf::event_based_actor* self, std::shared_ptr<PoolProbe> probe) {
  return {
      [probe](release_atom) {
        if (probe->held.empty()) return;
        auto [request, promise] = std::move(probe->held.front());
        probe->held.pop_front();
        promise.deliver(probe->store->write(std::span(&request, 1))[0]);
      },
      [self, probe](write_atom, WriteRequest& request) -> caf::result<WriteResult> {
        ++probe->writes;
        if (probe->before_next_write) {
          auto hook = std::move(probe->before_next_write);
          probe->before_next_write = nullptr;
          hook();
        }
        if (probe->always_conflict) {
          return WriteResult{{}, Error::wrong_expected_version(request.stream_id, "x", 99), {}, {}};
        }
        if (probe->lose_write_replies) {
          (void)probe->store->write(std::span(&request, 1));
          return WriteResult{{}, Error::unavailable("connection lost after the commit"), {}, {}};
        }
        if (probe->hold_writes) {
          auto promise = self->make_response_promise<WriteResult>();
          probe->held.emplace_back(std::move(request), promise);
          return promise;
        }
        return probe->store->write(std::span(&request, 1))[0];
      },
      [probe](load_atom, LoadJob& job) {
        ++probe->loads;
        return probe->store->load_streams(std::span(&job, 1))[0];
      },
      [probe](snapshot_atom, Snapshot& snapshot) {
        ++probe->snapshots;
        (void)probe->store->save_snapshot(snapshot);
      },
  };
}

struct Config : caf::actor_system_config {};

class ActorTest : public ::testing::Test, public test_coordinator_fixture<Config> {
 protected:
  void start(AggregateConfig aggregate_config = {}, GatewayConfig gateway_config = {}) {
    giftcard::register_domain(domain_);
    domain_.aggregate<Bomb>("Bomb", "bomb", "bomb_id")
        .handles<ArmBomb, Detonate, Disarm>()
        .creates<ArmBomb, Detonate>()
        .internal<Disarm>()
        .applies<BombArmed>();
    pool_ = sys.spawn(fake_pool, probe_);
    router_ = spawn_router(sys, pool_, aggregate_config);
    gateway_ = spawn_gateway(sys, domain_, router_, gateway_config, {});
    sched.run();
  }

  void TearDown() override {
    for (auto& actor : {gateway_, router_, pool_}) {
      if (actor) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
    sched.run();
  }

  // Sends a request and runs the scheduler (messages only) until the reply is in.
  template <class... Ts>
  std::string ask(const caf::actor& dest, Ts&&... xs) {
    auto handle = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    std::string out;
    handle.receive([&](std::string& reply) { out = std::move(reply); },
                   [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
    return out;
  }

  nlohmann::json dispatch(std::string_view type, nlohmann::json data,
                          std::optional<std::string> command_id = std::nullopt) {
    nlohmann::json envelope = {{"type", type}, {"data", std::move(data)}};
    if (command_id) envelope["command_id"] = *command_id;
    return nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope.dump()));
  }

  uint64_t live_aggregates() {
    auto handle = self->request(router_, caf::infinite, status_atom::value);
    sched.run();
    uint64_t live = 0;
    handle.receive([&](uint64_t count) { live = count; },
                   [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
    return live;
  }

  // Another process issued the card: its event is in the store, no actor here has seen it.
  void issue_elsewhere(const std::string& card_id, int64_t amount) {
    EventData issued;
    issued.type = "GiftCardIssued";
    issued.data = nlohmann::json{{"card_id", card_id}, {"amount", amount}}.dump();
    ASSERT_TRUE(
        probe_->store
            ->append("giftcard-" + card_id, ExpectedVersion::no_stream(), std::span(&issued, 1))
            .ok());
  }

  std::vector<RecordedEvent> stream(std::string_view id) {
    return *probe_->store->read_stream(id, 1, 1000, Direction::kForward);
  }

  Domain domain_;
  std::shared_ptr<PoolProbe> probe_ = std::make_shared<PoolProbe>();
  caf::actor pool_;
  caf::actor router_;
  caf::actor gateway_;
};

TEST_F(ActorTest, RoutesEachStreamToItsOwnActor) {
  start();
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "a"}, {"amount", 10}})["status"], "ok");
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "b"}, {"amount", 10}})["status"], "ok");
  EXPECT_EQ(dispatch("RedeemGiftCard", {{"card_id", "a"}, {"amount", 1}})["version"], 2);
  EXPECT_EQ(live_aggregates(), 2u);
  EXPECT_EQ(probe_->loads, 0) << "IssueGiftCard creates its aggregate: a new stream is not read";
}

// Another process issued the card: the creating command, decided against the empty state,
// fails its append (the stream exists), and the aggregate loads the stream and decides again.
TEST_F(ActorTest, CreatingCommandOnAnExistingStreamLoadsItAndDecidesAgain) {
  start();
  issue_elsewhere("c1", 100);
  auto reply = dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 50}});
  EXPECT_EQ(reply["error"], "gift_card_exists") << reply;
  EXPECT_EQ(probe_->loads, 1);
  EXPECT_EQ(stream("giftcard-c1").size(), 1u);
  auto redeemed = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}});
  EXPECT_EQ(redeemed["version"], 2) << redeemed;
  EXPECT_EQ(redeemed["events"][0]["data"]["remaining"], 70) << "the loaded state is the stream's";
}

// A rejection against the assumed empty state may not be the stream's answer (here an existing
// card takes precedence over a bad amount): it is decided again against the stream before it is
// recorded, and a retry of the command id gets that same answer.
TEST_F(ActorTest, CreatingCommandRejectedWithoutLoadingIsDecidedAgainstTheStream) {
  start();
  issue_elsewhere("c1", 100);
  std::string id = Uuid::random().to_string();
  auto reply = dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 0}}, id);
  EXPECT_EQ(reply["error"], "gift_card_exists") << reply;
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 0}}, id), reply);
  // On a new stream the same command is rejected for its amount, after one load.
  auto fresh = dispatch("IssueGiftCard", {{"card_id", "c2"}, {"amount", 0}});
  EXPECT_EQ(fresh["error"], "invalid_amount") << fresh;
  EXPECT_EQ(probe_->loads, 2);
}

// A creating command retried with its command id after its aggregate went idle is answered
// from the recorded outcome, not decided again.
TEST_F(ActorTest, CreatingCommandRetriedAfterIdleGetsTheFirstOutcome) {
  AggregateConfig config;
  config.idle_timeout = 1s;
  start(config);
  std::string id = Uuid::random().to_string();
  auto first = dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}}, id);
  ASSERT_EQ(first["status"], "ok") << first;
  sched.advance_time(1100ms);
  sched.run();
  ASSERT_EQ(live_aggregates(), 0u);
  auto second = dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}}, id);
  EXPECT_EQ(second, first);
  EXPECT_EQ(stream("giftcard-c1").size(), 1u);
  auto redeemed = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}});
  EXPECT_EQ(redeemed["version"], 2) << "the state was loaded after the recorded answer";
}

TEST_F(ActorTest, DecidesOneCommandAtATimeInArrivalOrder) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->hold_writes = true;
  using Handle =
      decltype(self->request(gateway_, caf::infinite, dispatch_atom::value, std::string()));
  std::vector<Handle> pending;
  std::vector<std::string> replies(3);
  for (int idx = 0; idx < 3; ++idx) {
    nlohmann::json envelope = {{"type", "RedeemGiftCard"},
                               {"data", {{"card_id", "c1"}, {"amount", idx + 1}}}};
    auto handle = self->request(gateway_, caf::infinite, dispatch_atom::value, envelope.dump());
    sched.run();
    // The aggregate waits for its one append before it looks at the next command.
    ASSERT_EQ(probe_->held.size(), 1u) << "a second append started before the first finished";
    pending.push_back(handle);
  }
  int64_t expected_version = 1;
  while (!probe_->held.empty()) {
    EXPECT_EQ(probe_->held.front().first.expected.version(), expected_version++);
    self->send(pool_, release_atom::value);
    sched.run();
    EXPECT_LE(probe_->held.size(), 1u);
  }
  std::vector<int64_t> versions;
  for (auto& handle : pending) {
    handle.receive(
        [&](std::string& reply) { versions.push_back(nlohmann::json::parse(reply)["version"]); },
        [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  }
  EXPECT_EQ(versions, (std::vector<int64_t>{2, 3, 4}));
  auto stored = stream("giftcard-c1");
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_NE(stored[1].data.find("\"amount\":1"), std::string::npos) << stored[1].data;
  EXPECT_NE(stored[3].data.find("\"amount\":3"), std::string::npos) << stored[3].data;
}

TEST_F(ActorTest, ReloadsAndDecidesAgainAfterAnotherWriterAppended) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->before_next_write = [this] {
    // Another cqrsd redeemed 60 in the meantime.
    EventData other;
    other.type = "GiftCardRedeemed";
    other.data = R"({"card_id":"c1","amount":60,"remaining":40})";
    ASSERT_TRUE(
        probe_->store->append("giftcard-c1", ExpectedVersion::exact(1), std::span(&other, 1)).ok());
  };
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 50}});
  EXPECT_EQ(reply["status"], "rejected") << reply;
  EXPECT_EQ(reply["error"], "insufficient_balance") << "decided against the stale state";
  auto second = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 40}});
  EXPECT_EQ(second["status"], "ok") << second;
  EXPECT_EQ(second["version"], 4) << "redeemed and emptied on top of the other writer's event";
  EXPECT_EQ(probe_->loads, 1) << "no load to issue the card, one reload after the conflict";
}

// A rejection records the command's outcome without events: decided against a state another
// writer has moved on from, it must not be recorded (it might be wrong), and the aggregate
// must not take the stream's version without its events.
TEST_F(ActorTest, ARejectionDecidedAgainstAStaleStateIsDecidedAgainstTheStream) {
  start();
  // The card does not exist when the actor loads the stream; another process issues it before
  // the rejection is written.
  probe_->before_next_write = [this] { issue_elsewhere("c1", 100); };
  std::string id = Uuid::random().to_string();
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}}, id);
  EXPECT_EQ(reply["status"], "ok") << reply;
  EXPECT_EQ(reply["version"], 2) << reply;
  ASSERT_EQ(stream("giftcard-c1").size(), 2u);
  auto again = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}}, id);
  EXPECT_EQ(again["status"], "ok") << "the stale rejection was recorded for the command id";
  auto state = nlohmann::json::parse(
      ask(gateway_, state_atom::value, std::string("giftcard"), std::string("c1")));
  EXPECT_EQ(state["version"], 2);
  EXPECT_EQ(state["state"]["remaining"], 70);
}

// A write whose reply was lost may have committed: the aggregate answers store_unavailable,
// says how to find out, and loads the stream for the next command instead of trusting its state.
TEST_F(ActorTest, AWriteWithAnUnknownOutcomeMakesTheNextCommandLoadTheStream) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->lose_write_replies = true;
  std::string id = Uuid::random().to_string();
  auto lost = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}}, id);
  probe_->lose_write_replies = false;
  EXPECT_EQ(lost["error"], "store_unavailable") << lost;
  EXPECT_NE(lost["message"].get<std::string>().find("same command_id"), std::string::npos) << lost;
  ASSERT_EQ(stream("giftcard-c1").size(), 2u) << "the redemption was stored";
  auto state = nlohmann::json::parse(
      ask(gateway_, state_atom::value, std::string("giftcard"), std::string("c1")));
  EXPECT_EQ(state["version"], 2) << state;
  EXPECT_EQ(state["state"]["remaining"], 70) << state;
  auto retried = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}}, id);
  EXPECT_EQ(retried["status"], "ok") << "the retry gets the stored outcome";
  EXPECT_EQ(stream("giftcard-c1").size(), 2u) << "the retry appended again";
}

TEST_F(ActorTest, GivesUpAfterTheConfiguredAttempts) {
  AggregateConfig config;
  config.retry_attempts = 3;
  start(config);
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->always_conflict = true;
  int writes_before = probe_->writes;
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 1}});
  EXPECT_EQ(reply["status"], "error");
  EXPECT_EQ(reply["error"], "too_many_attempts") << reply;
  EXPECT_EQ(probe_->writes - writes_before, 4) << "the first try plus three retries";
  probe_->always_conflict = false;
  EXPECT_EQ(dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 1}})["status"], "ok");
}

TEST_F(ActorTest, IdleAggregateStopsAndReloadsOnTheNextCommand) {
  AggregateConfig config;
  config.idle_timeout = 1s;
  start(config);
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  EXPECT_EQ(live_aggregates(), 1u);
  sched.advance_time(500ms);
  sched.run();
  EXPECT_EQ(live_aggregates(), 1u) << "stopped before its idle timeout";
  sched.advance_time(600ms);
  sched.run();
  EXPECT_EQ(live_aggregates(), 0u) << "the idle aggregate was not stopped";
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}});
  EXPECT_EQ(reply["version"], 2) << reply;
  EXPECT_EQ(reply["events"][0]["data"]["remaining"], 70);
  EXPECT_EQ(probe_->loads, 1) << "the issue loaded nothing; the redeem after the stop loads";
}

TEST_F(ActorTest, AggregateWithoutIdleTimeoutStaysLive) {
  AggregateConfig config;
  config.idle_timeout = 0ms;
  start(config);
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  sched.trigger_timeouts();
  sched.run();
  EXPECT_EQ(live_aggregates(), 1u);
}

TEST_F(ActorTest, ExceptionFailsThatCommandOnlyAndPersistsNothing) {
  start();
  EXPECT_EQ(dispatch("ArmBomb", {{"bomb_id", "b1"}})["status"], "ok");
  auto failed = dispatch("Detonate", {{"bomb_id", "b1"}});
  EXPECT_EQ(failed["status"], "error");
  EXPECT_EQ(failed["error"], "execution_failed");
  EXPECT_NE(failed["message"].get<std::string>().find("boom"), std::string::npos);
  EXPECT_EQ(stream("bomb-b1").size(), 1u);
  EXPECT_EQ(dispatch("ArmBomb", {{"bomb_id", "b1"}})["version"], 2)
      << "the state was rebuilt from the store after the exception";
}

// An exception from domain code while the aggregate only assumed a new stream is not the
// answer yet: the stream is loaded and the command decided again (here it throws again).
TEST_F(ActorTest, ExceptionAgainstAnAssumedNewStreamIsDecidedAgainAfterLoading) {
  start();
  auto failed = dispatch("Detonate", {{"bomb_id", "b9"}});
  EXPECT_EQ(failed["error"], "execution_failed") << failed;
  EXPECT_EQ(probe_->loads, 1) << "answered before the stream was read";
  EXPECT_EQ(probe_->writes, 0);
}

TEST_F(ActorTest, RepeatedCommandIdGetsTheFirstOutcomeAndAppendsNothing) {
  start();
  std::string id = Uuid::random().to_string();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  auto first = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 10}}, id);
  auto second = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 10}}, id);
  EXPECT_EQ(first["status"], "ok");
  EXPECT_EQ(first, second);
  EXPECT_EQ(stream("giftcard-c1").size(), 2u);
}

TEST_F(ActorTest, RepeatedRejectedCommandIdGetsTheSameRejection) {
  start();
  std::string id = Uuid::random().to_string();
  auto first = dispatch("RedeemGiftCard", {{"card_id", "ghost"}, {"amount", 10}}, id);
  dispatch("IssueGiftCard", {{"card_id", "ghost"}, {"amount", 100}});
  auto second = dispatch("RedeemGiftCard", {{"card_id", "ghost"}, {"amount", 10}}, id);
  EXPECT_EQ(first["error"], "gift_card_not_found");
  EXPECT_EQ(first, second) << "a retried command must not change its outcome";
  EXPECT_EQ(stream("giftcard-ghost").size(), 1u);
}

TEST_F(ActorTest, EventsCarryCommandCorrelationAndCausationIds) {
  start();
  nlohmann::json envelope = {{"type", "IssueGiftCard"},
                             {"data", {{"card_id", "c1"}, {"amount", 5}}},
                             {"correlation_id", "flow-7"},
                             {"metadata", {{"user", "ada"}}}};
  auto reply = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope.dump()));
  auto stored = stream("giftcard-c1");
  ASSERT_EQ(stored.size(), 1u);
  auto metadata = nlohmann::json::parse(stored[0].metadata);
  EXPECT_EQ(metadata["command_id"], reply["command_id"]);
  EXPECT_EQ(metadata["causation_id"], reply["command_id"]);
  EXPECT_EQ(metadata["correlation_id"], "flow-7");
  EXPECT_EQ(metadata["user"], "ada");
}

TEST_F(ActorTest, LoadsStoredOldVersionsThroughTheUpcasters) {
  // Version 1 of GiftCardIssued called the amount "value".
  Upcasters upcasters;
  upcasters.add("GiftCardIssued", 1, [](nlohmann::json data) {
    data["amount"] = data["value"];
    data.erase("value");
    return data;
  });
  EventData old_event;
  old_event.event_id = Uuid::random();
  old_event.type = "GiftCardIssued";
  old_event.type_version = 1;
  old_event.data = R"({"card_id":"c1","value":80})";
  old_event.metadata = "{}";
  ASSERT_TRUE(
      probe_->store->append("giftcard-c1", ExpectedVersion::no_stream(), std::span(&old_event, 1))
          .ok());
  AggregateConfig config;
  config.upcasters = &upcasters;
  start(config);
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 30}});
  ASSERT_EQ(reply["status"], "ok") << reply;
  EXPECT_EQ(reply["events"][0]["data"]["remaining"], 50) << "the upcast amount was not applied";
}

TEST_F(ActorTest, SnapshotsEveryNEventsAndLoadsFromTheSnapshot) {
  AggregateConfig config;
  config.snapshot_every = 2;
  config.idle_timeout = 1s;
  start(config);
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  for (int idx = 0; idx < 4; ++idx) dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 1}});
  EXPECT_EQ(probe_->snapshots, 2);
  auto snapshot = probe_->store->load_snapshot("giftcard-c1");
  ASSERT_TRUE(snapshot.ok() && snapshot->has_value());
  EXPECT_EQ((*snapshot)->stream_version, 4);
  sched.advance_time(2s);
  sched.run();
  ASSERT_EQ(live_aggregates(), 0u);
  auto reply = dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 1}});
  EXPECT_EQ(reply["version"], 6) << reply;
  EXPECT_EQ(reply["events"][0]["data"]["remaining"], 95);
}

TEST_F(ActorTest, StateQueryAnswersVersionAndState) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  auto by_prefix = nlohmann::json::parse(
      ask(gateway_, state_atom::value, std::string("giftcard"), std::string("c1")));
  EXPECT_EQ(by_prefix["version"], 1);
  EXPECT_EQ(by_prefix["state"]["remaining"], 100);
  auto by_name = nlohmann::json::parse(
      ask(gateway_, state_atom::value, std::string("GiftCard"), std::string("c1")));
  EXPECT_EQ(by_name, by_prefix);
  auto unknown = nlohmann::json::parse(
      ask(gateway_, state_atom::value, std::string("Pony"), std::string("c1")));
  EXPECT_EQ(unknown["error"], "unknown_aggregate");
}

TEST_F(ActorTest, GatewayRejectsMalformedEnvelopesWithoutRoutingThem) {
  GatewayConfig gateway_config;
  gateway_config.max_command_bytes = 1000;
  start({}, gateway_config);
  auto reply = [&](const std::string& text) {
    return nlohmann::json::parse(ask(gateway_, dispatch_atom::value, text));
  };
  EXPECT_EQ(reply("not json")["error"], "invalid_command");
  EXPECT_EQ(reply(R"({"data":{}})")["error"], "invalid_command");
  EXPECT_EQ(reply(R"({"type":"Pony","data":{}})")["error"], "unregistered_command");
  EXPECT_EQ(reply(R"({"type":"IssueGiftCard","payload":"{oops"})")["error"], "invalid_command");
  auto missing = reply(R"({"type":"IssueGiftCard","data":{"card_id":"c1"}})");
  EXPECT_NE(missing["message"].get<std::string>().find("amount"), std::string::npos);
  EXPECT_EQ(reply(R"({"type":"IssueGiftCard","data":{"card_id":"c1","amount":1},)"
                  R"("command_id":"nope"})")["error"],
            "invalid_command");
  std::string big =
      nlohmann::json{{"type", "IssueGiftCard"},
                     {"payload", R"({"card_id":")" + std::string(2000, 'x') + R"(","amount":1})"}}
          .dump();
  EXPECT_EQ(reply(big)["error"], "command_too_large");
  EXPECT_EQ(live_aggregates(), 0u) << "a malformed command reached an aggregate";
}

// Inputs the fuzz targets led to (fuzz/regressions/): each once escaped decoding as an exception
// or overflowed the stack. The gateway answers them and keeps serving.
TEST_F(ActorTest, GatewayAnswersInputsFoundByFuzzingAndKeepsServing) {
  start();
  auto reply = [&](const std::string& text) {
    return nlohmann::json::parse(ask(gateway_, dispatch_atom::value, text));
  };
  std::string huge =
      R"({"type":"IssueGiftCard","payload":"{\"card_id\":\"c1\",\"amount\":1e999}"})";
  EXPECT_EQ(reply(huge)["error"], "invalid_command");
  std::string deep = R"({"type":"CancelGiftCard","data":{"card_id":"c1"},"metadata":{"a":)" +
                     std::string(100000, '[') + std::string(100000, ']') + "}}";
  EXPECT_EQ(reply(deep)["error"], "invalid_command");
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 10}})["status"], "ok");
}

// Admin requests come from any client: a field of the wrong type gets invalid_argument, and the
// gateway goes on serving (it used to die on a handler name that was not a string).
TEST_F(ActorTest, GatewayAnswersAdminFieldsOfTheWrongTypeAndKeepsServing) {
  start();
  auto admin = [&](const std::string& text) {
    return nlohmann::json::parse(ask(gateway_, admin_atom::value, text));
  };
  for (const char* text :
       {R"({"op":"reset","handler":5})", R"({"op":"restart","handler":["x"]})",
        R"({"op":"dead_letters","handler":{}})", R"({"op":"dead_letters","limit":"x"})",
        R"({"op":"dead_letters","limit":0})", R"({"op":"dead_letters","limit":10001})",
        R"({"op":"dead_letters","limit":1.5})"}) {
    auto reply = admin(text);
    EXPECT_EQ(reply["status"], "error") << text << " -> " << reply;
    EXPECT_EQ(reply["error"], "invalid_argument") << text << " -> " << reply;
  }
  EXPECT_EQ(admin(R"({"op":"dead_letters","limit":10})")["status"], "ok");
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 10}})["status"], "ok");
}

// A handler that does not answer a listing of every handler's dead letters is named in the
// reply: an empty list must not read as "none" when a handler could not say.
TEST_F(ActorTest, DeadLettersOfEveryHandlerNameTheHandlersThatDidNotAnswer) {
  start();
  auto answering = sys.spawn([]() -> caf::behavior {
    return {[](admin_atom, const std::string&) {
      return std::string(R"({"status":"ok","dead_letters":[{"id":1}]})");
    }};
  });
  auto failing = sys.spawn([]() -> caf::behavior {
    return {[](admin_atom, const std::string&) {
      return std::string(R"({"status":"error","error":"store_unavailable","message":"down"})");
    }};
  });
  std::vector<HandlerRef> handlers(2);
  handlers[0].name = "answers";
  handlers[0].actor = answering;
  handlers[1].name = "fails";
  handlers[1].actor = failing;
  self->send(gateway_, handlers_atom::value, std::move(handlers));
  sched.run();
  auto reply = nlohmann::json::parse(ask(gateway_, admin_atom::value, R"({"op":"dead_letters"})"));
  EXPECT_EQ(reply["dead_letters"], nlohmann::json::parse(R"([{"id":1}])")) << reply;
  ASSERT_TRUE(reply.contains("unanswered")) << reply;
  ASSERT_EQ(reply["unanswered"].size(), 1u) << reply;
  EXPECT_EQ(reply["unanswered"][0]["handler"], "fails") << reply;
  EXPECT_NE(reply["unanswered"][0]["error"].get<std::string>().find("down"), std::string::npos);
  for (auto& actor : {answering, failing}) caf::anon_send_exit(actor, caf::exit_reason::kill);
  sched.run();
}

// Internal commands (the steps of a process) come only with the gateway's token, which the
// daemon gives its process managers; a client's are refused before they reach the aggregate.
TEST_F(ActorTest, InternalCommandsNeedTheProcessManagersToken) {
  GatewayConfig gateway_config;
  gateway_config.internal_token = "secret-token";
  start({}, gateway_config);
  dispatch("ArmBomb", {{"bomb_id", "b1"}});
  const std::string envelope = R"({"type":"Disarm","data":{"bomb_id":"b1"}})";
  auto as_client = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope));
  EXPECT_EQ(as_client["error"], "internal_command") << as_client;
  EXPECT_NE(as_client["message"].get<std::string>().find("Disarm"), std::string::npos);
  auto guessed =
      nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope, std::string("guessed")));
  EXPECT_EQ(guessed["error"], "internal_command") << guessed;
  auto from_process = nlohmann::json::parse(
      ask(gateway_, dispatch_atom::value, envelope, std::string("secret-token")));
  EXPECT_EQ(from_process["status"], "ok") << from_process;
  // Other commands need no token, with or without one.
  EXPECT_EQ(dispatch("ArmBomb", {{"bomb_id", "b2"}})["status"], "ok");
}

TEST_F(ActorTest, WithoutATokenNoInternalCommandIsAccepted) {
  start();
  const std::string envelope = R"({"type":"Disarm","data":{"bomb_id":"b1"}})";
  auto empty = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope, std::string()));
  EXPECT_EQ(empty["error"], "internal_command") << empty;
}

TEST_F(ActorTest, GatewayAnswersTimeoutWhenTheAggregateIsSlow) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->hold_writes = true;
  nlohmann::json envelope = {
      {"type", "RedeemGiftCard"}, {"data", {{"card_id", "c1"}, {"amount", 1}}}, {"timeout_ms", 50}};
  auto handle = self->request(gateway_, caf::infinite, dispatch_atom::value, envelope.dump());
  sched.run();
  sched.advance_time(100ms);
  sched.run();
  std::string text;
  handle.receive([&](std::string& reply) { text = reply; },
                 [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  auto reply = nlohmann::json::parse(text);
  EXPECT_EQ(reply["error"], "timeout") << reply;
  // The held append still completes afterwards: a timeout is not a rollback.
  self->send(pool_, release_atom::value);
  sched.run();
  EXPECT_EQ(stream("giftcard-c1").size(), 2u);
}

// A command answered `timeout` stays queued at its aggregate: it keeps its in-flight slot until
// the aggregate is done with it, so limits.max_in_flight bounds the queued work under a flood of
// short timeouts (it used to free the slot at once, and the queues grew without bound). An
// answer that never comes frees the slot after a grace of 60 s.
TEST_F(ActorTest, TimedOutCommandsHoldTheirSlotUntilTheirAggregateIsDone) {
  GatewayConfig gateway_config;
  gateway_config.max_in_flight = 2;
  start({}, gateway_config);
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  dispatch("IssueGiftCard", {{"card_id", "c2"}, {"amount", 100}});
  probe_->hold_writes = true;
  auto redeem = [](const char* card) {
    return nlohmann::json{{"type", "RedeemGiftCard"},
                          {"data", {{"card_id", card}, {"amount", 1}}},
                          {"timeout_ms", 50}}
        .dump();
  };
  auto first = self->request(gateway_, caf::infinite, dispatch_atom::value, redeem("c1"));
  auto second = self->request(gateway_, caf::infinite, dispatch_atom::value, redeem("c2"));
  sched.run();
  sched.advance_time(100ms);
  sched.run();
  for (auto* handle : {&first, &second}) {
    handle->receive(
        [](std::string& reply) {
          EXPECT_NE(reply.find("\"timeout\""), std::string::npos) << reply;
        },
        [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  }
  auto refused = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, redeem("c1")));
  EXPECT_EQ(refused["error"], "overloaded") << "the timed-out commands' work is still queued";

  self->send(pool_, release_atom::value);
  sched.run();
  self->send(pool_, release_atom::value);
  sched.run();
  probe_->hold_writes = false;
  EXPECT_EQ(dispatch("RedeemGiftCard", {{"card_id", "c1"}, {"amount", 1}})["status"], "ok")
      << "the slots came back once the aggregates answered";

  // An aggregate that never answers: the slot comes back after the grace.
  probe_->hold_writes = true;
  auto never = self->request(gateway_, caf::infinite, dispatch_atom::value, redeem("c2"));
  sched.run();
  sched.advance_time(100ms);
  sched.run();
  never.receive(
      [](std::string& reply) { EXPECT_NE(reply.find("\"timeout\""), std::string::npos) << reply; },
      [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  auto other = self->request(gateway_, caf::infinite, dispatch_atom::value,
                             R"({"type":"RedeemGiftCard","data":{"card_id":"c1","amount":1}})");
  sched.run();
  probe_->hold_writes = false;
  auto both_held = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, redeem("c3")));
  EXPECT_EQ(both_held["error"], "overloaded") << both_held;
  sched.advance_time(61s);
  sched.run();
  EXPECT_EQ(dispatch("IssueGiftCard", {{"card_id", "c4"}, {"amount", 1}})["status"], "ok")
      << "the grace did not free the slot of the command that was never answered";
  other.receive([](std::string&) {}, [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
}

TEST_F(ActorTest, DrainWaitsForInFlightCommandsAndRefusesNewOnes) {
  start();
  dispatch("IssueGiftCard", {{"card_id", "c1"}, {"amount", 100}});
  probe_->hold_writes = true;
  nlohmann::json envelope = {{"type", "RedeemGiftCard"},
                             {"data", {{"card_id", "c1"}, {"amount", 1}}}};
  auto in_flight = self->request(gateway_, caf::infinite, dispatch_atom::value, envelope.dump());
  sched.run();
  auto drained = self->request(gateway_, caf::infinite, drain_atom::value);
  sched.run();
  auto refused = nlohmann::json::parse(ask(gateway_, dispatch_atom::value, envelope.dump()));
  EXPECT_EQ(refused["error"], "shutting_down");
  self->send(pool_, release_atom::value);
  sched.run();
  bool done = false;
  drained.receive([&](bool value) { done = value; },
                  [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  EXPECT_TRUE(done);
  in_flight.receive([](std::string& reply) { EXPECT_NE(reply.find("\"ok\""), std::string::npos); },
                    [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
}

}  // namespace
}  // namespace cqrs::actors
