-- What a user sees of their sessions (to end one they do not recognise): an id to name it by
-- (the secret's hash is never shown), when it was last used (noted at most once a minute) and
-- the browser it was started from.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS session_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_seen_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS user_agent text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS sessions_id ON sessions (session_id);
