-- Command ids are remembered for a retention period, then purged oldest first
-- (`processed_commands::purge_older_than`): this index finds them without reading the table.
CREATE INDEX IF NOT EXISTS processed_commands_age ON processed_commands (processed_at);
