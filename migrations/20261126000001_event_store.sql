-- The event store: the only source of truth. Everything else is derived from it.

CREATE TABLE events (
    -- Allocated at INSERT, so it commits out of order; readers order by
    -- (transaction_id, global_position) and read only below the oldest running transaction.
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
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
CREATE INDEX events_transaction_order ON events (transaction_id, global_position);
