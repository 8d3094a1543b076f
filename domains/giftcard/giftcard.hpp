// The gift card domain: issue a card with a value, redeem parts of it, cancel it.
// Amounts are integer minor units (cents). Stream: "giftcard-<card_id>".
#pragma once

#include <cstdint>
#include <string>

#include "cqrs/domain/domain.hpp"

namespace giftcard {

// Commands.
struct IssueGiftCard {
  std::string card_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(IssueGiftCard, card_id, amount)

struct RedeemGiftCard {
  std::string card_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(RedeemGiftCard, card_id, amount)

struct CancelGiftCard {
  std::string card_id;
};
CQRS_MESSAGE(CancelGiftCard, card_id)

// Events.
struct GiftCardIssued {
  std::string card_id;
  int64_t amount = 0;
};
CQRS_MESSAGE(GiftCardIssued, card_id, amount)

struct GiftCardRedeemed {
  std::string card_id;
  int64_t amount = 0;
  int64_t remaining = 0;
};
CQRS_MESSAGE(GiftCardRedeemed, card_id, amount, remaining)

struct GiftCardEmptied {
  std::string card_id;
};
CQRS_MESSAGE(GiftCardEmptied, card_id)

struct GiftCardCancelled {
  std::string card_id;
  int64_t remaining = 0;
};
CQRS_MESSAGE(GiftCardCancelled, card_id, remaining)

// The aggregate.
struct GiftCard {
  std::string card_id;
  std::string status = "none";  // none | active | emptied | cancelled
  int64_t initial_value = 0;
  int64_t remaining = 0;

  cqrs::Outcome execute(const IssueGiftCard& command) const;
  cqrs::Outcome execute(const RedeemGiftCard& command) const;
  cqrs::Outcome execute(const CancelGiftCard& command) const;

  void apply(const GiftCardIssued& event);
  void apply(const GiftCardRedeemed& event);
  void apply(const GiftCardEmptied& event);
  void apply(const GiftCardCancelled& event);
};
CQRS_JSON(GiftCard, card_id, status, initial_value, remaining)

// Registers the GiftCard aggregate and its commands.
void register_domain(cqrs::Domain& domain);

}  // namespace giftcard
