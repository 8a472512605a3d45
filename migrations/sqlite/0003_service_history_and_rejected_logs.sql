-- A deleted service is kept, marked deleted, so its request logs and usage stay and a call in
-- flight when it is deleted can still be recorded; its name is free again.
ALTER TABLE mcp_services ADD COLUMN deleted_at TEXT;
DROP INDEX mcp_services_organization_id_name_key;
CREATE UNIQUE INDEX mcp_services_organization_id_name_key ON mcp_services (organization_id, name)
    WHERE organization_id IS NOT NULL AND deleted_at IS NULL;

-- Request-log rows the database refused (a constraint, a value out of range): kept whole, as
-- JSON, with the reason, so one bad row never holds up the others and nothing is lost.
CREATE TABLE request_log_rejects (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL,
    row_json        TEXT NOT NULL,
    error           TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX request_log_rejects_created_at_idx ON request_log_rejects (created_at);
