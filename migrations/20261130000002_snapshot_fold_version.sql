-- The version of the fold (and upcasters) that computed a snapshot's state. A snapshot made by
-- another fold carries that fold's reading of the events, so loading ignores it. The snapshots
-- stored so far were made by the first fold.
ALTER TABLE snapshots ADD COLUMN fold_version integer NOT NULL DEFAULT 1;
