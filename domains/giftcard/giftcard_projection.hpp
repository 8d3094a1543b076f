// The gift card read model: giftcard_summary, one row per card (schema/004_read_models.sql).
#pragma once

#include <string>
#include <vector>

#include "cqrs/handlers/handler.hpp"

namespace giftcard {

// Keeps giftcard_summary: each card's initial and remaining value and its status.
//
// Every event writes absolute values taken from the event (never increments), and the row's
// timestamps are event times, so projecting an event again leaves the row as it was and a
// rebuild reproduces it exactly. Events of other types are ignored.
// Errors: read_model_out_of_step when an event other than GiftCardIssued finds no row for its
// card (the projector did not see the card's history from the start); store errors from `sql`.
class SummaryProjector : public cqrs::Projector {
 public:
  std::string name() const override { return "giftcard_summary"; }
  std::vector<std::string> event_types() const override;
  cqrs::Result<void> project(const cqrs::Event& event, cqrs::ProjectionSql& sql) override;
  std::string reset_sql() const override { return "TRUNCATE giftcard_summary"; }
};

}  // namespace giftcard
