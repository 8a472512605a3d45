-- Seed schema for PostgreSQL. Ids are UUID v7; times are timestamptz written by the application.

CREATE TABLE organizations (
    id            UUID PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    slug          TEXT NOT NULL,
    contact_email TEXT,
    plan          TEXT NOT NULL DEFAULT 'free',
    settings      JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX organizations_slug_key ON organizations (slug);

-- One row once the first organization exists; the primary key makes setup happen once.
CREATE TABLE installation (
    id           INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    completed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id                  UUID PRIMARY KEY NOT NULL,
    organization_id     UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email               TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    is_active           BOOLEAN NOT NULL DEFAULT TRUE,
    last_login_at       TIMESTAMPTZ,
    password_changed_at TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_organization_id_idx ON users (organization_id, email);

CREATE TABLE api_keys (
    id              UUID PRIMARY KEY NOT NULL,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    key_hash        BYTEA NOT NULL,
    display_key     TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    expires_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    rolled_at       TIMESTAMPTZ,
    rolled_from_id  UUID REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id, created_at);
CREATE INDEX api_keys_organization_id_idx ON api_keys (organization_id, created_at);

CREATE TABLE user_tokens (
    id              UUID PRIMARY KEY NOT NULL,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_name    TEXT NOT NULL,
    ciphertext      BYTEA NOT NULL,
    key_id          TEXT NOT NULL,
    last4           TEXT NOT NULL,
    last_used_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX user_tokens_user_id_service_name_key ON user_tokens (user_id, service_name);
CREATE INDEX user_tokens_key_id_idx ON user_tokens (key_id);

-- organization_id NULL marks a system service offered to every organization.
CREATE TABLE mcp_services (
    id                 UUID PRIMARY KEY NOT NULL,
    organization_id    UUID REFERENCES organizations (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    version            TEXT NOT NULL DEFAULT '',
    is_public          BOOLEAN NOT NULL DEFAULT FALSE,
    transport          TEXT NOT NULL CHECK (transport IN ('http', 'stdio')),
    upstream_url       TEXT,
    headers            JSONB NOT NULL DEFAULT '{}',
    command            TEXT,
    args               JSONB NOT NULL DEFAULT '[]',
    env                JSONB NOT NULL DEFAULT '{}',
    token_service_name TEXT,
    token_placement    TEXT,
    timeout_ms         INTEGER NOT NULL DEFAULT 60000,
    is_enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX mcp_services_organization_id_name_key ON mcp_services (organization_id, name)
    WHERE organization_id IS NOT NULL;
CREATE UNIQUE INDEX mcp_services_system_name_key ON mcp_services (name)
    WHERE organization_id IS NULL;

-- Append-only history, partitioned by month on created_at; no foreign keys, so logs outlive
-- the users and keys they name. Monthly partitions are created ahead by the application;
-- the default partition catches anything outside them.
CREATE TABLE request_logs (
    id                 UUID NOT NULL,
    organization_id    UUID NOT NULL,
    user_id            UUID,
    api_key_id         UUID,
    mcp_service_id     UUID,
    service_name       TEXT NOT NULL,
    method             TEXT,
    tool_name          TEXT,
    correlation_id     TEXT NOT NULL,
    request_body       TEXT,
    response_body      TEXT,
    request_truncated  BOOLEAN NOT NULL DEFAULT FALSE,
    response_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    status             TEXT NOT NULL,
    http_status        INTEGER NOT NULL,
    error_code         INTEGER,
    error_message      TEXT,
    duration_ms        BIGINT NOT NULL,
    ip                 TEXT,
    user_agent         TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE request_logs_default PARTITION OF request_logs DEFAULT;
CREATE INDEX request_logs_user_id_created_at_idx ON request_logs (user_id, created_at);
CREATE INDEX request_logs_mcp_service_id_created_at_idx ON request_logs (mcp_service_id, created_at);
CREATE INDEX request_logs_organization_id_created_at_idx ON request_logs (organization_id, created_at);

-- Daily rows carry a day; monthly rows have day NULL.
CREATE TABLE service_usage (
    id                  UUID PRIMARY KEY NOT NULL,
    organization_id     UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    mcp_service_id      UUID NOT NULL REFERENCES mcp_services (id) ON DELETE CASCADE,
    year                INTEGER NOT NULL,
    month               INTEGER NOT NULL,
    day                 INTEGER,
    request_count       BIGINT NOT NULL DEFAULT 0,
    total_duration_ms   BIGINT NOT NULL DEFAULT 0,
    successful_requests BIGINT NOT NULL DEFAULT 0,
    failed_requests     BIGINT NOT NULL DEFAULT 0,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX service_usage_daily_key
    ON service_usage (organization_id, mcp_service_id, year, month, day) WHERE day IS NOT NULL;
CREATE UNIQUE INDEX service_usage_monthly_key
    ON service_usage (organization_id, mcp_service_id, year, month) WHERE day IS NULL;
CREATE INDEX service_usage_organization_id_year_month_idx ON service_usage (organization_id, year, month);

CREATE TABLE audit_logs (
    id              UUID PRIMARY KEY NOT NULL,
    organization_id UUID REFERENCES organizations (id) ON DELETE CASCADE,
    actor_user_id   UUID,
    actor_email     TEXT,
    action          TEXT NOT NULL,
    target_type     TEXT,
    target_id       TEXT,
    before_state    JSONB,
    after_state     JSONB,
    ip              TEXT,
    user_agent      TEXT,
    success         BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_logs_organization_id_created_at_idx ON audit_logs (organization_id, created_at);
CREATE INDEX audit_logs_organization_id_actor_idx ON audit_logs (organization_id, actor_user_id, created_at);
CREATE INDEX audit_logs_organization_id_action_idx ON audit_logs (organization_id, action, created_at);

-- Dashboard sessions. The cookie carries a random key; only its SHA-256 is stored.
CREATE TABLE sessions (
    id           UUID PRIMARY KEY NOT NULL,
    key_hash     BYTEA NOT NULL,
    user_id      UUID REFERENCES users (id) ON DELETE CASCADE,
    state        TEXT NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX sessions_key_hash_key ON sessions (key_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE invitations (
    id              UUID PRIMARY KEY NOT NULL,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    token_hash      BYTEA NOT NULL,
    invited_by      UUID REFERENCES users (id) ON DELETE SET NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    accepted_at     TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX invitations_token_hash_key ON invitations (token_hash);
CREATE INDEX invitations_organization_id_idx ON invitations (organization_id, created_at);

-- Failed sign-ins per email (whether or not the account exists), for throttling.
CREATE TABLE login_failures (
    id         UUID PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL,
    ip         TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_email_created_at_idx ON login_failures (email, created_at);
CREATE INDEX login_failures_created_at_idx ON login_failures (created_at);
