-- The partitions a member asked for at its last membership round (bit k: partition k), having
-- tried to lead them with room for more and been refused. A leader gives a partition up only
-- when some member asks for it: a member that never leads asks for nothing, so what the others
-- took over from it stays led.
ALTER TABLE projection_members ADD COLUMN IF NOT EXISTS asks bigint NOT NULL DEFAULT 0;
