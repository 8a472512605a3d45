-- Seed schema for SQLite. Ids are UUID v7 stored as 16-byte blobs; times are RFC 3339 text
-- in UTC written by the application (never by SQL), so text order is time order.

CREATE TABLE organizations (
    id            BLOB PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    slug          TEXT NOT NULL,
    contact_email TEXT,
    plan          TEXT NOT NULL DEFAULT 'free',
    settings      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX organizations_slug_key ON organizations (slug);

-- One row once the first organization exists; the primary key makes setup happen once.
CREATE TABLE installation (
    id           INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    completed_at TEXT NOT NULL
);

CREATE TABLE users (
    id                  BLOB PRIMARY KEY NOT NULL,
    organization_id     BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email               TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    is_active           INTEGER NOT NULL DEFAULT 1,
    last_login_at       TEXT,
    password_changed_at TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_organization_id_idx ON users (organization_id, email);

CREATE TABLE api_keys (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    key_hash        BLOB NOT NULL,
    display_key     TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    expires_at      TEXT,
    last_used_at    TEXT,
    revoked_at      TEXT,
    rolled_at       TEXT,
    rolled_from_id  BLOB REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id, created_at);
CREATE INDEX api_keys_organization_id_idx ON api_keys (organization_id, created_at);

CREATE TABLE user_tokens (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_name    TEXT NOT NULL,
    ciphertext      BLOB NOT NULL,
    key_id          TEXT NOT NULL,
    last4           TEXT NOT NULL,
    last_used_at    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX user_tokens_user_id_service_name_key ON user_tokens (user_id, service_name);
CREATE INDEX user_tokens_key_id_idx ON user_tokens (key_id);

-- organization_id NULL marks a system service offered to every organization.
CREATE TABLE mcp_services (
    id                 BLOB PRIMARY KEY NOT NULL,
    organization_id    BLOB REFERENCES organizations (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    version            TEXT NOT NULL DEFAULT '',
    is_public          INTEGER NOT NULL DEFAULT 0,
    transport          TEXT NOT NULL CHECK (transport IN ('http', 'stdio')),
    upstream_url       TEXT,
    headers            TEXT NOT NULL DEFAULT '{}',
    command            TEXT,
    args               TEXT NOT NULL DEFAULT '[]',
    env                TEXT NOT NULL DEFAULT '{}',
    token_service_name TEXT,
    token_placement    TEXT,
    timeout_ms         INTEGER NOT NULL DEFAULT 60000,
    is_enabled         INTEGER NOT NULL DEFAULT 1,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX mcp_services_organization_id_name_key ON mcp_services (organization_id, name)
    WHERE organization_id IS NOT NULL;
CREATE UNIQUE INDEX mcp_services_system_name_key ON mcp_services (name)
    WHERE organization_id IS NULL;

-- Append-only history: no foreign keys, so logs outlive the users and keys they name.
CREATE TABLE request_logs (
    id                 BLOB PRIMARY KEY NOT NULL,
    organization_id    BLOB NOT NULL,
    user_id            BLOB,
    api_key_id         BLOB,
    mcp_service_id     BLOB,
    service_name       TEXT NOT NULL,
    method             TEXT,
    tool_name          TEXT,
    correlation_id     TEXT NOT NULL,
    request_body       TEXT,
    response_body      TEXT,
    request_truncated  INTEGER NOT NULL DEFAULT 0,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    status             TEXT NOT NULL,
    http_status        INTEGER NOT NULL,
    error_code         INTEGER,
    error_message      TEXT,
    duration_ms        INTEGER NOT NULL,
    ip                 TEXT,
    user_agent         TEXT,
    created_at         TEXT NOT NULL
);
CREATE INDEX request_logs_user_id_created_at_idx ON request_logs (user_id, created_at);
CREATE INDEX request_logs_mcp_service_id_created_at_idx ON request_logs (mcp_service_id, created_at);
CREATE INDEX request_logs_organization_id_created_at_idx ON request_logs (organization_id, created_at);

-- Daily rows carry a day; monthly rows have day NULL.
CREATE TABLE service_usage (
    id                  BLOB PRIMARY KEY NOT NULL,
    organization_id     BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    mcp_service_id      BLOB NOT NULL REFERENCES mcp_services (id) ON DELETE CASCADE,
    year                INTEGER NOT NULL,
    month               INTEGER NOT NULL,
    day                 INTEGER,
    request_count       INTEGER NOT NULL DEFAULT 0,
    total_duration_ms   INTEGER NOT NULL DEFAULT 0,
    successful_requests INTEGER NOT NULL DEFAULT 0,
    failed_requests     INTEGER NOT NULL DEFAULT 0,
    updated_at          TEXT NOT NULL
);
CREATE UNIQUE INDEX service_usage_daily_key
    ON service_usage (organization_id, mcp_service_id, year, month, day) WHERE day IS NOT NULL;
CREATE UNIQUE INDEX service_usage_monthly_key
    ON service_usage (organization_id, mcp_service_id, year, month) WHERE day IS NULL;
CREATE INDEX service_usage_organization_id_year_month_idx ON service_usage (organization_id, year, month);

CREATE TABLE audit_logs (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB REFERENCES organizations (id) ON DELETE CASCADE,
    actor_user_id   BLOB,
    actor_email     TEXT,
    action          TEXT NOT NULL,
    target_type     TEXT,
    target_id       TEXT,
    before_state    TEXT,
    after_state     TEXT,
    ip              TEXT,
    user_agent      TEXT,
    success         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL
);
CREATE INDEX audit_logs_organization_id_created_at_idx ON audit_logs (organization_id, created_at);
CREATE INDEX audit_logs_organization_id_actor_idx ON audit_logs (organization_id, actor_user_id, created_at);
CREATE INDEX audit_logs_organization_id_action_idx ON audit_logs (organization_id, action, created_at);

-- Dashboard sessions. The cookie carries a random key; only its SHA-256 is stored.
CREATE TABLE sessions (
    id           BLOB PRIMARY KEY NOT NULL,
    key_hash     BLOB NOT NULL,
    user_id      BLOB REFERENCES users (id) ON DELETE CASCADE,
    state        TEXT NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX sessions_key_hash_key ON sessions (key_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE invitations (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    token_hash      BLOB NOT NULL,
    invited_by      BLOB REFERENCES users (id) ON DELETE SET NULL,
    expires_at      TEXT NOT NULL,
    accepted_at     TEXT,
    revoked_at      TEXT,
    created_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX invitations_token_hash_key ON invitations (token_hash);
CREATE INDEX invitations_organization_id_idx ON invitations (organization_id, created_at);

-- Failed sign-ins per email (whether or not the account exists), for throttling.
CREATE TABLE login_failures (
    id         BLOB PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL,
    ip         TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX login_failures_email_created_at_idx ON login_failures (email, created_at);
CREATE INDEX login_failures_created_at_idx ON login_failures (created_at);
