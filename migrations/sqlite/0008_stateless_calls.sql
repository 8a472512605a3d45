-- Which MCP era a recorded call was in: 0 for 2025-11-25 and before (sessions), 1 for
-- 2026-07-28 (stateless requests).
ALTER TABLE request_logs ADD COLUMN stateless INTEGER NOT NULL DEFAULT 0;
