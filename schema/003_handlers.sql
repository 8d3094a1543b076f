-- State of the handlers that run behind the store (projectors, process managers, event handlers).

-- A handler stopped by its failure policy stays stopped across restarts until an operator
-- restarts it (cqrsctl handler restart).
ALTER TABLE cqrs.checkpoints
  ADD COLUMN stopped_error text,
  ADD COLUMN stopped_at    timestamptz;

-- Events a handler gave up on (policy dead_letter); the handler moved past them.
CREATE TABLE cqrs.dead_letters (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  handler_name    text NOT NULL,
  transaction_id  xid8 NOT NULL,
  global_position bigint NOT NULL,
  event_id        uuid NOT NULL,
  stream_id       text NOT NULL,
  stream_version  bigint NOT NULL,
  event_type      text NOT NULL,
  error           text NOT NULL,
  attempts        int NOT NULL,
  failed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_handler ON cqrs.dead_letters (handler_name, id);

-- Process manager instances: state per (handler, instance key), committed with the checkpoint.
CREATE TABLE cqrs.process_instances (
  handler_name text NOT NULL,
  instance_id  text NOT NULL,
  state        jsonb NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (handler_name, instance_id)
);
