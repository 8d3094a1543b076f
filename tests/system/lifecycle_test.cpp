// Daemon lifecycle through real processes: aggregates that go idle reload from the store, SIGTERM
// drains in-flight commands and exits 0, and kill -9 under load loses no acknowledged command.
// Load comes from client threads that each run cqrsctl in a loop and record every outcome.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int64_t kLoadCardValue = 1'000'000;
constexpr int kRedeemsPerCard = 25;
// Per-command client timeout under load: bounds how long a client waits on a daemon that died.
constexpr const char* kLoadTimeoutMs = "2000";

// One command a load client sent, and what came back.
struct Outcome {
  std::string command_id;
  std::string type;
  json payload;
  int exit_code = -1;
  json reply;

  bool ok() const {
    return exit_code == 0 && reply.is_object() && reply.value("status", "") == "ok";
  }
  // Neither answered ok nor rejected: the command may or may not have been stored.
  bool unknown() const { return exit_code != 0 && exit_code != 1; }
};

// `clients` threads, each issuing its own cards and redeeming from them with cqrsctl, until
// stop(). Each thread starts its processes itself; nothing is shared but the outcome log.
class LoadGenerator {
 public:
  LoadGenerator(uint16_t port, int clients, std::string prefix)
      : port_(port), prefix_(std::move(prefix)) {
    for (int idx = 0; idx < clients; ++idx) {
      threads_.emplace_back([this, idx] { run_client(idx); });
    }
  }
  ~LoadGenerator() { stop(); }

  void stop() {
    stopping_ = true;
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  int ok_count() const { return ok_count_.load(); }
  // Stops the clients first when they are still running.
  std::vector<Outcome> outcomes() {
    stop();
    return outcomes_;
  }

 private:
  void run_client(int index) {
    std::string card;
    int card_number = 0;
    int redeemed = 0;
    int64_t step = 0;
    while (!stopping_) {
      Outcome outcome;
      outcome.command_id = new_command_id();
      bool issuing = card.empty() || redeemed >= kRedeemsPerCard;
      if (issuing) {
        card = prefix_ + "-" + std::to_string(index) + "-" + std::to_string(card_number++);
        redeemed = 0;
        outcome.type = "IssueGiftCard";
        outcome.payload = {{"card_id", card}, {"amount", kLoadCardValue}};
      } else {
        outcome.type = "RedeemGiftCard";
        outcome.payload = {{"card_id", card}, {"amount", 1 + (step++ % 7)}};
        ++redeemed;
      }
      CtlReply reply =
          dispatch(port_, outcome.type, outcome.payload,
                   {"--command-id", outcome.command_id, "--timeout-ms", kLoadTimeoutMs});
      outcome.exit_code = reply.exit_code();
      outcome.reply = reply.json;
      if (outcome.ok()) ++ok_count_;
      if (issuing && !outcome.ok()) card.clear();  // start over with a fresh card
      std::lock_guard lock(mutex_);
      outcomes_.push_back(std::move(outcome));
    }
  }

  uint16_t port_;
  std::string prefix_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> ok_count_{0};
  std::mutex mutex_;
  std::vector<Outcome> outcomes_;
  std::vector<std::thread> threads_;
};

class LifecycleTest : public SystemTest {
 protected:
  // Every command answered ok is stored: its events carry its command id, their number and types
  // match the reply, and the last one has the reply's version.
  void expect_acknowledged_commands_stored(const std::vector<Outcome>& outcomes,
                                           const std::vector<StoredEvent>& stored) {
    int checked = 0;
    for (const auto& outcome : outcomes) {
      if (!outcome.ok()) continue;
      ++checked;
      auto mine = events_of_command(stored, outcome.command_id);
      const json& announced = outcome.reply["events"];
      ASSERT_EQ(mine.size(), announced.size())
          << outcome.type << " " << outcome.payload << " answered ok but its events are not "
          << "stored as announced: " << outcome.reply;
      for (size_t idx = 0; idx < mine.size(); ++idx) {
        EXPECT_EQ(mine[idx].type, announced[idx]["type"]);
        EXPECT_EQ(mine[idx].data, announced[idx]["data"]);
        EXPECT_EQ(mine[idx].stream_id, outcome.reply["stream_id"]);
      }
      EXPECT_EQ(mine.back().version, outcome.reply["version"]) << outcome.reply;
    }
    EXPECT_GT(checked, 0);
  }

  // `cqrsctl state` of every card equals the fold of its stored events.
  void expect_states_match_the_store(uint16_t port, const std::vector<StoredEvent>& stored) {
    for (const auto& [stream_id, stream] : by_stream(stored)) {
      std::string card_id = stream.front().data.value("card_id", "");
      GiftCardFold fold = fold_gift_card(stream);
      EXPECT_TRUE(fold.problems.empty())
          << stream_id << ": " << ::testing::PrintToString(fold.problems);
      CtlReply state = query_state(port, "giftcard", card_id);
      EXPECT_EQ(state.json, fold.state_reply) << stream_id << ": " << state.describe();
    }
  }
};

TEST_F(LifecycleTest, IdleAggregateStopsAndReloadsItsStateFromTheStore) {
  auto daemon = start_daemon({"--aggregates.idle_timeout=200ms"});
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  ASSERT_EQ(dispatch(port, "IssueGiftCard", {{"card_id", "idle"}, {"amount", 100}}).status(), "ok");
  CtlReply first = dispatch(port, "RedeemGiftCard", {{"card_id", "idle"}, {"amount", 10}});
  ASSERT_EQ(first.json.value("version", int64_t{0}), 2) << first.describe();

  // Nothing outside shows when the actor stops, so wait well past the idle timeout.
  std::this_thread::sleep_for(1s);
  // Append behind the daemon's back: only a reloaded aggregate can know about this event.
  std::string appended = scalar(
      "SELECT status || ':' || stream_version FROM cqrs.append_to_stream('giftcard-idle', 2, "
      "ARRAY[gen_random_uuid()], ARRAY['GiftCardRedeemed'], ARRAY[1], "
      "ARRAY['{\"card_id\":\"idle\",\"amount\":5,\"remaining\":85}'::jsonb], "
      "ARRAY['{}'::jsonb])");
  ASSERT_EQ(appended, "ok:3");

  CtlReply state = query_state(port, "giftcard", "idle");
  EXPECT_EQ(state.json.value("version", int64_t{0}), 3)
      << "the idle actor should have stopped, and its successor loaded version 3: "
      << state.describe();
  CtlReply after = dispatch(port, "RedeemGiftCard", {{"card_id", "idle"}, {"amount", 20}});
  EXPECT_EQ(after.status(), "ok") << after.describe();
  EXPECT_EQ(after.json.value("version", int64_t{0}), 4) << after.describe();
  EXPECT_EQ(after.json["events"][0]["data"].value("remaining", int64_t{-1}), 65)
      << after.describe();

  // And once more after another idle period, now without outside help.
  std::this_thread::sleep_for(1s);
  CtlReply again = dispatch(port, "RedeemGiftCard", {{"card_id", "idle"}, {"amount", 65}});
  EXPECT_EQ(again.status(), "ok") << again.describe();
  EXPECT_EQ(again.json.value("version", int64_t{0}), 6) << "redeemed and emptied";
  auto stream = events("giftcard-idle");
  EXPECT_TRUE(versions_are_contiguous(stream));
  EXPECT_EQ(stream.size(), 6u);
  EXPECT_EQ(query_state(port, "GiftCard", "idle").json, fold_gift_card(stream).state_reply);
  daemon->stop();
}

TEST_F(LifecycleTest, SigtermWithCommandsInFlightExitsZeroAndKeepsEveryAcknowledgedCommand) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  ASSERT_EQ(
      dispatch(port, "IssueGiftCard", {{"card_id", "bulk"}, {"amount", kLoadCardValue}}).status(),
      "ok");

  // One batch sends all its commands at once (window = size), so when SIGTERM arrives most of
  // them are accepted and queued at the card's aggregate: the drain has to wait for them. With
  // everything already sent, cqrsctl has nothing left to send once cqrsd is gone.
  constexpr int kBatch = 600;
  std::vector<std::string> lines;
  for (int idx = 0; idx < kBatch; ++idx) {
    lines.push_back(
        envelope_line("RedeemGiftCard", {{"card_id", "bulk"}, {"amount", 1}}, new_command_id()));
  }
  BatchReply batch;
  std::thread batch_client([&] {
    batch = dispatch_batch(port, lines, kBatch, 60s, {"--timeout-ms", "20000"});
  });
  LoadGenerator load(port, 10, "term");
  auto bulk_events = [&] {
    return std::stoi(scalar("SELECT count(*) FROM cqrs.events WHERE stream_id = 'giftcard-bulk'"));
  };
  bool started = wait_until([&] { return bulk_events() > 100 && load.ok_count() >= 20; }, 15s);
  int stored_before_signal = bulk_events();

  EXPECT_EQ(daemon->stop(), 0);
  auto outcomes = load.outcomes();
  batch_client.join();
  ASSERT_TRUE(started) << "the load did not get going: " << load.ok_count() << " ok replies";
  EXPECT_LT(stored_before_signal, kBatch + 1) << "the batch finished before SIGTERM";

  // Every command of the batch reached cqrsd before the signal: each is either done (ok) or
  // refused as shutting_down; none is left without an answer.
  ASSERT_EQ(batch.replies.size(), lines.size()) << batch.process.describe();
  int batch_ok = 0;
  for (const auto& reply : batch.replies) {
    std::string status = reply.value("status", "");
    batch_ok += status == "ok";
    EXPECT_TRUE(status == "ok" || reply.value("error", "") == "shutting_down") << reply;
  }
  EXPECT_GT(batch_ok, stored_before_signal - 1) << "commands in flight at SIGTERM were answered";
  RecordProperty("batch_ok", batch_ok);

  // Fold the batch's results into the outcome log.
  for (size_t idx = 0; idx < batch.replies.size() && idx < lines.size(); ++idx) {
    json line = json::parse(lines[idx]);
    Outcome outcome;
    outcome.command_id = line["command_id"];
    outcome.type = line["type"];
    outcome.payload = line["data"];
    outcome.reply = batch.replies[idx];
    std::string status = outcome.reply.value("status", "");
    outcome.exit_code = status == "ok" ? 0 : status == "rejected" ? 1 : 2;
    outcomes.push_back(std::move(outcome));
  }

  auto stored = events();
  expect_acknowledged_commands_stored(outcomes, stored);
  EXPECT_TRUE(versions_are_contiguous(stored));
  for (const auto& outcome : outcomes) {
    if (outcome.reply.value("error", "") == "shutting_down") {
      EXPECT_TRUE(events_of_command(stored, outcome.command_id).empty())
          << "refused while shutting down, yet stored: " << outcome.command_id;
    }
  }

  auto restarted = start_daemon();
  ASSERT_NE(restarted, nullptr);
  expect_states_match_the_store(restarted->port(), stored);
  restarted->stop();
}

TEST_F(LifecycleTest, KillNineUnderLoadLosesNoAcknowledgedCommandAndRetriesApplyOnce) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  LoadGenerator load(daemon->port(), 20, "k9");
  ASSERT_TRUE(wait_until([&] { return load.ok_count() >= 120; }, 15s))
      << "the load produced only " << load.ok_count() << " ok replies";
  daemon->kill9();
  auto outcomes = load.outcomes();

  auto restarted = start_daemon();
  ASSERT_NE(restarted, nullptr);
  uint16_t port = restarted->port();
  auto stored = events();
  expect_acknowledged_commands_stored(outcomes, stored);
  EXPECT_TRUE(versions_are_contiguous(stored));

  // Commands without an answer are retried with their ids: each must now be ok and stored once,
  // whether or not the first attempt reached the store before the kill.
  int retried = 0;
  for (auto& outcome : outcomes) {
    if (!outcome.unknown()) continue;
    ++retried;
    CtlReply retry =
        dispatch(port, outcome.type, outcome.payload, {"--command-id", outcome.command_id});
    EXPECT_EQ(retry.status(), "ok") << outcome.type << " " << outcome.payload << "\n"
                                    << "first answer: " << outcome.reply << "\n"
                                    << retry.describe();
    outcome.exit_code = retry.exit_code();
    outcome.reply = retry.json;
  }
  RecordProperty("unanswered_retried", retried);
  EXPECT_GT(retried, 0) << "the kill should have cut some commands off";

  stored = events();
  expect_acknowledged_commands_stored(outcomes, stored);
  EXPECT_TRUE(versions_are_contiguous(stored));
  std::set<std::string> command_ids;
  for (const auto& event : stored) command_ids.insert(event.command_id());
  for (const auto& outcome : outcomes) {
    if (outcome.exit_code == 1) {
      EXPECT_EQ(command_ids.count(outcome.command_id), 0u) << "rejected but stored";
    }
  }
  expect_states_match_the_store(port, stored);
  restarted->stop();
}

}  // namespace
}  // namespace cqrs::system_test
