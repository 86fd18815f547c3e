-- Crypto-shredding: a data key per person seals their personal data in the log; forgetting them
-- destroys the key. The keys are stored wrapped by a master key that is never in the database
-- (`MASTER_KEY_FILE`): a copy of the database alone opens none of them.

CREATE TABLE IF NOT EXISTS user_keys (
    -- The person's user id; the nil id holds the installation's username key (see
    -- `forgotten_users.username_digest`). No foreign key: forgetting deletes both rows itself.
    user_id       uuid        PRIMARY KEY,
    -- AES-256-GCM: the 32-byte data key sealed under the master key, the user id as
    -- associated data (a wrapped key copied to another row does not open).
    wrapped_key   bytea       NOT NULL,
    nonce         bytea       NOT NULL,
    -- Which master key wrapped it (the first 8 bytes of its SHA-256, hex): a rotation wraps
    -- the others anew.
    master_key_id text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS user_keys_master_key ON user_keys (master_key_id);

-- Who was forgotten and when: no name, only a keyed hash of it (HMAC-SHA256 under the username
-- key), so that sign-up can refuse the name until its cooling-off ends; then the hash goes too
-- (housekeeping), so that nobody can tell, even with the master key, whose id this was.
CREATE TABLE IF NOT EXISTS forgotten_users (
    user_id             uuid        PRIMARY KEY,
    forgotten_at        timestamptz NOT NULL DEFAULT now(),
    username_digest     bytea,
    username_free_after timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS forgotten_users_digest ON forgotten_users (username_digest);

-- Forgetting someone finds their accounts in the log (a read model may lag): by the key their
-- name was sealed with, or by their name written in clear before names were sealed.
CREATE INDEX IF NOT EXISTS events_account_owner_key ON events ((data -> 'ownerId' ->> 'keyId'))
    WHERE event_type = 'AccountCreated';
CREATE INDEX IF NOT EXISTS events_account_owner_name ON events ((coalesce(data ->> 'ownerId', data ->> 'owner_id')))
    WHERE event_type = 'AccountCreated';
