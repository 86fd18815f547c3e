-- Who may use the bank. Ordinary tables, not event-sourced: users, their sessions and their API
-- tokens are access control, not the bank's history (what a user did is in the events' metadata).
-- Secrets (session ids, tokens) are stored only as SHA-256 hashes: a leaked table opens nothing.

CREATE TABLE IF NOT EXISTS users (
    user_id       uuid        PRIMARY KEY,
    -- Lower-case, checked by the application (`identity::Username`); it is also the `ownerId`
    -- of the user's accounts.
    username      text        NOT NULL UNIQUE,
    -- Argon2id, PHC string format (algorithm, parameters and salt included).
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('customer', 'operator')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sessions (
    secret_hash bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);

CREATE TABLE IF NOT EXISTS api_tokens (
    token_id     uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text        NOT NULL,
    secret_hash  bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Updated at most once a minute per token: a busy client must not write on every request.
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_id, created_at);
