// What an aggregate's execute() returns: the events that record the decision, or a rejection.
//
//   cqrs::Outcome execute(const RedeemGiftCard& command) const {
//     if (remaining_ < command.amount) {
//       return cqrs::reject("insufficient_balance", "only " + std::to_string(remaining_) + "
//       left");
//     }
//     cqrs::Outcome outcome = GiftCardRedeemed{command.card_id, command.amount, rest};
//     if (rest == 0) outcome.add(GiftCardEmptied{command.card_id});
//     return outcome;
//   }
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cqrs/domain/json_mapping.hpp"
#include "cqrs/event.hpp"

namespace cqrs {

// A domain rule said no. `code` is snake_case and travels to the client unchanged.
struct Rejection {
  std::string code;
  std::string message;
};

inline Rejection reject(std::string code, std::string message) {
  return Rejection{std::move(code), std::move(message)};
}

// An event decided but not yet stored.
struct NewEvent {
  std::string type;
  nlohmann::json data;
};

class Outcome {
 public:
  // Accepted with no events (the command changes nothing, e.g. a repeated no-op).
  Outcome() = default;
  Outcome(Rejection rejection) : rejection_(std::move(rejection)) {}  // NOLINT: implicit
  template <Message E>
  Outcome(const E& event) {  // NOLINT: implicit, so `return SomethingHappened{...};` reads well
    add(event);
  }

  template <Message E>
  Outcome& add(const E& event) {
    events_.push_back(NewEvent{std::string(type_name_of<E>()), nlohmann::json(event)});
    return *this;
  }

  // Claims `value` in the unique scope `scope` (registered with Domain::unique_scope) for this
  // aggregate, in the same transaction as the events. When another aggregate owns it, the
  // command is rejected with the scope's conflict code and nothing is stored.
  Outcome& claim(std::string scope, std::string value) {
    claims_.push_back(UniqueClaim{std::move(scope), std::move(value), false});
    return *this;
  }
  // Frees a value this aggregate owns in `scope`, with the events (no-op when it owns none).
  Outcome& release(std::string scope, std::string value) {
    claims_.push_back(UniqueClaim{std::move(scope), std::move(value), true});
    return *this;
  }
  // The claims and releases, in order, as the domain gave them (not normalized).
  const std::vector<UniqueClaim>& claims() const { return claims_; }

  bool rejected() const { return rejection_.has_value(); }
  const Rejection& rejection() const { return *rejection_; }
  const std::vector<NewEvent>& events() const { return events_; }
  std::vector<NewEvent>& events() { return events_; }

 private:
  std::optional<Rejection> rejection_;
  std::vector<NewEvent> events_;
  std::vector<UniqueClaim> claims_;
};

}  // namespace cqrs
