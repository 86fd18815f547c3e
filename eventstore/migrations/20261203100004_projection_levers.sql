-- Every lever an operator pulls on a projection (retry, skip, rebuild): who, why and when,
-- written in the same transaction as the lever's effect, so that nothing is changed unrecorded.
CREATE TABLE IF NOT EXISTS projection_levers (
    lever_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection_name text        NOT NULL,
    lever           text        NOT NULL CHECK (lever IN ('retry', 'skip', 'rebuild')),
    operator        text        NOT NULL,
    reason          text        NOT NULL,
    -- The failing event a skip moved past.
    position        text,
    pulled_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS projection_levers_recent ON projection_levers (pulled_at DESC);
