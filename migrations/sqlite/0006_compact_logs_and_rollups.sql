-- Request logs made compact, for months of traffic: a row's id is the correlation id its client
-- received (a UUID v7 taken when the call arrived, so ids sort by time); times are integer
-- microseconds; the outcome is a number (0 success, 1 tool error: a result with isError, 2
-- failure: a JSON-RPC error, a refusal or an upstream error); a session's messages share a tag.
-- Two indexes: the organization's time order (the primary key) and a member's; a small partial
-- one finds the calls that did not succeed.
CREATE TABLE request_logs_compact (
    id                 BLOB NOT NULL,
    organization_id    BLOB NOT NULL,
    user_id            BLOB,
    api_key_id         BLOB,
    mcp_service_id     BLOB,
    service_name       TEXT NOT NULL,
    method             TEXT,
    tool_name          TEXT,
    session_tag        INTEGER,
    request_body       TEXT,
    response_body      TEXT,
    request_truncated  INTEGER NOT NULL DEFAULT 0,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    outcome            INTEGER NOT NULL,
    http_status        INTEGER NOT NULL,
    error_code         INTEGER,
    error_message      TEXT,
    duration_ms        INTEGER NOT NULL,
    ip                 TEXT,
    user_agent         TEXT,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (organization_id, id)
);
INSERT INTO request_logs_compact
SELECT COALESCE(unhex(replace(correlation_id, '-', '')), id), organization_id, user_id, api_key_id,
       mcp_service_id, service_name, method, tool_name, NULL, request_body, response_body,
       request_truncated, response_truncated, CASE status WHEN 'success' THEN 0 ELSE 2 END,
       http_status, error_code, error_message, duration_ms, ip, user_agent,
       CAST(round(unixepoch(created_at, 'subsec') * 1000000) AS INTEGER)
FROM request_logs;
DROP TABLE request_logs;
ALTER TABLE request_logs_compact RENAME TO request_logs;
CREATE INDEX request_logs_user_id_id_idx ON request_logs (user_id, id);
CREATE INDEX request_logs_unsuccessful_idx ON request_logs (organization_id, id) WHERE outcome <> 0;

-- Usage roll-ups: what the charts read, never the logs. Three levels of detail, so that a chart reads
-- few rows: 0 per service, 1 per service x tool, 2 per service x key x member. grain 0 = hour, 1 = day, 2 = month (UTC); period_start in microseconds. The
-- nil UUID stands for no service (a name that matched none), no key (test connection) or no
-- member (erased); '' for no tool. b0..b17 count durations in logarithmic buckets: b0 under
-- 1 ms, bN from 2^(N-1) ms to under 2^N ms, b17 from 65536 ms.
CREATE TABLE usage_rollups (
    organization_id BLOB NOT NULL,
    level           INTEGER NOT NULL,
    grain           INTEGER NOT NULL,
    period_start    INTEGER NOT NULL,
    mcp_service_id  BLOB NOT NULL,
    tool_name       TEXT NOT NULL,
    api_key_id      BLOB NOT NULL,
    user_id         BLOB NOT NULL,
    requests        INTEGER NOT NULL,
    tool_errors     INTEGER NOT NULL,
    failures        INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    last_success_at INTEGER,
    b0 INTEGER NOT NULL, b1 INTEGER NOT NULL, b2 INTEGER NOT NULL, b3 INTEGER NOT NULL,
    b4 INTEGER NOT NULL, b5 INTEGER NOT NULL, b6 INTEGER NOT NULL, b7 INTEGER NOT NULL,
    b8 INTEGER NOT NULL, b9 INTEGER NOT NULL, b10 INTEGER NOT NULL, b11 INTEGER NOT NULL,
    b12 INTEGER NOT NULL, b13 INTEGER NOT NULL, b14 INTEGER NOT NULL, b15 INTEGER NOT NULL,
    b16 INTEGER NOT NULL, b17 INTEGER NOT NULL,
    PRIMARY KEY (organization_id, level, grain, period_start, mcp_service_id, tool_name, api_key_id, user_id)
) WITHOUT ROWID;
CREATE INDEX usage_rollups_user_id_idx ON usage_rollups (user_id);

-- The roll-ups of the calls logged so far.
WITH calls AS (
    SELECT organization_id, created_at, COALESCE(mcp_service_id, zeroblob(16)) AS service,
           COALESCE(tool_name, '') AS tool, COALESCE(api_key_id, zeroblob(16)) AS key,
           COALESCE(user_id, zeroblob(16)) AS member, outcome, duration_ms,
           CASE WHEN duration_ms < 1 THEN 0 WHEN duration_ms < 2 THEN 1 WHEN duration_ms < 4 THEN 2 WHEN duration_ms < 8 THEN 3 WHEN duration_ms < 16 THEN 4 WHEN duration_ms < 32 THEN 5 WHEN duration_ms < 64 THEN 6 WHEN duration_ms < 128 THEN 7 WHEN duration_ms < 256 THEN 8 WHEN duration_ms < 512 THEN 9 WHEN duration_ms < 1024 THEN 10 WHEN duration_ms < 2048 THEN 11 WHEN duration_ms < 4096 THEN 12 WHEN duration_ms < 8192 THEN 13 WHEN duration_ms < 16384 THEN 14 WHEN duration_ms < 32768 THEN 15 WHEN duration_ms < 65536 THEN 16 ELSE 17 END AS b
    FROM request_logs
), levels AS (
    SELECT 0 AS level, organization_id, created_at, service, '' AS tool, zeroblob(16) AS key, zeroblob(16) AS member,
           outcome, duration_ms, b FROM calls
    UNION ALL
    SELECT 1, organization_id, created_at, service, tool, zeroblob(16), zeroblob(16), outcome, duration_ms, b FROM calls
    UNION ALL
    SELECT 2, organization_id, created_at, service, '', key, member, outcome, duration_ms, b FROM calls
), periods AS (
    SELECT 0 AS grain, created_at - created_at % 3600000000 AS period_start, * FROM levels
    UNION ALL
    SELECT 1, created_at - created_at % 86400000000, * FROM levels
    UNION ALL
    SELECT 2, CAST(unixepoch(created_at / 1000000, 'unixepoch', 'start of month') AS INTEGER) * 1000000, * FROM levels
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
