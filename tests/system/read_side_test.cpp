// The read side through real processes: a strong reply means the command's rows are there (also
// through a daemon whose handlers stand by, for a resent command, and soon after an older
// transaction that hid the events ends), projections equal a rebuild from the origin (also after
// kill -9 under load), the transfer process conserves money across kills, a standby daemon takes
// a handler over when its owner dies, and the admin replies have the documented shape.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "cqrs/pg/postgres_event_store.hpp"
#include "system/system_support.hpp"

namespace cqrs::system_test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The projectors of the two example domains and the tables they keep.
struct ReadModel {
  const char* handler;
  const char* table;
  const char* key;
};
constexpr ReadModel kReadModels[] = {{"giftcard_summary", "giftcard_summary", "card_id"},
                                     {"bank_accounts", "bank_accounts", "account_id"},
                                     {"bank_transfers", "bank_transfers", "transfer_id"}};
const std::set<std::string> kHandlerNames = {"giftcard_summary", "bank_accounts", "bank_transfers",
                                             "bank_transfer_process"};

// Per-command reply timeout under load: bounds how long a client waits on a daemon that died.
constexpr const char* kLoadTimeoutMs = "3000";

// A command and the id it is (re)sent with.
struct Command {
  std::string type;
  json data;
  std::string command_id = new_command_id();

  std::string line() const { return envelope_line(type, data, command_id); }
};

// ok or rejected: cqrsd decided, and a resend with the same id gets the same answer.
bool answered(const json& reply) {
  std::string status = reply.is_object() ? reply.value("status", "") : "";
  return status == "ok" || status == "rejected";
}

bool is_ok(const json& reply) { return reply.is_object() && reply.value("status", "") == "ok"; }

// Sends `command` to the daemon at `port` (which may change while a killed daemon restarts)
// until it is answered or `deadline` passes; returns the last reply.
json send_until_answered(const std::atomic<uint16_t>& port, const Command& command,
                         Clock::time_point deadline) {
  json reply;
  while (true) {
    reply = dispatch(port.load(), command.type, command.data,
                     {"--command-id", command.command_id, "--timeout-ms", kLoadTimeoutMs})
                .json;
    if (answered(reply) || Clock::now() >= deadline) return reply;
    std::this_thread::sleep_for(50ms);  // the daemon is down or restarting
  }
}

// `cqrsctl status` as JSON ({} when there is no output).
json status_of(uint16_t port) {
  ProcessResult run = run_cqrsctl(port, {"status"});
  if (run.exit_code != 0 || run.stdout_lines.empty()) return json::object();
  json parsed = json::parse(run.stdout_lines.front(), nullptr, false);
  return parsed.is_object() ? parsed : json::object();
}

// The status entry of handler `name` (null when absent).
json handler_entry(const json& status, const std::string& name) {
  if (!status.contains("handlers") || !status["handlers"].is_array()) return nullptr;
  for (const auto& handler : status["handlers"]) {
    if (handler.is_object() && handler.value("name", "") == name) return handler;
  }
  return nullptr;
}

std::string state_of(const json& status, const std::string& name) {
  json entry = handler_entry(status, name);
  return entry.is_object() && entry["state"].is_string() ? entry["state"].get<std::string>() : "";
}

// Every handler runs here, has no lag and stands at the head: nothing is left to handle, and the
// process manager has no command in flight (its commands' events would be after its position).
bool caught_up(const json& status) {
  if (status.value("status", "") != "ok" || !status["handlers"].is_array()) return false;
  std::set<std::string> seen;
  for (const auto& handler : status["handlers"]) {
    if (handler.value("state", "") != "running") return false;
    if (!handler["lag"].is_number_integer() || handler["lag"].get<int64_t>() != 0) return false;
    if (handler["position"] != status["head"]) return false;
    seen.insert(handler.value("name", ""));
  }
  return seen == kHandlerNames;
}

// A table's rows as text, ordered by its key.
std::vector<std::string> dump(pg::Connection& sql, const ReadModel& model) {
  std::vector<std::string> rows;
  auto result =
      sql.exec(std::string("SELECT t::text FROM ") + model.table + " AS t ORDER BY " + model.key);
  if (!result) {
    ADD_FAILURE() << "dumping " << model.table << ": " << result.error().to_string();
    return rows;
  }
  for (int row = 0; row < result->rows(); ++row) rows.emplace_back(result->text(row, 0));
  return rows;
}

::testing::AssertionResult same_rows(const std::vector<std::string>& live,
                                     const std::vector<std::string>& rebuilt) {
  std::string differences;
  int shown = 0;
  for (size_t idx = 0; idx < std::max(live.size(), rebuilt.size()) && shown < 10; ++idx) {
    std::string left = idx < live.size() ? live[idx] : "(none)";
    std::string right = idx < rebuilt.size() ? rebuilt[idx] : "(none)";
    if (left == right) continue;
    differences +=
        "\n  row " + std::to_string(idx) + ": live " + left + "\n         rebuilt " + right;
    ++shown;
  }
  if (differences.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << live.size() << " live rows, " << rebuilt.size()
                                       << " rebuilt rows; first differences:" << differences;
}

// Events after each handler's checkpoint, summed over the handlers.
constexpr const char* kEventsBehindHandlers =
    "SELECT count(*) FROM cqrs.events AS e JOIN cqrs.checkpoints AS c"
    " ON (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)";

// Gift card and bank commands in batches of kBatch from each of `clients` threads, through
// `cqrsctl dispatch -`, until stop(). Each client creates its own cards and accounts and works
// only on those it saw created; a command without an answer (cqrsd was killed) is resent with
// its id in the next batch. `port` follows the daemon across restarts.
class MixedLoad {
 public:
  MixedLoad(const std::atomic<uint16_t>& port, int clients, std::string prefix)
      : port_(port), prefix_(std::move(prefix)) {
    for (int idx = 0; idx < clients; ++idx) {
      threads_.emplace_back([this, idx] { run_client(idx); });
    }
  }
  ~MixedLoad() { stop(); }
  MixedLoad(const MixedLoad&) = delete;
  MixedLoad& operator=(const MixedLoad&) = delete;

  void stop() {
    stopping_ = true;
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  int ok_count() const { return ok_count_.load(); }
  int resent_count() const { return resent_count_.load(); }
  // After stop(): the commands still without an answer, and what was created.
  std::vector<Command> unanswered() const { return unanswered_; }
  std::vector<std::string> cards() const { return cards_; }
  std::vector<std::string> accounts() const { return accounts_; }

 private:
  static constexpr size_t kBatch = 8;

  void run_client(int index) {
    std::mt19937 random(static_cast<unsigned>(index) + 7);
    std::vector<std::string> cards;
    std::vector<std::string> accounts;
    std::vector<Command> pending;
    int created = 0;
    int transfers = 0;
    auto pick = [&random](const std::vector<std::string>& from) {
      return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(random)];
    };
    auto next_id = [&] {
      return prefix_ + "-" + std::to_string(index) + "-" + std::to_string(created++);
    };
    while (!stopping_) {
      std::vector<Command> batch = std::move(pending);
      pending.clear();
      while (batch.size() < kBatch) {
        int dice = std::uniform_int_distribution<int>(0, 99)(random);
        if (cards.size() < 3 || dice < 8) {
          batch.push_back({"IssueGiftCard", {{"card_id", next_id()}, {"amount", 1000}}});
        } else if (accounts.size() < 3 || dice < 14) {
          std::string id = next_id();
          batch.push_back({"OpenAccount",
                           {{"account_id", id},
                            {"owner", prefix_},
                            {"email", id + "@example.com"},
                            {"initial_balance", 500}}});
        } else if (dice < 40) {
          batch.push_back({"RedeemGiftCard",
                           {{"card_id", pick(cards)},
                            {"amount", std::uniform_int_distribution<int>(1, 120)(random)}}});
        } else if (dice < 44) {
          std::string card = pick(cards);
          cards.erase(std::find(cards.begin(), cards.end(), card));
          batch.push_back({"CancelGiftCard", {{"card_id", card}}});
        } else if (dice < 58) {
          batch.push_back({"DepositMoney",
                           {{"account_id", pick(accounts)},
                            {"amount", std::uniform_int_distribution<int>(1, 200)(random)}}});
        } else if (dice < 70) {
          batch.push_back({"WithdrawMoney",
                           {{"account_id", pick(accounts)},
                            {"amount", std::uniform_int_distribution<int>(1, 300)(random)}}});
        } else {
          std::string from = pick(accounts);
          std::string to = pick(accounts);
          if (from == to) continue;
          batch.push_back({"TransferMoney",
                           {{"transfer_id", prefix_ + "-t" + std::to_string(index) + "-" +
                                                std::to_string(transfers++)},
                            {"from_account", from},
                            {"to_account", to},
                            {"amount", std::uniform_int_distribution<int>(1, 400)(random)}}});
        }
      }
      std::vector<std::string> lines;
      for (const auto& command : batch) lines.push_back(command.line());
      BatchReply replies =
          dispatch_batch(port_.load(), lines, kBatch, 15s, {"--timeout-ms", kLoadTimeoutMs});
      for (size_t idx = 0; idx < batch.size(); ++idx) {
        const json reply = idx < replies.replies.size() ? replies.replies[idx] : json();
        if (!answered(reply)) {
          ++resent_count_;
          pending.push_back(batch[idx]);
          continue;
        }
        if (!is_ok(reply)) continue;
        ++ok_count_;
        if (batch[idx].type == "IssueGiftCard") cards.push_back(batch[idx].data["card_id"]);
        if (batch[idx].type == "OpenAccount") accounts.push_back(batch[idx].data["account_id"]);
      }
      if (pending.size() == batch.size()) std::this_thread::sleep_for(50ms);  // cqrsd is down
    }
    std::lock_guard lock(mutex_);
    unanswered_.insert(unanswered_.end(), pending.begin(), pending.end());
    cards_.insert(cards_.end(), cards.begin(), cards.end());
    accounts_.insert(accounts_.end(), accounts.begin(), accounts.end());
  }

  const std::atomic<uint16_t>& port_;
  std::string prefix_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> ok_count_{0};
  std::atomic<int> resent_count_{0};
  std::mutex mutex_;
  std::vector<Command> unanswered_;
  std::vector<std::string> cards_;
  std::vector<std::string> accounts_;
  std::vector<std::thread> threads_;
};

class ReadSideTest : public SystemTest {
 protected:
  void SetUp() override {
    SystemTest::SetUp();
    ASSERT_NE(sql_, nullptr);
    ASSERT_TRUE(sql_->exec("SET TimeZone TO 'UTC'"));
  }

  // Polls `cqrsctl status` until every handler has caught up; the last status either way.
  json wait_caught_up(uint16_t port, std::chrono::milliseconds timeout, bool* done) {
    json status;
    *done = wait_until(
        [&] {
          status = status_of(port);
          return caught_up(status);
        },
        timeout);
    return status;
  }

  // Dumps every read model, rebuilds each with `cqrsctl handler reset` (which waits for the
  // replay), and expects the same rows. Call when nothing else is written.
  void expect_projections_equal_a_rebuild(uint16_t port) {
    std::vector<std::vector<std::string>> live;
    for (const auto& model : kReadModels) live.push_back(dump(*sql_, model));
    for (const auto& model : kReadModels) {
      ProcessResult reset = run_cqrsctl(port, {"handler", "reset", model.handler});
      ASSERT_EQ(reset.exit_code, 0) << model.handler << ": " << reset.describe();
      ASSERT_FALSE(reset.stdout_lines.empty()) << reset.describe();
      json done = json::parse(reset.stdout_lines.back(), nullptr, false);
      EXPECT_EQ(done.value("status", ""), "ok") << reset.describe();
      EXPECT_GT(done.value("replayed", int64_t{0}), 0) << reset.describe();
    }
    bool rebuilt = false;
    json status = wait_caught_up(port, 20s, &rebuilt);
    EXPECT_TRUE(rebuilt) << status.dump();
    for (size_t idx = 0; idx < std::size(kReadModels); ++idx) {
      EXPECT_FALSE(live[idx].empty()) << kReadModels[idx].table << " is empty";
      EXPECT_TRUE(same_rows(live[idx], dump(*sql_, kReadModels[idx]))) << kReadModels[idx].table;
    }
  }

  // Starts two daemons on this database: `first`, and once it runs every handler, `second`,
  // returning when `second` has found every handler taken (standby).
  void start_pair(std::unique_ptr<Daemon>& first, std::unique_ptr<Daemon>& second) {
    first = start_daemon();
    ASSERT_NE(first, nullptr);
    json status;
    ASSERT_TRUE(wait_until(
        [&] {
          status = status_of(first->port());
          for (const auto& name : kHandlerNames) {
            if (state_of(status, name) != "running") return false;
          }
          return true;
        },
        10s))
        << status.dump();
    second = start_daemon();
    ASSERT_NE(second, nullptr);
    ASSERT_TRUE(wait_until(
        [&] {
          status = status_of(second->port());
          for (const auto& name : kHandlerNames) {
            if (state_of(status, name) != "standby") return false;
          }
          return true;
        },
        10s))
        << status.dump();
  }

  // giftcard_summary has one row per issued card, agreeing with the fold of the card's events.
  void expect_giftcards_match_the_events() {
    std::map<std::string, json> rows;
    auto result =
        sql_->exec("SELECT card_id, initial_value, remaining_value, status FROM giftcard_summary");
    ASSERT_TRUE(result) << result.error().to_string();
    for (int row = 0; row < result->rows(); ++row) {
      rows[std::string(result->text(row, 0))] = {{"initial_value", result->int64(row, 1)},
                                                 {"remaining", result->int64(row, 2)},
                                                 {"status", std::string(result->text(row, 3))}};
    }
    size_t cards = 0;
    for (const auto& [stream_id, stream] : by_stream(events())) {
      if (stream_id.rfind("giftcard-", 0) != 0) continue;
      ++cards;
      GiftCardFold fold = fold_gift_card(stream);
      EXPECT_TRUE(fold.problems.empty())
          << stream_id << ": " << ::testing::PrintToString(fold.problems);
      const json& state = fold.state_reply["state"];
      std::string card_id = state["card_id"];
      if (stream.back().type == "GiftCardCancelled") {  // what the cancellation recorded
        EXPECT_EQ(stream.back().data["remaining"], state["remaining"]) << stream_id;
      }
      auto row = rows.find(card_id);
      ASSERT_NE(row, rows.end()) << "no giftcard_summary row for " << stream_id;
      json expected = {{"initial_value", state["initial_value"]},
                       {"remaining", state["remaining"]},
                       {"status", state["status"]}};
      EXPECT_EQ(row->second, expected) << stream_id;
    }
    EXPECT_EQ(rows.size(), cards) << "giftcard_summary rows without a card";
    EXPECT_GT(cards, 0u);
  }

  // Every account row's balance and status are those its events left.
  void expect_accounts_match_the_events() {
    std::map<std::string, std::pair<int64_t, std::string>> from_events;
    for (const auto& [stream_id, stream] : by_stream(events())) {
      if (stream_id.rfind("account-", 0) != 0) continue;
      std::optional<int64_t> balance;
      std::string status;
      for (const auto& event : stream) {
        if (event.type == "AccountOpened") {
          balance = event.data["initial_balance"].get<int64_t>();
          status = "open";
        } else if (event.data.contains("balance")) {
          balance = event.data["balance"].get<int64_t>();
        } else if (event.type == "AccountClosed") {
          status = "closed";
        }
      }
      if (status.empty()) continue;  // never opened: only declined steps
      from_events[stream_id.substr(std::string("account-").size())] = {*balance, status};
    }
    std::map<std::string, std::pair<int64_t, std::string>> rows;
    auto result = sql_->exec("SELECT account_id, balance, status FROM bank_accounts");
    ASSERT_TRUE(result) << result.error().to_string();
    for (int row = 0; row < result->rows(); ++row) {
      rows[std::string(result->text(row, 0))] = {result->int64(row, 1),
                                                 std::string(result->text(row, 2))};
    }
    EXPECT_EQ(rows, from_events);
  }
};

TEST_F(ReadSideTest, StrongConsistencySeesTheRowAtOnce) {
  // A short polling interval bounds the run time should a strong reply wait for the poll (see
  // StrongReplyDoesNotWaitForThePollAfterAnOlderTransactionEnds); correctness does not depend on
  // it.
  auto daemon = start_daemon({"--handlers.poll_interval=200ms"});
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  constexpr int kCards = 100;
  int seen = 0;
  std::vector<std::string> missing;
  for (int idx = 0; idx < kCards; ++idx) {
    std::string card_id = "strong-" + std::to_string(idx);
    CtlReply reply = dispatch(port, "IssueGiftCard", {{"card_id", card_id}, {"amount", 100 + idx}},
                              {"--consistency", "strong"});
    ASSERT_EQ(reply.status(), "ok") << reply.describe();
    std::string row = scalar(
        "SELECT initial_value || '/' || remaining_value || '/' || status FROM giftcard_summary "
        "WHERE card_id = $1",
        {card_id});
    if (row == std::to_string(100 + idx) + "/" + std::to_string(100 + idx) + "/active") {
      ++seen;
    } else {
      missing.push_back(card_id + " -> '" + row + "'");
    }
  }
  EXPECT_EQ(seen, kCards) << ::testing::PrintToString(missing);

  CtlReply opened = dispatch(port, "OpenAccount",
                             {{"account_id", "strong"},
                              {"owner", "ann"},
                              {"email", "ann@example.com"},
                              {"initial_balance", 700}},
                             {"--consistency", "strong"});
  ASSERT_EQ(opened.status(), "ok") << opened.describe();
  EXPECT_EQ(scalar("SELECT owner || '/' || balance || '/' || status FROM bank_accounts "
                   "WHERE account_id = 'strong'"),
            "ann/700/open");
  // A strong command that changes an existing row shows the change at once too.
  CtlReply redeemed = dispatch(port, "RedeemGiftCard", {{"card_id", "strong-0"}, {"amount", 100}},
                               {"--consistency", "strong"});
  ASSERT_EQ(redeemed.status(), "ok") << redeemed.describe();
  EXPECT_EQ(scalar("SELECT remaining_value || '/' || status FROM giftcard_summary "
                   "WHERE card_id = 'strong-0'"),
            "0/emptied");
  daemon->stop();
}

// The store's notification names the appended event types, and the daemon wakes only the
// handlers of those types; strong consistency waits only for them too (the others have nothing
// to do for the events). With a polling interval far longer than the test, a handler that was
// not woken stays where it was, and one that was woken answers at once.
TEST_F(ReadSideTest, OnlyTheHandlersOfTheAppendedTypesWakeAndAreWaitedFor) {
  auto daemon = start_daemon({"--handlers.poll_interval=60s"});
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  // Each handler steps once at start (on an empty store); after that only wake-ups move it.
  auto all_running = [](const json& status) {
    if (!status["handlers"].is_array() || status["handlers"].size() != kHandlerNames.size()) {
      return false;
    }
    for (const auto& handler : status["handlers"]) {
      if (handler.value("state", "") != "running" || handler["lag"] != 0) return false;
    }
    return true;
  };
  ASSERT_TRUE(wait_until([&] { return all_running(status_of(port)); }, 20s))
      << status_of(port).dump();
  json before = status_of(port);

  auto started = Clock::now();
  CtlReply issued = dispatch(port, "IssueGiftCard", {{"card_id", "typed"}, {"amount", 5}},
                             {"--consistency", "strong", "--timeout-ms", "10000"});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();
  EXPECT_LT(Clock::now() - started, 5s);
  EXPECT_EQ(scalar("SELECT remaining_value FROM giftcard_summary WHERE card_id = 'typed'"), "5");
  json after_card = status_of(port);
  EXPECT_EQ(handler_entry(after_card, "giftcard_summary")["position"], after_card["head"]);
  for (const char* idle : {"bank_accounts", "bank_transfers", "bank_transfer_process"}) {
    EXPECT_EQ(handler_entry(after_card, idle)["position"], handler_entry(before, idle)["position"])
        << idle << " was woken by a gift card event";
    // Its lag counts only events it has to process.
    EXPECT_EQ(handler_entry(after_card, idle)["lag"], 0) << idle;
  }

  started = Clock::now();
  CtlReply opened = dispatch(port, "OpenAccount",
                             {{"account_id", "typed"},
                              {"owner", "o"},
                              {"email", "typed@example.com"},
                              {"initial_balance", 9}},
                             {"--consistency", "strong", "--timeout-ms", "10000"});
  ASSERT_EQ(opened.status(), "ok") << opened.describe();
  EXPECT_LT(Clock::now() - started, 5s);
  EXPECT_EQ(scalar("SELECT balance FROM bank_accounts WHERE account_id = 'typed'"), "9");
  daemon->stop();
}

TEST_F(ReadSideTest, ProjectionsEqualARebuild) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  std::mt19937 random(42);
  auto amount = [&random](int low, int high) {
    return std::uniform_int_distribution<int>(low, high)(random);
  };
  constexpr int kCards = 60;
  constexpr int kAccounts = 30;
  auto card = [](int idx) { return "card-" + std::to_string(idx); };
  auto account = [](int idx) { return "acct-" + std::to_string(idx); };

  // Creation first, then the commands that need what it created.
  std::vector<std::string> creations;
  for (int idx = 0; idx < kCards; ++idx) {
    creations.push_back(envelope_line("IssueGiftCard", {{"card_id", card(idx)}, {"amount", 500}},
                                      new_command_id()));
  }
  for (int idx = 0; idx < kAccounts; ++idx) {
    creations.push_back(envelope_line("OpenAccount",
                                      {{"account_id", account(idx)},
                                       {"owner", "owner-" + std::to_string(idx % 7)},
                                       {"email", account(idx) + "@example.com"},
                                       {"initial_balance", idx * 100}},
                                      new_command_id()));
  }
  std::vector<std::string> changes;
  for (int round = 0; round < 3; ++round) {
    for (int idx = 0; idx < kCards; ++idx) {
      if (idx % 10 == 3 && round == 1) {
        changes.push_back(
            envelope_line("CancelGiftCard", {{"card_id", card(idx)}}, new_command_id()));
      } else if (idx % 10 == 5 && round == 0) {
        changes.push_back(envelope_line("RedeemGiftCard", {{"card_id", card(idx)}, {"amount", 500}},
                                        new_command_id()));  // empties it
      } else {
        changes.push_back(envelope_line("RedeemGiftCard",
                                        {{"card_id", card(idx)}, {"amount", amount(1, 200)}},
                                        new_command_id()));
      }
    }
    for (int idx = 0; idx < kAccounts; ++idx) {
      changes.push_back(envelope_line("DepositMoney",
                                      {{"account_id", account(idx)}, {"amount", amount(1, 300)}},
                                      new_command_id()));
      changes.push_back(envelope_line("WithdrawMoney",
                                      {{"account_id", account(idx)}, {"amount", amount(1, 600)}},
                                      new_command_id()));
      int to = (idx + 1 + amount(0, kAccounts - 2)) % kAccounts;
      std::string target = idx % 9 == 0 ? "nobody-" + std::to_string(idx) : account(to);
      changes.push_back(
          envelope_line("TransferMoney",
                        {{"transfer_id", "t" + std::to_string(round) + "-" + std::to_string(idx)},
                         {"from_account", account(idx)},
                         {"to_account", target},
                         {"amount", amount(1, 900)}},
                        new_command_id()));
    }
  }
  int ok = 0;
  int rejected = 0;
  for (const auto* lines : {&creations, &changes}) {
    BatchReply batch = dispatch_batch(port, *lines, 32, 60s, {"--timeout-ms", "20000"});
    ASSERT_EQ(batch.replies.size(), lines->size()) << batch.process.describe();
    for (const auto& reply : batch.replies) {
      EXPECT_TRUE(answered(reply)) << reply;
      ok += is_ok(reply);
      rejected += reply.value("status", "") == "rejected";
    }
  }
  RecordProperty("ok", ok);
  RecordProperty("rejected", rejected);
  EXPECT_GT(rejected, 0) << "some redemptions and withdrawals should have been refused";

  bool quiet = false;
  json status = wait_caught_up(port, 30s, &quiet);
  ASSERT_TRUE(quiet) << status.dump();
  EXPECT_EQ(scalar("SELECT count(*) FROM giftcard_summary"), std::to_string(kCards));
  EXPECT_EQ(scalar("SELECT count(*) FROM bank_accounts"), std::to_string(kAccounts));
  EXPECT_EQ(scalar("SELECT count(*) FROM bank_transfers WHERE status = 'pending'"), "0");
  EXPECT_NE(scalar("SELECT count(*) FROM giftcard_summary WHERE status = 'emptied'"), "0");
  EXPECT_NE(scalar("SELECT count(*) FROM giftcard_summary WHERE status = 'cancelled'"), "0");
  EXPECT_NE(scalar("SELECT count(*) FROM bank_transfers WHERE status = 'failed'"), "0");
  EXPECT_NE(scalar("SELECT count(*) FROM bank_transfers WHERE status = 'completed'"), "0");
  expect_projections_equal_a_rebuild(port);
  expect_giftcards_match_the_events();
  expect_accounts_match_the_events();
  daemon->stop();
}

TEST_F(ReadSideTest, KillNineFiveTimesKeepsProjectionsExact) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  std::atomic<uint16_t> port{daemon->port()};
  MixedLoad load(port, 4, "k9");
  constexpr int kKills = 5;
  std::string behind;  // events not yet handled, summed over the handlers, at each kill
  for (int kill = 0; kill < kKills; ++kill) {
    int target = load.ok_count() + 60;
    ASSERT_TRUE(wait_until([&] { return load.ok_count() >= target; }, 30s))
        << "before kill " << kill + 1 << " the load reached only " << load.ok_count() << " ok";
    behind += scalar(kEventsBehindHandlers) + " ";
    daemon->kill9();
    daemon = start_daemon();
    ASSERT_NE(daemon, nullptr) << "restart after kill " << kill + 1;
    port = daemon->port();
  }
  int target = load.ok_count() + 60;
  EXPECT_TRUE(wait_until([&] { return load.ok_count() >= target; }, 30s))
      << "the load did not resume after the last restart";
  load.stop();
  RecordProperty("ok_replies", load.ok_count());

  RecordProperty("events_behind_at_kills", behind);
  RecordProperty("resent", load.resent_count());
  RecordProperty("unanswered_at_stop", static_cast<int>(load.unanswered().size()));
  // What the kills left unanswered is resent with its ids: cqrsd decides each exactly once.
  for (const auto& command : load.unanswered()) {
    json reply = send_until_answered(port, command, Clock::now() + 20s);
    EXPECT_TRUE(answered(reply)) << command.type << " " << command.data << ": " << reply;
  }
  bool quiet = false;
  json status = wait_caught_up(port, 60s, &quiet);
  ASSERT_TRUE(quiet) << status.dump();
  EXPECT_EQ(scalar("SELECT count(*) FROM bank_transfers WHERE status = 'pending'"), "0");
  for (const auto& card : load.cards()) {
    EXPECT_EQ(scalar("SELECT count(*) FROM giftcard_summary WHERE card_id = $1", {card}), "1")
        << card << " was issued (ok) but has no row";
  }
  for (const auto& account : load.accounts()) {
    EXPECT_EQ(scalar("SELECT count(*) FROM bank_accounts WHERE account_id = $1", {account}), "1")
        << account << " was opened (ok) but has no row";
  }
  EXPECT_TRUE(versions_are_contiguous(events()));
  expect_giftcards_match_the_events();
  expect_accounts_match_the_events();
  expect_projections_equal_a_rebuild(port);
  daemon->stop();
}

// What the transfer test sends, and what it expects where the outcome does not depend on timing.
struct TransferPlan {
  Command command;
  std::string expected_failure;  // "" when it may complete (or fail for lack of funds)
  bool at_credit = false;        // the target declines: the source is debited, then refunded
};

TEST_F(ReadSideTest, TransfersConserveMoneyThroughKills) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  std::atomic<uint16_t> port{daemon->port()};
  constexpr int kAccounts = 20;
  constexpr int kClosed = 3;
  constexpr int kTransfers = 200;
  constexpr int64_t kHuge = 1'000'000'000;  // more than all the money there is
  auto account = [](int idx) { return "a" + std::to_string(idx); };
  auto closed = [](int idx) { return "closed" + std::to_string(idx); };
  auto missing = [](int idx) { return "missing" + std::to_string(idx); };

  std::map<std::string, int64_t> expected;  // account -> balance, folded from what cqrsd accepted
  std::vector<std::string> setup;
  for (int idx = 0; idx < kAccounts; ++idx) {
    expected[account(idx)] = 1000 + 250 * idx;
    setup.push_back(envelope_line("OpenAccount",
                                  {{"account_id", account(idx)},
                                   {"owner", "o"},
                                   {"email", account(idx) + "@example.com"},
                                   {"initial_balance", expected[account(idx)]}},
                                  new_command_id()));
  }
  for (int idx = 0; idx < kClosed; ++idx) {
    expected[closed(idx)] = 0;
    setup.push_back(envelope_line("OpenAccount",
                                  {{"account_id", closed(idx)},
                                   {"owner", "c"},
                                   {"email", closed(idx) + "@example.com"},
                                   {"initial_balance", 0}},
                                  new_command_id()));
  }
  int64_t opened_money = 0;
  for (const auto& [id, balance] : expected) opened_money += balance;
  BatchReply opened = dispatch_batch(port, setup, 32);
  ASSERT_EQ(opened.replies.size(), setup.size()) << opened.process.describe();
  for (const auto& reply : opened.replies) ASSERT_TRUE(is_ok(reply)) << reply;
  for (int idx = 0; idx < kClosed; ++idx) {
    CtlReply closing = dispatch(port, "CloseAccount", {{"account_id", closed(idx)}});
    ASSERT_EQ(closing.status(), "ok") << closing.describe();
  }

  // Transfers of every kind, plus deposits and withdrawals on the same accounts, shuffled.
  std::mt19937 random(2024);
  auto number = [&random](int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(random);
  };
  std::vector<TransferPlan> plans;
  for (int idx = 0; idx < kTransfers; ++idx) {
    int from = static_cast<int>(number(0, kAccounts - 1));
    int to = static_cast<int>((from + number(1, kAccounts - 1)) % kAccounts);
    TransferPlan plan;
    std::string from_id = account(from);
    std::string to_id = account(to);
    int64_t amount = number(1, 400);
    switch (idx % 10) {
      case 0:
        to_id = missing(idx % 4);
        plan.expected_failure = "account_not_found";
        plan.at_credit = true;
        break;
      case 1:
        to_id = closed(idx % kClosed);
        plan.expected_failure = "account_closed";
        plan.at_credit = true;
        break;
      case 2:
        from_id = missing(idx % 4);
        plan.expected_failure = "account_not_found";
        break;
      case 3:
        from_id = closed(idx % kClosed);
        plan.expected_failure = "account_closed";
        break;
      case 4:
        amount = kHuge;
        plan.expected_failure = "insufficient_funds";
        break;
      case 5:
        amount = number(1500, 6000);  // overdraws some accounts, depending on what came first
        break;
      default:
        break;
    }
    plan.command = {"TransferMoney",
                    {{"transfer_id", "tr" + std::to_string(idx)},
                     {"from_account", from_id},
                     {"to_account", to_id},
                     {"amount", amount}}};
    plans.push_back(std::move(plan));
  }
  for (int idx = 0; idx < 20; ++idx) {
    plans.push_back({{"DepositMoney",
                      {{"account_id", account(static_cast<int>(number(0, kAccounts - 1)))},
                       {"amount", number(1, 500)}}},
                     ""});
    plans.push_back({{"WithdrawMoney",
                      {{"account_id", account(static_cast<int>(number(0, kAccounts - 1)))},
                       {"amount", number(1, 2500)}}},
                     ""});
  }
  std::shuffle(plans.begin(), plans.end(), random);

  // Four clients take the commands in order; each resends a command until cqrsd answers it.
  std::vector<json> replies(plans.size());
  std::atomic<size_t> next{0};
  std::atomic<int> done{0};
  auto deadline = Clock::now() + 60s;
  std::vector<std::thread> clients;
  for (int client = 0; client < 4; ++client) {
    clients.emplace_back([&] {
      for (size_t idx = next++; idx < plans.size(); idx = next++) {
        replies[idx] = send_until_answered(port, plans[idx].command, deadline);
        ++done;
      }
    });
  }
  // Two kills while transfers are being requested and carried out.
  int kills = 0;
  for (int threshold : {60, 150}) {
    wait_until([&] { return done.load() >= threshold; }, 40s);
    daemon->kill9();
    ++kills;
    daemon = start_daemon();
    if (daemon == nullptr) break;
    port = daemon->port();
  }
  for (auto& thread : clients) thread.join();
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(kills, 2);
  std::string in_flight_at_end =
      scalar("SELECT count(*) FROM bank_transfers WHERE status = 'pending'");
  RecordProperty("pending_after_load", in_flight_at_end);

  int64_t deposits = 0;
  int64_t withdrawals = 0;
  for (size_t idx = 0; idx < plans.size(); ++idx) {
    const Command& command = plans[idx].command;
    ASSERT_TRUE(answered(replies[idx]))
        << command.type << " " << command.data << ": " << replies[idx];
    if (command.type == "TransferMoney") {
      EXPECT_TRUE(is_ok(replies[idx])) << command.data << ": " << replies[idx];
    }
    if (!is_ok(replies[idx])) continue;
    const std::string id = command.data.value("account_id", "");
    int64_t amount = command.data["amount"].get<int64_t>();
    if (command.type == "DepositMoney") {
      deposits += amount;
      expected[id] += amount;
    } else if (command.type == "WithdrawMoney") {
      withdrawals += amount;
      expected[id] -= amount;
    }
  }

  // Quiescence: every handler at the head and no transfer pending.
  json status;
  bool quiet = wait_until(
      [&] {
        status = status_of(port);
        return caught_up(status) &&
               scalar("SELECT count(*) FROM bank_transfers WHERE status = 'pending'") == "0";
      },
      60s);
  ASSERT_TRUE(quiet) << status.dump() << "\npending transfers: "
                     << scalar("SELECT count(*) FROM bank_transfers WHERE status = 'pending'");

  EXPECT_EQ(scalar("SELECT count(*) FROM bank_transfers"), std::to_string(kTransfers));
  EXPECT_EQ(scalar("SELECT count(*) FROM bank_transfers WHERE status IN ('completed', 'failed')"),
            std::to_string(kTransfers));
  EXPECT_EQ(scalar("SELECT sum(balance) FROM bank_accounts"),
            std::to_string(opened_money + deposits - withdrawals));
  expect_accounts_match_the_events();

  // Each transfer's steps, from the accounts' events: a completed one debited the source and
  // credited the target once each by its amount; a failed one was declined at the debit, or was
  // debited, declined at the credit and refunded.
  auto stored = events();
  std::map<std::string, std::vector<StoredEvent>> steps;  // transfer id -> account events
  std::map<std::string, StoredEvent> ends;                // transfer id -> completed/failed
  for (const auto& event : stored) {
    if (!event.data.is_object() || !event.data.contains("transfer_id")) continue;
    std::string transfer_id = event.data["transfer_id"];
    if (event.stream_id.rfind("account-", 0) == 0) steps[transfer_id].push_back(event);
    if (event.type == "TransferCompleted" || event.type == "TransferFailed") {
      EXPECT_EQ(ends.count(transfer_id), 0u) << "two ends for " << transfer_id;
      ends[transfer_id] = event;
    }
  }
  auto types_of = [](const std::vector<StoredEvent>& list) {
    std::multiset<std::string> types;
    for (const auto& event : list) types.insert(event.type + "@" + event.stream_id);
    return types;
  };
  auto rows =
      sql_->exec("SELECT transfer_id, status, coalesce(failure_reason, '') FROM bank_transfers");
  ASSERT_TRUE(rows) << rows.error().to_string();
  std::map<std::string, std::pair<std::string, std::string>> transfer_rows;
  for (int row = 0; row < rows->rows(); ++row) {
    transfer_rows[std::string(rows->text(row, 0))] = {std::string(rows->text(row, 1)),
                                                      std::string(rows->text(row, 2))};
  }
  int completed = 0;
  int failed = 0;
  for (const auto& plan : plans) {
    if (plan.command.type != "TransferMoney") continue;
    const json& data = plan.command.data;
    std::string transfer_id = data["transfer_id"];
    std::string from = "account-" + data["from_account"].get<std::string>();
    std::string to = "account-" + data["to_account"].get<std::string>();
    int64_t amount = data["amount"].get<int64_t>();
    auto end = ends.find(transfer_id);
    ASSERT_NE(end, ends.end()) << transfer_id << " never finished";
    auto row = transfer_rows.find(transfer_id);
    ASSERT_NE(row, transfer_rows.end()) << transfer_id << " has no bank_transfers row";
    const auto& mine = steps[transfer_id];
    for (const auto& step : mine) {
      EXPECT_EQ(step.data["amount"], amount) << transfer_id << ": " << step.data;
    }
    std::multiset<std::string> seen = types_of(mine);
    if (end->second.type == "TransferCompleted") {
      ++completed;
      EXPECT_EQ(row->second, std::make_pair(std::string("completed"), std::string()));
      EXPECT_EQ(seen,
                (std::multiset<std::string>{"AccountDebited@" + from, "AccountCredited@" + to}))
          << transfer_id;
      EXPECT_EQ(plan.expected_failure, "") << transfer_id << " should have failed";
      expected[data["from_account"].get<std::string>()] -= amount;
      expected[data["to_account"].get<std::string>()] += amount;
    } else {
      ++failed;
      std::string reason = end->second.data["reason"];
      EXPECT_EQ(row->second, std::make_pair(std::string("failed"), reason));
      // A source without enough money declines the debit before the target is asked.
      bool at_credit = plan.at_credit && reason != "insufficient_funds";
      if (plan.expected_failure.empty() || plan.at_credit) {
        EXPECT_TRUE(reason == plan.expected_failure || reason == "insufficient_funds")
            << transfer_id << " " << data << ": " << reason;
      } else {
        EXPECT_EQ(reason, plan.expected_failure) << transfer_id << " " << data;
      }
      std::multiset<std::string> declined_debit = {"TransferDebitRejected@" + from};
      std::multiset<std::string> refunded = {
          "AccountDebited@" + from, "TransferCreditRejected@" + to, "AccountRefunded@" + from};
      EXPECT_EQ(seen, at_credit ? refunded : declined_debit)
          << transfer_id << ": " << ::testing::PrintToString(seen);
    }
  }
  EXPECT_EQ(completed + failed, kTransfers);
  EXPECT_GT(completed, 0);
  RecordProperty("completed", completed);
  RecordProperty("failed", failed);

  // Every account's balance is its opening plus what was accepted in and out of it.
  std::map<std::string, int64_t> balances;
  auto accounts = sql_->exec("SELECT account_id, balance FROM bank_accounts");
  ASSERT_TRUE(accounts) << accounts.error().to_string();
  for (int row = 0; row < accounts->rows(); ++row) {
    balances[std::string(accounts->text(row, 0))] = accounts->int64(row, 1);
  }
  EXPECT_EQ(balances, expected);
  daemon->stop();
}

// --handlers.disabled (the command line cannot set handlers.enabled to false): the process takes
// commands and runs no handler; a second process runs them.
TEST_F(ReadSideTest, HandlersDisabledRunsNoneAndAnotherProcessProjects) {
  auto commands_only = start_daemon({"--handlers.disabled"});
  ASSERT_NE(commands_only, nullptr);
  json status = status_of(commands_only->port());
  ASSERT_EQ(status.value("status", ""), "ok") << status.dump();
  EXPECT_TRUE(status["handlers"].is_array() && status["handlers"].empty()) << status.dump();
  EXPECT_TRUE(status["head"].is_null()) << "no event yet: " << status.dump();
  CtlReply issued =
      dispatch(commands_only->port(), "IssueGiftCard", {{"card_id", "split"}, {"amount", 10}});
  ASSERT_EQ(issued.status(), "ok") << issued.describe();
  // Without handlers here, the head comes from the store: the issued card's position.
  json after = status_of(commands_only->port());
  ASSERT_TRUE(after["head"].is_string()) << after.dump();
  EXPECT_EQ(after["head"], issued.json.value("position", "")) << after.dump();
  // Nor does any process index correlations yet: the card's event is the one run behind.
  EXPECT_EQ(after["correlation_index_lag"], 1) << after.dump();

  auto projecting = start_daemon();
  ASSERT_NE(projecting, nullptr);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  std::string row;
  while (std::chrono::steady_clock::now() < deadline) {
    row = scalar("SELECT count(*) FROM giftcard_summary WHERE card_id = 'split'");
    if (row == "1") break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(row, "1");
  // The projecting process indexes them; both processes' status says so.
  EXPECT_TRUE(wait_until(
      [&] { return status_of(commands_only->port())["correlation_index_lag"] == 0; }, 20s))
      << status_of(commands_only->port()).dump();
  projecting->stop();
  commands_only->stop();
}

TEST_F(ReadSideTest, TwoDaemonsHandlerTakeover) {
  std::unique_ptr<Daemon> first;
  std::unique_ptr<Daemon> second;
  start_pair(first, second);
  if (HasFatalFailure()) return;
  json first_status = status_of(first->port());
  json second_status = status_of(second->port());
  for (const auto& name : kHandlerNames) {
    std::set<std::string> states = {state_of(first_status, name), state_of(second_status, name)};
    EXPECT_EQ(states, (std::set<std::string>{"running", "standby"}))
        << name << "\nfirst: " << first_status.dump() << "\nsecond: " << second_status.dump();
  }
  Daemon* runner =
      state_of(first_status, "giftcard_summary") == "running" ? first.get() : second.get();
  Daemon* survivor = runner == first.get() ? second.get() : first.get();

  // Cards through both daemons while one of them runs the projector.
  std::vector<std::string> cards;
  for (Daemon* daemon : {runner, survivor}) {
    std::vector<std::string> lines;
    for (int idx = 0; idx < 10; ++idx) {
      cards.push_back("before-kill-" + std::to_string(daemon->port()) + "-" + std::to_string(idx));
      lines.push_back(envelope_line("IssueGiftCard", {{"card_id", cards.back()}, {"amount", 10}},
                                    new_command_id()));
    }
    BatchReply before = dispatch_batch(daemon->port(), lines, 10);
    ASSERT_EQ(before.replies.size(), lines.size()) << before.process.describe();
    for (const auto& reply : before.replies) EXPECT_TRUE(is_ok(reply)) << reply;
  }

  runner->kill9();
  auto killed_at = Clock::now();
  std::vector<std::string> lines;
  for (int idx = 0; idx < 30; ++idx) {
    cards.push_back("after-kill-" + std::to_string(idx));
    lines.push_back(envelope_line("IssueGiftCard", {{"card_id", cards.back()}, {"amount", 10}},
                                  new_command_id()));
  }
  BatchReply after = dispatch_batch(survivor->port(), lines, 30);
  ASSERT_EQ(after.replies.size(), lines.size()) << after.process.describe();
  for (const auto& reply : after.replies) EXPECT_TRUE(is_ok(reply)) << reply;

  std::string card_list;
  for (const auto& card : cards) card_list += (card_list.empty() ? "" : ",") + card;
  json survivor_status;
  bool took_over = wait_until(
      [&] {
        survivor_status = status_of(survivor->port());
        return state_of(survivor_status, "giftcard_summary") == "running" &&
               scalar(
                   "SELECT count(*) FROM giftcard_summary WHERE card_id = ANY("
                   "string_to_array($1, ','))",
                   {card_list}) == std::to_string(cards.size());
      },
      10s);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at);
  RecordProperty("takeover_ms", static_cast<int>(took.count()));
  EXPECT_TRUE(took_over) << "after " << took.count() << " ms: " << survivor_status.dump() << "\n"
                         << scalar("SELECT count(*) FROM giftcard_summary") << " of "
                         << cards.size() << " cards projected";
  EXPECT_EQ(scalar("SELECT count(*) FROM giftcard_summary"), std::to_string(cards.size()));
  // The other handlers moved over as well.
  EXPECT_TRUE(wait_until(
      [&] {
        survivor_status = status_of(survivor->port());
        return caught_up(survivor_status);
      },
      10s))
      << survivor_status.dump();
  survivor->stop();
}

// A daemon whose handlers stand by follows the stored checkpoints of the daemon that runs them,
// so a strong reply from it also means the rows are there, for the projectors that write rows
// for the command and for those that only pass its events by.
TEST_F(ReadSideTest, StrongConsistencyThroughTheStandbyDaemon) {
  std::unique_ptr<Daemon> first;
  std::unique_ptr<Daemon> second;
  start_pair(first, second);
  if (HasFatalFailure()) return;
  uint16_t port = second->port();
  // The standby side looks at the stored checkpoints every second: well within the timeout.
  for (int idx = 0; idx < 2; ++idx) {
    std::string card_id = "via-standby-" + std::to_string(idx);
    CtlReply reply = dispatch(port, "IssueGiftCard", {{"card_id", card_id}, {"amount", 10}},
                              {"--consistency", "strong", "--timeout-ms", "4000"});
    EXPECT_EQ(reply.status(), "ok") << reply.describe();
    EXPECT_EQ(scalar("SELECT count(*) FROM giftcard_summary WHERE card_id = $1", {card_id}), "1")
        << card_id;
    std::string account_id = "via-standby-" + std::to_string(idx);
    CtlReply opened = dispatch(port, "OpenAccount",
                               {{"account_id", account_id},
                                {"owner", "o"},
                                {"email", account_id + "@example.com"},
                                {"initial_balance", 1}},
                               {"--consistency", "strong", "--timeout-ms", "4000"});
    EXPECT_EQ(opened.status(), "ok") << opened.describe();
    EXPECT_EQ(scalar("SELECT count(*) FROM bank_accounts WHERE account_id = $1", {account_id}), "1")
        << account_id;
  }
  second->stop();
  first->stop();
}

// $all readers see events only below the oldest running transaction, so a transaction that took
// its id before a command's append hides the command's events from the handlers until it ends.
// It ends without a notification; the strong reply must still follow soon after, not when the
// handlers next poll. A long polling interval keeps the two far apart.
TEST_F(ReadSideTest, StrongReplyDoesNotWaitForThePollAfterAnOlderTransactionEnds) {
  auto daemon = start_daemon({"--handlers.poll_interval=3s"});
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  ASSERT_EQ(dispatch(port, "IssueGiftCard", {{"card_id", "warm"}, {"amount", 1}},
                     {"--consistency", "strong"})
                .status(),
            "ok");
  auto listener = db_->connect();
  ASSERT_NE(listener, nullptr);
  ASSERT_TRUE(listener->listen(pg::kEventsChannel));
  constexpr int kAttempts = 10;
  std::vector<int64_t> delays;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::string card_id = "behind-older-" + std::to_string(attempt);
    ASSERT_TRUE(sql_->exec("BEGIN"));
    ASSERT_TRUE(sql_->exec("SELECT pg_current_xact_id()"));  // older than the append below
    ASSERT_TRUE(listener->wait_notifications(0));            // forget earlier appends
    CtlReply reply;
    Clock::time_point answered_at;
    std::thread client([&] {
      reply = dispatch(port, "IssueGiftCard", {{"card_id", card_id}, {"amount", 1}},
                       {"--consistency", "strong"});
      answered_at = Clock::now();
    });
    // End the transaction when the append is announced: as the handlers wake and find the
    // event hidden, or a moment later.
    bool announced = wait_until(
        [&] {
          auto payloads = listener->wait_notifications(100);
          return payloads && !payloads->empty();
        },
        10s);
    bool committed = sql_->exec("COMMIT").ok();
    auto committed_at = Clock::now();
    client.join();
    ASSERT_TRUE(announced);
    ASSERT_TRUE(committed);
    ASSERT_EQ(reply.status(), "ok") << reply.describe();
    delays.push_back(
        std::chrono::duration_cast<std::chrono::milliseconds>(answered_at - committed_at).count());
  }
  // Well below the polling interval every time (a missed wake-up costs the whole 3 s).
  auto slow = std::count_if(delays.begin(), delays.end(), [](int64_t ms) { return ms >= 1500; });
  EXPECT_EQ(slow, 0) << "ms from the end of the hiding transaction to the strong reply, per "
                     << "attempt: " << ::testing::PrintToString(delays);
  daemon->stop();
}

// A strong command resent with its id (its first reply was lost) is answered from the recorded
// outcome; that answer must wait for the projectors like the first one, or the client that
// retried reads a read model without its command in it.
TEST_F(ReadSideTest, StrongRetryOfAStoredCommandWaitsForTheProjection) {
  // giftcard_summary is stopped (as its failure policy would) before cqrsd starts, so it
  // projects nothing until it is restarted.
  ASSERT_TRUE(
      sql_->exec("INSERT INTO cqrs.checkpoints (handler_name, transaction_id, global_position,"
                 " stopped_error, stopped_at) VALUES ('giftcard_summary', '0', 0, 'held by the "
                 "test', now())"));
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  json status;
  ASSERT_TRUE(wait_until(
      [&] {
        status = status_of(port);
        return state_of(status, "giftcard_summary") == "stopped";
      },
      10s))
      << status.dump();

  CtlReply fresh = dispatch(port, "IssueGiftCard", {{"card_id", "fresh"}, {"amount", 10}},
                            {"--consistency", "strong", "--timeout-ms", "1500"});
  EXPECT_EQ(fresh.error(), "consistency_timeout") << fresh.describe();

  std::string command_id = new_command_id();
  CtlReply first = dispatch(port, "IssueGiftCard", {{"card_id", "retried"}, {"amount", 10}},
                            {"--command-id", command_id});
  ASSERT_EQ(first.status(), "ok") << first.describe();
  CtlReply retry =
      dispatch(port, "IssueGiftCard", {{"card_id", "retried"}, {"amount", 10}},
               {"--command-id", command_id, "--consistency", "strong", "--timeout-ms", "1500"});
  std::string rows = scalar("SELECT count(*) FROM giftcard_summary WHERE card_id = 'retried'");
  EXPECT_EQ(retry.error(), "consistency_timeout")
      << "a strong ok must mean the row is there; rows: " << rows << "\n"
      << retry.describe();

  // Once the projector runs again, the same retry is ok and the row is there.
  ProcessResult restarted = run_cqrsctl(port, {"handler", "restart", "giftcard_summary"});
  ASSERT_EQ(restarted.exit_code, 0) << restarted.describe();
  CtlReply again = dispatch(port, "IssueGiftCard", {{"card_id", "retried"}, {"amount", 10}},
                            {"--command-id", command_id, "--consistency", "strong"});
  EXPECT_EQ(again.status(), "ok") << again.describe();
  EXPECT_TRUE(wait_until(
      [&] {
        return scalar("SELECT count(*) FROM giftcard_summary WHERE card_id = 'retried'") == "1";
      },
      10s));
  daemon->stop();
}

TEST_F(ReadSideTest, DeadLettersAndStatusShape) {
  auto daemon = start_daemon();
  ASSERT_NE(daemon, nullptr);
  uint16_t port = daemon->port();
  ASSERT_EQ(dispatch(port, "IssueGiftCard", {{"card_id", "shape"}, {"amount", 50}}).status(), "ok");
  ASSERT_EQ(
      dispatch(
          port, "OpenAccount",
          {{"account_id", "x"}, {"owner", "o"}, {"email", "x@example.com"}, {"initial_balance", 5}})
          .status(),
      "ok");
  bool quiet = false;
  json status = wait_caught_up(port, 10s, &quiet);
  ASSERT_TRUE(quiet) << status.dump();

  ProcessResult run = run_cqrsctl(port, {"status"});
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  ASSERT_EQ(run.stdout_lines.size(), 1u) << run.describe();
  status = json::parse(run.stdout_lines.front(), nullptr, false);
  ASSERT_TRUE(status.is_object()) << run.describe();
  EXPECT_EQ(status.value("status", ""), "ok");
  const std::regex position_text(R"(\d+/\d+)");
  ASSERT_TRUE(status["head"].is_string()) << status.dump();
  std::string head = status["head"];
  EXPECT_TRUE(std::regex_match(head, position_text)) << head;
  EXPECT_EQ(head.substr(head.find('/') + 1),
            scalar("SELECT max(global_position) FROM cqrs.events"));
  ASSERT_TRUE(status["aggregates_live"].is_number_integer()) << status.dump();
  EXPECT_EQ(status["aggregates_live"].get<int64_t>(), 2) << "one card, one account";
  ASSERT_TRUE(status["correlation_index_lag"].is_number_integer()) << status.dump();
  ASSERT_TRUE(status["handlers"].is_array()) << status.dump();
  std::map<std::string, std::string> kinds;
  for (const auto& handler : status["handlers"]) {
    for (const char* field : {"name", "kind", "position", "lag", "state", "last_error"}) {
      EXPECT_TRUE(handler.contains(field)) << field << " missing in " << handler.dump();
    }
    ASSERT_TRUE(handler["name"].is_string()) << handler.dump();
    kinds[handler["name"]] = handler.value("kind", "");
    EXPECT_EQ(handler["position"], head) << handler.dump();
    EXPECT_EQ(handler["lag"], 0) << handler.dump();
    EXPECT_EQ(handler["state"], "running") << handler.dump();
    EXPECT_TRUE(handler["last_error"].is_null()) << handler.dump();
  }
  EXPECT_EQ(kinds,
            (std::map<std::string, std::string>{{"giftcard_summary", "projector"},
                                                {"bank_accounts", "projector"},
                                                {"bank_transfers", "projector"},
                                                {"bank_transfer_process", "process_manager"}}));

  ProcessResult letters = run_cqrsctl(port, {"dead-letters"});
  EXPECT_EQ(letters.exit_code, 0) << letters.describe();
  EXPECT_TRUE(letters.stdout_lines.empty()) << letters.describe();
  ProcessResult mine = run_cqrsctl(port, {"dead-letters", "giftcard_summary"});
  EXPECT_EQ(mine.exit_code, 0) << mine.describe();
  EXPECT_TRUE(mine.stdout_lines.empty()) << mine.describe();
  EXPECT_EQ(scalar("SELECT count(*) FROM cqrs.dead_letters"), "0");

  ProcessResult unknown = run_cqrsctl(port, {"handler", "reset", "nope"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.describe();
  ASSERT_FALSE(unknown.stdout_lines.empty()) << unknown.describe();
  json reply = json::parse(unknown.stdout_lines.front(), nullptr, false);
  EXPECT_EQ(reply.value("status", ""), "error") << unknown.describe();
  EXPECT_EQ(reply.value("error", ""), "unknown_handler") << unknown.describe();
  // A process manager has no read model to rebuild.
  ProcessResult manager = run_cqrsctl(port, {"handler", "reset", "bank_transfer_process"});
  EXPECT_EQ(manager.exit_code, 2) << manager.describe();
  ASSERT_FALSE(manager.stdout_lines.empty()) << manager.describe();
  EXPECT_EQ(json::parse(manager.stdout_lines.front(), nullptr, false).value("error", ""),
            "invalid_argument")
      << manager.describe();
  daemon->stop();
}

}  // namespace
}  // namespace cqrs::system_test
