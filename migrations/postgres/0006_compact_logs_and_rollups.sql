-- Request logs made compact, for months of traffic: a row's id is the correlation id its client
-- received (a UUID v7 taken when the call arrived, so ids sort by time); the outcome is a number
-- (0 success, 1 tool error: a result with isError, 2 failure: a JSON-RPC error, a refusal or an
-- upstream error); a session's messages share a tag. Two indexes: the organization's time order
-- (the primary key, with the partition key) and a member's; a small partial one finds the calls
-- that did not succeed.
ALTER TABLE request_logs DROP CONSTRAINT request_logs_pkey;
UPDATE request_logs SET id = correlation_id::uuid
WHERE correlation_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
ALTER TABLE request_logs ADD COLUMN outcome SMALLINT;
UPDATE request_logs SET outcome = CASE status WHEN 'success' THEN 0 ELSE 2 END;
ALTER TABLE request_logs ALTER COLUMN outcome SET NOT NULL;
ALTER TABLE request_logs DROP COLUMN status, DROP COLUMN correlation_id;
ALTER TABLE request_logs ADD COLUMN session_tag BIGINT;
ALTER TABLE request_logs ADD PRIMARY KEY (organization_id, id, created_at);
DROP INDEX request_logs_user_id_created_at_idx;
DROP INDEX request_logs_mcp_service_id_created_at_idx;
DROP INDEX request_logs_organization_id_created_at_idx;
CREATE INDEX request_logs_user_id_id_idx ON request_logs (user_id, id);
CREATE INDEX request_logs_unsuccessful_idx ON request_logs (organization_id, id) WHERE outcome <> 0;

-- Usage roll-ups: what the charts read, never the logs. Three levels of detail, so that a chart reads
-- few rows: 0 per service, 1 per service x tool, 2 per service x key x member. grain 0 = hour, 1 = day, 2 = month (UTC). The nil UUID stands for no service
-- (a name that matched none), no key (test connection) or no member (erased); '' for no tool.
-- b0..b17 count durations in logarithmic buckets: b0 under 1 ms, bN from 2^(N-1) ms to under
-- 2^N ms, b17 from 65536 ms.
CREATE TABLE usage_rollups (
    organization_id UUID NOT NULL,
    level           SMALLINT NOT NULL,
    grain           SMALLINT NOT NULL,
    period_start    TIMESTAMPTZ NOT NULL,
    mcp_service_id  UUID NOT NULL,
    tool_name       TEXT NOT NULL,
    api_key_id      UUID NOT NULL,
    user_id         UUID NOT NULL,
    requests        BIGINT NOT NULL,
    tool_errors     BIGINT NOT NULL,
    failures        BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    last_success_at TIMESTAMPTZ,
    b0 BIGINT NOT NULL, b1 BIGINT NOT NULL, b2 BIGINT NOT NULL, b3 BIGINT NOT NULL,
    b4 BIGINT NOT NULL, b5 BIGINT NOT NULL, b6 BIGINT NOT NULL, b7 BIGINT NOT NULL,
    b8 BIGINT NOT NULL, b9 BIGINT NOT NULL, b10 BIGINT NOT NULL, b11 BIGINT NOT NULL,
    b12 BIGINT NOT NULL, b13 BIGINT NOT NULL, b14 BIGINT NOT NULL, b15 BIGINT NOT NULL,
    b16 BIGINT NOT NULL, b17 BIGINT NOT NULL,
    PRIMARY KEY (organization_id, level, grain, period_start, mcp_service_id, tool_name, api_key_id, user_id)
);
CREATE INDEX usage_rollups_user_id_idx ON usage_rollups (user_id);

-- The roll-ups of the calls logged so far.
WITH calls AS (
    SELECT organization_id, created_at,
           COALESCE(mcp_service_id, '00000000-0000-0000-0000-000000000000'::uuid) AS service,
           COALESCE(tool_name, '') AS tool,
           COALESCE(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid) AS key,
           COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS member,
           outcome, duration_ms,
           CASE WHEN duration_ms < 1 THEN 0 WHEN duration_ms < 2 THEN 1 WHEN duration_ms < 4 THEN 2 WHEN duration_ms < 8 THEN 3 WHEN duration_ms < 16 THEN 4 WHEN duration_ms < 32 THEN 5 WHEN duration_ms < 64 THEN 6 WHEN duration_ms < 128 THEN 7 WHEN duration_ms < 256 THEN 8 WHEN duration_ms < 512 THEN 9 WHEN duration_ms < 1024 THEN 10 WHEN duration_ms < 2048 THEN 11 WHEN duration_ms < 4096 THEN 12 WHEN duration_ms < 8192 THEN 13 WHEN duration_ms < 16384 THEN 14 WHEN duration_ms < 32768 THEN 15 WHEN duration_ms < 65536 THEN 16 ELSE 17 END AS b
    FROM request_logs
), levels AS (
    SELECT 0 AS level, organization_id, created_at, service, '' AS tool, '00000000-0000-0000-0000-000000000000'::uuid AS key, '00000000-0000-0000-0000-000000000000'::uuid AS member,
           outcome, duration_ms, b FROM calls
    UNION ALL
    SELECT 1, organization_id, created_at, service, tool, '00000000-0000-0000-0000-000000000000'::uuid, '00000000-0000-0000-0000-000000000000'::uuid, outcome, duration_ms, b FROM calls
    UNION ALL
    SELECT 2, organization_id, created_at, service, '', key, member, outcome, duration_ms, b FROM calls
), periods AS (
    SELECT 0 AS grain, date_trunc('hour', created_at, 'UTC') AS period_start, * FROM levels
    UNION ALL
    SELECT 1, date_trunc('day', created_at, 'UTC'), * FROM levels
    UNION ALL
    SELECT 2, date_trunc('month', created_at, 'UTC'), * FROM levels
)
INSERT INTO usage_rollups
SELECT organization_id, level, grain, period_start, service, tool, key, member, COUNT(*),
       SUM(CASE WHEN outcome = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN outcome = 2 THEN 1 ELSE 0 END),
       SUM(duration_ms), MAX(CASE WHEN outcome = 0 THEN created_at END),
       SUM(CASE WHEN b = 0 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 2 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 3 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 4 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 5 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 6 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 7 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 8 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 9 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 10 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 11 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 12 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 13 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 14 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 15 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 16 THEN 1 ELSE 0 END),
       SUM(CASE WHEN b = 17 THEN 1 ELSE 0 END)
FROM periods
GROUP BY organization_id, level, grain, period_start, service, tool, key, member;
