// Account and transfer rules.
#include "bank/bank.hpp"

#include <limits>

#include "bank/bank_projection.hpp"
#include "bank/transfer_process.hpp"

namespace bank {
namespace {

cqrs::Rejection invalid_amount(const std::string& what, int64_t amount) {
  return cqrs::reject("invalid_amount",
                      what + " needs a positive amount, got " + std::to_string(amount));
}

cqrs::Rejection account_not_found(const std::string& account_id) {
  return cqrs::reject("account_not_found", "account " + account_id + " does not exist");
}

cqrs::Rejection account_closed(const std::string& account_id) {
  return cqrs::reject("account_closed", "account " + account_id + " is closed");
}

// Adding a positive `amount` to `balance` would not fit in int64.
bool overflows(int64_t balance, int64_t amount) {
  return balance > std::numeric_limits<int64_t>::max() - amount;
}

cqrs::Rejection overflowing_amount(const std::string& account_id, int64_t amount) {
  return cqrs::reject("invalid_amount", "adding " + std::to_string(amount) + " to account " +
                                            account_id + " would overflow its balance");
}

}  // namespace

cqrs::Outcome Account::execute(const OpenAccount& command) const {
  if (status != "none") {
    return cqrs::reject("account_exists", "account " + command.account_id + " already exists");
  }
  if (command.initial_balance < 0) {
    return cqrs::reject("invalid_amount", "an initial balance cannot be negative, got " +
                                              std::to_string(command.initial_balance));
  }
  std::string address = cqrs::normalize_email(command.email);
  auto at = address.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == address.size() ||
      address.find_first_of(" \t\r\n") != std::string::npos) {
    return cqrs::reject("invalid_email",
                        "'" + command.email + "' is not an e-mail address (name@domain)");
  }
  cqrs::Outcome outcome =
      AccountOpened{command.account_id, command.owner, address, command.initial_balance};
  outcome.claim(kAccountEmailScope, address);
  return outcome;
}

cqrs::Outcome Account::execute(const DepositMoney& command) const {
  if (status == "none") return account_not_found(command.account_id);
  if (command.amount <= 0) return invalid_amount("a deposit", command.amount);
  if (status == "closed") return account_closed(command.account_id);
  if (overflows(balance, command.amount)) {
    return overflowing_amount(command.account_id, command.amount);
  }
  return MoneyDeposited{command.account_id, command.amount, balance + command.amount};
}

cqrs::Outcome Account::execute(const WithdrawMoney& command) const {
  if (status == "none") return account_not_found(command.account_id);
  if (command.amount <= 0) return invalid_amount("a withdrawal", command.amount);
  if (status == "closed") return account_closed(command.account_id);
  if (command.amount > balance) {
    return cqrs::reject("insufficient_funds", "insufficient funds: account " + command.account_id +
                                                  " has " + std::to_string(balance) + ", " +
                                                  std::to_string(command.amount) + " requested");
  }
  return MoneyWithdrawn{command.account_id, command.amount, balance - command.amount};
}

cqrs::Outcome Account::execute(const CloseAccount& command) const {
  if (status == "none") return account_not_found(command.account_id);
  if (status == "closed") {
    return cqrs::reject("account_closed", "account " + command.account_id + " is already closed");
  }
  if (balance != 0) {
    return cqrs::reject("account_not_empty", "account " + command.account_id + " still holds " +
                                                 std::to_string(balance) + "; withdraw it first");
  }
  cqrs::Outcome outcome = AccountClosed{command.account_id};
  if (!email.empty()) outcome.release(kAccountEmailScope, email);
  return outcome;
}

// A bad amount is the sender's mistake, not a business outcome, so it stays a rejection; every
// other failure is recorded for the process to react to.
cqrs::Outcome Account::execute(const DebitAccount& command) const {
  if (command.amount <= 0) return invalid_amount("a debit", command.amount);
  if (debits.contains(command.transfer_id)) return cqrs::Outcome();  // already decided
  auto declined = [&command](const char* reason) {
    return TransferDebitRejected{command.account_id, command.transfer_id, command.amount, reason};
  };
  // A missing account has no state, yet the process must still learn that the debit failed: the
  // declined debit becomes the stream's first event. Its apply() leaves the status "none", so the
  // account can still be opened later.
  if (status == "none") return declined("account_not_found");
  if (status == "closed") return declined("account_closed");
  if (command.amount > balance) return declined("insufficient_funds");
  return AccountDebited{command.account_id, command.transfer_id, command.amount,
                        balance - command.amount};
}

cqrs::Outcome Account::execute(const CreditAccount& command) const {
  if (command.amount <= 0) return invalid_amount("a credit", command.amount);
  if (credits.contains(command.transfer_id)) return cqrs::Outcome();  // already decided
  auto declined = [&command](const char* reason) {
    return TransferCreditRejected{command.account_id, command.transfer_id, command.amount, reason};
  };
  // As for debits, a missing account records the declined credit without being opened.
  if (status == "none") return declined("account_not_found");
  if (status == "closed") return declined("account_closed");
  if (overflows(balance, command.amount)) return declined("balance_overflow");
  return AccountCredited{command.account_id, command.transfer_id, command.amount,
                         balance + command.amount};
}

cqrs::Outcome Account::execute(const RefundAccount& command) const {
  if (command.amount <= 0) return invalid_amount("a refund", command.amount);
  // Only a debited account is refunded, so a missing one means the sender is wrong.
  if (status == "none") return account_not_found(command.account_id);
  if (refunds.contains(command.transfer_id)) return cqrs::Outcome();  // already refunded
  // A closed account is refunded too: the money left it for the transfer and must come back, or
  // it vanishes. The account stays closed, its balance showing the returned amount.
  if (overflows(balance, command.amount)) {
    return overflowing_amount(command.account_id, command.amount);
  }
  return AccountRefunded{command.account_id, command.transfer_id, command.amount,
                         balance + command.amount};
}

void Account::apply(const AccountOpened& event) {
  account_id = event.account_id;
  owner = event.owner;
  email = event.email;
  status = "open";
  balance = event.initial_balance;
}

void Account::apply(const MoneyDeposited& event) { balance = event.balance; }

void Account::apply(const MoneyWithdrawn& event) { balance = event.balance; }

void Account::apply(const AccountClosed&) { status = "closed"; }

void Account::apply(const AccountDebited& event) {
  balance = event.balance;
  debits.insert(event.transfer_id);
}

void Account::apply(const TransferDebitRejected& event) { debits.insert(event.transfer_id); }

void Account::apply(const AccountCredited& event) {
  balance = event.balance;
  credits.insert(event.transfer_id);
}

void Account::apply(const TransferCreditRejected& event) { credits.insert(event.transfer_id); }

void Account::apply(const AccountRefunded& event) {
  balance = event.balance;
  refunds.insert(event.transfer_id);
}

cqrs::Outcome Transfer::execute(const TransferMoney& command) const {
  if (status != "none") {
    return cqrs::reject("transfer_exists", "transfer " + command.transfer_id + " already exists");
  }
  if (command.amount <= 0) return invalid_amount("a transfer", command.amount);
  if (command.from_account == command.to_account) {
    return cqrs::reject("same_account", "transfer " + command.transfer_id +
                                            " would move money from " + command.from_account +
                                            " to itself");
  }
  return TransferRequested{command.transfer_id, command.from_account, command.to_account,
                           command.amount};
}

// Finishing a transfer the way it already finished is a retry and records nothing. Finishing it
// the other way would contradict what the accounts recorded, so that is refused.
cqrs::Outcome Transfer::execute(const CompleteTransfer& command) const {
  if (status == "none") {
    return cqrs::reject("transfer_not_found",
                        "transfer " + command.transfer_id + " does not exist");
  }
  if (status == "completed") return cqrs::Outcome();
  if (status == "failed") {
    return cqrs::reject("transfer_already_finished",
                        "transfer " + command.transfer_id + " already failed: " + failure_reason);
  }
  return TransferCompleted{command.transfer_id};
}

cqrs::Outcome Transfer::execute(const FailTransfer& command) const {
  if (status == "none") {
    return cqrs::reject("transfer_not_found",
                        "transfer " + command.transfer_id + " does not exist");
  }
  if (status == "failed") return cqrs::Outcome();
  if (status == "completed") {
    return cqrs::reject("transfer_already_finished",
                        "transfer " + command.transfer_id + " already completed");
  }
  return TransferFailed{command.transfer_id, command.reason};
}

void Transfer::apply(const TransferRequested& event) {
  transfer_id = event.transfer_id;
  from_account = event.from_account;
  to_account = event.to_account;
  amount = event.amount;
  status = "requested";
}

void Transfer::apply(const TransferCompleted&) { status = "completed"; }

void Transfer::apply(const TransferFailed& event) {
  status = "failed";
  failure_reason = event.reason;
}

void register_domain(cqrs::Domain& domain) {
  domain.unique_scope(kAccountEmailScope, cqrs::normalize_email, "email_taken");
  domain.aggregate<Account>("Account", "account", "account_id")
      .handles<OpenAccount, DepositMoney, WithdrawMoney, CloseAccount, DebitAccount, CreditAccount,
               RefundAccount>()
      .creates<OpenAccount>()
      // The transfer process's steps: by hand, a debit for no transfer takes money to nowhere,
      // and one for a running transfer can wedge it.
      .internal<DebitAccount, CreditAccount, RefundAccount>()
      .applies<AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed, AccountDebited,
               TransferDebitRejected, AccountCredited, TransferCreditRejected, AccountRefunded>();
  domain.aggregate<Transfer>("Transfer", "transfer", "transfer_id")
      .handles<TransferMoney, CompleteTransfer, FailTransfer>()
      .creates<TransferMoney>()
      // Only the transfer process knows when the money has arrived or gone back: a client's
      // FailTransfer while the money is on its way would end the process and lose the debit.
      .internal<CompleteTransfer, FailTransfer>()
      .applies<TransferRequested, TransferCompleted, TransferFailed>();
  domain.add_handler(std::make_shared<AccountsProjector>());
  domain.add_handler(std::make_shared<TransfersProjector>());
  domain.add_handler(std::make_shared<TransferProcess>());
}

}  // namespace bank
