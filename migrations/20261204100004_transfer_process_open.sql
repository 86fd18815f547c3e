-- The transfers the process has begun and not finished, with their deadlines: the process's own
-- record, which its deadline watch reads (not the transfers read model, which may lag or be
-- rebuilding) and which the command-id purge spares (an unfinished transfer's step ids must be
-- remembered however long it waits). A row is added before a transfer's first step and removed
-- once the process finds it finished.
CREATE TABLE IF NOT EXISTS transfer_process_open (
    transfer_id uuid        PRIMARY KEY,
    deadline    timestamptz NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS transfer_process_open_deadline ON transfer_process_open (deadline);

-- Transfers under way when this table arrived, as the read model knew them.
INSERT INTO transfer_process_open (transfer_id, deadline, opened_at)
SELECT transfer_id, deadline, requested_at FROM transfers WHERE state IN ('requested', 'debited')
ON CONFLICT DO NOTHING;

-- Why a transfer was parked: a lasting error (tried again every minute) or one that may pass by
-- itself, such as a stream held busy, tried again sooner.
ALTER TABLE transfer_process_parked ADD COLUMN IF NOT EXISTS lasting boolean NOT NULL DEFAULT true;
