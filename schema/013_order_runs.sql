-- $all's order index holds one entry per run, as the type and correlation indexes do since
-- schema/012.
--
-- events_transaction_order_idx held every event: for a 100-event append, 100 entries at the
-- right edge of one index that every writer inserts into, about a tenth of the append's server
-- time. events_order_idx holds the first event of each run (run_length > 0), and reads widen
-- each entry to its run through the primary key (the run's versions), as read_all_of_types
-- does. A run of one, the common single-event append, is read from its entry alone.
--
-- global_position stays unique by construction (an identity); no index has to say it again.
--
-- The position a reader holds may be inside a run (a page that ended there). Its run is the
-- last run that starts at or before it in its transaction: a transaction's runs never
-- interleave in $all, since its statements run one after another and each append's events
-- take increasing positions in version order. cqrs.run_after finds it that way, through
-- events_order_idx, instead of looking the position up.
--
-- The index is rebuilt under the table's lock: appends and reads of cqrs.events wait for it,
-- about a second per million events (see docs/operations.md).

DROP INDEX cqrs.events_transaction_order_idx;
CREATE INDEX events_order_idx ON cqrs.events (transaction_id, global_position)
  WHERE run_length > 0;

-- Where the rest of a run continues after (p_transaction_id, p_global_position): the run that
-- holds that position (or the last run of that transaction before it), when it is longer than
-- one event. first_version and end_version (exclusive) bound the run; its events after the
-- position are from_version up to end_version (none when the position is its last).
--
-- from_version follows the last version at or before the position. Positions rise with versions
-- within a run, by one or more (other sessions take positions meanwhile), so that version is at
-- most the run's first plus the positions between: a backward probe from there finds it, usually
-- at once. A reader resuming in a long run (a bulk append of many events) reads only its rest.
CREATE FUNCTION cqrs.run_after(p_transaction_id xid8, p_global_position bigint)
RETURNS TABLE (stream_id text, first_version bigint, from_version bigint, end_version bigint,
               event_type text)
LANGUAGE sql STABLE AS $$
  SELECT h.stream_id, h.stream_version, c.stream_version + 1, h.stream_version + h.run_length,
         h.event_type
    FROM (SELECT h.stream_id, h.stream_version, h.run_length, h.event_type, h.global_position
            FROM cqrs.events AS h
           WHERE h.run_length > 0 AND h.transaction_id = p_transaction_id
             AND h.global_position <= p_global_position
           ORDER BY h.transaction_id DESC, h.global_position DESC LIMIT 1) AS h
   CROSS JOIN LATERAL (SELECT c.stream_version FROM cqrs.events AS c
                        WHERE c.stream_id = h.stream_id AND c.stream_version >= h.stream_version
                          AND c.stream_version <= least(h.stream_version + h.run_length - 1,
                                h.stream_version + (p_global_position - h.global_position))
                          AND c.global_position <= p_global_position
                        ORDER BY c.stream_version DESC LIMIT 1) AS c
   WHERE h.run_length > 1
$$;

-- The events after (p_transaction_id, p_global_position) in its run (cqrs.run_after), when that
-- run's type is one of p_types (NULL: any type), in order.
CREATE OR REPLACE FUNCTION cqrs.rest_of_run(p_transaction_id xid8, p_global_position bigint,
                                            p_types text[])
RETURNS SETOF cqrs.events
LANGUAGE sql STABLE AS $$
  SELECT x.*
    FROM cqrs.run_after(p_transaction_id, p_global_position) AS r
   CROSS JOIN LATERAL (SELECT * FROM cqrs.events AS e
                        WHERE e.stream_id = r.stream_id AND e.stream_version >= r.from_version
                          AND e.stream_version < r.end_version
                        ORDER BY e.stream_version) AS x
   WHERE p_types IS NULL OR r.event_type = ANY (p_types)
$$;
