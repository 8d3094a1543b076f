// The gift card read model: giftcard_summary, one row per card (schema/004_read_models.sql),
// its projector, and the read the demo web page serves. After each batch it commits, and after a
// reset, the projector's runtime sends a NOTIFY on the channel kSummaryChannel.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cqrs/handlers/handler.hpp"

namespace cqrs::pg {
class Connection;
}

namespace giftcard {

inline constexpr std::string_view kSummaryChannel = "giftcard_summary";

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
  std::string change_channel() const override { return std::string(kSummaryChannel); }
};

// The newest `limit` cards (by issue time, then card id) and totals over all cards, read in one
// statement, hence from one snapshot:
//   {"cards":[{"card_id","initial_value","remaining_value","status","issued_at","updated_at"}],
//    "totals":{"cards":n,"outstanding":m},"truncated":bool}
// Times are UTC, ISO 8601 with microseconds; `outstanding` sums remaining_value of active cards;
// `truncated` says that more than `limit` cards exist. Errors: store errors.
cqrs::Result<nlohmann::json> read_summary(cqrs::pg::Connection& conn, int64_t limit);

}  // namespace giftcard
