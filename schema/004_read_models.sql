-- Read models of the example domains, kept by their projectors (domains/giftcard/
-- giftcard_projection.cpp, domains/bank/bank_projection.cpp) and emptied by their reset_sql().
-- Every value, timestamps included, comes from the events (updated_at is the created_at of the
-- last event that changed the row), so a rebuild from the origin reproduces each row exactly.

CREATE TABLE public.giftcard_summary (
  card_id         text PRIMARY KEY,
  initial_value   bigint NOT NULL,
  remaining_value bigint NOT NULL,
  status          text NOT NULL CHECK (status IN ('active', 'emptied', 'cancelled')),
  issued_at       timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL
);

CREATE TABLE public.bank_accounts (
  account_id text PRIMARY KEY,
  owner      text NOT NULL,
  balance    bigint NOT NULL,
  status     text NOT NULL CHECK (status IN ('open', 'closed')),
  updated_at timestamptz NOT NULL
);

-- failure_reason is set only for failed transfers.
CREATE TABLE public.bank_transfers (
  transfer_id    text PRIMARY KEY,
  from_account   text NOT NULL,
  to_account     text NOT NULL,
  amount         bigint NOT NULL,
  status         text NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
  failure_reason text,
  updated_at     timestamptz NOT NULL
);
