// Gift card rules.
#include "giftcard/giftcard.hpp"

#include "giftcard/giftcard_projection.hpp"

namespace giftcard {
namespace {

std::string cents(int64_t amount) { return std::to_string(amount); }

}  // namespace

cqrs::Outcome GiftCard::execute(const IssueGiftCard& command) const {
  if (status != "none") {
    return cqrs::reject("gift_card_exists", "gift card " + command.card_id + " already exists");
  }
  if (command.amount <= 0) {
    return cqrs::reject("invalid_amount",
                        "a gift card needs a positive amount, got " + cents(command.amount));
  }
  return GiftCardIssued{command.card_id, command.amount};
}

cqrs::Outcome GiftCard::execute(const RedeemGiftCard& command) const {
  if (status == "none") {
    return cqrs::reject("gift_card_not_found", "gift card " + command.card_id + " does not exist");
  }
  if (command.amount <= 0) {
    return cqrs::reject("invalid_amount", "redeem a positive amount, got " + cents(command.amount));
  }
  if (status == "cancelled") {
    return cqrs::reject("gift_card_cancelled", "gift card " + command.card_id + " is cancelled");
  }
  if (status == "emptied") {
    return cqrs::reject("gift_card_empty", "gift card " + command.card_id + " is empty");
  }
  if (command.amount > remaining) {
    return cqrs::reject("insufficient_balance",
                        "insufficient balance: gift card " + command.card_id + " has " +
                            cents(remaining) + " left, " + cents(command.amount) + " requested");
  }
  int64_t rest = remaining - command.amount;
  cqrs::Outcome outcome = GiftCardRedeemed{command.card_id, command.amount, rest};
  if (rest == 0) outcome.add(GiftCardEmptied{command.card_id});
  return outcome;
}

cqrs::Outcome GiftCard::execute(const CancelGiftCard& command) const {
  if (status == "none") {
    return cqrs::reject("gift_card_not_found", "gift card " + command.card_id + " does not exist");
  }
  if (status == "cancelled") {
    return cqrs::reject("gift_card_cancelled",
                        "gift card " + command.card_id + " is already cancelled");
  }
  return GiftCardCancelled{command.card_id, remaining};
}

void GiftCard::apply(const GiftCardIssued& event) {
  card_id = event.card_id;
  status = "active";
  initial_value = event.amount;
  remaining = event.amount;
}

void GiftCard::apply(const GiftCardRedeemed& event) { remaining = event.remaining; }

void GiftCard::apply(const GiftCardEmptied&) { status = "emptied"; }

void GiftCard::apply(const GiftCardCancelled&) { status = "cancelled"; }

void register_domain(cqrs::Domain& domain) {
  domain.aggregate<GiftCard>("GiftCard", "giftcard", "card_id")
      .handles<IssueGiftCard, RedeemGiftCard, CancelGiftCard>()
      .creates<IssueGiftCard>()
      .applies<GiftCardIssued, GiftCardRedeemed, GiftCardEmptied, GiftCardCancelled>();
  domain.add_handler(std::make_shared<SummaryProjector>());
}

}  // namespace giftcard
