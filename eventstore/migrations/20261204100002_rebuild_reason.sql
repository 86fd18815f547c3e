-- Why a projection into a store outside Postgres last rebuilt it from the first event, when it
-- decided so by itself: the store was of another history of the log (a restore, a failover),
-- it lost data, or an operator asked. Shown on its status.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS rebuild_reason text;
