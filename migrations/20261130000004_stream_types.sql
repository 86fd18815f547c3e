-- Every stream has a type (its category: an account, a transfer, ...), named by whoever appends
-- to it, so that readers can tell aggregates apart. Every event stored before stream types
-- existed is an account's: accounts were the only aggregate. From here on, an append names
-- the type (no default).
ALTER TABLE events ADD COLUMN stream_type text NOT NULL DEFAULT 'account';
ALTER TABLE events ALTER COLUMN stream_type DROP DEFAULT;
