-- The append functions look up heads, command records and claims by index, whatever the
-- statistics said when they were planned.
--
-- PL/pgSQL plans each statement of a function at its first call in a session and keeps that plan
-- (the functions force generic plans, schema/011 and schema/012). On a new database the tables
-- are empty when the migrations analyze them, and a plan made then may read a stream's head by
-- sorting a sequential scan of cqrs.events: cheaper than the primary key for no rows. The plan
-- stays until the table is analyzed again, which autovacuum does after a minute or more of
-- appends; meanwhile every group commit scans the whole table once per request, and gets slower
-- with each event stored. Every statement in these functions is a lookup of a few rows by key or
-- an insert, so sequential scans are turned off while they run (a setting for the duration of
-- the call, like plan_cache_mode).
ALTER FUNCTION cqrs.append_batch(text[], bigint[], int[], uuid[], jsonb[], int[], int[], uuid[],
                                 text[], int[], jsonb[], jsonb[], jsonb[], int[])
  SET enable_seqscan = off;
ALTER FUNCTION cqrs.append_to_stream(text, bigint, uuid[], text[], int[], jsonb[], jsonb[], uuid,
                                     jsonb, int[])
  SET enable_seqscan = off;
ALTER FUNCTION cqrs.append_claiming(text, bigint, uuid[], text[], int[], jsonb[], jsonb[], uuid,
                                    jsonb, text[], text[], boolean[])
  SET enable_seqscan = off;
ALTER FUNCTION cqrs.apply_unique_claims(text, text[], text[], boolean[])
  SET enable_seqscan = off;
