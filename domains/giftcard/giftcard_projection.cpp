// SQL of the gift card read model.
//
// Event times are microseconds since the epoch, turned into timestamptz as 'epoch' + n
// microseconds: exact to the microsecond, unlike to_timestamp(), which goes through seconds as a
// double.
#include "giftcard/giftcard_projection.hpp"

#include "cqrs/pg/connection.hpp"
#include "giftcard/giftcard.hpp"

namespace giftcard {
namespace {

using cqrs::pg::Params;

template <cqrs::Message E>
bool is(const cqrs::Event& event) {
  return event.type() == cqrs::type_name_of<E>();
}

// Runs an UPDATE of the card's row. The card's first event created that row, so finding none
// means the read model missed part of the history: fail rather than drop the change.
cqrs::Result<void> update_card(cqrs::ProjectionSql& sql, const std::string& card_id,
                               std::string_view statement, Params params) {
  sql.queue(std::string(statement), std::move(params),
            "giftcard_summary has no row for " + card_id);
  return {};
}

}  // namespace

std::vector<std::string> SummaryProjector::event_types() const {
  return {std::string(cqrs::type_name_of<GiftCardIssued>()),
          std::string(cqrs::type_name_of<GiftCardRedeemed>()),
          std::string(cqrs::type_name_of<GiftCardEmptied>()),
          std::string(cqrs::type_name_of<GiftCardCancelled>())};
}

cqrs::Result<void> SummaryProjector::project(const cqrs::Event& event, cqrs::ProjectionSql& sql) {
  const int64_t at = event.record.created_at_us;
  if (is<GiftCardIssued>(event)) {
    auto issued = event.as<GiftCardIssued>();
    // DO NOTHING: the row exists only if this event was projected already, and later events may
    // have changed it since.
    sql.queue(
        "INSERT INTO giftcard_summary"
        "  (card_id, initial_value, remaining_value, status, issued_at, updated_at)"
        " VALUES ($1, $2, $2, 'active',"
        "         'epoch'::timestamptz + $3::bigint * interval '1 microsecond',"
        "         'epoch'::timestamptz + $3::bigint * interval '1 microsecond')"
        " ON CONFLICT (card_id) DO NOTHING",
        Params().add(issued.card_id).add(issued.amount).add(at));
    return {};
  }
  if (is<GiftCardRedeemed>(event)) {
    auto redeemed = event.as<GiftCardRedeemed>();
    return update_card(sql, redeemed.card_id,
                       "UPDATE giftcard_summary SET remaining_value = $2,"
                       "  updated_at = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
                       " WHERE card_id = $1",
                       Params().add(redeemed.card_id).add(redeemed.remaining).add(at));
  }
  if (is<GiftCardEmptied>(event)) {
    auto emptied = event.as<GiftCardEmptied>();
    return update_card(sql, emptied.card_id,
                       "UPDATE giftcard_summary SET status = 'emptied',"
                       "  updated_at = 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'"
                       " WHERE card_id = $1",
                       Params().add(emptied.card_id).add(at));
  }
  if (is<GiftCardCancelled>(event)) {
    auto cancelled = event.as<GiftCardCancelled>();
    return update_card(sql, cancelled.card_id,
                       "UPDATE giftcard_summary SET status = 'cancelled', remaining_value = $2,"
                       "  updated_at = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
                       " WHERE card_id = $1",
                       Params().add(cancelled.card_id).add(cancelled.remaining).add(at));
  }
  return {};
}

cqrs::Result<nlohmann::json> read_summary(cqrs::pg::Connection& conn, int64_t limit) {
  // to_char() with a fixed UTC format keeps the times exact and independent of the session's
  // TimeZone and DateStyle.
  static const char* kQuery = R"sql(
    WITH newest AS (
      SELECT card_id, initial_value, remaining_value, status,
             to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS issued_at,
             to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at
        FROM giftcard_summary
       ORDER BY giftcard_summary.issued_at DESC, card_id
       LIMIT $1),
    totals AS (
      SELECT count(*) AS cards,
             coalesce(sum(remaining_value) FILTER (WHERE status = 'active'), 0) AS outstanding
        FROM giftcard_summary)
    SELECT json_build_object(
             'cards', coalesce((SELECT json_agg(newest ORDER BY issued_at DESC, card_id)
                                  FROM newest), '[]'::json),
             'totals', json_build_object('cards', totals.cards, 'outstanding', totals.outstanding),
             'truncated', totals.cards > $1)::text
      FROM totals)sql";
  auto rows = conn.exec(kQuery, Params().add(limit));
  if (!rows) return rows.error();
  auto parsed = nlohmann::json::parse(rows->text(0, 0), nullptr, false);
  if (parsed.is_discarded()) {
    return cqrs::Error(cqrs::ErrorKind::kInternal, cqrs::errc::kStoreError,
                       "giftcard_summary read returned malformed JSON");
  }
  return parsed;
}

}  // namespace giftcard
