-- $all read by type through the $all index: one index fewer for every append.
--
-- events_by_type_idx, (event_type, transaction_id, global_position), let a reader of some types
-- read only their entries. But each index costs every append: for a single-event append, the
-- type index was about a tenth of the server's work (about 19,000 of 205,000 instructions on a
-- small table, 29,000 of 263,000 at 60,000 events), more than the $all index itself.
--
-- The $all index now carries the type as a third key column, (transaction_id, global_position,
-- event_type), and the type index goes. Adding the column to an index whose first two columns
-- are already unique costs an append almost nothing (about 500 instructions: the type is stored
-- in the entry; comparisons end at the position). $all's reads use the first two columns as
-- before.
--
-- A read by type walks the $all index once, in $all order from its position, checks each run's
-- type (fetching its row to do so) and stops at the page's last event: each page walks from its
-- start to its own end once. A read of rare types also ends at the end of a window of
-- transactions (PostgresStoreOptions::typed_read_window) or at the watermark, whichever comes
-- first; its page then ends at the newest position below that end, so the next read starts
-- there (see docs/event-store.md, "Reading $all by type").
--
-- The new index is built and the two old ones dropped under the table's lock: appends and reads
-- of cqrs.events wait for it, about a second per million events (see docs/operations.md).

CREATE INDEX events_order_type_idx ON cqrs.events (transaction_id, global_position, event_type)
  WHERE run_length > 0;
DROP INDEX cqrs.events_order_idx;
DROP INDEX cqrs.events_by_type_idx;
ALTER INDEX cqrs.events_order_type_idx RENAME TO events_order_idx;
