-- Traceability (cqrsctl trace): the events of one correlation, found by index. The other links
-- of the causal tree (command_id, causation_id) are followed in memory within those events.
CREATE INDEX events_by_correlation ON cqrs.events ((metadata->>'correlation_id'));
