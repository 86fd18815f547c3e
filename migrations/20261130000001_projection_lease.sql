-- Leadership as a lease with a fencing token. Every takeover increments `leader_epoch`; a
-- leader's heartbeats and batches name the epoch it took over with, so a leader that was paused
-- or cut off past its lease — and replaced meanwhile — can apply nothing more when it wakes up.
ALTER TABLE projection_checkpoints ADD COLUMN leader_epoch bigint NOT NULL DEFAULT 0;
