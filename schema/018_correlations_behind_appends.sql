-- The correlation index leaves the append path: a table filled behind the appends.
--
-- events_by_correlation, an index over the expression metadata->>'correlation_id' (schema/007,
-- schema/012), cost every append one more index entry, one more WAL record, and the
-- expression and its partial predicate prepared for every statement: about 22,500 of the
-- server's 186,000 instructions for a single-event append, the largest share of what the store
-- adds to a plain INSERT. Only traces (cqrsctl trace) read it.
--
-- Traces now read cqrs.correlations, one row per run (schema/012: the first event of a stretch
-- of one append's events with one type and one metadata) whose metadata names a correlation,
-- keyed by the correlation and the run's place in $all. cqrs.index_correlations fills it from
-- $all in batches, behind a position of its own (cqrs.correlations_indexed), as EventStoreDB
-- fills its $by_correlation_id stream behind the log; cqrsd calls it from a background actor.
-- A batch costs one statement for hundreds of runs instead of one index entry in every append's
-- transaction.
--
-- A trace never waits for the indexer and never misses an event: it reads the table up to the
-- position, and walks $all after the position for the rest (the runs there, their metadata read
-- from their rows). The position moves only below the watermark ($all's, schema/001): a run of a
-- transaction still open is never passed over. Without an indexer a trace still finds every
-- event; it only walks more of $all.
--
-- The table is filled here with the runs stored so far. The position comes first: the last run
-- below the watermark of that statement's snapshot. Every run at or before it belongs to a
-- transaction that had ended by then, so the fill, a later statement with a later snapshot,
-- sees it (in the other order, an append that committed between the fill and the position's
-- statement could end up at or below the position and not in the table: traces would never
-- find it). Runs above the position that the fill saw are in the table too; a trace reads them
-- from $all (rows above the position are not read), and the indexer adds them again without
-- harm (ON CONFLICT DO NOTHING).
-- Dropping the index and filling the table take about a second per million events, under the
-- table's lock for the index's part: appends and reads of cqrs.events wait (see
-- docs/operations.md).

CREATE TABLE cqrs.correlations (
  correlation_id  text   NOT NULL,
  transaction_id  xid8   NOT NULL,
  global_position bigint NOT NULL,
  PRIMARY KEY (correlation_id, transaction_id, global_position)
);

-- How far cqrs.correlations holds every run: each run at or before this place in $all whose
-- metadata names a correlation has its row. One row; the indexer locks it while it indexes.
-- Statements name it by its key (WHERE only_row): read through the key's index, its cost stays
-- small when sequential scans are off, which would otherwise price it high enough for JIT
-- compilation (a fifth of a second per statement).
CREATE TABLE cqrs.correlations_indexed (
  only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  transaction_id  xid8    NOT NULL,
  global_position bigint  NOT NULL
);

INSERT INTO cqrs.correlations_indexed (transaction_id, global_position)
SELECT coalesce(l.transaction_id, '0'::xid8), coalesce(l.global_position, 0)
  FROM (SELECT 1) AS one
  LEFT JOIN (SELECT e.transaction_id, e.global_position FROM cqrs.events AS e
              WHERE e.run_length > 0
                AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1) AS l ON true;

INSERT INTO cqrs.correlations (correlation_id, transaction_id, global_position)
SELECT e.metadata->>'correlation_id', e.transaction_id, e.global_position
  FROM cqrs.events AS e
 WHERE e.run_length > 0 AND e.metadata->>'correlation_id' IS NOT NULL;

DROP INDEX cqrs.events_by_correlation;

ANALYZE cqrs.correlations;

-- Indexes the next runs after the position, at most p_max_count of them, all below the
-- watermark, and moves the position past them: in one transaction, so the table and its
-- position change together. indexed: the runs passed over (with or without a correlation);
-- fewer than p_max_count means the indexer caught up with the watermark. busy: another
-- session holds the position (an indexer of another process); nothing was done. busy is NULL
-- when the position's row is gone (removed by hand): nothing is indexed until it is back.
CREATE FUNCTION cqrs.index_correlations(p_max_count int, OUT indexed int, OUT busy boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
  v_after_transaction xid8;
  v_after_position    bigint;
  v_last_transaction  xid8;
  v_last_position     bigint;
BEGIN
  SELECT i.transaction_id, i.global_position INTO v_after_transaction, v_after_position
    FROM cqrs.correlations_indexed AS i
   WHERE i.only_row
     FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    -- Locked by another indexer; or missing (NULL), and then a trace walks $all from its origin.
    indexed := 0;
    busy := CASE WHEN EXISTS (SELECT 1 FROM cqrs.correlations_indexed AS i WHERE i.only_row)
                 THEN true END;
    RETURN;
  END IF;
  busy := false;

  WITH runs AS MATERIALIZED (
    SELECT e.transaction_id, e.global_position, e.metadata->>'correlation_id' AS correlation_id
      FROM cqrs.events AS e
     WHERE e.run_length > 0
       AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
       AND (e.transaction_id, e.global_position) > (v_after_transaction, v_after_position)
     ORDER BY e.transaction_id, e.global_position
     LIMIT p_max_count),
  stored AS (
    INSERT INTO cqrs.correlations (correlation_id, transaction_id, global_position)
    SELECT r.correlation_id, r.transaction_id, r.global_position
      FROM runs AS r
     WHERE r.correlation_id IS NOT NULL
    ON CONFLICT DO NOTHING)
  SELECT (SELECT count(*)::int FROM runs), l.transaction_id, l.global_position
    INTO indexed, v_last_transaction, v_last_position
    FROM (SELECT 1) AS one
    LEFT JOIN (SELECT r.transaction_id, r.global_position FROM runs AS r
                ORDER BY r.transaction_id DESC, r.global_position DESC LIMIT 1) AS l ON true;

  IF indexed > 0 THEN
    UPDATE cqrs.correlations_indexed
       SET transaction_id = v_last_transaction, global_position = v_last_position
     WHERE only_row;
  END IF;
END
$$;
