-- Events are facts: once written they are never changed or removed, whoever connects. The app
-- may connect as a superuser, which ignores privileges but not triggers.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on the events table is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_are_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Every handled command, written in the same transaction as its events (or alone, for a
-- refusal), so that a retried command is answered from here instead of being applied twice.
CREATE TABLE processed_commands (
    command_id   uuid        PRIMARY KEY,
    -- What was asked: the same id with a different request is a client bug, answered 409.
    request      jsonb       NOT NULL,
    -- The answer given the first time: accepted (with its version and position) or refused.
    outcome      jsonb       NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A stream's state every N events, so that loading costs O(N), not O(history). Derived data:
-- snapshots may be deleted at any time; a snapshot of an outdated schema is ignored.
CREATE TABLE snapshots (
    stream_id      uuid        NOT NULL,
    stream_version bigint      NOT NULL,
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream_id, stream_version)
);

-- Time travel: the last version of a stream at or before a moment.
CREATE INDEX events_stream_time ON events (stream_id, recorded_at);
