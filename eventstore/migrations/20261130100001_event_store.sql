-- The event store's schema, owned by the `eventstore` crate and applied by `eventstore::migrate`.
-- Nothing here knows about any aggregate or read model.
--
-- Databases made before the store owned its schema (when these tables were created by the
-- application's migrations, versions 20261126000001 to 20261130000004) already hold all of it:
-- every statement below leaves an existing object as it is. A database those migrations did not
-- finish is refused rather than completed by guesswork.
DO $$
BEGIN
    IF to_regclass('events') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'events' AND column_name = 'stream_type'
    ) THEN
        RAISE EXCEPTION 'this database was made by an older release whose migrations did not finish: '
            'start that release once so that it completes them, then this one';
    END IF;
END
$$;

-- The only source of truth. Everything else is derived from it.
CREATE TABLE IF NOT EXISTS events (
    -- Allocated at INSERT, so it commits out of order; readers order by
    -- (transaction_id, global_position) and read only below the oldest running transaction.
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    -- The stream's type (its category: an account, a transfer, ...), named by whoever appends,
    -- so that readers can tell aggregates apart.
    stream_type     text        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- clock_timestamp(), not now(): now() is the transaction's start, which would give events of
    -- one stream times out of version order.
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_unique UNIQUE (event_id),
    -- The optimistic-concurrency guard: two writers at the same expected version cannot both win.
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version)
);

-- The readers' order.
CREATE INDEX IF NOT EXISTS events_transaction_order ON events (transaction_id, global_position);
-- Time travel: the last version of a stream at or before a moment.
CREATE INDEX IF NOT EXISTS events_stream_time ON events (stream_id, recorded_at);

-- Events are facts: once written they are never changed or removed, whoever connects. The app
-- may connect as a superuser, which ignores privileges but not triggers.
CREATE OR REPLACE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on the events table is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER events_are_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Every handled command, written in the same transaction as its events (or alone, for a
-- refusal), so that a retried command is answered from here instead of being applied twice.
CREATE TABLE IF NOT EXISTS processed_commands (
    command_id   uuid        PRIMARY KEY,
    -- What was asked: the same id with a different request is a client bug, answered 409.
    request      jsonb       NOT NULL,
    -- The answer given the first time: accepted (with its version and position) or refused.
    outcome      jsonb       NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A stream's state every N events, so that loading costs O(N), not O(history). Derived data:
-- snapshots may be deleted at any time; one made with another state shape (schema_version) or
-- another fold (fold_version) is ignored.
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      uuid        NOT NULL,
    stream_version bigint      NOT NULL,
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    fold_version   integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (stream_id, stream_version)
);

-- How far each projection has read, in the readers' order, and what an operator needs to see
-- and steer it. A projection's read-model writes and its checkpoint advance commit in one
-- transaction: a batch is applied entirely or not at all.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection_name        text        PRIMARY KEY,
    transaction_id         xid8        NOT NULL DEFAULT '0',
    global_position        bigint      NOT NULL DEFAULT 0,
    updated_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- running: applying events; failed: stopped at an event it cannot apply, until an operator
    -- retries or skips it; rebuilding: a shadow copy is being built from the start.
    state                  text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'failed', 'rebuilding')),
    events_applied         bigint      NOT NULL DEFAULT 0,
    last_error             text,
    failed_transaction_id  xid8,
    failed_global_position bigint,
    failed_at              timestamptz,
    -- The server instance running the projection (one at a time), and when it last said so.
    owner_instance         text,
    owner_heartbeat_at     timestamptz,
    -- Leadership is a lease with a fencing token. Every takeover increments the epoch; a
    -- leader's heartbeats and batches name the epoch it took over with, so a leader that was
    -- paused or cut off past its lease — and replaced meanwhile — can apply nothing more.
    leader_epoch           bigint      NOT NULL DEFAULT 0
);

-- Events an operator chose to skip in a projection, and why: a skip is a decision, kept.
CREATE TABLE IF NOT EXISTS skipped_events (
    projection_name text        NOT NULL,
    global_position bigint      NOT NULL,
    transaction_id  xid8        NOT NULL,
    error           text        NOT NULL,
    skipped_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection_name, global_position)
);

-- The store's read interface for read models: a projection's checkpoint as a relation, so that
-- a query reads a read table and the checkpoint it is current as of in one statement (one
-- snapshot, always consistent) without naming the store's tables or casting its xid8. Always
-- one row: a projection that has not run yet (its checkpoint is made on its first batch) is at
-- the start of the log.
CREATE OR REPLACE FUNCTION projection_checkpoint(name text)
RETURNS TABLE (transaction_id bigint, global_position bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(c.transaction_id::text::bigint, 0), coalesce(c.global_position, 0)
    FROM (VALUES (name)) AS asked (projection_name)
    LEFT JOIN projection_checkpoints c USING (projection_name)
$$;
