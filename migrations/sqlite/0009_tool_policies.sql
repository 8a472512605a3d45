-- Which tools of a service are offered, and to whom: an organization's own policy for each
-- service (JSON: `offered`, the allow-list, absent for every tool; `roles`, the tools only some
-- roles may call), the operator's default for a system service, and an API key's own reach
-- (`service` or `service/tool` entries; NULL: every service its scopes allow).
CREATE TABLE tool_policies (
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    mcp_service_id  BLOB NOT NULL REFERENCES mcp_services (id) ON DELETE CASCADE,
    policy          TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (organization_id, mcp_service_id)
);
ALTER TABLE mcp_services ADD COLUMN tool_policy TEXT;
ALTER TABLE api_keys ADD COLUMN reach TEXT;
