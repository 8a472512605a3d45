-- When the background upkeep (expired sessions, retention, log partitions) last ran: instances
-- sharing the database claim a run by moving this forward, so one of them runs it per period.
CREATE TABLE upkeep_runs (
    task   TEXT PRIMARY KEY NOT NULL,
    -- Seconds since 1970 (UTC).
    ran_at BIGINT NOT NULL
);
