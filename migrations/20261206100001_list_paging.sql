-- Keyset paging of the accounts list, newest first (`before` a page's last row): each page is
-- an index seek, not a sort of every account (all of them for an operator; one owner's for a
-- customer).
CREATE INDEX IF NOT EXISTS account_summary_newest ON account_summary (created_at DESC, account_id DESC);
CREATE INDEX IF NOT EXISTS account_summary_owner_newest
    ON account_summary (owner_id, created_at DESC, account_id DESC);
-- The owner's index above serves every look-up by owner the old one did.
DROP INDEX IF EXISTS account_summary_owner;
