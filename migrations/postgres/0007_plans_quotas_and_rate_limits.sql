-- Per-key rate limits (requests per minute; NULL: the plan's default) and the daily request
-- counts the quota is checked against, written by the request-log writer with its batches.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER;

CREATE TABLE daily_requests (
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    day             DATE NOT NULL,
    requests        BIGINT NOT NULL,
    PRIMARY KEY (organization_id, day)
);
