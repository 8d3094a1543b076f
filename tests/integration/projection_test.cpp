// The example read models against Postgres: giftcard_summary, bank_accounts and bank_transfers
// as their projectors write them, event by event; reset; and rebuilds that reproduce every row.
// Events are built by hand as the handler runtime would hand them over, so these tests exercise
// the projectors' SQL without the runtime.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "bank/bank.hpp"
#include "bank/bank_projection.hpp"
#include "cqrs/handlers/projection_sql.hpp"
#include "cqrs/pg/connection.hpp"
#include "giftcard/giftcard.hpp"
#include "giftcard/giftcard_projection.hpp"
#include "support/test_database.hpp"

namespace cqrs {
namespace {

using Rows = std::vector<std::vector<std::string>>;

// 2023-11-14 22:13:20 UTC in microseconds since the epoch.
constexpr int64_t kT0 = 1700000000'000000;

// The creation time of the n-th event of a History.
int64_t at(int n) { return kT0 + n; }
std::string at_text(int n) { return std::to_string(at(n)); }

// Events as the runtime hands them to projectors: consecutive positions, versions counted per
// stream, payload parsed, and the n-th event (1-based) created at at(n).
class History {
 public:
  template <Message E>
  History& add(const std::string& stream_id, const E& payload) {
    Event event;
    auto& record = event.record;
    record.global_position = std::ssize(events_) + 1;
    record.commit_id = static_cast<uint64_t>(record.global_position);
    record.stream_id = stream_id;
    record.stream_version = ++versions_[stream_id];
    record.event_id = Uuid::time_ordered();
    record.type = std::string(type_name_of<E>());
    record.created_at_us = at(static_cast<int>(record.global_position));
    event.data = nlohmann::json(payload);
    event.metadata = {{"correlation_id", stream_id}};
    record.data = event.data.dump();
    record.metadata = event.metadata.dump();
    events_.push_back(std::move(event));
    return *this;
  }
  const std::vector<Event>& events() const { return events_; }

 private:
  std::vector<Event> events_;
  std::map<std::string, int64_t> versions_;
};

// Cards that end active, emptied and cancelled.
History giftcard_history() {
  using namespace giftcard;
  History history;
  history
      .add("giftcard-g1", GiftCardIssued{"g1", 100})       // 1
      .add("giftcard-g1", GiftCardRedeemed{"g1", 30, 70})  // 2
      .add("giftcard-g2", GiftCardIssued{"g2", 50})        // 3
      .add("giftcard-g2", GiftCardRedeemed{"g2", 50, 0})   // 4
      .add("giftcard-g2", GiftCardEmptied{"g2"})           // 5
      .add("giftcard-g3", GiftCardIssued{"g3", 20})        // 6
      .add("giftcard-g3", GiftCardRedeemed{"g3", 5, 15})   // 7
      .add("giftcard-g3", GiftCardCancelled{"g3", 15});    // 8
  return history;
}

// Accounts and transfers together, as in $all: a completed transfer, one whose debit is
// declined, one whose credit is declined (refunded), and one still pending.
History bank_history() {
  using namespace bank;
  History history;
  history
      .add("account-a", AccountOpened{"a", "alice", "alice@example.com", 100})        // 1
      .add("account-b", AccountOpened{"b", "bob", "bob@example.com", 0})              // 2
      .add("account-a", MoneyDeposited{"a", 50, 150})                                 // 3
      .add("account-a", MoneyWithdrawn{"a", 20, 130})                                 // 4
      .add("transfer-t1", TransferRequested{"t1", "a", "b", 30})                      // 5
      .add("account-a", AccountDebited{"a", "t1", 30, 100})                           // 6
      .add("account-b", AccountCredited{"b", "t1", 30, 30})                           // 7
      .add("transfer-t1", TransferCompleted{"t1"})                                    // 8
      .add("transfer-t2", TransferRequested{"t2", "a", "b", 500})                     // 9
      .add("account-a", TransferDebitRejected{"a", "t2", 500, "insufficient_funds"})  // 10
      .add("transfer-t2", TransferFailed{"t2", "insufficient_funds"})                 // 11
      .add("account-c", AccountOpened{"c", "carol", "carol@example.com", 5})          // 12
      .add("account-c", AccountClosed{"c"})                                           // 13
      .add("transfer-t3", TransferRequested{"t3", "a", "c", 40})                      // 14
      .add("account-a", AccountDebited{"a", "t3", 40, 60})                            // 15
      .add("account-c", TransferCreditRejected{"c", "t3", 40, "account_closed"})      // 16
      .add("account-a", AccountRefunded{"a", "t3", 40, 100})                          // 17
      .add("transfer-t3", TransferFailed{"t3", "account_closed"})                     // 18
      .add("transfer-t4", TransferRequested{"t4", "b", "a", 10});                     // 19
  return history;
}

// The read models, each with the history it is built from.
struct ReadModel {
  Projector& projector;
  History history;
  std::string table;
  std::string key;
};

class Projections : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = testing::TestDatabase::create();
    ASSERT_NE(db_, nullptr);
    sql_ = db_->connect();
    ASSERT_NE(sql_, nullptr);
    // Timestamps in the table dumps print the same whatever the server's default.
    ASSERT_TRUE(sql_->exec("SET TimeZone = 'UTC'"));
  }

  // Projects one event, its statements run at once; a statement's failure is the event's.
  Result<void> project_now(Projector& projector, const Event& event) {
    ImmediateProjectionSql sql(*sql_);
    if (auto done = projector.project(event, sql); !done) return done;
    if (sql.failure()) return *sql.failure();
    return {};
  }

  // Projects every event in one transaction, as the runtime does with a batch.
  ::testing::AssertionResult project(Projector& projector, const History& history) {
    if (auto begun = sql_->exec("BEGIN"); !begun) {
      return ::testing::AssertionFailure() << begun.error().to_string();
    }
    for (const Event& event : history.events()) {
      if (auto done = project_now(projector, event); !done) {
        (void)sql_->exec("ROLLBACK");
        return ::testing::AssertionFailure() << event.type() << " #" << event.record.global_position
                                             << ": " << done.error().to_string();
      }
    }
    if (auto committed = sql_->exec("COMMIT"); !committed) {
      return ::testing::AssertionFailure() << committed.error().to_string();
    }
    return ::testing::AssertionSuccess();
  }

  // Runs reset_sql() in its own transaction, as the runtime does with the checkpoint.
  ::testing::AssertionResult reset(Projector& projector) {
    auto done = sql_->exec("BEGIN; " + projector.reset_sql() + "; COMMIT");
    if (!done) return ::testing::AssertionFailure() << done.error().to_string();
    return ::testing::AssertionSuccess();
  }

  // Every field as text, "NULL" for SQL NULL.
  Rows rows(const std::string& query) {
    auto result = sql_->exec(query);
    EXPECT_TRUE(result.ok()) << query << ": " << result.error().to_string();
    Rows rows;
    if (!result) return rows;
    for (int row = 0; row < result->rows(); ++row) {
      auto& fields = rows.emplace_back();
      for (int column = 0; column < result->columns(); ++column) {
        fields.emplace_back(result->is_null(row, column) ? "NULL" : result->text(row, column));
      }
    }
    return rows;
  }

  // The whole table, every column, ordered by its key.
  Rows dump(const std::string& table, const std::string& key) {
    return rows("SELECT * FROM " + table + " ORDER BY " + key);
  }

  std::vector<ReadModel> read_models() {
    return {{giftcards_, giftcard_history(), "giftcard_summary", "card_id"},
            {accounts_, bank_history(), "bank_accounts", "account_id"},
            {transfers_, bank_history(), "bank_transfers", "transfer_id"}};
  }

  std::unique_ptr<testing::TestDatabase> db_;
  std::unique_ptr<pg::Connection> sql_;
  giftcard::SummaryProjector giftcards_;
  bank::AccountsProjector accounts_;
  bank::TransfersProjector transfers_;
};

// Timestamps as microseconds since the epoch, to compare with the events' created_at_us.
constexpr const char* kGiftCardRows =
    "SELECT card_id, initial_value, remaining_value, status,"
    "       (extract(epoch FROM issued_at) * 1000000)::bigint,"
    "       (extract(epoch FROM updated_at) * 1000000)::bigint"
    "  FROM giftcard_summary ORDER BY card_id";
constexpr const char* kAccountRows =
    "SELECT account_id, owner, balance, status,"
    "       (extract(epoch FROM updated_at) * 1000000)::bigint"
    "  FROM bank_accounts ORDER BY account_id";
constexpr const char* kTransferRows =
    "SELECT transfer_id, from_account, to_account, amount, status, failure_reason,"
    "       (extract(epoch FROM updated_at) * 1000000)::bigint"
    "  FROM bank_transfers ORDER BY transfer_id";

TEST_F(Projections, GiftCardSummaryFollowsIssueRedeemEmptyAndCancel) {
  ASSERT_TRUE(project(giftcards_, giftcard_history()));
  EXPECT_EQ(rows(kGiftCardRows), (Rows{
                                     {"g1", "100", "70", "active", at_text(1), at_text(2)},
                                     {"g2", "50", "0", "emptied", at_text(3), at_text(5)},
                                     {"g3", "20", "15", "cancelled", at_text(6), at_text(8)},
                                 }));
}

TEST_F(Projections, BankAccountsTakeTheBalanceEachEventCarries) {
  ASSERT_TRUE(project(accounts_, bank_history()));
  // a: opened, deposit, withdrawal, debit, refund (declined t2 debit changes nothing);
  // b: credited; c: closed (its declined t3 credit changes nothing, not even updated_at).
  EXPECT_EQ(rows(kAccountRows), (Rows{
                                    {"a", "alice", "100", "open", at_text(17)},
                                    {"b", "bob", "30", "open", at_text(7)},
                                    {"c", "carol", "5", "closed", at_text(13)},
                                }));
}

TEST_F(Projections, BankAccountBalanceAfterEachBalanceEvent) {
  // Event by event, so that every balance-carrying type is seen to set the balance.
  const std::vector<std::pair<int, std::string>> expected = {{1, "100"}, {3, "150"}, {4, "130"},
                                                             {6, "100"}, {15, "60"}, {17, "100"}};
  History history = bank_history();
  size_t next = 0;
  ASSERT_TRUE(sql_->exec("BEGIN"));
  for (const auto& [position, balance] : expected) {
    for (; next < static_cast<size_t>(position); ++next) {
      auto done = project_now(accounts_, history.events()[next]);
      ASSERT_TRUE(done.ok()) << done.error().to_string();
    }
    EXPECT_EQ(rows("SELECT balance, (extract(epoch FROM updated_at) * 1000000)::bigint"
                   "  FROM bank_accounts WHERE account_id = 'a'"),
              (Rows{{balance, at_text(position)}}))
        << "after event " << position << " (" << history.events()[position - 1].type() << ")";
  }
  ASSERT_TRUE(sql_->exec("COMMIT"));
}

TEST_F(Projections, BankTransfersArePendingThenCompletedOrFailed) {
  ASSERT_TRUE(project(transfers_, bank_history()));
  EXPECT_EQ(rows(kTransferRows),
            (Rows{
                {"t1", "a", "b", "30", "completed", "NULL", at_text(8)},
                {"t2", "a", "b", "500", "failed", "insufficient_funds", at_text(11)},
                {"t3", "a", "c", "40", "failed", "account_closed", at_text(18)},
                {"t4", "b", "a", "10", "pending", "NULL", at_text(19)},
            }));
}

TEST_F(Projections, TimestampsAreTheEventTimesToTheMicrosecond) {
  ASSERT_TRUE(project(giftcards_, giftcard_history()));
  EXPECT_EQ(rows("SELECT issued_at, updated_at FROM giftcard_summary WHERE card_id = 'g1'"),
            (Rows{{"2023-11-14 22:13:20.000001+00", "2023-11-14 22:13:20.000002+00"}}));
}

TEST_F(Projections, SubscribeToExactlyTheEventsTheyProject) {
  using Types = std::set<std::string>;
  auto types = [](const Projector& projector) {
    auto list = projector.event_types();
    return Types(list.begin(), list.end());
  };
  EXPECT_EQ(types(giftcards_),
            (Types{"GiftCardIssued", "GiftCardRedeemed", "GiftCardEmptied", "GiftCardCancelled"}));
  EXPECT_EQ(types(accounts_),
            (Types{"AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountDebited",
                   "AccountCredited", "AccountRefunded", "AccountClosed"}));
  EXPECT_EQ(types(transfers_), (Types{"TransferRequested", "TransferCompleted", "TransferFailed"}));
  EXPECT_EQ(giftcards_.name(), "giftcard_summary");
  EXPECT_EQ(accounts_.name(), "bank_accounts");
  EXPECT_EQ(transfers_.name(), "bank_transfers");
}

// The web page's signal: the gift card projector names its channel, and no trigger notifies from
// inside its transactions (that would hold PostgreSQL's notification lock through their commits).
TEST_F(Projections, GiftCardSummaryAnnouncesChangesAfterItsTransactions) {
  EXPECT_EQ(giftcards_.change_channel(), std::string(giftcard::kSummaryChannel));
  EXPECT_EQ(accounts_.change_channel(), "");
  EXPECT_EQ(transfers_.change_channel(), "");
  EXPECT_EQ(rows("SELECT tgname FROM pg_trigger"
                 " WHERE tgrelid = 'public.giftcard_summary'::regclass AND NOT tgisinternal"),
            Rows{});
}

TEST_F(Projections, AnEventWithoutItsRowFails) {
  History history;
  history.add("giftcard-x", giftcard::GiftCardRedeemed{"x", 1, 9})
      .add("account-x", bank::MoneyDeposited{"x", 1, 1})
      .add("transfer-x", bank::TransferCompleted{"x"});
  ASSERT_TRUE(sql_->exec("BEGIN"));
  auto giftcard = project_now(giftcards_, history.events()[0]);
  auto account = project_now(accounts_, history.events()[1]);
  auto transfer = project_now(transfers_, history.events()[2]);
  ASSERT_TRUE(sql_->exec("ROLLBACK"));
  ASSERT_FALSE(giftcard.ok());
  EXPECT_EQ(giftcard.error().code(), "read_model_out_of_step");
  ASSERT_FALSE(account.ok());
  EXPECT_EQ(account.error().code(), "read_model_out_of_step");
  ASSERT_FALSE(transfer.ok());
  EXPECT_EQ(transfer.error().code(), "read_model_out_of_step");
}

TEST_F(Projections, ProjectingTheHistoryAgainChangesNothing) {
  for (const ReadModel& model : read_models()) {
    SCOPED_TRACE(model.table);
    ASSERT_TRUE(project(model.projector, model.history));
    Rows once = dump(model.table, model.key);
    ASSERT_TRUE(project(model.projector, model.history));
    EXPECT_EQ(dump(model.table, model.key), once);
  }
}

TEST_F(Projections, ResetEmptiesTheReadModel) {
  for (const ReadModel& model : read_models()) {
    SCOPED_TRACE(model.table);
    ASSERT_TRUE(project(model.projector, model.history));
    ASSERT_FALSE(dump(model.table, model.key).empty());
    ASSERT_TRUE(reset(model.projector));
    EXPECT_TRUE(dump(model.table, model.key).empty());
  }
}

TEST_F(Projections, RebuildAfterResetGivesIdenticalRows) {
  for (const ReadModel& model : read_models()) {
    SCOPED_TRACE(model.table);
    ASSERT_TRUE(project(model.projector, model.history));
    Rows before = dump(model.table, model.key);
    ASSERT_TRUE(reset(model.projector));
    ASSERT_TRUE(project(model.projector, model.history));
    EXPECT_EQ(dump(model.table, model.key), before);
    EXPECT_FALSE(before.empty());
  }
}

}  // namespace
}  // namespace cqrs
