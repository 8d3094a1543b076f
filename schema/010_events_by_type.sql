-- Handlers of some event types (most projectors and process managers) read $all through this
-- index: the events of their types after their checkpoint, in $all order, one index range per
-- type. Events of other types are never read, however many there are. Without it, a handler that
-- is not woken for other types' appends had to read past all of them at its next poll: under a
-- gift card load, each bank handler read about 5,000 events every second only to skip them.
-- It costs every append one more index entry per event.
CREATE INDEX events_by_type_idx ON cqrs.events (event_type, transaction_id, global_position);
