-- Unique claims: a value (an e-mail, a user name) that at most one stream owns at a time within a
-- named scope. A command claims or releases values in the same transaction as its events, so a
-- conflict appends nothing, and a release is visible exactly when its event is.
CREATE TABLE cqrs.unique_claims (
  scope      text NOT NULL CHECK (scope <> ''),
  value      text NOT NULL,
  stream_id  text NOT NULL,
  claimed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, value)
);
CREATE INDEX unique_claims_by_stream ON cqrs.unique_claims (stream_id);

-- Applies one write's claims and releases, in order. Claiming a value the stream already owns
-- is a no-op; releasing a value it does not own is a no-op. A value another stream owns raises
-- unique_violation on constraint unique_claims_pkey, with a message that ends in
-- "(claim #N)", N being the 1-based index of the claim, so the caller knows which one failed.
-- A concurrent claim of the same value waits for the other transaction, then fails or succeeds
-- by its outcome.
CREATE FUNCTION cqrs.apply_unique_claims(p_stream_id text, p_scopes text[], p_values text[],
                                         p_releases bool[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  owner text;
BEGIN
  FOR i IN 1 .. coalesce(cardinality(p_scopes), 0) LOOP
    IF p_releases[i] THEN
      DELETE FROM cqrs.unique_claims
       WHERE scope = p_scopes[i] AND value = p_values[i] AND stream_id = p_stream_id;
      CONTINUE;
    END IF;
    INSERT INTO cqrs.unique_claims (scope, value, stream_id)
    VALUES (p_scopes[i], p_values[i], p_stream_id)
    ON CONFLICT (scope, value) DO NOTHING;
    IF NOT FOUND THEN
      SELECT c.stream_id INTO owner FROM cqrs.unique_claims AS c
       WHERE c.scope = p_scopes[i] AND c.value = p_values[i];
      IF owner IS NULL THEN
        -- Released between the two statements: claim it now (or fail on a new owner).
        INSERT INTO cqrs.unique_claims (scope, value, stream_id)
        VALUES (p_scopes[i], p_values[i], p_stream_id);
      ELSIF owner <> p_stream_id THEN
        RAISE EXCEPTION '% % is already claimed by stream % (claim #%)',
              p_scopes[i], quote_literal(p_values[i]), owner, i
          USING ERRCODE = 'unique_violation', CONSTRAINT = 'unique_claims_pkey';
      END IF;
    END IF;
  END LOOP;
END
$$;

-- append_to_stream plus the write's claims, in one statement: the claims are applied only when
-- the append succeeded, and a taken value raises, which undoes the append.
CREATE FUNCTION cqrs.append_claiming(
  p_stream_id      text,
  p_expected       bigint,
  p_event_ids      uuid[],
  p_types          text[],
  p_versions       int[],
  p_data           jsonb[],
  p_metadata       jsonb[],
  p_command_id     uuid,
  p_command_result jsonb,
  p_scopes         text[],
  p_values         text[],
  p_releases       bool[],
  OUT status text,
  OUT stream_version bigint,
  OUT global_positions bigint[],
  OUT existing_result jsonb)
LANGUAGE plpgsql AS $$
BEGIN
  SELECT a.status, a.stream_version, a.global_positions, a.existing_result
    INTO status, stream_version, global_positions, existing_result
    FROM cqrs.append_to_stream(p_stream_id, p_expected, p_event_ids, p_types, p_versions, p_data,
                               p_metadata, p_command_id, p_command_result) AS a;
  IF status = 'ok' THEN
    PERFORM cqrs.apply_unique_claims(p_stream_id, p_scopes, p_values, p_releases);
  END IF;
END
$$;
