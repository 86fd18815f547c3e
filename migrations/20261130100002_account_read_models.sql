-- The application's read models. The event store's own tables are the `eventstore` crate's
-- (eventstore/migrations); the projections create their checkpoints when they first run.
--
-- Databases made before the store owned its schema already have these tables, created by
-- migrations 20261126000002 and 20261126000004, and possibly renamed since by a rebuild's swap
-- (which gives their indexes other names): then nothing here runs.
DO $$
BEGIN
    IF to_regclass('account_summary') IS NULL THEN
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
    END IF;

    IF to_regclass('account_ledger') IS NULL THEN
        -- One row per money movement (the opening balance included) with the balance it left:
        -- the history view and the balance chart read it.
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
    END IF;
END
$$;
