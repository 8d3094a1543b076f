// Given/when/then tests for aggregates, in the spirit of Commanded's AggregateCase:
//
//   cqrs::testing::AggregateCase<GiftCard> card(giftcard::register_domain);
//   EXPECT_TRUE(card.given(GiftCardIssued{"c1", 100})
//                   .when(RedeemGiftCard{"c1", 100})
//                   .then_events(GiftCardRedeemed{"c1", 100, 0}, GiftCardEmptied{"c1"}));
//   EXPECT_TRUE(card.when(RedeemGiftCard{"c1", 1}).then_rejected("gift_card_empty"));
//
// Events pass through their JSON mapping on the way in and out, so a mapping that loses a field
// fails the test. A successful `when` applies its events, so steps can be chained.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cqrs/domain/domain.hpp"

namespace cqrs::testing {

template <class A>
class AggregateCase {
 public:
  // `register_domain` registers A (and possibly more) the way the daemon does.
  explicit AggregateCase(void (*register_domain)(Domain&)) {
    register_domain(domain_);
    type_ = domain_.aggregate_of<A>();
    if (type_ == nullptr) ADD_FAILURE() << "register_domain does not register this aggregate";
  }

  template <Message... Es>
  AggregateCase& given(const Es&... events) {
    (apply_through_json(events), ...);
    return *this;
  }

  template <Message C>
  AggregateCase& when(const C& command) {
    exception_.clear();
    C decoded = nlohmann::json(command).template get<C>();
    try {
      outcome_ = state_.execute(decoded);
    } catch (const std::exception& ex) {
      exception_ = ex.what();
      outcome_ = Outcome();
      return *this;
    }
    if (!outcome_.rejected() && type_ != nullptr) {
      for (const NewEvent& event : outcome_.events()) {
        auto applied = type_->apply(&state_, event.type, event.data);
        if (!applied.ok()) exception_ = applied.error().to_string();
      }
    }
    return *this;
  }

  // The last `when` produced exactly these events, in this order.
  template <Message... Es>
  ::testing::AssertionResult then_events(const Es&... expected) const {
    if (!exception_.empty()) return ::testing::AssertionFailure() << "threw: " << exception_;
    if (outcome_.rejected()) {
      return ::testing::AssertionFailure() << "rejected with " << outcome_.rejection().code << ": "
                                           << outcome_.rejection().message;
    }
    std::vector<NewEvent> wanted = {
        NewEvent{std::string(type_name_of<Es>()), nlohmann::json(expected)}...};
    if (describe(wanted) != describe(outcome_.events())) {
      return ::testing::AssertionFailure() << "expected events " << describe(wanted)
                                           << "\n            got " << describe(outcome_.events());
    }
    return ::testing::AssertionSuccess();
  }

  // The last `when` was rejected with this code.
  ::testing::AssertionResult then_rejected(std::string_view code) const {
    if (!exception_.empty()) return ::testing::AssertionFailure() << "threw: " << exception_;
    if (!outcome_.rejected()) {
      return ::testing::AssertionFailure()
             << "expected rejection " << code << ", got events " << describe(outcome_.events());
    }
    if (outcome_.rejection().code != code) {
      return ::testing::AssertionFailure()
             << "expected rejection " << code << ", got " << outcome_.rejection().code << ": "
             << outcome_.rejection().message;
    }
    if (outcome_.rejection().message.empty()) {
      return ::testing::AssertionFailure() << "rejection " << code << " has no message";
    }
    return ::testing::AssertionSuccess();
  }

  // The last `when` claimed and released exactly these unique values, in this order (as the
  // domain gave them; the scope normalizes them when they are stored).
  ::testing::AssertionResult then_claims(std::vector<UniqueClaim> expected) const {
    if (!exception_.empty()) return ::testing::AssertionFailure() << "threw: " << exception_;
    auto show = [](const std::vector<UniqueClaim>& claims) {
      std::string out;
      for (const UniqueClaim& claim : claims) {
        out +=
            std::string(claim.release ? " release " : " claim ") + claim.scope + "=" + claim.value;
      }
      return out.empty() ? std::string(" (none)") : out;
    };
    if (expected != outcome_.claims()) {
      return ::testing::AssertionFailure()
             << "expected" << show(expected) << "\n     got" << show(outcome_.claims());
    }
    return ::testing::AssertionSuccess();
  }

  const Outcome& outcome() const { return outcome_; }
  const A& state() const { return state_; }

 private:
  template <class E>
  void apply_through_json(const E& event) {
    state_.apply(nlohmann::json(event).template get<E>());
  }

  static std::string describe(const std::vector<NewEvent>& events) {
    nlohmann::json out = nlohmann::json::array();
    for (const NewEvent& event : events)
      out.push_back({{"type", event.type}, {"data", event.data}});
    return out.dump();
  }

  Domain domain_;
  const AggregateType* type_ = nullptr;
  A state_{};
  Outcome outcome_;
  std::string exception_;
};

}  // namespace cqrs::testing
