-- The event store's read interface for read models: a projection's checkpoint as a relation,
-- so that a query reads a read table and the checkpoint it is current as of in one statement
-- (one snapshot, always consistent) without naming the store's tables or casting its xid8.
CREATE FUNCTION projection_checkpoint(name text)
RETURNS TABLE (transaction_id bigint, global_position bigint)
LANGUAGE sql STABLE AS $$
    SELECT c.transaction_id::text::bigint, c.global_position
    FROM projection_checkpoints c WHERE c.projection_name = name
$$;
