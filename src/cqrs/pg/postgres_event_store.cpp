// PostgresEventStore: prepared statements over one connection.
#include "cqrs/pg/postgres_event_store.hpp"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "cqrs/append_validation.hpp"
#include "cqrs/pg/connection.hpp"
#include "cqrs/pg/migrate.hpp"
#include "cqrs/pg/notice_sender.hpp"

namespace cqrs::pg {
namespace {

// The columns every event read returns (see event_at), of the table or alias `of` ("" for none).
std::string event_columns(std::string_view of = "") {
  std::string p(of.empty() ? "" : std::string(of) + ".");
  return p + "global_position, " + p + "transaction_id::text, " + p + "stream_id, " + p +
         "stream_version, " + p + "event_id::text, " + p + "event_type, " + p + "event_version, " +
         p + "data::text, " + p + "metadata::text, (extract(epoch FROM " + p +
         "created_at) * 1000000)::bigint";
}

// The stored columns event_columns reads, for subqueries that gather the rows to read.
std::string row_columns(std::string_view of = "") {
  std::string p(of.empty() ? "" : std::string(of) + ".");
  return p + "global_position, " + p + "transaction_id, " + p + "stream_id, " + p +
         "stream_version, " + p + "event_id, " + p + "event_type, " + p + "event_version, " + p +
         "data, " + p + "metadata, " + p + "created_at";
}

struct Statement {
  const char* name;
  std::string sql;
};

// The correlation index's position (schema/018), its two parts: every run at or before it has
// its row in cqrs.correlations; the origin when the position's row is gone. Read through the
// row's key, so that the statements stay cheap with sequential scans off.
constexpr const char* kIndexedTransaction =
    "coalesce((SELECT i.transaction_id FROM cqrs.correlations_indexed AS i WHERE i.only_row),"
    " '0'::xid8)";
constexpr const char* kIndexedPosition =
    "coalesce((SELECT i.global_position FROM cqrs.correlations_indexed AS i WHERE i.only_row),"
    " 0)";

std::vector<Statement> statements() {
  std::string columns = event_columns();
  const std::string indexed_transaction = kIndexedTransaction;
  return {
      {"append",
       "SELECT status, stream_version, global_positions::text, existing_result::text, "
       "pg_current_xact_id()::text FROM cqrs.append_to_stream($1, $2, $3::uuid[], $4::text[], "
       "$5::int[], $6::jsonb[], $7::jsonb[], $8::uuid, $9::jsonb, $10::int[])"},
      // One event without a command record, after a version known to exist (see known_base):
      // a plain INSERT under the stream's lock, with no head lookup. Versions have no gaps, so
      // the next one is free exactly when the known version is the head; when it is not, the
      // primary key refuses the row (unique_violation) and append() asks
      // cqrs.append_to_stream, which reads the head under the lock and names it.
      // It returns the position and the transaction only: the version is the known one plus
      // one, and each column returned costs the server (the version and the text conversion,
      // about 3% of this statement).
      {"append_after",
       "INSERT INTO cqrs.events"
       " (stream_id, stream_version, event_id, event_type, event_version, data, metadata)"
       " SELECT $1, $2::bigint + 1, $3::uuid, $4::text, $5::int, $6::jsonb, $7::jsonb"
       " FROM (SELECT pg_advisory_xact_lock(1668379251, hashtext($1)) AS locked) AS l"  // 'cqrs'
       " RETURNING global_position, transaction_id"},
      // The same for several events, from the arrays cqrs.append_to_stream takes (metadata that
      // all the events share is one element: see add_event_arrays).
      {"append_after_many",
       "INSERT INTO cqrs.events"
       " (stream_id, stream_version, event_id, event_type, event_version, data, metadata,"
       " run_length)"
       " SELECT $1, $2::bigint + e.ord, e.event_id, e.event_type, e.event_version, e.data,"
       " coalesce(e.metadata, ($7::jsonb[])[1]), e.run_length"
       " FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::int[])"
       "  WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, run_length,"
       "  ord)"
       // The stream's lock, taken once before any row is inserted: a one-time filter, where a
       // join with the lock's row cost about 15 µs per 100 events (append_costs).
       " WHERE (SELECT pg_advisory_xact_lock(1668379251, hashtext($1))::text) IS NOT NULL"  // 'cqrs'
       // Positions follow versions. The planner knows unnest WITH ORDINALITY comes out in this
       // order: the plan has no sort.
       " ORDER BY e.ord"
       // The rows come back in the order they were stored, the versions' (the INSERT returns
       // each row as it stores it): the caller numbers them from its version, and no version
       // travels back. The transaction id once, on the first event's row: each column and text
       // conversion per row costs the server.
       " RETURNING global_position,"
       " CASE WHEN stream_version = $2::bigint + 1 THEN pg_current_xact_id()::text END"},
      // A group commit of one request after a known version (see write_one_after): its events as
      // append_after_many appends them, and its command record as cqrs.append_batch records it.
      // A duplicate command id fails on command_results' primary key; write() then runs the
      // group statement, which names the first dispatch's result.
      {"append_after_recorded",
       "WITH appended AS (INSERT INTO cqrs.events"
       " (stream_id, stream_version, event_id, event_type, event_version, data, metadata,"
       " run_length)"
       " SELECT $1, $2::bigint + e.ord, e.event_id, e.event_type, e.event_version, e.data,"
       " coalesce(e.metadata, ($7::jsonb[])[1]), e.run_length"
       " FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $10::int[])"
       "  WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, run_length,"
       "  ord)"
       // The stream's lock, as in append_after_many.
       " WHERE (SELECT pg_advisory_xact_lock(1668379251, hashtext($1))::text) IS NOT NULL"  // 'cqrs'
       " ORDER BY e.ord"
       " RETURNING global_position, stream_version),"
       // The last position as a column, not a subquery in the call: PostgreSQL then inlines
       // cqrs.with_position instead of planning its body on every execution (about 15 µs).
       " recorded AS (INSERT INTO cqrs.command_results (command_id, stream_id, result)"
       " SELECT $8::uuid, $1, cqrs.with_position($9::jsonb, m.last)"
       " FROM (SELECT max(a.global_position) AS last FROM appended AS a) AS m)"
       // In the order the rows were stored, as append_after_many returns them.
       " SELECT a.global_position,"
       " CASE WHEN a.stream_version = $2::bigint + 1 THEN pg_current_xact_id()::text END"
       " FROM appended AS a"},
      // One event without a command record, base unknown: a plain INSERT ... SELECT, about a
      // quarter cheaper for the server than a call of cqrs.append_to_stream. The row to insert
      // comes from the stream's lock, so the lock is held before the INSERT, as in every append.
      // The head is read in the snapshot the statement began with, though: when another writer
      // committed the stream's next version meanwhile, the INSERT fails on the primary key
      // (unique_violation). No row back means the expected version did not hold, or that
      // failure: append() then asks cqrs.append_to_stream, which reads the head under the lock.
      {"append_one",
       "INSERT INTO cqrs.events"
       " (stream_id, stream_version, event_id, event_type, event_version, data, metadata)"
       " SELECT $1, h.version + 1, $3::uuid, $4::text, $5::int, $6::jsonb, $7::jsonb"
       " FROM (SELECT pg_advisory_xact_lock(1668379251, hashtext($1)) AS locked) AS l"  // 'cqrs'
       " CROSS JOIN LATERAL (SELECT l.locked, coalesce((SELECT e.stream_version"
       "  FROM cqrs.events AS e WHERE e.stream_id = $1"
       "  ORDER BY e.stream_version DESC LIMIT 1), 0) AS version) AS h"
       " WHERE CASE $2::bigint WHEN -1 THEN true WHEN -2 THEN h.version = 0"
       "  WHEN -3 THEN h.version > 0 ELSE h.version = $2::bigint END"
       " RETURNING global_position, stream_version, pg_current_xact_id()::text"},
      // Appends of several stores after known versions, in one statement (see AppendGroups).
      // It takes every stream's lock first, in the order of their keys as cqrs.append_batch
      // takes them, waiting at most $12 for each (lock_timeout: a group must not wait long for a
      // lock that someone who waits for the group may hold). It stores the rows in the order of
      // the arrays, each append's events after the version its store knew, and only when that
      // version exists on this server (the leader's connection may reach another server than
      // the one a follower learned its version from, after a failover). $1, $2 and $3 hold one
      // element per append (stream, known version, the metadata its events share or NULL); the
      // rest one per event. An append whose version is missing stores nothing and returns no
      // row; a version another writer took fails the statement on the primary key. Either way
      // the append runs again alone, which names the outcome.
      {"append_group",
       "INSERT INTO cqrs.events"
       " (stream_id, stream_version, event_id, event_type, event_version, data, metadata,"
       " run_length)"
       " SELECT ($1::text[])[e.job], ($2::bigint[])[e.job] + e.nth, e.event_id, e.event_type,"
       " e.event_version, e.data, coalesce(e.metadata, ($3::jsonb[])[e.job]), e.run_length"
       " FROM (SELECT count(pg_advisory_xact_lock(1668379251, k.key)) AS locked"  // 'cqrs'
       "  FROM (SELECT set_config('lock_timeout', $12, true)) AS t,"
       "  (SELECT DISTINCT hashtext(s.stream_id) AS key"
       "   FROM unnest($1::text[]) AS s(stream_id) ORDER BY 1) AS k) AS l,"
       " unnest($4::int[], $5::int[], $6::uuid[], $7::text[], $8::int[], $9::jsonb[],"
       "  $10::jsonb[], $11::int[])"
       "  WITH ORDINALITY AS e(job, nth, event_id, event_type, event_version, data, metadata,"
       "  run_length, ord)"
       " ORDER BY e.ord"
       " RETURNING stream_id::text, stream_version, global_position,"
       " CASE WHEN run_length > 0 THEN pg_current_xact_id()::text END"},
      // Group commit: many requests in one statement; see schema/002_append_batch.sql.
      {"append_batch",
       "SELECT status, stream_version, global_positions::text, existing_result::text, "
       "pg_current_xact_id()::text FROM cqrs.append_batch($1::text[], $2::bigint[], $3::int[], "
       "$4::uuid[], $5::jsonb[], "
       "$6::int[], $7::int[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[], $12::jsonb[], "
       "$13::jsonb[], $14::int[])"},
      // The reads of loads, $all, $all by type and correlations run after this one in the same
      // transaction (exec_generic), so that PostgreSQL uses their generic plans, made once per
      // connection. In its default mode it keeps choosing a new custom plan at every execution
      // of those four, though their generic plans walk the same indexes
      // (integration.Runs.GenericPlansOfTheReadsUseTheRunIndexes); planning read_all takes about
      // 0.6 ms per page, a seventh of the server's time for a page of 1,000 events. Each of them
      // is a bounded walk of an index, so sequential scans are off for them too: a generic plan
      // made while cqrs.events looks empty (a new database, until autovacuum analyzes it) would
      // otherwise scan and sort the whole table at every execution until the next analyze. The
      // lookups by stream or command id (a stream's events or head, append_one's head, a
      // snapshot, a command record) and the count behind the watermark run after it for that
      // reason alone (see
      // integration.PostgresStore.LookupsPlannedOnAnEmptyTableWalkTheIndexesOnceItFills; the
      // append functions carry the same setting, schema/016). The settings are the transaction's
      // own and end with it: other statements on the connection keep PostgreSQL's choice.
      {"generic_plans",
       "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
       " set_config('enable_seqscan', 'off', true)"},
      // The wake-up sent in an append's round trip (see NoticeSender).
      {"notify", NoticeSender::statement()},
      {"notify_at_commit", NoticeSender::statement_at_commit()},
      {"read_forward", "SELECT " + columns +
                           " FROM cqrs.events WHERE stream_id = $1 AND stream_version >= $2 "
                           "ORDER BY stream_version LIMIT $3"},
      {"read_backward", "SELECT " + columns +
                            " FROM cqrs.events WHERE stream_id = $1 AND stream_version <= $2 "
                            "ORDER BY stream_version DESC LIMIT $3"},
      // Aggregates loading: per load (stream, after, with_snapshot), the newest snapshot above
      // `after` (kind 0) and the events after it (kind 1), in one statement so that both come
      // from one database snapshot. Snapshot rows reuse the event columns: stream_version,
      // event_type = state type, event_version = state version, data.
      {"load_streams",
       "WITH loads AS ("
       " SELECT l.idx, l.stream_id, l.after, s.stream_version AS snapshot_version,"
       "  s.state_type, s.state_version, s.data"
       " FROM unnest($1::text[], $2::bigint[], $3::bool[])"
       "  WITH ORDINALITY AS l(stream_id, after, with_snapshot, idx)"
       // LIMIT keeps the lookup a per-load index probe (the plan is generic: a few loads or
       // many, against however many snapshots).
       " LEFT JOIN LATERAL (SELECT * FROM cqrs.snapshots AS x"
       "  WHERE l.with_snapshot AND x.stream_id = l.stream_id AND x.stream_version > l.after"
       "  LIMIT 1) AS s ON true) "
       "SELECT idx, 0 AS kind, NULL::bigint, NULL::text, stream_id, snapshot_version, NULL::text,"
       " state_type, state_version, data::text, NULL::text, NULL::bigint"
       " FROM loads WHERE snapshot_version IS NOT NULL "
       "UNION ALL "
       "SELECT l.idx, 1, e.global_position, e.transaction_id::text, e.stream_id, e.stream_version,"
       " e.event_id::text, e.event_type, e.event_version, e.data::text, e.metadata::text,"
       " (extract(epoch FROM e.created_at) * 1000000)::bigint"
       // LATERAL with ORDER BY (not a join): a per-load probe of the stream's index whatever
       // the statistics were when the generic plan was made (a join planned against an empty
       // table hashes a sequential scan of all events).
       " FROM loads AS l CROSS JOIN LATERAL (SELECT * FROM cqrs.events AS x"
       "  WHERE x.stream_id = l.stream_id"
       "  AND x.stream_version > coalesce(l.snapshot_version, l.after)"
       "  ORDER BY x.stream_version) AS e "
       "ORDER BY 1, 2, 6"},
      {"append_claiming",
       "SELECT status, stream_version, global_positions::text, existing_result::text, "
       "pg_current_xact_id()::text FROM cqrs.append_claiming($1, $2, $3::uuid[], $4::text[], "
       "$5::int[], $6::jsonb[], $7::jsonb[], $8::uuid, $9::jsonb, $10::text[], $11::text[], "
       "$12::bool[])"},
      // Traceability: the events of one correlation (schema/018). cqrs.correlations holds the
      // first event of each run (schema/012), whose run shares its correlation, up to the
      // index's position; the runs after it are found by walking $all from there and reading
      // their metadata. Each run is widened to its events through the primary key. The position
      // is read through its key's index (scalar subqueries: one row the planner knows as one,
      // so both walks start at it).
      {"read_correlated",
       "SELECT " + columns + " FROM (SELECT e.* FROM (SELECT " + indexed_transaction +
           " AS transaction_id, " + kIndexedPosition +
           " AS global_position) AS w"
           " CROSS JOIN LATERAL ((SELECT h.* FROM cqrs.correlations AS c JOIN cqrs.events AS h"
           "  ON h.transaction_id = c.transaction_id AND h.global_position = c.global_position"
           "  AND h.run_length > 0 WHERE c.correlation_id = $1"
           "  AND (c.transaction_id, c.global_position) <= (w.transaction_id, w.global_position))"
           " UNION ALL (SELECT h.* FROM cqrs.events AS h WHERE h.run_length > 0"
           "  AND (h.transaction_id, h.global_position) > (w.transaction_id, w.global_position)"
           "  AND (h.metadata->>'correlation_id') = $1)) AS h"
           // The ORDER BY keeps the LATERAL a per-run probe: as a plain join, the generic plan
           // walks all of $all instead of the primary key.
           " CROSS JOIN LATERAL (SELECT * FROM cqrs.events AS x WHERE x.stream_id = h.stream_id"
           "  AND x.stream_version >= h.stream_version"
           "  AND x.stream_version < h.stream_version + h.run_length"
           "  ORDER BY x.stream_version) AS e) AS ev"
           " ORDER BY ev.transaction_id, ev.global_position LIMIT $2"},
      {"index_correlations", "SELECT indexed, busy FROM cqrs.index_correlations($1::int)"},
      // Runs after the correlation index's position, through the $all index.
      {"correlation_index_lag",
       "SELECT count(*) FROM cqrs.events AS h WHERE h.run_length > 0"
       " AND (h.transaction_id, h.global_position) > (" +
           indexed_transaction + ", " + kIndexedPosition + ")"},
      {"stream_version",
       "SELECT stream_version FROM cqrs.events WHERE stream_id = $1 "
       "ORDER BY stream_version DESC LIMIT 1"},
      // Only transactions older than every running one: nothing below can still appear.
      // events_order_idx holds the first event of each run (schema/013): the run that ($1, $2)
      // is inside (a page that ended there), then the runs after it, each widened to its
      // events through the primary key, in $all order (a run's events are contiguous in it and
      // follow its versions). A run of one is its first event alone, with no second probe. The
      // nested loop keeps the runs' order, so the sort only orders each run's own events; and
      // the LIMIT stops it once the page is full.
      {"read_all",
       "SELECT " + event_columns("e") +
           // The run ($1, $2) is inside, from the version after it (cqrs.run_after).
           " FROM ((SELECT h.*, r.from_version FROM cqrs.run_after($1::xid8, $2::bigint) AS r"
           "  JOIN cqrs.events AS h"
           "  ON h.stream_id = r.stream_id AND h.stream_version = r.first_version"
           "  WHERE h.transaction_id < pg_snapshot_xmin(pg_current_snapshot()))"
           // The runs after it. from_version has one type in both branches (bigint, not the
           // column's domain): only then is the UNION ALL flattened and its order kept.
           " UNION ALL (SELECT x.*, x.stream_version::bigint FROM cqrs.events AS x"
           "  WHERE x.run_length > 0 AND x.transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
           "  AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)"
           "  ORDER BY x.transaction_id, x.global_position LIMIT $3)) AS p"
           " CROSS JOIN LATERAL (SELECT " +
           row_columns("p") +
           "  WHERE p.run_length = 1"
           " UNION ALL (SELECT " +
           row_columns("y") +
           " FROM cqrs.events AS y"
           "  WHERE p.run_length > 1 AND y.stream_id = p.stream_id"
           "  AND y.stream_version >= p.from_version"
           "  AND y.stream_version < p.stream_version + p.run_length"
           "  ORDER BY y.stream_version LIMIT $3)) AS e"
           " ORDER BY p.transaction_id, p.global_position, e.stream_version LIMIT $3"},
      // read_all for some event types, through events_order_idx (schema/013, 015): the first
      // $3 events of those types after ($1, $2), below the watermark and within a window of $5
      // transactions. The index holds the first event of each run (a stretch of one append's
      // events of one type, contiguous in $all) with its type as the third key. One walk of the
      // index in $all order from ($1, $2) checks each run's type and stops at the $3rd event of
      // the types; those runs are widened to their events through the primary key, and the rest
      // of the run that ($1, $2) is inside (a page that ended there) comes first. Every page thus
      // walks from its start to its own end once, whatever the mix of types: one walk per type
      // would run each rare type's walk to the watermark at every page while a common type
      // fills the pages (a handler of both catching up over B events in pages of n would walk
      // about B^2/2n entries).
      //
      // The window bounds a walk through rare types: it ends before the transaction $5 after the
      // first run after ($1, $2), or at the watermark if that comes first. When fewer than $3
      // match, a last row (kind 2) gives the newest position below the window's end: every event
      // of the types up to it was returned, so the next page may start there; its last column
      // says whether the window ended before the watermark (more may follow at once). Columns:
      // kind, the order (xid8, position), the event columns, then that flag.
      {"read_all_of_types",
       "WITH bound AS MATERIALIZED (SELECT w.xmin, least(w.xmin, coalesce((SELECT"
       "  (x.transaction_id::text::numeric + $5::bigint)::text::xid8 FROM cqrs.events AS x"
       "  WHERE x.run_length > 0"
       "  AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)"
       "  ORDER BY x.transaction_id, x.global_position LIMIT 1), w.xmin)) AS lim"
       "  FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS w),"
       // The first runs after ($1, $2) until they hold $3 events.
       " keys AS MATERIALIZED (SELECT * FROM ("
       "  SELECT k.stream_id, k.stream_version, k.run_length,"
       "  sum(k.run_length) OVER (ORDER BY k.transaction_id, k.global_position) - k.run_length"
       "   AS before"
       "  FROM (SELECT x.transaction_id, x.global_position, x.stream_id,"
       "   x.stream_version, x.run_length FROM cqrs.events AS x"
       "   WHERE x.event_type = ANY ($4::text[]) AND x.run_length > 0"
       "   AND x.transaction_id < (SELECT lim FROM bound)"
       "   AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)"
       "   ORDER BY x.transaction_id, x.global_position LIMIT $3) AS k) AS r"
       "  WHERE r.before < $3),"
       // LATERAL with ORDER BY: one index range per run. A plain join's generic plan hashes a
       // sequential scan of the whole table.
       " picked AS MATERIALIZED (SELECT * FROM ("
       "  (SELECT r.* FROM cqrs.rest_of_run($1::xid8, $2::bigint, $4::text[]) AS r"
       "   WHERE r.transaction_id < (SELECT lim FROM bound)"
       "   ORDER BY r.stream_version LIMIT $3)"
       "  UNION ALL"
       "  SELECT e.* FROM keys AS p CROSS JOIN LATERAL (SELECT * FROM cqrs.events AS x"
       "   WHERE x.stream_id = p.stream_id AND x.stream_version >= p.stream_version"
       "   AND x.stream_version < p.stream_version + least(p.run_length, $3 - p.before)"
       "   ORDER BY x.stream_version) AS e) AS u"
       "  ORDER BY u.transaction_id, u.global_position LIMIT $3),"
       // The last event of the last run below the window's end.
       " head AS (SELECT e.transaction_id, e.global_position FROM (SELECT x.stream_id,"
       "  x.stream_version + x.run_length - 1 AS last_version FROM cqrs.events AS x"
       "  WHERE x.run_length > 0 AND x.transaction_id < (SELECT lim FROM bound)"
       "  AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)"
       "  AND (SELECT count(*) FROM picked) < $3"
       "  ORDER BY x.transaction_id DESC, x.global_position DESC LIMIT 1) AS l"
       "  JOIN cqrs.events AS e ON e.stream_id = l.stream_id"
       "  AND e.stream_version = l.last_version) "
       "SELECT 1 AS kind, x.transaction_id AS xid, x.global_position AS pos,"
       " x.global_position, x.transaction_id::text, x.stream_id, x.stream_version,"
       " x.event_id::text, x.event_type, x.event_version, x.data::text, x.metadata::text,"
       " (extract(epoch FROM x.created_at) * 1000000)::bigint, NULL::bool"
       " FROM picked AS x "
       "UNION ALL "
       "SELECT 2, transaction_id, global_position, global_position, transaction_id::text,"
       " NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::int, NULL::text, NULL::text,"
       " NULL::bigint, (SELECT lim < xmin FROM bound) FROM head "
       "ORDER BY 1, 2, 3"},
      // The last event of the last run below the watermark.
      {"head",
       "SELECT e.transaction_id::text, e.global_position FROM (SELECT x.stream_id,"
       " x.stream_version + x.run_length - 1 AS last_version FROM cqrs.events AS x"
       " WHERE x.run_length > 0 AND x.transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
       " ORDER BY x.transaction_id DESC, x.global_position DESC LIMIT 1) AS l"
       " JOIN cqrs.events AS e ON e.stream_id = l.stream_id AND e.stream_version = l.last_version"},
      // A run's events share its transaction: the runs at or above the watermark hold them all.
      {"behind_watermark",
       "SELECT coalesce(sum(run_length), 0) FROM cqrs.events"
       " WHERE run_length > 0 AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot())"},
      {"behind_watermark_exist",
       "SELECT 1 FROM cqrs.events"
       " WHERE run_length > 0 AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot())"
       " ORDER BY transaction_id, global_position LIMIT 1"},
      // Committed events after a position, whether $all readers can see them yet or not: a run
      // that starts after it, or the rest of the one it is inside.
      {"events_after_exist",
       // A row or none. Not EXISTS: its generic plan is a sequential scan (the planner drops
       // ORDER BY and LIMIT inside EXISTS), which reads the whole table when nothing matches.
       "(SELECT 1 FROM cqrs.events WHERE run_length > 0"
       " AND (transaction_id, global_position) > ($1::xid8, $2::bigint)"
       " ORDER BY transaction_id, global_position LIMIT 1) "
       "UNION ALL (SELECT 1 FROM cqrs.rest_of_run($1::xid8, $2::bigint, NULL) LIMIT 1) LIMIT 1"},
      // One walk of events_order_idx per type, to the first entry of that type after ($1, $2)
      // (the type checked in the index), and the rest of the run ($1, $2) is inside. A handler
      // asks this when it has read everything it can, near the watermark: the walks are short.
      // How many events of $3's types follow ($1, $2) below the watermark (a handler's lag):
      // one walk of events_order_idx per type, the type checked in the index, and the rest of
      // the run ($1, $2) is inside. Run by exec_generic: without sequential scans, a handler far
      // behind would read the whole table at every status request.
      {"count_of_types_after",
       "SELECT (SELECT coalesce(sum(k.run_length), 0)"
       " FROM (SELECT DISTINCT unnest($3::text[])) AS t(type)"
       " CROSS JOIN LATERAL (SELECT x.run_length FROM cqrs.events AS x"
       "  WHERE x.event_type = t.type AND x.run_length > 0"
       "  AND x.transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
       "  AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)"
       "  ORDER BY x.transaction_id, x.global_position) AS k)"
       " + (SELECT count(*) FROM cqrs.rest_of_run($1::xid8, $2::bigint, $3::text[]))"},
      {"events_of_types_after_exist",
       "SELECT 1 FROM unnest($3::text[]) AS t(type) WHERE EXISTS (SELECT 1 FROM cqrs.events AS x"
       " WHERE x.event_type = t.type AND x.run_length > 0"
       " AND (x.transaction_id, x.global_position) > ($1::xid8, $2::bigint)) "
       "UNION ALL SELECT 1 FROM cqrs.rest_of_run($1::xid8, $2::bigint, $3::text[]) LIMIT 1"},
      {"load_checkpoint",
       "SELECT transaction_id::text, global_position FROM cqrs.checkpoints "
       "WHERE handler_name = $1"},
      {"save_checkpoint",
       "INSERT INTO cqrs.checkpoints (handler_name, transaction_id, global_position) "
       "VALUES ($1, $2::xid8, $3) ON CONFLICT (handler_name) DO UPDATE "
       "SET transaction_id = excluded.transaction_id, global_position = excluded.global_position, "
       "updated_at = now()"},
      {"save_snapshot",
       "INSERT INTO cqrs.snapshots (stream_id, stream_version, state_type, state_version, data) "
       "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (stream_id) DO UPDATE "
       "SET stream_version = excluded.stream_version, state_type = excluded.state_type, "
       "state_version = excluded.state_version, data = excluded.data, created_at = now() "
       "WHERE cqrs.snapshots.stream_version <= excluded.stream_version"},
      {"load_snapshot",
       "SELECT stream_version, state_type, state_version, data::text FROM cqrs.snapshots "
       "WHERE stream_id = $1"},
      {"record_command",
       "INSERT INTO cqrs.command_results (command_id, stream_id, result) "
       "VALUES ($1::uuid, $2, $3::jsonb) ON CONFLICT (command_id) DO NOTHING"},
      {"find_command",
       "SELECT stream_id, result::text FROM cqrs.command_results WHERE command_id = $1::uuid"},
  };
}

int64_t to_int64(std::string_view text) {
  int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

uint64_t to_uint64(std::string_view text) {
  uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// Parses "{1,2,3}".
std::vector<int64_t> parse_int_array(std::string_view text) {
  std::vector<int64_t> values;
  if (text.size() < 2) return values;
  text = text.substr(1, text.size() - 2);
  while (!text.empty()) {
    size_t comma = text.find(',');
    values.push_back(to_int64(text.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return values;
}

// The event in `row`, whose event_columns() start at `first`.
RecordedEvent event_at(const QueryResult& rows, int row, int first = 0) {
  RecordedEvent event;
  event.global_position = rows.int64(row, first);
  event.commit_id = to_uint64(rows.text(row, first + 1));
  event.stream_id = rows.text(row, first + 2);
  event.stream_version = rows.int64(row, first + 3);
  event.event_id = Uuid::parse(rows.text(row, first + 4)).value_or(Uuid());
  event.type = rows.text(row, first + 5);
  event.type_version = static_cast<int32_t>(rows.int64(row, first + 6));
  event.data = rows.text(row, first + 7);
  event.metadata = rows.text(row, first + 8);
  event.created_at_us = rows.int64(row, first + 9);
  return event;
}

std::vector<RecordedEvent> events_from(const QueryResult& rows) {
  std::vector<RecordedEvent> events;
  events.reserve(static_cast<size_t>(rows.rows()));
  for (int row = 0; row < rows.rows(); ++row) events.push_back(event_at(rows, row));
  return events;
}

int64_t expected_code(ExpectedVersion expected) {
  switch (expected.kind()) {
    case ExpectedVersion::Kind::kAny:
      return -1;
    case ExpectedVersion::Kind::kNoStream:
      return -2;
    case ExpectedVersion::Kind::kStreamExists:
      return -3;
    case ExpectedVersion::Kind::kExact:
      return expected.version();
  }
  return -1;
}

int64_t limit_of(size_t max_count) {
  return max_count > static_cast<size_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(max_count);
}

}  // namespace

PostgresEventStore::PostgresEventStore(std::unique_ptr<Connection> conn,
                                       PostgresStoreOptions options)
    : conn_(std::move(conn)), options_(options) {}

PostgresEventStore::~PostgresEventStore() = default;

Result<std::unique_ptr<PostgresEventStore>> PostgresEventStore::open(const std::string& conninfo,
                                                                     PostgresStoreOptions options) {
  if (options.typed_read_window < 1) {
    return Error::invalid(errc::kInvalidArgument,
                          "typed_read_window must be at least 1 transaction, got " +
                              std::to_string(options.typed_read_window));
  }
  auto conn = Connection::open(conninfo);
  if (!conn) return conn.error();
  // The store's statements assume READ COMMITTED: a statement that waited for a stream's lock
  // reads the head committed meanwhile. A server or database whose default is REPEATABLE READ
  // or SERIALIZABLE would have appends fail (a serialization failure, or an `any` append told
  // of a version it should have gone after); the store's sessions keep the default of
  // PostgreSQL instead. Set per session, not in the connection string: poolers such as
  // PgBouncer refuse or drop startup options.
  if (auto configured = (*conn)->configure("SET default_transaction_isolation = 'read committed'");
      !configured) {
    return configured.error();
  }
  if (options.require_current_schema) {
    if (auto checked = check_schema(**conn); !checked) return checked.error();
  }
  std::unique_ptr<PostgresEventStore> store(
      new PostgresEventStore(std::move(conn).value(), options));
  if (auto prepared = store->prepare_statements(); !prepared) return prepared.error();
  if (options.notify) store->notices_ = NoticeSender::for_database(conninfo);
  if (options.group_appends) {
    store->groups_ = AppendGroups::for_key(conninfo + (options.notify ? "\n+notify" : "\n-notify"));
  }
  return store;
}

Result<void> PostgresEventStore::prepare_statements() {
  for (const Statement& statement : statements()) {
    if (auto prepared = conn_->prepare(statement.name, statement.sql); !prepared) return prepared;
  }
  return {};
}

Result<void> PostgresEventStore::ensure_connected() {
  if (conn_->still_open()) return {};
  return conn_->reconnect();
}

namespace {

// The types of `events`, for the wake-up's payload, a run of one type once (the payload names
// each type once anyway).
std::vector<std::string> types_of(std::span<const EventData> events) {
  std::vector<std::string> types;
  for (const EventData& event : events) {
    if (types.empty() || types.back() != event.type) types.push_back(event.type);
  }
  return types;
}

// The types of the events of requests[pending...]; with `results`, only of those appended.
std::vector<std::string> types_of(std::span<const WriteRequest> requests,
                                  const std::vector<size_t>& pending,
                                  const std::vector<WriteResult>* results) {
  std::vector<std::string> types;
  for (size_t idx : pending) {
    if (results != nullptr && !(*results)[idx].ok()) continue;
    std::vector<std::string> more = types_of(requests[idx].events);
    types.insert(types.end(), more.begin(), more.end());
  }
  return types;
}

// Whether all of `events` (more than one) carry the same metadata, as a command's events do. The
// append statements then take it once: PostgreSQL parses it into jsonb once instead of once per
// event (schema/012).
bool shares_metadata(std::span<const EventData> events) {
  if (events.size() < 2) return false;
  for (const EventData& event : events.subspan(1)) {
    if (event.metadata != events.front().metadata) return false;
  }
  return true;
}

// Adds each finished array to `params`, in order.
void add_arrays(Params& params, std::initializer_list<BinaryArray*> arrays) {
  for (BinaryArray* array : arrays) params.add_binary(array->take());
}

size_t data_bytes(std::span<const EventData> events) {
  size_t bytes = 0;
  for (const EventData& event : events) bytes += event.data.size();
  return bytes;
}

// The events as the five arrays the append statements take, in binary format: ids, types, type
// versions, data and metadata. Shared metadata is one element, which stands for every event's.
// Binary arrays spare the server the parsing of array literals (and this side their quoting):
// 55–85 µs of the server's CPU per append of 100 events (append_costs).
void add_event_arrays(Params& params, std::span<const EventData> events) {
  const bool share_metadata = shares_metadata(events);
  const size_t count = events.size();
  const size_t type_bytes = events.empty() ? 0 : events.front().type.size();
  const size_t metadata_bytes = events.empty() ? 0 : events.front().metadata.size() + 1;
  BinaryArray ids(BinaryArray::kUuid, count), types(BinaryArray::kText, count, count * type_bytes),
      versions(BinaryArray::kInt4, count),
      data(BinaryArray::kJsonb, count, data_bytes(events) + count),
      metadata(BinaryArray::kJsonb, share_metadata ? 1 : count,
               share_metadata ? metadata_bytes : count * metadata_bytes);
  for (const EventData& event : events) {
    ids.add_uuid(event.event_id.bytes());
    types.add_text(event.type);
    versions.add_int4(event.type_version);
    data.add_jsonb(event.data);
    if (!share_metadata || &event == &events.front()) metadata.add_jsonb(event.metadata);
  }
  add_arrays(params, {&ids, &types, &versions, &data, &metadata});
}

// Adds `events`' run lengths to `array` (of int): a run is a stretch of events that share
// their type and their metadata (so their correlation). Its first event gets its length, the
// others 0; the $all index and cqrs.correlations hold only first events (schema/012, 013, 018).
void add_run_lengths(BinaryArray& array, std::span<const EventData> events) {
  size_t start = 0;
  while (start < events.size()) {
    size_t end = start + 1;
    while (end < events.size() && events[end].type == events[start].type &&
           events[end].metadata == events[start].metadata) {
      ++end;
    }
    array.add_int4(static_cast<int32_t>(end - start));
    for (size_t idx = start + 1; idx < end; ++idx) array.add_int4(0);
    start = end;
  }
}

std::string run_lengths(std::span<const EventData> events) {
  BinaryArray array(BinaryArray::kInt4, events.size());
  add_run_lengths(array, events);
  return array.take();
}

// The event arrays of the statements that store the events of several appends at once
// ("append_group", "append_batch"): per append the metadata its events share (NULL when they
// differ) and its run lengths; per event its append (1-based), its place there (1-based) and its
// columns, with NULL metadata where the append's shared metadata stands for it.
struct OwnedEventArrays {
  BinaryArray shared_metadata{BinaryArray::kJsonb, 0}, runs{BinaryArray::kInt4, 0},
      owners{BinaryArray::kInt4, 0}, places{BinaryArray::kInt4, 0}, ids{BinaryArray::kUuid, 0},
      types{BinaryArray::kText, 0}, type_versions{BinaryArray::kInt4, 0},
      data{BinaryArray::kJsonb, 0}, metadata{BinaryArray::kJsonb, 0};

  void add(size_t owner_no, std::span<const EventData> events) {
    const bool share_metadata = shares_metadata(events);
    if (share_metadata) {
      shared_metadata.add_jsonb(events.front().metadata);
    } else {
      shared_metadata.add_null();
    }
    add_run_lengths(runs, events);
    for (size_t place = 0; place < events.size(); ++place) {
      const EventData& event = events[place];
      owners.add_int4(static_cast<int32_t>(owner_no));
      places.add_int4(static_cast<int32_t>(place + 1));
      ids.add_uuid(event.event_id.bytes());
      types.add_text(event.type);
      type_versions.add_int4(event.type_version);
      data.add_jsonb(event.data);
      if (share_metadata) {
        metadata.add_null();
      } else {
        metadata.add_jsonb(event.metadata);
      }
    }
  }
};

// Parameters of the "append_group" statement: per job its stream, known version and the
// metadata its events share (NULL when they differ); per event its job (1-based), its place in
// the job (1-based) and its columns; then `lock_wait`.
Params group_params(std::span<AppendGroups::Job* const> group,
                    std::chrono::milliseconds lock_wait) {
  BinaryArray streams(BinaryArray::kText, group.size()), bases(BinaryArray::kInt8, group.size());
  OwnedEventArrays events;
  for (size_t job_no = 0; job_no < group.size(); ++job_no) {
    const AppendGroups::Job& job = *group[job_no];
    streams.add_text(job.stream_id);
    bases.add_int8(job.base);
    events.add(job_no + 1, job.events);
  }
  Params params;
  add_arrays(params, {&streams, &bases, &events.shared_metadata, &events.owners, &events.places,
                      &events.ids, &events.types, &events.type_versions, &events.data,
                      &events.metadata, &events.runs});
  // 0 would turn lock_timeout off: at least a millisecond.
  params.add(std::to_string(std::max<int64_t>(lock_wait.count(), 1)) + "ms");
  return params;
}

// Parameters of the "append" statement for one request; without `with_runs`, those of
// "append_claiming", which stores every event as a run of one.
Params append_params(std::string_view stream_id, ExpectedVersion expected,
                     std::span<const EventData> events, const CommandRecord* command,
                     bool with_runs = true) {
  Params params;
  params.add(stream_id).add(expected_code(expected));
  add_event_arrays(params, events);
  if (command != nullptr) {
    params.add(command->command_id.to_string()).add(command->result);
  } else {
    params.add_null().add_null();
  }
  if (with_runs) params.add_binary(run_lengths(events));
  return params;
}

// Turns the "append" statement's row into a WriteResult.
WriteResult interpret_append(const QueryResult& rows, int row, std::string_view stream_id,
                             ExpectedVersion expected, const CommandRecord* command) {
  WriteResult result;
  if (row >= rows.rows()) {
    result.error = Error::internal(
        errc::kStoreError, "append returned no row for stream '" + std::string(stream_id) + "'");
    return result;
  }
  std::string_view status = rows.text(row, 0);
  int64_t version = rows.is_null(row, 1) ? 0 : rows.int64(row, 1);
  if (status == "ok") {
    result.appended =
        AppendResult{version, parse_int_array(rows.text(row, 2)), to_uint64(rows.text(row, 4))};
  } else if (status == "wrong_expected_version") {
    result.error = Error::wrong_expected_version(stream_id, expected.to_string(), version);
  } else if (status == "stream_exists") {
    result.error = Error::conflict(errc::kStreamExists, "stream '" + std::string(stream_id) +
                                                            "' already exists at version " +
                                                            std::to_string(version));
  } else if (status == "stream_not_found") {
    result.error = Error::conflict(errc::kStreamNotFound,
                                   "stream '" + std::string(stream_id) + "' does not exist");
  } else if (status == "duplicate_command") {
    result.error = Error::conflict(
        errc::kDuplicateCommand,
        "command " + (command ? command->command_id.to_string() : "") + " was already dispatched");
    result.existing_result = std::string(rows.text(row, 3));
  } else {
    result.error = Error::internal(errc::kStoreError,
                                   "unexpected append status '" + std::string(status) + "'");
  }
  return result;
}

// The row of append_one: the event's position, the version it took, the transaction's id.
AppendResult appended_one(const QueryResult& rows) {
  return AppendResult{rows.int64(0, 1), {rows.int64(0, 0)}, to_uint64(rows.text(0, 2))};
}

// The rows of an append after the known version `base` (append_after, append_after_many,
// append_after_recorded): each event's position in version order, and on the first row the
// transaction's id. REQUIRES: at least one row.
AppendResult appended_after(const QueryResult& rows, int64_t base) {
  AppendResult appended{base + rows.rows(), {}, to_uint64(rows.text(0, 1))};
  appended.global_positions.reserve(static_cast<size_t>(rows.rows()));
  for (int row = 0; row < rows.rows(); ++row) {
    appended.global_positions.push_back(rows.int64(row, 0));
  }
  return appended;
}

// Parameters of the "append_batch" statement for the requests `round` (indexes into requests).
Params batch_params(std::span<const WriteRequest> requests, const std::vector<size_t>& round) {
  BinaryArray streams(BinaryArray::kText, round.size()), expected(BinaryArray::kInt8, round.size()),
      counts(BinaryArray::kInt4, round.size()), command_ids(BinaryArray::kUuid, round.size()),
      command_results(BinaryArray::kJsonb, round.size());
  OwnedEventArrays events;
  for (size_t request_no = 0; request_no < round.size(); ++request_no) {
    const WriteRequest& request = requests[round[request_no]];
    streams.add_text(request.stream_id);
    expected.add_int8(expected_code(request.expected));
    counts.add_int4(static_cast<int32_t>(request.events.size()));
    if (request.command) {
      command_ids.add_uuid(request.command->command_id.bytes());
      command_results.add_jsonb(request.command->result);
    } else {
      command_ids.add_null();
      command_results.add_null();
    }
    events.add(request_no + 1, request.events);
  }
  Params params;
  add_arrays(params, {&streams, &expected, &counts, &command_ids, &command_results, &events.owners,
                      &events.places, &events.ids, &events.types, &events.type_versions,
                      &events.data, &events.metadata, &events.shared_metadata, &events.runs});
  return params;
}

// Splits the requests into rounds in which no stream id and no command id occurs twice, keeping
// each stream's requests in order: the batch statement checks a request against stored state
// only, so a repeat must run in a later statement, which sees the earlier one's rows. A round
// holds at most kMaxRoundBytes of payloads (or one request), so that its statement's arrays stay
// far below PostgreSQL's 1 GiB per value. Payloads are the events' data and metadata and the
// command result.
constexpr size_t kMaxRoundBytes = size_t{16} << 20;

std::vector<std::vector<size_t>> rounds_of(std::span<const WriteRequest> requests,
                                           const std::vector<size_t>& pending) {
  std::vector<std::vector<size_t>> rounds;
  std::vector<size_t> round_bytes;
  std::unordered_map<std::string_view, size_t> next_round_of_stream;
  std::unordered_map<Uuid, size_t> next_round_of_command;
  for (size_t idx : pending) {
    const WriteRequest& request = requests[idx];
    size_t round = next_round_of_stream[request.stream_id];
    if (request.command)
      round = std::max(round, next_round_of_command[request.command->command_id]);
    size_t bytes = payload_bytes(request.events);
    if (request.command) bytes += request.command->result.size();
    // Every round holds a request already: a request larger than the bound gets one of its own.
    while (round < rounds.size() && round_bytes[round] + bytes > kMaxRoundBytes) {
      ++round;
    }
    if (round == rounds.size()) {
      rounds.emplace_back();
      round_bytes.push_back(0);
    }
    rounds[round].push_back(idx);
    round_bytes[round] += bytes;
    next_round_of_stream[request.stream_id] = round + 1;
    if (request.command) next_round_of_command[request.command->command_id] = round + 1;
  }
  return rounds;
}

}  // namespace

Result<AppendResult> PostgresEventStore::append(std::string_view stream_id,
                                                ExpectedVersion expected,
                                                std::span<const EventData> events) {
  if (auto valid = validate_append(stream_id, expected, events); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  std::optional<int64_t> base = known_base(stream_id, expected);
  if (base && groups_ && events.size() <= AppendGroups::kMaxJobEvents &&
      !server_identity().empty()) {
    AppendGroups::Job job;
    job.server = server_identity_;
    job.stream_id = stream_id;
    job.expected = expected;
    job.base = *base;
    job.events = events;
    job.max_wait = options_.group_wait;
    groups_->run(job, [this](std::span<AppendGroups::Job* const> group) { run_group(group); });
    if (job.result) {
      if (job.result->ok()) note_version(stream_id, (*job.result)->stream_version);
      return std::move(*job.result);
    }
  }
  Result<AppendResult> appended = append_alone(stream_id, expected, events, base);
  if (appended && groups_ && !conn_->in_transaction() && !server_identity_.empty() &&
      server_session_ == conn_->session()) {
    groups_->note(server_identity_, stream_id, appended->stream_version);
  }
  return appended;
}

void PostgresEventStore::run_group(std::span<AppendGroups::Job* const> group) {
  if (group.size() == 1) {
    AppendGroups::Job& job = *group.front();
    job.result = append_alone(job.stream_id, job.expected, job.events, job.base);
    return;
  }
  std::vector<Connection::PipelineStep> steps;
  steps.push_back({"append_group", group_params(group, options_.group_lock_wait), true});
  // A notification in the group's round trip would keep every member waiting for it: the
  // NoticeSender's thread sends it.
  auto ran = conn_->exec_pipeline(steps);
  auto fail_all = [&](const Error& error) {
    for (AppendGroups::Job* job : group) job->result = error;
  };
  // A broken connection leaves the outcome unknown: the appends must not run again.
  if (!ran) return fail_all(ran.error());
  if (!(*ran)[0]) {
    if ((*ran)[0].error().kind() == ErrorKind::kUnavailable) fail_all((*ran)[0].error());
    return;  // nothing was stored (a taken version, a lock that did not come): each runs alone
  }
  const QueryResult& rows = *(*ran)[0];
  // Each stored row names its stream, and a group holds one append per stream.
  std::unordered_map<std::string_view, AppendGroups::Job*> by_stream;
  for (AppendGroups::Job* job : group) by_stream.emplace(job->stream_id, job);
  std::unordered_map<AppendGroups::Job*, std::vector<std::pair<int64_t, int64_t>>> stored;
  std::string_view transaction_id;
  for (int row = 0; row < rows.rows(); ++row) {
    auto job = by_stream.find(rows.text(row, 0));
    if (job == by_stream.end()) continue;
    stored[job->second].emplace_back(rows.int64(row, 1), rows.int64(row, 2));
    if (!rows.is_null(row, 3)) transaction_id = rows.text(row, 3);
  }
  std::vector<std::string> appended_types;
  for (AppendGroups::Job* job : group) {
    auto found = stored.find(job);
    if (found == stored.end()) continue;  // its version is missing here: it runs alone
    auto& versions = found->second;
    std::sort(versions.begin(), versions.end());
    AppendResult appended;
    appended.stream_version = versions.back().first;
    appended.commit_id = to_uint64(transaction_id);
    for (const auto& [version, position] : versions) appended.global_positions.push_back(position);
    if (versions.size() != job->events.size()) {
      // Cannot happen (each append's rows are all stored or none); said rather than hidden.
      job->result = Error::internal(
          errc::kStoreError, "a group append stored " + std::to_string(versions.size()) + " of " +
                                 std::to_string(job->events.size()) + " events in stream '" +
                                 std::string(job->stream_id) + "'");
      continue;
    }
    for (const EventData& event : job->events) appended_types.push_back(event.type);
    job->result = std::move(appended);
  }
  notify(appended_types);
}

Result<AppendResult> PostgresEventStore::append_alone(std::string_view stream_id,
                                                      ExpectedVersion expected,
                                                      std::span<const EventData> events,
                                                      std::optional<int64_t> base) {
  // A single event's type needs no list of its own.
  std::vector<std::string> many_types;
  if (events.size() > 1) many_types = types_of(events);
  std::span<const std::string> types =
      events.size() == 1 ? std::span<const std::string>(&events.front().type, 1) : many_types;
  if (base || (events.size() == 1 && !conn_->in_transaction())) {
    Params params;
    params.reserve(8);
    params.add(stream_id).add(base ? *base : expected_code(expected));
    const char* statement = "append_after_many";
    if (events.size() == 1) {
      // The payloads are sent from the caller's strings, which outlive the statement.
      const EventData& event = events.front();
      params.add_uuid(event.event_id.bytes()).add_borrowed(event.type);
      params.add(static_cast<int64_t>(event.type_version));
      params.add_borrowed(event.data).add_borrowed(event.metadata);
      statement = base ? "append_after" : "append_one";
    } else {
      add_event_arrays(params, events);
      params.add_binary(run_lengths(events));
    }
    std::vector<Connection::PipelineStep> steps;
    steps.reserve(3);  // and the notification's
    // append_one reads the head: with its generic plan and without sequential scans, as the
    // reads (see "generic_plans").
    const bool looks_up = !base;
    if (looks_up) steps.push_back({"generic_plans", Params(), false});
    steps.push_back({statement, std::move(params), true});
    bool announced;
    auto results = exec_announced(steps, types, announced);
    if (!results) return results.error();
    if (looks_up && !(*results)[0]) return (*results)[0].error();  // the append did not run
    auto& rows = (*results)[looks_up ? 1 : 0];
    if (rows && rows->rows() == static_cast<int>(events.size())) {
      if (!announced) notify(types);
      // Without a base, one event (append_one): the version it took comes back.
      AppendResult appended = base ? appended_after(*rows, *base) : appended_one(*rows);
      note_version(stream_id, appended.stream_version);
      return appended;
    }
    if (!rows && !rows.error().is(errc::kWrongExpectedVersion) &&
        !rows.error().is(errc::kDuplicateEvent)) {
      return rows.error();
    }
    // The expected version did not hold in the statement's snapshot, or another writer took the
    // version meanwhile: let the function decide on the committed head (and name it). So also
    // for an event id already stored: these statements insert without reading the head, and an
    // append retried after its outcome was lost must learn that its expectation no longer holds
    // (stream_exists, wrong_expected_version) as it would from a store that knew the stream.
  }
  std::vector<Connection::PipelineStep> steps;
  steps.push_back({"append", append_params(stream_id, expected, events, nullptr), true});
  bool announced;
  auto results = exec_announced(steps, types, announced);
  if (!results) return results.error();
  auto& rows = (*results)[0];
  if (!rows) return rows.error();
  WriteResult result = interpret_append(*rows, 0, stream_id, expected, nullptr);
  if (!result.ok()) {
    if (auto actual = result.error->actual_version(); actual && *actual > 0) {
      note_version(stream_id, *actual);
    }
    return *result.error;
  }
  if (!announced) notify(types);
  note_version(stream_id, result.appended->stream_version);
  return std::move(*result.appended);
}

std::optional<int64_t> PostgresEventStore::known_base(std::string_view stream_id,
                                                      ExpectedVersion expected) {
  // In a transaction the caller opened, a statement that fails would abort it: only the
  // functions, which answer every outcome without raising, run there.
  if (conn_->in_transaction()) return std::nullopt;
  std::optional<int64_t> known;
  if (conn_->session() == known_session_) {
    if (auto found = known_versions_.find(stream_id); found != known_versions_.end()) {
      known = found->second;
    }
  }
  // An append that is known to fail goes to the functions at once, which name the head.
  bool exact = expected.kind() == ExpectedVersion::Kind::kExact;
  if (expected.kind() == ExpectedVersion::Kind::kNoStream || (exact && expected.version() == 0)) {
    return known && *known > 0 ? std::nullopt : std::optional<int64_t>(0);
  }
  if (!known) return std::nullopt;
  if (!exact) return known;  // any, stream_exists: after the highest known version
  // Exact n: n + 1 is free iff n is the head, so n must be the highest version known.
  return *known == expected.version() ? known : std::nullopt;
}

const std::string& PostgresEventStore::server_identity() {
  if (uint64_t session = conn_->session(); session != server_session_) {
    auto rows = conn_->exec(
        "SELECT coalesce(host(inet_server_addr()), 'local') || ':' ||"
        " coalesce(inet_server_port()::text, '') || ' ' || pg_postmaster_start_time()::text");
    server_identity_ = rows && rows->rows() == 1 ? std::string(rows->text(0, 0)) : "";
    server_session_ = rows ? session : 0;
  }
  return server_identity_;
}

void PostgresEventStore::note_version(std::string_view stream_id, int64_t version) {
  constexpr size_t kKnownStreamsLimit = 10'000;
  // Inside a caller's transaction a write may still roll back, and reads see it before then.
  if (conn_->in_transaction()) return;
  if (uint64_t session = conn_->session(); session != known_session_) {
    known_versions_.clear();
    known_session_ = session;
  }
  auto found = known_versions_.find(stream_id);
  if (found != known_versions_.end()) {
    found->second = std::max(found->second, version);
    return;
  }
  if (known_versions_.size() >= kKnownStreamsLimit) known_versions_.clear();
  known_versions_.emplace(std::string(stream_id), version);
}

std::vector<WriteResult> PostgresEventStore::write(std::span<const WriteRequest> requests) {
  std::vector<WriteResult> results(requests.size());
  std::vector<size_t> pending;
  for (size_t idx = 0; idx < requests.size(); ++idx) {
    if (auto valid = validate_write_request(requests[idx]); !valid) {
      results[idx].error = valid.error();
    } else {
      pending.push_back(idx);
    }
  }
  if (pending.empty()) return results;
  if (auto connected = ensure_connected(); !connected) {
    for (size_t idx : pending) results[idx].error = connected.error();
    return results;
  }
  // Requests with unique claims run in transactions of their own (a conflict must fail only its
  // request); the others are grouped. Runs of either kind keep the requests' order.
  std::vector<size_t> group;
  for (size_t idx : pending) {
    if (requests[idx].claims.empty()) {
      group.push_back(idx);
      continue;
    }
    if (!group.empty()) write_group(requests, group, results);
    group.clear();
    results[idx] = write_claiming(requests[idx]);
  }
  if (!group.empty()) write_group(requests, group, results);
  return results;
}

WriteResult PostgresEventStore::write_claiming(const WriteRequest& request) {
  const CommandRecord* command = request.command ? &*request.command : nullptr;
  Params params =
      append_params(request.stream_id, request.expected, request.events, command, false);
  std::string scopes = "{", values = "{", releases = "{";
  for (const UniqueClaim& claim : request.claims) {
    append_array_element(scopes, claim.scope);
    append_array_element(values, claim.value);
    append_array_element(releases, claim.release ? "t" : "f");
  }
  for (std::string* literal : {&scopes, &values, &releases}) {
    literal->push_back('}');
    params.add(std::move(*literal));
  }
  std::vector<Connection::PipelineStep> steps;
  steps.push_back({"append_claiming", std::move(params), true});
  std::vector<std::string> types = types_of(request.events);
  bool announced;
  auto ran = exec_announced(steps, types, announced);
  if (!ran) return WriteResult{{}, ran.error(), {}, {}};
  auto& rows = (*ran)[0];
  if (rows) {
    WriteResult result = interpret_append(*rows, 0, request.stream_id, request.expected, command);
    if (result.ok() && !announced) notify(types);
    return result;
  }
  WriteResult result{{}, rows.error(), {}, {}};
  if (rows.error().is(errc::kAlreadyTaken)) {
    // The message ends with "(claim #N)": the claim that another stream owns.
    std::string message = rows.error().message();
    size_t index = 1;
    if (auto at = message.rfind(" (claim #"); at != std::string::npos) {
      index = std::strtoul(message.c_str() + at + 9, nullptr, 10);
      message.erase(at);
    }
    if (index < 1 || index > request.claims.size()) index = 1;
    result.taken = request.claims[index - 1];
    result.error = Error::conflict(errc::kAlreadyTaken, message);
  }
  return result;
}

void PostgresEventStore::write_group(std::span<const WriteRequest> requests,
                                     const std::vector<size_t>& pending,
                                     std::vector<WriteResult>& results) {
  if (pending.size() == 1) {
    if (auto written = write_one_after(requests[pending.front()])) {
      results[pending.front()] = std::move(*written);
      return;
    }
  }
  // The whole group in one transaction and one round trip: one batch statement per round.
  auto rounds = rounds_of(requests, pending);
  std::vector<Connection::PipelineStep> steps;
  for (const auto& round : rounds) {
    steps.push_back({"append_batch", batch_params(requests, round), false});
  }
  steps.back().sync_after = true;
  bool announced;
  auto grouped = exec_announced(steps, types_of(requests, pending, nullptr), announced);
  if (!grouped) {
    for (size_t idx : pending) results[idx] = WriteResult{{}, grouped.error(), {}, {}};
    return;
  }
  auto interpret = [&](size_t idx, const Result<QueryResult>& rows, int row) {
    const WriteRequest& request = requests[idx];
    const CommandRecord* command = request.command ? &*request.command : nullptr;
    results[idx] = rows ? interpret_append(*rows, row, request.stream_id, request.expected, command)
                        : WriteResult{{}, rows.error(), {}, {}};
  };
  bool all_ran = true;
  for (size_t round_no = 0; round_no < rounds.size(); ++round_no) {
    all_ran = all_ran && (*grouped)[round_no].ok();
  }
  // In a transaction the caller opened, a statement error aborted it: each request keeps its
  // statement's error, since running them one by one there would only fail again.
  if (all_ran || pending.size() == 1 || conn_->in_transaction()) {
    for (size_t round_no = 0; round_no < rounds.size(); ++round_no) {
      for (size_t row = 0; row < rounds[round_no].size(); ++row) {
        interpret(rounds[round_no][row], (*grouped)[round_no], static_cast<int>(row));
      }
    }
    if (!announced) notify(types_of(requests, pending, &results));
    note_versions(requests, pending, results);
    return;
  }

  // A statement raised (a duplicate event id, say), which aborted the whole group. Run each
  // request in its own transaction, again in one round trip, so the others succeed.
  steps.clear();
  for (size_t idx : pending) {
    const WriteRequest& request = requests[idx];
    const CommandRecord* command = request.command ? &*request.command : nullptr;
    steps.push_back({"append",
                     append_params(request.stream_id, request.expected, request.events, command),
                     true});
  }
  auto separate = conn_->exec_pipeline(steps);
  for (size_t pending_idx = 0; pending_idx < pending.size(); ++pending_idx) {
    if (!separate) {
      results[pending[pending_idx]] = WriteResult{{}, separate.error(), {}, {}};
    } else {
      interpret(pending[pending_idx], (*separate)[pending_idx], 0);
    }
  }
  notify(types_of(requests, pending, &results));
  note_versions(requests, pending, results);
}

std::optional<WriteResult> PostgresEventStore::write_one_after(const WriteRequest& request) {
  if (request.events.empty()) return std::nullopt;
  std::optional<int64_t> base = known_base(request.stream_id, request.expected);
  if (!base) return std::nullopt;
  Params params;
  params.add(request.stream_id).add(*base);
  add_event_arrays(params, request.events);
  const char* statement = "append_after_many";
  if (request.command) {
    params.add(request.command->command_id.to_string()).add(request.command->result);
    statement = "append_after_recorded";
  }
  params.add_binary(run_lengths(request.events));  // $8 of append_after_many, $10 of the other
  std::vector<Connection::PipelineStep> steps;
  steps.push_back({statement, std::move(params), true});
  std::vector<std::string> types = types_of(request.events);
  bool announced;
  auto results = exec_announced(steps, types, announced);
  if (!results) return WriteResult{{}, results.error(), {}, {}};
  auto& rows = (*results)[0];
  // A statement error (the version or the command id was taken, a duplicate event id): the
  // group statement decides and names what happened.
  if (!rows || rows->rows() != static_cast<int>(request.events.size())) return std::nullopt;
  if (!announced) notify(types);
  AppendResult appended = appended_after(*rows, *base);
  note_version(request.stream_id, appended.stream_version);
  return WriteResult{std::move(appended), {}, {}, {}};
}

void PostgresEventStore::note_versions(std::span<const WriteRequest> requests,
                                       const std::vector<size_t>& pending,
                                       const std::vector<WriteResult>& results) {
  for (size_t idx : pending) {
    const WriteResult& result = results[idx];
    if (result.appended && !result.appended->global_positions.empty()) {
      note_version(requests[idx].stream_id, result.appended->stream_version);
    } else if (result.error) {
      if (auto actual = result.error->actual_version(); actual && *actual > 0) {
        note_version(requests[idx].stream_id, *actual);
      }
    }
  }
}

PostgresEventStore::Notice::~Notice() {
  if (sender_ != nullptr) sender_->end_append(claimed_, delivered_);
}

Result<std::vector<Result<QueryResult>>> PostgresEventStore::exec_announced(
    std::vector<Connection::PipelineStep>& steps, std::span<const std::string> types,
    bool& announced) {
  announced = false;
  if (!notices_ || types.empty()) return conn_->exec_pipeline(steps);
  if (conn_->in_transaction()) {
    // The caller's transaction: announced when it commits, and its durability left alone.
    Params params;
    params.add(notice_types_suffix({types.begin(), types.end()}));
    steps.push_back({"notify_at_commit", std::move(params), true});
    auto ran = conn_->exec_pipeline(steps);
    announced = ran && ran->back().ok();
    return ran;
  }
  std::vector<std::string> carried;
  const bool claimed = notices_->begin_append(carried);
  // From here on the notice ends the append, also when building the step throws.
  Notice notice{notices_.get(), claimed};
  if (claimed) {
    carried.insert(carried.end(), types.begin(), types.end());
    Params params;
    params.add(notice_types_suffix(std::move(carried)));
    steps.push_back({"notify", std::move(params), true});
  }
  auto ran = conn_->exec_pipeline(steps);
  if (ran) announced = notice.sent(*ran);  // also when an append before it failed
  return ran;
}

namespace {

// The read `name` after the "generic_plans" step, in one implicit transaction (exec_generic).
std::vector<Connection::PipelineStep> generic_steps(const char* name, Params params) {
  std::vector<Connection::PipelineStep> steps;
  steps.reserve(2);
  steps.push_back({"generic_plans", Params(), false});
  steps.push_back({name, std::move(params), true});
  return steps;
}

}  // namespace

Result<QueryResult> PostgresEventStore::exec_generic(const char* name, Params params) {
  // In the caller's transaction the setting would outlast the read, up to the caller's commit.
  if (conn_->in_transaction()) return conn_->exec_prepared(name, params);
  auto ran = conn_->exec_pipeline(generic_steps(name, std::move(params)));
  if (!ran) return ran.error();
  // Should the setting fail, the read reports only that it did not run: name the cause.
  if (!(*ran)[0]) return (*ran)[0].error();
  return std::move((*ran)[1]);
}

void PostgresEventStore::notify(std::span<const std::string> types) const {
  // After the commit, through the process's NoticeSender thread, which coalesces the
  // notifications of many connections. It names the event types, so that a
  // daemon wakes only the handlers of those types. A request that appended nothing (only a
  // command record) announces nothing.
  if (notices_ && !types.empty()) notices_->post(types);
}

Result<std::vector<RecordedEvent>> PostgresEventStore::read_stream(std::string_view stream_id,
                                                                   int64_t from_version,
                                                                   size_t max_count,
                                                                   Direction direction) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  if (direction == Direction::kBackward && from_version < 0) {
    from_version = std::numeric_limits<int64_t>::max();
  }
  Params params;
  params.add(stream_id).add(from_version).add(limit_of(max_count));
  auto rows =
      exec_generic(direction == Direction::kForward ? "read_forward" : "read_backward", params);
  if (!rows) return rows.error();
  std::vector<RecordedEvent> events = events_from(*rows);
  if (!events.empty()) {
    note_version(stream_id, std::max(events.front().stream_version, events.back().stream_version));
  }
  return events;
}

std::vector<LoadedStream> PostgresEventStore::load_streams(std::span<const StreamLoad> loads) {
  std::vector<LoadedStream> loaded(loads.size());
  auto fail_all = [&](const Error& error) {
    for (LoadedStream& out : loaded) out.error = error;
    return loaded;
  };
  for (size_t idx = 0; idx < loads.size(); ++idx) {
    if (auto valid = validate_stream_id(loads[idx].stream_id); !valid) {
      loaded[idx].error = valid.error();
    }
  }
  if (auto connected = ensure_connected(); !connected) return fail_all(connected.error());
  std::string streams = "{", afters = "{", with_snapshots = "{";
  for (size_t idx = 0; idx < loads.size(); ++idx) {
    // An invalid stream id is sent as an empty one, which matches nothing; its error stays.
    append_array_element(streams, loaded[idx].error ? "" : loads[idx].stream_id);
    append_array_element(afters, std::to_string(loads[idx].after_version));
    append_array_element(with_snapshots, loads[idx].with_snapshot ? "t" : "f");
  }
  for (std::string* literal : {&streams, &afters, &with_snapshots}) literal->push_back('}');
  Params params;
  params.add(std::move(streams)).add(std::move(afters)).add(std::move(with_snapshots));
  auto rows = exec_generic("load_streams", std::move(params));
  if (!rows) return fail_all(rows.error());
  for (int row = 0; row < rows->rows(); ++row) {
    size_t idx = static_cast<size_t>(rows->int64(row, 0)) - 1;
    if (idx >= loaded.size()) continue;
    LoadedStream& out = loaded[idx];
    if (rows->int64(row, 1) == 0) {
      out.snapshot =
          Snapshot{loads[idx].stream_id, rows->int64(row, 5), std::string(rows->text(row, 7)),
                   static_cast<int32_t>(rows->int64(row, 8)), std::string(rows->text(row, 9))};
    } else {
      out.events.push_back(event_at(*rows, row, 2));
    }
  }
  // Only versions read from cqrs.events are known to exist: a snapshot's version is whatever its
  // writer said (save_snapshot does not read the stream), and an append after a version ahead of
  // the head would leave a gap the primary key cannot see.
  for (size_t idx = 0; idx < loaded.size(); ++idx) {
    const LoadedStream& out = loaded[idx];
    if (!out.events.empty()) note_version(loads[idx].stream_id, out.events.back().stream_version);
  }
  return loaded;
}

Result<int64_t> PostgresEventStore::stream_version(std::string_view stream_id) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = exec_generic("stream_version", Params().add(stream_id));
  if (!rows) return rows.error();
  int64_t version = rows->rows() == 0 ? int64_t{0} : rows->int64(0, 0);
  if (version > 0) note_version(stream_id, version);
  return version;
}

Result<std::vector<RecordedEvent>> PostgresEventStore::read_correlated(
    std::string_view correlation_id, size_t max_count) {
  if (auto valid = validate_correlation_id(correlation_id); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows =
      exec_generic("read_correlated", Params().add(correlation_id).add(limit_of(max_count)));
  if (!rows) return rows.error();
  return events_from(*rows);
}

Result<PostgresEventStore::CorrelationIndexing> PostgresEventStore::index_correlations(
    int max_runs) {
  if (max_runs < 1) {
    return Error::invalid(errc::kInvalidArgument, "index_correlations needs max_runs >= 1, got " +
                                                      std::to_string(max_runs));
  }
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = conn_->exec_prepared("index_correlations", Params().add(int64_t{max_runs}));
  if (!rows) return rows.error();
  if (rows->is_null(0, 1)) {
    return Error::internal(
        errc::kStoreError,
        "cqrs.correlations_indexed has no row, so nothing is indexed and traces walk all of "
        "$all: put it back with INSERT INTO cqrs.correlations_indexed (transaction_id, "
        "global_position) VALUES ('0', 0) (the index is then built again from the origin)");
  }
  CorrelationIndexing done;
  done.indexed = rows->int64(0, 0);
  done.busy = rows->text(0, 1) == "t";
  return done;
}

Result<int64_t> PostgresEventStore::correlation_index_lag() {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = exec_generic("correlation_index_lag", Params());
  if (!rows) return rows.error();
  return rows->int64(0, 0);
}

namespace {

Params read_all_params(Position after, size_t max_count) {
  Params params;
  params.add(std::to_string(after.commit_id)).add(after.global_position).add(limit_of(max_count));
  return params;
}

}  // namespace

std::optional<QueryResult> PostgresEventStore::page_read_ahead(Position after, size_t max_count) {
  std::optional<ReadAhead> sent = std::exchange(read_ahead_, std::nullopt);
  if (!sent || !conn_->has_sent() || sent->session != conn_->session() ||
      sent->sent_id != conn_->sent_id() || sent->after != after || sent->max_count != max_count) {
    return std::nullopt;  // the next call on the connection throws that page away
  }
  auto ran = conn_->take_sent();
  if (!ran || ran->size() != 2 || !(*ran)[0] || !(*ran)[1]) return std::nullopt;
  QueryResult& rows = *(*ran)[1];
  if (rows.rows() != static_cast<int>(limit_of(max_count))) return std::nullopt;
  return std::move(rows);
}

void PostgresEventStore::read_ahead(Position after, size_t max_count) {
  if (conn_->send_pipeline(generic_steps("read_all", read_all_params(after, max_count)))) {
    read_ahead_ = ReadAhead{after, max_count, conn_->session(), conn_->sent_id()};
  }
}

Result<AllPage> PostgresEventStore::read_all(Position after, size_t max_count) {
  std::optional<QueryResult> ahead;
  if (read_ahead_) ahead = page_read_ahead(after, max_count);
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Result<QueryResult> rows = ahead ? Result<QueryResult>(std::move(*ahead))
                                   : exec_generic("read_all", read_all_params(after, max_count));
  if (!rows) return rows.error();
  // A full page: the next one is on its way while this one becomes events. Not in the caller's
  // transaction, which it would outlast.
  if (options_.read_ahead && max_count > 0 &&
      rows->rows() == static_cast<int>(limit_of(max_count)) && !conn_->in_transaction()) {
    int last = rows->rows() - 1;
    read_ahead({to_uint64(rows->text(last, 1)), rows->int64(last, 0)}, max_count);
  }
  AllPage page;
  page.events = events_from(*rows);
  page.next = page.events.empty() ? after : page.events.back().position();
  // A page of none asked (max_count 0) says nothing of what follows: no more, or a reader that
  // loops while `more` would never end.
  page.more = max_count > 0 && page.events.size() == max_count;
  return page;
}

Result<AllPage> PostgresEventStore::read_all_of_types(Position after, size_t max_count,
                                                      std::span<const std::string> types) {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(std::to_string(after.commit_id)).add(after.global_position).add(limit_of(max_count));
  params.add(text_array(types)).add(options_.typed_read_window);
  auto rows = exec_generic("read_all_of_types", std::move(params));
  if (!rows) return rows.error();
  AllPage page;
  page.next = after;
  bool window_ended_early = false;
  for (int row = 0; row < rows->rows(); ++row) {
    if (rows->int64(row, 0) == 1) {
      page.events.push_back(event_at(*rows, row, 3));
      page.next = page.events.back().position();
    } else {
      page.next = Position{to_uint64(rows->text(row, 4)), rows->int64(row, 3)};
      window_ended_early = rows->text(row, 13) == "t";
    }
  }
  page.more = (max_count > 0 && page.events.size() == max_count) || window_ended_early;
  return page;
}

Result<int64_t> PostgresEventStore::events_behind_watermark() {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  // A walk of the runs from the watermark on: few, unless a transaction stays open. The planner
  // cannot know that (the watermark is computed), and may sum a sequential scan instead.
  auto rows = exec_generic("behind_watermark", Params());
  if (!rows) return rows.error();
  return rows->int64(0, 0);
}

Result<Position> PostgresEventStore::head() {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = conn_->exec_prepared("head", Params());
  if (!rows) return rows.error();
  if (rows->rows() == 0) return Position{};
  return Position{to_uint64(rows->text(0, 0)), rows->int64(0, 1)};
}

Result<bool> PostgresEventStore::events_behind_watermark_exist() {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = conn_->exec_prepared("behind_watermark_exist", Params());
  if (!rows) return rows.error();
  return rows->rows() > 0;
}

Result<bool> PostgresEventStore::events_after_exist(Position after,
                                                    std::span<const std::string> types) {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(std::to_string(after.commit_id)).add(after.global_position);
  if (!types.empty()) params.add(text_array(types));
  auto rows = conn_->exec_prepared(
      types.empty() ? "events_after_exist" : "events_of_types_after_exist", params);
  if (!rows) return rows.error();
  return rows->rows() > 0;
}

Result<int64_t> PostgresEventStore::count_of_types_after(Position after,
                                                         std::span<const std::string> types) {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(std::to_string(after.commit_id)).add(after.global_position).add(text_array(types));
  auto rows = exec_generic("count_of_types_after", std::move(params));
  if (!rows) return rows.error();
  return rows->int64(0, 0);
}

Result<std::optional<Position>> PostgresEventStore::load_checkpoint(std::string_view handler) {
  if (auto valid = validate_handler_name(handler); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = conn_->exec_prepared("load_checkpoint", Params().add(handler));
  if (!rows) return rows.error();
  if (rows->rows() == 0) return std::optional<Position>{};
  return std::optional<Position>{Position{to_uint64(rows->text(0, 0)), rows->int64(0, 1)}};
}

Result<void> PostgresEventStore::save_checkpoint(std::string_view handler, Position position) {
  if (auto valid = validate_handler_name(handler); !valid) return valid;
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(handler).add(std::to_string(position.commit_id)).add(position.global_position);
  auto rows = conn_->exec_prepared("save_checkpoint", params);
  if (!rows) return rows.error();
  return {};
}

Result<void> PostgresEventStore::commit_with_checkpoint(
    std::string_view handler, Position position,
    const std::function<Result<void>(Connection&)>& work) {
  if (auto valid = validate_handler_name(handler); !valid) return valid;
  // `work` gets the connection: as with connection(), the store leaves the groups.
  groups_.reset();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  if (auto begun = conn_->exec("BEGIN"); !begun) return begun.error();
  auto rollback = [this](Error error) -> Result<void> {
    if (conn_->is_ok()) (void)conn_->exec("ROLLBACK");
    return error;
  };
  if (auto done = work(*conn_); !done) return rollback(done.error());
  Params params;
  params.add(handler).add(std::to_string(position.commit_id)).add(position.global_position);
  if (auto saved = conn_->exec_prepared("save_checkpoint", params); !saved) {
    return rollback(saved.error());
  }
  if (auto committed = conn_->exec("COMMIT"); !committed) return rollback(committed.error());
  return {};
}

Result<void> PostgresEventStore::save_snapshot(const Snapshot& snapshot) {
  if (auto valid = validate_snapshot(snapshot); !valid) return valid;
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(snapshot.stream_id).add(snapshot.stream_version).add(snapshot.state_type);
  params.add(int64_t{snapshot.state_version}).add(snapshot.data);
  auto rows = conn_->exec_prepared("save_snapshot", params);
  if (!rows) return rows.error();
  return {};
}

Result<std::optional<Snapshot>> PostgresEventStore::load_snapshot(std::string_view stream_id) {
  if (auto valid = validate_stream_id(stream_id); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = exec_generic("load_snapshot", Params().add(stream_id));
  if (!rows) return rows.error();
  if (rows->rows() == 0) return std::optional<Snapshot>{};
  Snapshot snapshot;
  snapshot.stream_id = std::string(stream_id);
  snapshot.stream_version = rows->int64(0, 0);
  snapshot.state_type = rows->text(0, 1);
  snapshot.state_version = static_cast<int32_t>(rows->int64(0, 2));
  snapshot.data = rows->text(0, 3);
  return std::optional<Snapshot>{std::move(snapshot)};
}

Result<bool> PostgresEventStore::record_command(const CommandRecord& record) {
  if (auto valid = validate_command_record(record); !valid) return valid.error();
  if (auto connected = ensure_connected(); !connected) return connected.error();
  Params params;
  params.add(record.command_id.to_string()).add(record.stream_id).add(record.result);
  auto rows = conn_->exec_prepared("record_command", params);
  if (!rows) return rows.error();
  return rows->affected_rows() == 1;
}

Result<std::optional<CommandRecord>> PostgresEventStore::find_command(const Uuid& command_id) {
  if (auto connected = ensure_connected(); !connected) return connected.error();
  auto rows = exec_generic("find_command", Params().add(command_id.to_string()));
  if (!rows) return rows.error();
  if (rows->rows() == 0) return std::optional<CommandRecord>{};
  CommandRecord record;
  record.command_id = command_id;
  record.stream_id = rows->text(0, 0);
  record.result = rows->text(0, 1);
  return std::optional<CommandRecord>{std::move(record)};
}

int PostgresEventStore::backend_pid() const { return conn_->backend_pid(); }

size_t PostgresEventStore::appends_waiting() const { return groups_ ? groups_->waiting() : 0; }

namespace {

void sort_unique(std::vector<std::string>& types) {
  std::sort(types.begin(), types.end());
  types.erase(std::unique(types.begin(), types.end()), types.end());
}

}  // namespace

std::string notice_types_suffix(std::vector<std::string> types) {
  // NOTIFY payloads must stay under 8,000 bytes; a batch of many types announces any type.
  constexpr size_t kMaxTypesBytes = 4000;
  sort_unique(types);
  // A JSON array of strings, written here: it runs in appends' round trips. Types are UTF-8
  // (validate_append), so only quotes, backslashes and control characters need escapes.
  std::string suffix = " [";
  for (const std::string& type : types) {
    if (suffix.size() > 2) suffix += ',';
    suffix += '"';
    for (char c : type) {
      if (c == '"' || c == '\\') {
        suffix += '\\';
        suffix += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        static constexpr char kHex[] = "0123456789abcdef";
        suffix += "\\u00";
        suffix += kHex[(c >> 4) & 0xF];
        suffix += kHex[c & 0xF];
      } else {
        suffix += c;
      }
    }
    suffix += '"';
    if (suffix.size() > kMaxTypesBytes) return std::string();
  }
  suffix += ']';
  return suffix.size() > kMaxTypesBytes ? std::string() : suffix;
}

std::optional<std::vector<std::string>> notice_types(std::string_view payload) {
  size_t space = payload.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  nlohmann::json list = nlohmann::json::parse(payload.substr(space + 1), nullptr, false);
  if (!list.is_array()) return std::nullopt;
  std::vector<std::string> types;
  for (const nlohmann::json& type : list) {
    if (!type.is_string()) return std::nullopt;
    types.push_back(type.get<std::string>());
  }
  sort_unique(types);
  return types;
}

}  // namespace cqrs::pg
