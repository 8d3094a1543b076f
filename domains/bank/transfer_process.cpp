// Transfer process rules: one transition per event, shared by handle() and apply() so that the
// commands sent and the state saved cannot disagree.
#include "bank/transfer_process.hpp"

#include <optional>
#include <string_view>
#include <utility>

#include "bank/bank.hpp"

namespace bank {
namespace {

using cqrs::CommandRequest;
using cqrs::Event;

// Steps: what an instance waits for after sending each command.
constexpr std::string_view kDebiting = "debiting";      // DebitAccount sent
constexpr std::string_view kCrediting = "crediting";    // CreditAccount sent
constexpr std::string_view kRefunding = "refunding";    // RefundAccount sent
constexpr std::string_view kCompleting = "completing";  // CompleteTransfer sent
constexpr std::string_view kFailing = "failing";        // FailTransfer sent

template <cqrs::Message E>
bool is(const Event& event) {
  return event.type() == cqrs::type_name_of<E>();
}

// The answers of the accounts to the steps; they continue an instance.
bool is_account_step(const Event& event) {
  return is<AccountDebited>(event) || is<TransferDebitRejected>(event) ||
         is<AccountCredited>(event) || is<TransferCreditRejected>(event) ||
         is<AccountRefunded>(event);
}

// What one event does to an instance: the commands to send, and the state after (none: the
// state stays as it was).
struct Transition {
  std::vector<CommandRequest> commands;
  std::optional<TransferProcessState> next;
};

// An account event answers the instance only when it is the step the instance waits for, from
// the account that step addressed, for the transfer's amount. Anything else (e.g. a DebitAccount
// sent by hand with this transfer id) must not move the process, or money could be credited
// that never left the source. A redelivered event meets the state from before it, so it passes.
template <class E>
bool answers(const TransferProcessState& state, std::string_view step, const std::string& account,
             const E& event) {
  return state.step == step && event.account_id == account && event.amount == state.amount;
}

Transition react(const nlohmann::json& saved, const Event& event) {
  if (is<TransferRequested>(event)) {
    // `start` continues an existing instance: its request was acted on already.
    if (!saved.empty()) return {};
    auto requested = event.as<TransferRequested>();
    return {{CommandRequest::of(
                DebitAccount{requested.from_account, requested.transfer_id, requested.amount})},
            TransferProcessState{requested.from_account, requested.to_account, requested.amount,
                                 std::string(kDebiting), ""}};
  }
  // A finished transfer needs nothing more; the runner deletes the instance (Interest::stop).
  if (!is_account_step(event)) return {};

  auto state = saved.get<TransferProcessState>();
  const std::string transfer_id = event.data.at("transfer_id").get<std::string>();
  if (is<AccountDebited>(event)) {
    if (!answers(state, kDebiting, state.from_account, event.as<AccountDebited>())) return {};
    state.step = kCrediting;
    return {{CommandRequest::of(CreditAccount{state.to_account, transfer_id, state.amount})},
            state};
  }
  if (is<TransferDebitRejected>(event)) {
    auto rejected = event.as<TransferDebitRejected>();
    if (!answers(state, kDebiting, state.from_account, rejected)) return {};
    state.step = kFailing;
    return {{CommandRequest::of(FailTransfer{transfer_id, rejected.reason})}, state};
  }
  if (is<AccountCredited>(event)) {
    if (!answers(state, kCrediting, state.to_account, event.as<AccountCredited>())) return {};
    state.step = kCompleting;
    return {{CommandRequest::of(CompleteTransfer{transfer_id})}, state};
  }
  if (is<TransferCreditRejected>(event)) {
    auto rejected = event.as<TransferCreditRejected>();
    if (!answers(state, kCrediting, state.to_account, rejected)) return {};
    // The money already left the source: it goes back before the transfer may fail.
    state.step = kRefunding;
    state.credit_rejection = rejected.reason;
    return {{CommandRequest::of(RefundAccount{state.from_account, transfer_id, state.amount})},
            state};
  }
  // AccountRefunded.
  if (!answers(state, kRefunding, state.from_account, event.as<AccountRefunded>())) return {};
  state.step = kFailing;
  return {{CommandRequest::of(FailTransfer{transfer_id, state.credit_rejection})}, state};
}

}  // namespace

std::vector<std::string> TransferProcess::event_types() const {
  return {std::string(cqrs::type_name_of<TransferRequested>()),
          std::string(cqrs::type_name_of<AccountDebited>()),
          std::string(cqrs::type_name_of<TransferDebitRejected>()),
          std::string(cqrs::type_name_of<AccountCredited>()),
          std::string(cqrs::type_name_of<TransferCreditRejected>()),
          std::string(cqrs::type_name_of<AccountRefunded>()),
          std::string(cqrs::type_name_of<TransferCompleted>()),
          std::string(cqrs::type_name_of<TransferFailed>())};
}

cqrs::Interest TransferProcess::interested(const Event& event) const {
  // find() on a non-object is end(), so odd payloads are ignored rather than thrown on.
  auto field = event.data.find("transfer_id");
  if (field == event.data.end() || !field->is_string()) return cqrs::Interest::ignore();
  std::string transfer_id = field->get<std::string>();
  if (transfer_id.empty()) return cqrs::Interest::ignore();

  if (is<TransferRequested>(event)) return cqrs::Interest::start(std::move(transfer_id));
  if (is<TransferCompleted>(event) || is<TransferFailed>(event)) {
    return cqrs::Interest::stop(std::move(transfer_id));
  }
  // Accounts answer every transfer; only those with a running instance are this one's.
  if (is_account_step(event)) return cqrs::Interest::continue_with(std::move(transfer_id));
  return cqrs::Interest::ignore();
}

std::vector<CommandRequest> TransferProcess::handle(const nlohmann::json& state,
                                                    const Event& event) const {
  return react(state, event).commands;
}

nlohmann::json TransferProcess::apply(nlohmann::json state, const Event& event) const {
  auto transition = react(state, event);
  if (!transition.next) return state;
  return nlohmann::json(*transition.next);
}

}  // namespace bank
