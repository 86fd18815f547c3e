-- A token may do less than its owner: `read` (queries and the live stream) or `metrics` (only
-- /metrics, for a scraper); `full` is what tokens did before. And it may end by itself.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT 'full'
    CHECK (scope IN ('full', 'read', 'metrics'));
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
