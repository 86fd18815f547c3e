-- Transfers and account statuses.
--
-- Accounts get a status (active, frozen with a reason, closed); the ledger gets the movements of
-- transfers. Existing rows are of active accounts, and their ledger kinds stay valid.
--
-- A rebuild's shadow tables, left by a server stopped mid-rebuild, are changed alike: the rebuild
-- goes on into them. The kind check was named by Postgres, and a rebuild's swap may have renamed
-- it: it is found by what it checks.
DO $$
DECLARE
    summary text;
    ledger text;
    constraint_name text;
BEGIN
    FOREACH summary IN ARRAY ARRAY['account_summary', 'account_summary_rebuild'] LOOP
        IF to_regclass(summary) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT ''active'',
                                         ADD COLUMN IF NOT EXISTS status_reason text', summary);
        END IF;
    END LOOP;
    FOREACH ledger IN ARRAY ARRAY['account_ledger', 'account_ledger_rebuild'] LOOP
        CONTINUE WHEN to_regclass(ledger) IS NULL;
        FOR constraint_name IN
            SELECT conname FROM pg_constraint
            WHERE conrelid = to_regclass(ledger) AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%kind%'
        LOOP
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', ledger, constraint_name);
        END LOOP;
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (kind IN (''opening'', ''deposit'', ''withdrawal'',
                            ''transfer_out'', ''transfer_in'', ''refund''))', ledger, ledger || '_kind');
    END LOOP;
END
$$;

-- The transfers read model: one row per transfer, with how far it got and when.
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id     uuid           PRIMARY KEY,
    from_account    uuid           NOT NULL,
    to_account      uuid           NOT NULL,
    amount          numeric(20, 2) NOT NULL CHECK (amount > 0),
    requested_by    text           NOT NULL,
    -- requested, debited, completed, failed (credited and refunded are passed in one step)
    state           text           NOT NULL,
    reason          text,
    requested_at    timestamptz    NOT NULL,
    deadline        timestamptz    NOT NULL,
    debited_at      timestamptz,
    credited_at     timestamptz,
    refunded_at     timestamptz,
    finished_at     timestamptz,
    version         bigint         NOT NULL,
    last_position   bigint         NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_from ON transfers (from_account, requested_at DESC);
CREATE INDEX IF NOT EXISTS transfers_to ON transfers (to_account, requested_at DESC);
-- What the deadline watch reads every second.
CREATE INDEX IF NOT EXISTS transfers_unfinished ON transfers (deadline) WHERE state IN ('requested', 'debited');

-- The transfer process's own checkpoint: it moves (compare-and-set) once a batch's transfers
-- have taken their steps, which are commands in transactions of their own. `fence`: the highest
-- leader epoch that moved or cleared it; a lower one changes nothing.
CREATE TABLE IF NOT EXISTS transfer_process_checkpoint (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    log             uuid,
    transaction_id  bigint  NOT NULL DEFAULT 0,
    global_position bigint  NOT NULL DEFAULT 0,
    fence           bigint  NOT NULL DEFAULT 0
);

-- Transfers the process cannot take further (an unreadable stream, a refund refused): set aside
-- with why, so that they do not hold up the others; they wait where they stopped for an operator.
CREATE TABLE IF NOT EXISTS transfer_process_parked (
    transfer_id uuid        PRIMARY KEY,
    error       text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
