-- What an operator needs to see and steer each projection.
ALTER TABLE projection_checkpoints
    -- running: applying events; failed: stopped at an event it cannot apply, until an operator
    -- retries or skips it; rebuilding: a shadow copy is being built from the start.
    ADD COLUMN state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'failed', 'rebuilding')),
    ADD COLUMN events_applied bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN failed_transaction_id xid8,
    ADD COLUMN failed_global_position bigint,
    ADD COLUMN failed_at timestamptz,
    -- The server instance running the projection (one at a time), and when it last said so.
    ADD COLUMN owner_instance text,
    ADD COLUMN owner_heartbeat_at timestamptz;

-- Events an operator chose to skip in a projection, and why: a skip is a decision, kept.
CREATE TABLE skipped_events (
    projection_name text        NOT NULL,
    global_position bigint      NOT NULL,
    transaction_id  xid8        NOT NULL,
    error           text        NOT NULL,
    skipped_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection_name, global_position)
);

-- One row per money movement (the opening balance included) with the balance it left: the
-- history view and the balance chart read it.
CREATE TABLE account_ledger (
    account_id      uuid           NOT NULL,
    version         bigint         NOT NULL,
    kind            text           NOT NULL CHECK (kind IN ('opening', 'deposit', 'withdrawal')),
    amount          numeric(20, 2) NOT NULL CHECK (amount >= 0),
    balance_after   numeric(20, 2) NOT NULL CHECK (balance_after >= 0),
    recorded_at     timestamptz    NOT NULL,
    global_position bigint         NOT NULL,
    PRIMARY KEY (account_id, version)
);

INSERT INTO projection_checkpoints (projection_name) VALUES ('account_ledger');
