-- A write with no events checks its expected version too.
--
-- A write without events records a command's outcome only: a rejection, or a command that
-- changed nothing. Its expected version was not checked: the outcome was recorded and the
-- stream's current version returned, whatever the writer had decided against. A writer that
-- decided against an old version (another process appended meanwhile) thus recorded, for good,
-- a rejection the stream's current state might not give (a withdrawal refused for a balance
-- that a deposit had since raised), and could take the returned version as its own without the
-- events in between. Now such a write fails like an append: wrong_expected_version,
-- stream_exists or stream_not_found, with nothing recorded, and the writer decides again
-- against the current stream.
--
-- The check reads the head without the stream's lock, as the statement's snapshot has it: a
-- recorded outcome writes no event, so it is ordered before any append that commits after that
-- snapshot, and the version it was decided against was the stream's last at that point.
--
-- cqrs.append_to_stream also looks up the command's record after taking the stream's lock, not
-- before: a second writer of the same command id (a client's retry racing the first attempt)
-- waited for the lock, then stored its events and failed on command_results' primary key with
-- store_error instead of answering duplicate_command with the first outcome.
--
-- The functions keep the settings schema/012 and schema/016 gave them (CREATE OR REPLACE resets
-- whatever it does not name).

CREATE OR REPLACE FUNCTION cqrs.append_to_stream(
  p_stream_id      text,
  p_expected       bigint,
  p_event_ids      uuid[],
  p_types          text[],
  p_versions       int[],
  p_data           jsonb[],
  p_metadata       jsonb[],
  p_command_id     uuid DEFAULT NULL,
  p_command_result jsonb DEFAULT NULL,
  p_run_lengths    int[] DEFAULT NULL,
  OUT status text,
  OUT stream_version bigint,
  OUT global_positions bigint[],
  OUT existing_result jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
  v_count    int := coalesce(cardinality(p_event_ids), 0);
  v_current  bigint;
BEGIN
  -- The lock before the command's lookup: a writer of the same command that held it has
  -- committed its record by the time this one looks (cqrs.append_batch looks after its locks too).
  IF v_count > 0 THEN
    PERFORM pg_advisory_xact_lock(1668379251, hashtext(p_stream_id));  -- 1668379251 = 'cqrs'
  END IF;

  IF p_command_id IS NOT NULL THEN
    SELECT r.result INTO existing_result FROM cqrs.command_results AS r
      WHERE r.command_id = p_command_id;
    IF FOUND THEN
      status := 'duplicate_command';
      RETURN;
    END IF;
  END IF;

  SELECT e.stream_version INTO v_current FROM cqrs.events AS e
    WHERE e.stream_id = p_stream_id ORDER BY e.stream_version DESC LIMIT 1;
  v_current := coalesce(v_current, 0);
  stream_version := v_current;

  IF p_expected = -2 AND v_current > 0 THEN
    status := 'stream_exists';
    RETURN;
  ELSIF p_expected = -3 AND v_current = 0 THEN
    status := 'stream_not_found';
    RETURN;
  ELSIF p_expected >= 0 AND v_current <> p_expected THEN
    status := 'wrong_expected_version';
    RETURN;
  END IF;

  IF v_count = 0 THEN
    IF p_command_id IS NOT NULL THEN
      INSERT INTO cqrs.command_results (command_id, stream_id, result)
        VALUES (p_command_id, p_stream_id, p_command_result);
    END IF;
    status := 'ok';
    global_positions := '{}';
    RETURN;
  END IF;

  WITH inserted AS (
    INSERT INTO cqrs.events
      (stream_id, stream_version, event_id, event_type, event_version, data, metadata,
       run_length)
    SELECT p_stream_id, v_current + e.ord, e.event_id, e.event_type, e.event_version, e.data,
           coalesce(e.metadata, p_metadata[1]), coalesce(e.run_length, 1)
      FROM unnest(p_event_ids, p_types, p_versions, p_data, p_metadata, p_run_lengths)
           WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, run_length,
                                ord)
     ORDER BY e.ord
    RETURNING cqrs.events.global_position, cqrs.events.stream_version AS version
  )
  SELECT array_agg(i.global_position ORDER BY i.version) INTO global_positions
    FROM inserted AS i;


  IF p_command_id IS NOT NULL THEN
    INSERT INTO cqrs.command_results (command_id, stream_id, result)
      VALUES (p_command_id, p_stream_id,
              cqrs.with_position(p_command_result, global_positions[v_count]));
  END IF;

  status := 'ok';
  stream_version := v_current + v_count;
END;
$$;

CREATE OR REPLACE FUNCTION cqrs.append_batch(
  p_stream_ids       text[],
  p_expected         bigint[],
  p_event_counts     int[],
  p_command_ids      uuid[],
  p_command_results  jsonb[],
  p_event_requests   int[],
  p_event_seqs       int[],
  p_event_ids        uuid[],
  p_types            text[],
  p_versions         int[],
  p_data             jsonb[],
  p_metadata         jsonb[],
  p_shared_metadata  jsonb[] DEFAULT NULL,
  p_run_lengths      int[] DEFAULT NULL)
RETURNS TABLE (status text, stream_version bigint, global_positions bigint[],
               existing_result jsonb)
LANGUAGE plpgsql
-- The statements' plans do not depend on the arrays' contents; a custom plan per call (what
-- the plan cache picks for array parameters) costs about 2 ms of planning, ten times the work.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
  -- The same per-stream lock as append_to_stream, taken in one fixed order (by lock key) so two
  -- batches with overlapping streams wait for each other instead of deadlocking. It is its own
  -- statement so that the version lookups below see what the previous holder committed.
  PERFORM pg_advisory_xact_lock(1668379251, l.key)  -- 1668379251 = 'cqrs'
     FROM (SELECT DISTINCT hashtext(r.stream_id) AS key
             FROM unnest(p_stream_ids, p_event_counts) AS r(stream_id, event_count)
            WHERE r.event_count > 0
            ORDER BY 1) AS l;

  RETURN QUERY
  WITH requests AS (
    SELECT r.idx, r.stream_id, r.expected, r.event_count, r.command_id, r.command_result,
           r.shared_metadata,
           coalesce((SELECT e.stream_version FROM cqrs.events AS e
                      WHERE e.stream_id = r.stream_id
                      ORDER BY e.stream_version DESC LIMIT 1), 0) AS current_version,
           (SELECT c.result FROM cqrs.command_results AS c
             WHERE c.command_id = r.command_id) AS existing
      FROM unnest(p_stream_ids, p_expected, p_event_counts, p_command_ids, p_command_results,
                  p_shared_metadata)
           WITH ORDINALITY AS r(stream_id, expected, event_count, command_id, command_result,
                                shared_metadata, idx)
  ),
  checked AS (
    SELECT q.*,
           CASE
             WHEN q.existing IS NOT NULL THEN 'duplicate_command'
             WHEN q.expected = -2 AND q.current_version > 0 THEN 'stream_exists'
             WHEN q.expected = -3 AND q.current_version = 0 THEN 'stream_not_found'
             WHEN q.expected >= 0 AND q.current_version <> q.expected
               THEN 'wrong_expected_version'
             ELSE 'ok'
           END AS outcome
      FROM requests AS q
  ),
  inserted AS (
    INSERT INTO cqrs.events
      (stream_id, stream_version, event_id, event_type, event_version, data, metadata,
       run_length)
    SELECT c.stream_id, c.current_version + e.seq, e.event_id, e.event_type, e.event_version,
           e.data, coalesce(e.metadata, c.shared_metadata), coalesce(e.run_length, 1)
      FROM unnest(p_event_requests, p_event_seqs, p_event_ids, p_types, p_versions, p_data,
                  p_metadata, p_run_lengths)
           WITH ORDINALITY AS e(request, seq, event_id, event_type, event_version, data,
                                metadata, run_length, ord)
      JOIN checked AS c ON c.idx = e.request AND c.outcome = 'ok'
     ORDER BY e.ord
    RETURNING cqrs.events.stream_id AS stream_id, cqrs.events.stream_version AS version,
              cqrs.events.global_position AS position
  ),
  positions AS (
    SELECT i.stream_id, array_agg(i.position ORDER BY i.version) AS list, max(i.position) AS last
      FROM inserted AS i
     GROUP BY i.stream_id
  ),
  recorded AS (
    INSERT INTO cqrs.command_results (command_id, stream_id, result)
    SELECT c.command_id, c.stream_id, cqrs.with_position(c.command_result, p.last)
      FROM checked AS c
      LEFT JOIN positions AS p ON p.stream_id = c.stream_id
     WHERE c.outcome = 'ok' AND c.command_id IS NOT NULL
  )
  SELECT c.outcome,
         CASE WHEN c.outcome = 'ok' THEN c.current_version + c.event_count
              ELSE c.current_version END,
         CASE WHEN c.outcome = 'ok' THEN coalesce(p.list, '{}') END,
         c.existing
    FROM checked AS c
    LEFT JOIN positions AS p ON p.stream_id = c.stream_id AND c.outcome = 'ok'
   ORDER BY c.idx;
END;
$$;
