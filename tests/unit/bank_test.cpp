// Bank rules, through the given/when/then helper: every event, every rejection code, and the
// transfer steps' idempotency.
#include "bank/bank.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "cqrs/testing/aggregate_case.hpp"
#include "giftcard/giftcard.hpp"

namespace bank {
namespace {

using AccountCase = cqrs::testing::AggregateCase<Account>;
using TransferCase = cqrs::testing::AggregateCase<Transfer>;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(BankDomain, CommandsAddressTheirStreams) {
  cqrs::Domain domain;
  register_domain(domain);
  auto debit =
      domain.decode("DebitAccount", R"({"account_id":"a1","transfer_id":"t1","amount":5})");
  ASSERT_TRUE(debit.ok()) << debit.error().to_string();
  EXPECT_EQ(debit->stream_id, "account-a1");
  auto transfer = domain.decode(
      "TransferMoney", R"({"transfer_id":"t1","from_account":"a1","to_account":"a2","amount":5})");
  ASSERT_TRUE(transfer.ok()) << transfer.error().to_string();
  EXPECT_EQ(transfer->stream_id, "transfer-t1");
}

TEST(BankDomain, RegistersBesideTheGiftCardDomain) {
  cqrs::Domain domain;
  giftcard::register_domain(domain);
  EXPECT_NO_THROW(register_domain(domain));
  EXPECT_EQ(domain.aggregates().size(), 3u);
}

// Opening.

TEST(Account, OpeningRecordsOwnerAndBalance) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", "ada@example.com", 1000})
                  .then_events(AccountOpened{"a1", "ada", "ada@example.com", 1000}));
  EXPECT_EQ(account.state().status, "open");
  EXPECT_EQ(account.state().balance, 1000);
}

TEST(Account, OpeningClaimsTheNormalizedEmail) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", "  Ada@Example.COM ", 5})
                  .then_events(AccountOpened{"a1", "ada", "ada@example.com", 5}));
  EXPECT_TRUE(account.then_claims({{"account_email", "ada@example.com", false}}));
  EXPECT_EQ(account.state().email, "ada@example.com");
}

TEST(Account, OpeningWithoutAnEmailAddressIsRejected) {
  for (const char* email : {"", "ada", "@example.com", "ada@", "ada lovelace@example.com"}) {
    AccountCase account(register_domain);
    EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", email, 5}).then_rejected("invalid_email"))
        << "'" << email << "'";
    EXPECT_TRUE(account.then_claims({}));
  }
}

TEST(Account, ClosingReleasesTheEmail) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0})
                  .when(CloseAccount{"a1"})
                  .then_events(AccountClosed{"a1"}));
  EXPECT_TRUE(account.then_claims({{"account_email", "ada@example.com", true}}));
}

TEST(Account, TheEmailScopeIsDeclaredWithItsCodeAndNormalizer) {
  cqrs::Domain domain;
  register_domain(domain);
  const cqrs::UniqueScope* scope = domain.unique_scopes().find("account_email");
  ASSERT_NE(scope, nullptr);
  EXPECT_EQ(scope->conflict_code, "email_taken");
  ASSERT_TRUE(scope->normalize);
  EXPECT_EQ(scope->normalize(" Bob@EXAMPLE.org\t"), "bob@example.org");
}

TEST(Account, OpeningWithNothingIsAllowed) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", "ada@example.com", 0})
                  .then_events(AccountOpened{"a1", "ada", "ada@example.com", 0}));
}

TEST(Account, OpeningWithANegativeBalanceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", "ada@example.com", -1})
                  .then_rejected("invalid_amount"));
}

TEST(Account, OpeningTwiceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0})
                  .when(OpenAccount{"a1", "bob", "bob@example.com", 0})
                  .then_rejected("account_exists"));
}

// Deposits.

TEST(Account, DepositingAddsToTheBalance) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(DepositMoney{"a1", 50})
                  .then_events(MoneyDeposited{"a1", 50, 150}));
  EXPECT_EQ(account.state().balance, 150);
}

TEST(Account, DepositingANonPositiveAmountIsRejected) {
  AccountCase account(register_domain);
  account.given(AccountOpened{"a1", "ada", "ada@example.com", 100});
  EXPECT_TRUE(account.when(DepositMoney{"a1", 0}).then_rejected("invalid_amount"));
  EXPECT_TRUE(account.when(DepositMoney{"a1", -5}).then_rejected("invalid_amount"));
}

TEST(Account, DepositingIntoAnUnknownAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(DepositMoney{"a1", 5}).then_rejected("account_not_found"));
}

TEST(Account, DepositingIntoAClosedAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0}, AccountClosed{"a1"})
                  .when(DepositMoney{"a1", 5})
                  .then_rejected("account_closed"));
}

TEST(Account, DepositBeyondTheLargestBalanceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", kMax})
                  .when(DepositMoney{"a1", 1})
                  .then_rejected("invalid_amount"));
}

// Withdrawals.

TEST(Account, WithdrawingTakesFromTheBalance) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(WithdrawMoney{"a1", 100})
                  .then_events(MoneyWithdrawn{"a1", 100, 0}));
  EXPECT_EQ(account.state().balance, 0);
}

TEST(Account, WithdrawingMoreThanTheBalanceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(WithdrawMoney{"a1", 101})
                  .then_rejected("insufficient_funds"));
  EXPECT_NE(account.outcome().rejection().message.find("100"), std::string::npos);
}

TEST(Account, WithdrawingANonPositiveAmountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(WithdrawMoney{"a1", 0})
                  .then_rejected("invalid_amount"));
}

TEST(Account, WithdrawingFromAnUnknownAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(WithdrawMoney{"a1", 5}).then_rejected("account_not_found"));
}

TEST(Account, WithdrawingFromAClosedAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0}, AccountClosed{"a1"})
                  .when(WithdrawMoney{"a1", 5})
                  .then_rejected("account_closed"));
}

// Closing.

TEST(Account, ClosingAnEmptyAccount) {
  AccountCase account(register_domain);
  EXPECT_TRUE(
      account.given(AccountOpened{"a1", "ada", "ada@example.com", 10}, MoneyWithdrawn{"a1", 10, 0})
          .when(CloseAccount{"a1"})
          .then_events(AccountClosed{"a1"}));
  EXPECT_EQ(account.state().status, "closed");
}

TEST(Account, ClosingAnAccountThatHoldsMoneyIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 10})
                  .when(CloseAccount{"a1"})
                  .then_rejected("account_not_empty"));
}

TEST(Account, ClosingAnUnknownAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(CloseAccount{"a1"}).then_rejected("account_not_found"));
}

TEST(Account, ClosingTwiceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0})
                  .when(CloseAccount{"a1"})
                  .when(CloseAccount{"a1"})
                  .then_rejected("account_closed"));
}

// Transfer debits.

TEST(Account, DebitTakesTheAmountForTheTransfer) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(DebitAccount{"a1", "t1", 30})
                  .then_events(AccountDebited{"a1", "t1", 30, 70}));
  EXPECT_EQ(account.state().balance, 70);
}

TEST(Account, DebitBeyondTheBalanceIsRecordedAsDeclined) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 10})
                  .when(DebitAccount{"a1", "t1", 30})
                  .then_events(TransferDebitRejected{"a1", "t1", 30, "insufficient_funds"}));
  EXPECT_EQ(account.state().balance, 10);
}

TEST(Account, DebitOfAnUnknownAccountIsRecordedWithoutOpeningIt) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(DebitAccount{"a1", "t1", 30})
                  .then_events(TransferDebitRejected{"a1", "t1", 30, "account_not_found"}));
  EXPECT_EQ(account.state().status, "none");
  EXPECT_TRUE(account.when(OpenAccount{"a1", "ada", "ada@example.com", 0})
                  .then_events(AccountOpened{"a1", "ada", "ada@example.com", 0}));
}

TEST(Account, DebitOfAClosedAccountIsRecordedAsDeclined) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0}, AccountClosed{"a1"})
                  .when(DebitAccount{"a1", "t1", 30})
                  .then_events(TransferDebitRejected{"a1", "t1", 30, "account_closed"}));
}

TEST(Account, DebitOfANonPositiveAmountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 100})
                  .when(DebitAccount{"a1", "t1", 0})
                  .then_rejected("invalid_amount"));
}

TEST(Account, RepeatedDebitRecordsNothing) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account
                  .given(AccountOpened{"a1", "ada", "ada@example.com", 100},
                         AccountDebited{"a1", "t1", 30, 70})
                  .when(DebitAccount{"a1", "t1", 30})
                  .then_events());
  EXPECT_EQ(account.state().balance, 70);
}

TEST(Account, DeclinedDebitStaysDeclinedAfterADeposit) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account
                  .given(AccountOpened{"a1", "ada", "ada@example.com", 10},
                         TransferDebitRejected{"a1", "t1", 30, "insufficient_funds"},
                         MoneyDeposited{"a1", 50, 60})
                  .when(DebitAccount{"a1", "t1", 30})
                  .then_events());
  EXPECT_EQ(account.state().balance, 60);
}

TEST(Account, DecidedTransfersSurviveASnapshot) {
  AccountCase account(register_domain);
  account.given(AccountOpened{"a1", "ada", "ada@example.com", 100},
                AccountDebited{"a1", "t1", 30, 70}, AccountCredited{"a1", "t2", 5, 75},
                AccountRefunded{"a1", "t1", 30, 105});
  Account restored = nlohmann::json(account.state()).get<Account>();
  EXPECT_TRUE(restored.execute(DebitAccount{"a1", "t1", 30}).events().empty());
  EXPECT_TRUE(restored.execute(CreditAccount{"a1", "t2", 5}).events().empty());
  EXPECT_TRUE(restored.execute(RefundAccount{"a1", "t1", 30}).events().empty());
  EXPECT_EQ(restored.balance, 105);
}

// Transfer credits.

TEST(Account, CreditAddsTheAmountForTheTransfer) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a2", "bob", "bob@example.com", 5})
                  .when(CreditAccount{"a2", "t1", 30})
                  .then_events(AccountCredited{"a2", "t1", 30, 35}));
  EXPECT_EQ(account.state().balance, 35);
}

TEST(Account, CreditToAnUnknownAccountIsRecordedWithoutOpeningIt) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(CreditAccount{"a2", "t1", 30})
                  .then_events(TransferCreditRejected{"a2", "t1", 30, "account_not_found"}));
  EXPECT_EQ(account.state().status, "none");
}

TEST(Account, CreditToAClosedAccountIsRecordedAsDeclined) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a2", "bob", "bob@example.com", 0}, AccountClosed{"a2"})
                  .when(CreditAccount{"a2", "t1", 30})
                  .then_events(TransferCreditRejected{"a2", "t1", 30, "account_closed"}));
  EXPECT_EQ(account.state().balance, 0);
}

TEST(Account, CreditBeyondTheLargestBalanceIsRecordedAsDeclined) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a2", "bob", "bob@example.com", kMax})
                  .when(CreditAccount{"a2", "t1", 1})
                  .then_events(TransferCreditRejected{"a2", "t1", 1, "balance_overflow"}));
}

TEST(Account, CreditOfANonPositiveAmountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a2", "bob", "bob@example.com", 0})
                  .when(CreditAccount{"a2", "t1", -3})
                  .then_rejected("invalid_amount"));
}

TEST(Account, RepeatedCreditRecordsNothing) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a2", "bob", "bob@example.com", 0})
                  .when(CreditAccount{"a2", "t1", 30})
                  .when(CreditAccount{"a2", "t1", 30})
                  .then_events());
  EXPECT_EQ(account.state().balance, 30);
}

// Transfer refunds.

TEST(Account, RefundReturnsTheDebitedAmount) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account
                  .given(AccountOpened{"a1", "ada", "ada@example.com", 100},
                         AccountDebited{"a1", "t1", 30, 70})
                  .when(RefundAccount{"a1", "t1", 30})
                  .then_events(AccountRefunded{"a1", "t1", 30, 100}));
  EXPECT_EQ(account.state().balance, 100);
}

TEST(Account, RefundToAClosedAccountStillReturnsTheMoney) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account
                  .given(AccountOpened{"a1", "ada", "ada@example.com", 30},
                         AccountDebited{"a1", "t1", 30, 0}, AccountClosed{"a1"})
                  .when(RefundAccount{"a1", "t1", 30})
                  .then_events(AccountRefunded{"a1", "t1", 30, 30}));
  EXPECT_EQ(account.state().status, "closed");
  EXPECT_EQ(account.state().balance, 30);
}

TEST(Account, RefundToAnUnknownAccountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.when(RefundAccount{"a1", "t1", 30}).then_rejected("account_not_found"));
}

TEST(Account, RefundOfANonPositiveAmountIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", 0})
                  .when(RefundAccount{"a1", "t1", 0})
                  .then_rejected("invalid_amount"));
}

TEST(Account, RefundBeyondTheLargestBalanceIsRejected) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account.given(AccountOpened{"a1", "ada", "ada@example.com", kMax})
                  .when(RefundAccount{"a1", "t1", 1})
                  .then_rejected("invalid_amount"));
}

TEST(Account, RepeatedRefundRecordsNothing) {
  AccountCase account(register_domain);
  EXPECT_TRUE(account
                  .given(AccountOpened{"a1", "ada", "ada@example.com", 100},
                         AccountDebited{"a1", "t1", 30, 70}, AccountRefunded{"a1", "t1", 30, 100})
                  .when(RefundAccount{"a1", "t1", 30})
                  .then_events());
  EXPECT_EQ(account.state().balance, 100);
}

// Transfers.

TEST(Transfer, RequestingRecordsTheTransfer) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.when(TransferMoney{"t1", "a1", "a2", 30})
                  .then_events(TransferRequested{"t1", "a1", "a2", 30}));
  EXPECT_EQ(transfer.state().status, "requested");
  EXPECT_EQ(transfer.state().amount, 30);
}

TEST(Transfer, RequestingANonPositiveAmountIsRejected) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.when(TransferMoney{"t1", "a1", "a2", 0}).then_rejected("invalid_amount"));
}

TEST(Transfer, RequestingToTheSameAccountIsRejected) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.when(TransferMoney{"t1", "a1", "a1", 30}).then_rejected("same_account"));
}

TEST(Transfer, RequestingTwiceIsRejected) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.given(TransferRequested{"t1", "a1", "a2", 30})
                  .when(TransferMoney{"t1", "a1", "a2", 30})
                  .then_rejected("transfer_exists"));
}

TEST(Transfer, CompletingRecordsTheEnd) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.given(TransferRequested{"t1", "a1", "a2", 30})
                  .when(CompleteTransfer{"t1"})
                  .then_events(TransferCompleted{"t1"}));
  EXPECT_EQ(transfer.state().status, "completed");
}

TEST(Transfer, FailingRecordsTheReason) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.given(TransferRequested{"t1", "a1", "a2", 30})
                  .when(FailTransfer{"t1", "insufficient_funds"})
                  .then_events(TransferFailed{"t1", "insufficient_funds"}));
  EXPECT_EQ(transfer.state().status, "failed");
  EXPECT_EQ(transfer.state().failure_reason, "insufficient_funds");
}

TEST(Transfer, FinishingAnUnknownTransferIsRejected) {
  TransferCase transfer(register_domain);
  EXPECT_TRUE(transfer.when(CompleteTransfer{"t1"}).then_rejected("transfer_not_found"));
  EXPECT_TRUE(
      transfer.when(FailTransfer{"t1", "account_closed"}).then_rejected("transfer_not_found"));
}

TEST(Transfer, FinishingTheSameWayTwiceRecordsNothing) {
  TransferCase completed(register_domain);
  EXPECT_TRUE(completed.given(TransferRequested{"t1", "a1", "a2", 30}, TransferCompleted{"t1"})
                  .when(CompleteTransfer{"t1"})
                  .then_events());
  TransferCase failed(register_domain);
  EXPECT_TRUE(
      failed.given(TransferRequested{"t1", "a1", "a2", 30}, TransferFailed{"t1", "account_closed"})
          .when(FailTransfer{"t1", "insufficient_funds"})
          .then_events());
  EXPECT_EQ(failed.state().failure_reason, "account_closed");
}

TEST(Transfer, FinishingTheOtherWayIsRejected) {
  TransferCase completed(register_domain);
  EXPECT_TRUE(completed.given(TransferRequested{"t1", "a1", "a2", 30}, TransferCompleted{"t1"})
                  .when(FailTransfer{"t1", "account_closed"})
                  .then_rejected("transfer_already_finished"));
  TransferCase failed(register_domain);
  EXPECT_TRUE(
      failed.given(TransferRequested{"t1", "a1", "a2", 30}, TransferFailed{"t1", "account_closed"})
          .when(CompleteTransfer{"t1"})
          .then_rejected("transfer_already_finished"));
}

}  // namespace
}  // namespace bank
