-- The addresses a user signed in or up from (the last few): a sign-in from one of them is never
-- held back by the limit on failed sign-ins for that username, which a guesser elsewhere spends.
-- In the database, so that every instance knows them, and a restart forgets nothing.
CREATE TABLE IF NOT EXISTS sign_in_addresses (
    user_id      uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    -- An IPv4 address or an IPv6 /64, as the rate limits key clients.
    address      text        NOT NULL,
    last_used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);
