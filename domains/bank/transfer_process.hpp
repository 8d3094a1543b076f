// The transfer process: moves the money of a requested transfer through the accounts and then
// finishes the transfer. One instance per transfer, keyed by transfer_id.
//
//   TransferRequested       -> DebitAccount to the source
//   AccountDebited          -> CreditAccount to the destination
//   TransferDebitRejected   -> FailTransfer (the debit's reason)
//   AccountCredited         -> CompleteTransfer
//   TransferCreditRejected  -> RefundAccount to the source
//   AccountRefunded         -> FailTransfer (the credit's reason)
//   TransferCompleted, TransferFailed -> the instance ends
//
// Money is conserved on every path: it leaves the source only by AccountDebited, and after that
// either reaches the destination or comes back by AccountRefunded before the transfer fails.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cqrs/handlers/handler.hpp"

namespace bank {

// The instance state, saved as JSON between events:
//   {"from_account": "a1", "to_account": "a2", "amount": 500, "step": "crediting",
//    "credit_rejection": ""}
struct TransferProcessState {
  std::string from_account;
  std::string to_account;
  int64_t amount = 0;
  // What the process waits for: debiting | crediting | refunding | completing | failing.
  std::string step;
  // Why the destination declined the credit; the reason the transfer fails with after the refund.
  std::string credit_rejection;
};
CQRS_JSON(TransferProcessState, from_account, to_account, amount, step, credit_rejection)

class TransferProcess final : public cqrs::ProcessManager {
 public:
  std::string name() const override { return "bank_transfer_process"; }
  std::vector<std::string> event_types() const override;
  // Keyed by the event's transfer_id; events without one (deposits, withdrawals) are ignored.
  cqrs::Interest interested(const cqrs::Event& event) const override;
  std::vector<cqrs::CommandRequest> handle(const nlohmann::json& state,
                                           const cqrs::Event& event) const override;
  nlohmann::json apply(nlohmann::json state, const cqrs::Event& event) const override;
};

}  // namespace bank
