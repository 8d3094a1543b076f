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

  bool rejected() const { return rejection_.has_value(); }
  const Rejection& rejection() const { return *rejection_; }
  const std::vector<NewEvent>& events() const { return events_; }
  std::vector<NewEvent>& events() { return events_; }

 private:
  std::optional<Rejection> rejection_;
  std::vector<NewEvent> events_;
};

}  // namespace cqrs
