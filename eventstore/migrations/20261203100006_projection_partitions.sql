-- Partitioned projections: one projection split by a hash of the stream id into N partitions,
-- each with its own checkpoint row (`<name>/<k>-of-<N>`), led by at most one instance, so that
-- several instances apply one projection in parallel. A stream's events all fall in one
-- partition, so each stream is still applied in order.

-- How many partitions a projection is split into, as the instances that run it agreed last.
-- No row: one (the projection's checkpoint row is then named after the projection itself).
-- Every batch of a partitionable projection checks this row, so that an instance started with
-- another count can never apply a batch after the count changed.
CREATE TABLE IF NOT EXISTS projection_partitionings (
    projection_name text        PRIMARY KEY,
    partitions      integer     NOT NULL CHECK (partitions BETWEEN 1 AND 64),
    changed_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The instances running a partitioned projection, and when each last said so: each leads its
-- fair share of the partitions (the count divided by the live members, rounded up).
CREATE TABLE IF NOT EXISTS projection_members (
    projection_name text        NOT NULL,
    instance        text        NOT NULL,
    partitions      integer     NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection_name, instance)
);

-- The partition of `partitions` a stream belongs to, by Postgres's own extended hash of a uuid:
-- hash-partitioned tables depend on these functions, so they do not change between versions.
CREATE OR REPLACE FUNCTION stream_partition(stream_id uuid, partitions integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN partitions <= 1 THEN 0
                ELSE ((uuid_hash_extended(stream_id, 0) % partitions + partitions) % partitions)::integer END
$$;

-- A projection's checkpoint for readers: for a partitioned one, the least of its partitions'
-- checkpoints (a partition that has not run yet is at the start). Every event at or before it
-- is in the read tables; some after it may be too, from partitions further on.
CREATE OR REPLACE FUNCTION projection_checkpoint(name text)
RETURNS TABLE (transaction_id bigint, global_position bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(c.transaction_id::text::bigint, 0), coalesce(c.global_position, 0)
    FROM (SELECT coalesce((SELECT p.partitions FROM projection_partitionings p WHERE p.projection_name = name), 1)
              AS n) AS split
    CROSS JOIN LATERAL generate_series(0, split.n - 1) AS part (k)
    LEFT JOIN projection_checkpoints c
        ON c.projection_name = CASE WHEN split.n = 1 THEN name ELSE name || '/' || part.k || '-of-' || split.n END
    ORDER BY 1, 2
    LIMIT 1
$$;
