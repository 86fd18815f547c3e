-- Accounts opened before users existed name their owner in free text. An owner id that is also
-- a valid username must not go to whoever signs up with it first (they would own those accounts):
-- each is reserved by a user that cannot sign in (no password hash matches '!'), until an
-- operator hands it over with `server create-operator` or a password reset of their own.
INSERT INTO users (user_id, username, password_hash, role)
SELECT gen_random_uuid(), owner, '!reserved: owned accounts before sign-in existed', 'customer'
FROM (
    -- `ownerId` since schema version 2; the design document's version 1 said `owner_id`.
    SELECT DISTINCT coalesce(data ->> 'ownerId', data ->> 'owner_id') AS owner
    FROM events
    WHERE stream_type = 'account' AND event_type = 'AccountCreated'
) AS owners
WHERE owner IS NOT NULL
ON CONFLICT (username) DO NOTHING;
