-- The transfer process's checkpoint names the history of the log it belongs to, as every store
-- outside a projection's own transaction does (eventstore::LogIdentity, as text), and the event
-- at it. A checkpoint of the older form (the log's first event only) is of no history: the
-- process starts over from the first event, which costs a read per finished transfer.
ALTER TABLE transfer_process_checkpoint ALTER COLUMN log TYPE text USING NULL;
ALTER TABLE transfer_process_checkpoint ADD COLUMN IF NOT EXISTS event uuid;
