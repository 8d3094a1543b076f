// The bank domain: accounts that take deposits and withdrawals, and transfers between them.
// Amounts are integer minor units (cents). Streams: "account-<account_id>",
// "transfer-<transfer_id>".
//
// A transfer is a process across three streams: TransferMoney records the request, then a
// process manager debits the source (DebitAccount), credits the destination (CreditAccount) or,
// when the credit is declined, refunds the source (RefundAccount), and finally completes or fails
// the transfer. A debit or credit that cannot happen is recorded as an event
// (TransferDebitRejected, TransferCreditRejected) rather than a rejection, so the process reads
// it from the store like any other step and reacts.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "cqrs/domain/domain.hpp"

namespace bank {

// Account commands.
struct OpenAccount {
  std::string account_id;
  std::string owner;
  std::string email;  // owns at most one open account at a time (scope account_email)
  int64_t initial_balance = 0;
};
CQRS_MESSAGE(OpenAccount, account_id, owner, email, initial_balance)

struct DepositMoney {
  std::string account_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(DepositMoney, account_id, amount)

struct WithdrawMoney {
  std::string account_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(WithdrawMoney, account_id, amount)

struct CloseAccount {
  std::string account_id;
};
CQRS_MESSAGE(CloseAccount, account_id)

// Transfer steps, sent to accounts by the transfer process.
struct DebitAccount {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(DebitAccount, account_id, transfer_id, amount)

struct CreditAccount {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(CreditAccount, account_id, transfer_id, amount)

struct RefundAccount {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(RefundAccount, account_id, transfer_id, amount)

// Account events.
struct AccountOpened {
  std::string account_id;
  std::string owner;
  std::string email;  // as normalized by the account_email scope
  int64_t initial_balance = 0;
};
CQRS_MESSAGE(AccountOpened, account_id, owner, email, initial_balance)

struct MoneyDeposited {
  std::string account_id;
  int64_t amount = 0;
  int64_t balance = 0;
};
CQRS_MESSAGE(MoneyDeposited, account_id, amount, balance)

struct MoneyWithdrawn {
  std::string account_id;
  int64_t amount = 0;
  int64_t balance = 0;
};
CQRS_MESSAGE(MoneyWithdrawn, account_id, amount, balance)

struct AccountClosed {
  std::string account_id;
};
CQRS_MESSAGE(AccountClosed, account_id)

struct AccountDebited {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
  int64_t balance = 0;
};
CQRS_MESSAGE(AccountDebited, account_id, transfer_id, amount, balance)

// `reason`: insufficient_funds, account_not_found or account_closed.
struct TransferDebitRejected {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
  std::string reason;
};
CQRS_MESSAGE(TransferDebitRejected, account_id, transfer_id, amount, reason)

struct AccountCredited {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
  int64_t balance = 0;
};
CQRS_MESSAGE(AccountCredited, account_id, transfer_id, amount, balance)

// `reason`: account_not_found, account_closed or balance_overflow.
struct TransferCreditRejected {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
  std::string reason;
};
CQRS_MESSAGE(TransferCreditRejected, account_id, transfer_id, amount, reason)

struct AccountRefunded {
  std::string account_id;
  std::string transfer_id;
  int64_t amount = 0;
  int64_t balance = 0;
};
CQRS_MESSAGE(AccountRefunded, account_id, transfer_id, amount, balance)

// The unique scope of account e-mails: an e-mail (compared trimmed and lower-cased) belongs to
// at most one open account; closing the account frees it. A clash is rejected as email_taken.
inline constexpr const char* kAccountEmailScope = "account_email";

// The account aggregate.
struct Account {
  std::string account_id;
  std::string owner;
  std::string email;
  std::string status = "none";  // none | open | closed
  int64_t balance = 0;
  // Transfer ids whose step was already decided here. A repeated step (the process retrying after
  // a lost reply) records nothing, and a declined debit or credit stays declined.
  std::set<std::string> debits;   // debited or declined
  std::set<std::string> credits;  // credited or declined
  std::set<std::string> refunds;

  cqrs::Outcome execute(const OpenAccount& command) const;
  cqrs::Outcome execute(const DepositMoney& command) const;
  cqrs::Outcome execute(const WithdrawMoney& command) const;
  cqrs::Outcome execute(const CloseAccount& command) const;
  cqrs::Outcome execute(const DebitAccount& command) const;
  cqrs::Outcome execute(const CreditAccount& command) const;
  cqrs::Outcome execute(const RefundAccount& command) const;

  void apply(const AccountOpened& event);
  void apply(const MoneyDeposited& event);
  void apply(const MoneyWithdrawn& event);
  void apply(const AccountClosed& event);
  void apply(const AccountDebited& event);
  void apply(const TransferDebitRejected& event);
  void apply(const AccountCredited& event);
  void apply(const TransferCreditRejected& event);
  void apply(const AccountRefunded& event);
};
CQRS_JSON(Account, account_id, owner, email, status, balance, debits, credits, refunds)

// Transfer commands.
struct TransferMoney {
  std::string transfer_id;
  std::string from_account;
  std::string to_account;
  int64_t amount = 0;
};
CQRS_MESSAGE(TransferMoney, transfer_id, from_account, to_account, amount)

struct CompleteTransfer {
  std::string transfer_id;
};
CQRS_MESSAGE(CompleteTransfer, transfer_id)

struct FailTransfer {
  std::string transfer_id;
  std::string reason;
};
CQRS_MESSAGE(FailTransfer, transfer_id, reason)

// Transfer events.
struct TransferRequested {
  std::string transfer_id;
  std::string from_account;
  std::string to_account;
  int64_t amount = 0;
};
CQRS_MESSAGE(TransferRequested, transfer_id, from_account, to_account, amount)

struct TransferCompleted {
  std::string transfer_id;
};
CQRS_MESSAGE(TransferCompleted, transfer_id)

struct TransferFailed {
  std::string transfer_id;
  std::string reason;
};
CQRS_MESSAGE(TransferFailed, transfer_id, reason)

// The transfer aggregate: the request and how it ended; the money moves in the accounts.
struct Transfer {
  std::string transfer_id;
  std::string from_account;
  std::string to_account;
  int64_t amount = 0;
  std::string status = "none";  // none | requested | completed | failed
  std::string failure_reason;

  cqrs::Outcome execute(const TransferMoney& command) const;
  cqrs::Outcome execute(const CompleteTransfer& command) const;
  cqrs::Outcome execute(const FailTransfer& command) const;

  void apply(const TransferRequested& event);
  void apply(const TransferCompleted& event);
  void apply(const TransferFailed& event);
};
CQRS_JSON(Transfer, transfer_id, from_account, to_account, amount, status, failure_reason)

// Registers the Account and Transfer aggregates and their commands.
void register_domain(cqrs::Domain& domain);

}  // namespace bank
