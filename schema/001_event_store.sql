-- The event store: append-only events, stream heads, handler checkpoints, snapshots and
-- recorded command outcomes. Applied by cqrs::pg::migrate inside one transaction.

CREATE TABLE cqrs.events (
  -- Unique by construction (an identity sequence); indexed together with transaction_id below.
  global_position bigint GENERATED ALWAYS AS IDENTITY,
  -- The writing transaction: $all is read in (transaction_id, global_position) order, and only
  -- below the oldest transaction still running, so a reader never skips a late committer.
  transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
  stream_id       text NOT NULL,
  stream_version  bigint NOT NULL CHECK (stream_version > 0),
  event_id        uuid NOT NULL UNIQUE,
  event_type      text NOT NULL CHECK (event_type <> ''),
  event_version   int NOT NULL DEFAULT 1 CHECK (event_version >= 1),
  data            jsonb NOT NULL,
  metadata        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
  created_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT events_pkey PRIMARY KEY (stream_id, stream_version)
);

-- The $all order. Three indexes in all (this one, the primary key, event_id): each costs every
-- append, so nothing else is indexed here.
CREATE UNIQUE INDEX events_transaction_order_idx ON cqrs.events (transaction_id, global_position);

-- Events are immutable (promise 9): schema evolution goes through upcasters on read.
CREATE FUNCTION cqrs.reject_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'cqrs.events is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'restrict_violation',
          HINT = 'Append a compensating event instead; change old payloads with an upcaster.';
END;
$$;

CREATE TRIGGER events_immutable_rows
  BEFORE UPDATE OR DELETE ON cqrs.events
  FOR EACH ROW EXECUTE FUNCTION cqrs.reject_event_change();

CREATE TRIGGER events_immutable_truncate
  BEFORE TRUNCATE ON cqrs.events
  FOR EACH STATEMENT EXECUTE FUNCTION cqrs.reject_event_change();

-- Appends events to one stream with an expected-version check, in the caller's transaction,
-- and optionally records the command that produced them (idempotent dispatch).
-- p_expected: -1 any, -2 no_stream, -3 stream_exists, n >= 0 exactly version n.
-- With no events, only the command is recorded.
-- status:
--   'ok'                      new stream_version and the events' global_positions
--   'wrong_expected_version', 'stream_exists', 'stream_not_found'
--                             stream_version holds the actual version; nothing was written
--   'duplicate_command'       p_command_id is already recorded; existing_result holds its
--                             result; nothing was written
-- Appends to one stream serialize on a transaction-scoped advisory lock keyed by the stream (a
-- lock in memory, no row written), so the version read under it is the committed end of the
-- stream. Appends to other streams never wait. The primary key (stream_id, stream_version)
-- stays the last guard against writers that bypass this function: their race raises a unique
-- violation.
CREATE FUNCTION cqrs.append_to_stream(
  p_stream_id      text,
  p_expected       bigint,
  p_event_ids      uuid[],
  p_types          text[],
  p_versions       int[],
  p_data           jsonb[],
  p_metadata       jsonb[],
  p_command_id     uuid DEFAULT NULL,
  p_command_result jsonb DEFAULT NULL,
  OUT status text,
  OUT stream_version bigint,
  OUT global_positions bigint[],
  OUT existing_result jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_count    int := coalesce(cardinality(p_event_ids), 0);
  v_current  bigint;
BEGIN
  IF p_command_id IS NOT NULL THEN
    SELECT r.result INTO existing_result FROM cqrs.command_results AS r
      WHERE r.command_id = p_command_id;
    IF FOUND THEN
      status := 'duplicate_command';
      RETURN;
    END IF;
  END IF;

  IF v_count > 0 THEN
    PERFORM pg_advisory_xact_lock(1668379251, hashtext(p_stream_id));  -- 1668379251 = 'cqrs'
  END IF;

  SELECT e.stream_version INTO v_current FROM cqrs.events AS e
    WHERE e.stream_id = p_stream_id ORDER BY e.stream_version DESC LIMIT 1;
  v_current := coalesce(v_current, 0);
  stream_version := v_current;

  IF v_count = 0 THEN
    IF p_command_id IS NOT NULL THEN
      INSERT INTO cqrs.command_results (command_id, stream_id, result)
        VALUES (p_command_id, p_stream_id, p_command_result);
    END IF;
    status := 'ok';
    global_positions := '{}';
    RETURN;
  END IF;

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

  WITH inserted AS (
    INSERT INTO cqrs.events
      (stream_id, stream_version, event_id, event_type, event_version, data, metadata)
    SELECT p_stream_id, v_current + e.ord, e.event_id, e.event_type, e.event_version, e.data,
           e.metadata
      FROM unnest(p_event_ids, p_types, p_versions, p_data, p_metadata)
           WITH ORDINALITY AS e(event_id, event_type, event_version, data, metadata, ord)
     ORDER BY e.ord
    RETURNING cqrs.events.global_position, cqrs.events.stream_version AS version
  )
  SELECT array_agg(i.global_position ORDER BY i.version) INTO global_positions
    FROM inserted AS i;


  IF p_command_id IS NOT NULL THEN
    INSERT INTO cqrs.command_results (command_id, stream_id, result)
      VALUES (p_command_id, p_stream_id, p_command_result);
  END IF;

  status := 'ok';
  stream_version := v_current + v_count;
END;
$$;

CREATE TABLE cqrs.checkpoints (
  handler_name    text PRIMARY KEY,
  transaction_id  xid8 NOT NULL,
  global_position bigint NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cqrs.snapshots (
  stream_id      text PRIMARY KEY,
  stream_version bigint NOT NULL CHECK (stream_version > 0),
  state_type     text NOT NULL,
  state_version  int NOT NULL DEFAULT 1,
  data           jsonb NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cqrs.command_results (
  command_id uuid PRIMARY KEY,
  stream_id  text NOT NULL,
  result     jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
