// SQL of the bank read models.
//
// Event times are microseconds since the epoch, turned into timestamptz as 'epoch' + n
// microseconds: exact to the microsecond, unlike to_timestamp(), which goes through seconds as a
// double.
#include "bank/bank_projection.hpp"

#include "bank/bank.hpp"
#include "cqrs/pg/connection.hpp"

namespace bank {
namespace {

using cqrs::pg::Params;

template <cqrs::Message E>
bool is(const cqrs::Event& event) {
  return event.type() == cqrs::type_name_of<E>();
}

template <cqrs::Message... E>
std::vector<std::string> type_names() {
  return {std::string(cqrs::type_name_of<E>())...};
}

// Runs an INSERT ... ON CONFLICT DO NOTHING of a row's first event. The row exists only if this
// event was projected already, and later events may have changed it since: leave it alone.
cqrs::Result<void> insert_row(cqrs::ProjectionSql& sql, std::string_view statement, Params params) {
  sql.queue(std::string(statement), std::move(params));
  return {};
}

// Runs an UPDATE of the row `key` names in `table`. The row's first event created it, so
// finding none means the read model missed part of the history: fail rather than drop the change.
cqrs::Result<void> update_row(cqrs::ProjectionSql& sql, std::string_view table,
                              const std::string& key, std::string_view statement, Params params) {
  sql.queue(std::string(statement), std::move(params),
            std::string(table) + " has no row for " + key);
  return {};
}

// The events that carry an account's new balance.
template <cqrs::Message E>
cqrs::Result<void> set_balance(const cqrs::Event& event, cqrs::ProjectionSql& sql) {
  auto changed = event.as<E>();
  return update_row(
      sql, "bank_accounts", changed.account_id,
      "UPDATE bank_accounts SET balance = $2,"
      "  updated_at = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
      " WHERE account_id = $1",
      Params().add(changed.account_id).add(changed.balance).add(event.record.created_at_us));
}

}  // namespace

std::vector<std::string> AccountsProjector::event_types() const {
  return type_names<AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountDebited, AccountCredited,
                    AccountRefunded, AccountClosed>();
}

cqrs::Result<void> AccountsProjector::project(const cqrs::Event& event, cqrs::ProjectionSql& sql) {
  const int64_t at = event.record.created_at_us;
  if (is<AccountOpened>(event)) {
    auto opened = event.as<AccountOpened>();
    return insert_row(
        sql,
        "INSERT INTO bank_accounts (account_id, owner, email, balance, status, updated_at)"
        " VALUES ($1, $2, $3, $4, 'open',"
        "         'epoch'::timestamptz + $5::bigint * interval '1 microsecond')"
        " ON CONFLICT (account_id) DO NOTHING",
        Params()
            .add(opened.account_id)
            .add(opened.owner)
            .add(opened.email)
            .add(opened.initial_balance)
            .add(at));
  }
  if (is<MoneyDeposited>(event)) return set_balance<MoneyDeposited>(event, sql);
  if (is<MoneyWithdrawn>(event)) return set_balance<MoneyWithdrawn>(event, sql);
  if (is<AccountDebited>(event)) return set_balance<AccountDebited>(event, sql);
  if (is<AccountCredited>(event)) return set_balance<AccountCredited>(event, sql);
  if (is<AccountRefunded>(event)) return set_balance<AccountRefunded>(event, sql);
  if (is<AccountClosed>(event)) {
    auto closed = event.as<AccountClosed>();
    return update_row(sql, "bank_accounts", closed.account_id,
                      "UPDATE bank_accounts SET status = 'closed',"
                      "  updated_at = 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'"
                      " WHERE account_id = $1",
                      Params().add(closed.account_id).add(at));
  }
  return {};
}

std::vector<std::string> TransfersProjector::event_types() const {
  return type_names<TransferRequested, TransferCompleted, TransferFailed>();
}

cqrs::Result<void> TransfersProjector::project(const cqrs::Event& event, cqrs::ProjectionSql& sql) {
  const int64_t at = event.record.created_at_us;
  if (is<TransferRequested>(event)) {
    auto requested = event.as<TransferRequested>();
    return insert_row(sql,
                      "INSERT INTO bank_transfers"
                      "  (transfer_id, from_account, to_account, amount, status, updated_at)"
                      " VALUES ($1, $2, $3, $4, 'pending',"
                      "         'epoch'::timestamptz + $5::bigint * interval '1 microsecond')"
                      " ON CONFLICT (transfer_id) DO NOTHING",
                      Params()
                          .add(requested.transfer_id)
                          .add(requested.from_account)
                          .add(requested.to_account)
                          .add(requested.amount)
                          .add(at));
  }
  if (is<TransferCompleted>(event)) {
    auto completed = event.as<TransferCompleted>();
    return update_row(sql, "bank_transfers", completed.transfer_id,
                      "UPDATE bank_transfers SET status = 'completed',"
                      "  updated_at = 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'"
                      " WHERE transfer_id = $1",
                      Params().add(completed.transfer_id).add(at));
  }
  if (is<TransferFailed>(event)) {
    auto failed = event.as<TransferFailed>();
    return update_row(sql, "bank_transfers", failed.transfer_id,
                      "UPDATE bank_transfers SET status = 'failed', failure_reason = $2,"
                      "  updated_at = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
                      " WHERE transfer_id = $1",
                      Params().add(failed.transfer_id).add(failed.reason).add(at));
  }
  return {};
}

}  // namespace bank
