-- Which MCP era a recorded call was in: false for 2025-11-25 and before (sessions), true for
-- 2026-07-28 (stateless requests).
ALTER TABLE request_logs ADD COLUMN stateless BOOLEAN NOT NULL DEFAULT false;
