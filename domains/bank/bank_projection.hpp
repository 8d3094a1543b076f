// The bank read models: bank_accounts and bank_transfers, one row per account and per transfer
// (schema/004_read_models.sql).
#pragma once

#include <string>
#include <vector>

#include "cqrs/handlers/handler.hpp"

namespace bank {

// Both projectors write absolute values taken from the events (balances are the new balance the
// event carries, never an increment), and updated_at is the time of the last event that changed
// the row, so projecting an event again leaves the row as it was and a rebuild reproduces it
// exactly. Events of other types are ignored.
// Errors: read_model_out_of_step when an event other than the row's first finds no row (the
// projector did not see the history from the start); store errors from `sql`.

// Keeps bank_accounts: owner, balance and status of every account. Declined transfer steps
// (TransferDebitRejected, TransferCreditRejected) change nothing and are not subscribed.
class AccountsProjector : public cqrs::Projector {
 public:
  std::string name() const override { return "bank_accounts"; }
  std::vector<std::string> event_types() const override;
  cqrs::Result<void> project(const cqrs::Event& event, cqrs::ProjectionSql& sql) override;
  std::string reset_sql() const override { return "TRUNCATE bank_accounts"; }
};

// Keeps bank_transfers: each transfer's accounts, amount and status (pending, then completed or
// failed with the reason).
class TransfersProjector : public cqrs::Projector {
 public:
  std::string name() const override { return "bank_transfers"; }
  std::vector<std::string> event_types() const override;
  cqrs::Result<void> project(const cqrs::Event& event, cqrs::ProjectionSql& sql) override;
  std::string reset_sql() const override { return "TRUNCATE bank_transfers"; }
};

}  // namespace bank
