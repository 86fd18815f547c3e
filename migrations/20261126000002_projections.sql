-- How far each projection has read, in the readers' order. A projection's read-model writes and
-- its checkpoint advance commit in one transaction: a batch is applied entirely or not at all.
CREATE TABLE projection_checkpoints (
    projection_name text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The seed's read model: one row per account, current as of its projection's checkpoint.
CREATE TABLE account_summary (
    account_id        uuid           PRIMARY KEY,
    owner_id          text           NOT NULL,
    current_balance   numeric(20, 2) NOT NULL CHECK (current_balance >= 0),
    total_deposits    numeric(20, 2) NOT NULL,
    total_withdrawals numeric(20, 2) NOT NULL,
    transaction_count bigint         NOT NULL,
    last_transaction  timestamptz    NOT NULL,
    created_at        timestamptz    NOT NULL,
    -- The stream version and the event position this row reflects.
    version           bigint         NOT NULL,
    last_position     bigint         NOT NULL
);

-- High-value accounts: balance >= min, highest first.
CREATE INDEX account_summary_balance ON account_summary (current_balance DESC);
CREATE INDEX account_summary_owner ON account_summary (owner_id);

INSERT INTO projection_checkpoints (projection_name) VALUES ('account_summary');
