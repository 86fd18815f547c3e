-- A user's credentials have a version, bumped whenever their password or role changes. Every
-- session and token records the version it was made under and names nobody once the user's has
-- moved on: a reset ends them all in one row, including a session that a sign-in begun before
-- the reset (with the old password) inserts after it, and a token minted in that moment.
ALTER TABLE users ADD COLUMN IF NOT EXISTS credential_version bigint NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS credential_version bigint NOT NULL DEFAULT 1;
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS credential_version bigint NOT NULL DEFAULT 1;

-- Revoked tokens are kept a while (the tokens page shows them), then purged by housekeeping.
CREATE INDEX IF NOT EXISTS api_tokens_revoked ON api_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
