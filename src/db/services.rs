//! The `mcp_services` table: each organization's own services, and the system services
//! (`organization_id` NULL) that the operator offers to every organization.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::Conn;
use crate::catalog::definition::Transport;
use crate::catalog::system::{SystemService, SystemUpstream};
use crate::ids::{OrgId, ServiceId};
use crate::{execute, execute_one, on_conn};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRow {
    pub id: ServiceId,
    pub organization_id: Option<OrgId>,
    pub name: String,
    pub description: String,
    pub version: String,
    pub is_public: bool,
    #[sqlx(try_from = "String")]
    pub transport: Transport,
    pub upstream_url: Option<String>,
    pub sealed_headers: Json<Vec<SealedHeader>>,
    pub command: Option<String>,
    pub args: Json<Vec<String>>,
    pub env: Json<BTreeMap<String, String>>,
    pub token_service_name: Option<String>,
    pub token_placement: Option<String>,
    pub timeout_ms: i32,
    pub is_enabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// One extra header of a service, its value sealed (`crypto::headers`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedHeader {
    pub name: String,
    /// The sealed value, base64.
    pub sealed: String,
    /// The value's last 4 characters, or empty for a short value.
    pub last4: String,
}

impl ServiceRow {
    pub fn is_system(&self) -> bool {
        self.organization_id.is_none()
    }
}

const COLUMNS: &str = "id, organization_id, name, description, version, is_public, transport, upstream_url, \
     sealed_headers, command, args, env, token_service_name, token_placement, timeout_ms, is_enabled, updated_at";

/// What an organization admin sets on one of the organization's (HTTP) services.
pub struct ServiceFields<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub version: &'a str,
    pub is_public: bool,
    pub upstream_url: &'a str,
    pub headers: &'a [SealedHeader],
    pub token_service_name: Option<&'a str>,
    pub token_placement: Option<&'a str>,
    pub timeout_ms: i32,
}

pub async fn insert(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: ServiceId,
    f: &ServiceFields<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(conn, "INSERT INTO mcp_services (id, organization_id, name, description, version, is_public, transport, \
         upstream_url, sealed_headers, token_service_name, token_placement, timeout_ms, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'http', $7, $8, $9, $10, $11, $12, $12)", id, organization_id, f.name, f.description, f.version, f.is_public, f.upstream_url, Json(f.headers), f.token_service_name, f.token_placement, f.timeout_ms, now).map(drop)
}

pub async fn update(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: ServiceId,
    f: &ServiceFields<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE mcp_services SET name = $3, description = $4, version = $5, is_public = $6, upstream_url = $7, \
         sealed_headers = $8, token_service_name = $9, token_placement = $10, timeout_ms = $11, updated_at = $12 \
         WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL",
        organization_id,
        id,
        f.name,
        f.description,
        f.version,
        f.is_public,
        f.upstream_url,
        Json(f.headers),
        f.token_service_name,
        f.token_placement,
        f.timeout_ms,
        now
    )
}

/// Marks one of the organization's services deleted: it leaves the catalog and the gateway and
/// its name is free again, while its request logs and usage stay.
pub async fn delete(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: ServiceId,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE mcp_services SET deleted_at = $3, updated_at = $3 \
         WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL",
        organization_id,
        id,
        now
    )
}

/// What the organization's members can use: enabled public system services and the
/// organization's own, system services first.
pub async fn catalog(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<Vec<ServiceRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mcp_services WHERE (organization_id = $1 AND deleted_at IS NULL) \
         OR (organization_id IS NULL AND is_public = TRUE AND is_enabled = TRUE) \
         ORDER BY CASE WHEN organization_id IS NULL THEN 0 ELSE 1 END, name LIMIT 1000"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(organization_id).fetch_all(c).await)
}

/// The service a member reaches by this name: the organization's own, else a public system one.
pub async fn find_for_organization(
    conn: Conn<'_>,
    organization_id: OrgId,
    name: &str,
) -> sqlx::Result<Option<ServiceRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mcp_services WHERE name = $2 AND ((organization_id = $1 AND deleted_at IS NULL) \
         OR (organization_id IS NULL AND is_public = TRUE AND is_enabled = TRUE)) \
         ORDER BY CASE WHEN organization_id IS NULL THEN 1 ELSE 0 END LIMIT 1"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(organization_id).bind(name).fetch_optional(c).await)
}

/// A service of the organization's own (never a system one), for editing.
pub async fn find_own(
    conn: Conn<'_>,
    organization_id: OrgId,
    name: &str,
) -> sqlx::Result<Option<ServiceRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mcp_services WHERE organization_id = $1 AND name = $2 AND deleted_at IS NULL"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(organization_id).bind(name).fetch_optional(c).await)
}

pub async fn system_name_exists(conn: Conn<'_>, name: &str) -> sqlx::Result<bool> {
    let row: Option<(i32,)> = on_conn!(conn, c => sqlx::query_as("SELECT 1 FROM mcp_services WHERE organization_id IS NULL AND name = $1")
            .bind(name)
            .fetch_optional(c)
            .await)?;
    Ok(row.is_some())
}

/// The ids of the system services already recorded, by name.
pub async fn system_ids(conn: Conn<'_>) -> sqlx::Result<Vec<(String, ServiceId)>> {
    on_conn!(conn, c => sqlx::query_as("SELECT name, id FROM mcp_services WHERE organization_id IS NULL")
        .fetch_all(c)
        .await)
}

/// A system service to record under `id`, its header values sealed.
pub struct SystemRow<'a> {
    pub id: ServiceId,
    pub service: &'a SystemService,
    pub headers: Vec<SealedHeader>,
}

/// Makes the system services in the database match the operator's file: new ones are added,
/// changed ones updated, and ones no longer in the file disabled (their history stays).
pub async fn sync_system(conn: Conn<'_>, services: &[SystemRow<'_>], now: DateTime<Utc>) -> sqlx::Result<()> {
    on_conn!(conn, c => {
        for SystemRow { id, service: s, headers } in services {
            let (transport, url, command, args, env, placement) = match &s.transport {
                SystemUpstream::Http { url, placement, .. } => {
                    (Transport::Http.as_str(), Some(url.to_string()), None, Vec::new(), BTreeMap::new(), placement.as_ref().map(|p| p.to_string()))
                }
                SystemUpstream::Stdio { command, args, env } => {
                    (Transport::Stdio.as_str(), None, Some(command.clone()), args.clone(), env.clone(), None)
                }
            };
            sqlx::query(
                "INSERT INTO mcp_services (id, organization_id, name, description, version, is_public, transport, \
                 upstream_url, sealed_headers, command, args, env, token_service_name, token_placement, timeout_ms, \
                 is_enabled, created_at, updated_at, tool_policy) \
                 VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, TRUE, $15, $15, $16) \
                 ON CONFLICT (name) WHERE organization_id IS NULL DO UPDATE SET \
                 description = excluded.description, version = excluded.version, is_public = excluded.is_public, \
                 transport = excluded.transport, upstream_url = excluded.upstream_url, \
                 sealed_headers = excluded.sealed_headers, headers = '{}', \
                 command = excluded.command, args = excluded.args, env = excluded.env, \
                 token_service_name = excluded.token_service_name, token_placement = excluded.token_placement, \
                 timeout_ms = excluded.timeout_ms, is_enabled = TRUE, updated_at = excluded.updated_at, \
                 tool_policy = excluded.tool_policy",
            )
            .bind(id)
            .bind(s.name.as_str())
            .bind(&s.description)
            .bind(&s.version)
            .bind(s.public)
            .bind(transport)
            .bind(&url)
            .bind(Json(headers))
            .bind(&command)
            .bind(Json(&args))
            .bind(Json(&env))
            .bind(s.token.as_ref().map(|t| t.as_str()))
            .bind(&placement)
            .bind(s.timeout_ms)
            .bind(now)
            .bind((!s.tool_policy.is_open()).then(|| s.tool_policy.to_stored()))
            .execute(&mut *c)
            .await?;
        }
        let existing: Vec<(String,)> = sqlx::query_as("SELECT name FROM mcp_services WHERE organization_id IS NULL AND is_enabled = TRUE")
            .fetch_all(&mut *c)
            .await?;
        for (name,) in existing {
            if !services.iter().any(|s| s.service.name.as_str() == name) {
                sqlx::query("UPDATE mcp_services SET is_enabled = FALSE, updated_at = $2 WHERE organization_id IS NULL AND name = $1")
                    .bind(&name)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
            }
        }
        Ok::<_, sqlx::Error>(())
    })
}

/// Services whose header values are still in plain text (written before they were sealed).
pub async fn with_plain_headers(
    conn: Conn<'_>,
) -> sqlx::Result<Vec<(ServiceId, Json<BTreeMap<String, String>>)>> {
    on_conn!(conn, c => sqlx::query_as("SELECT id, headers FROM mcp_services WHERE headers <> '{}'")
        .fetch_all(c)
        .await)
}

/// Every service's sealed header values, for re-sealing under a new key.
pub async fn with_sealed_headers(conn: Conn<'_>) -> sqlx::Result<Vec<(ServiceId, Json<Vec<SealedHeader>>)>> {
    on_conn!(conn, c => sqlx::query_as("SELECT id, sealed_headers FROM mcp_services WHERE sealed_headers <> '[]'")
        .fetch_all(c)
        .await)
}

/// Replaces a service's header values with sealed ones (and empties the plain ones), if the
/// sealed values are still `before`; false when the service changed meanwhile.
pub async fn replace_sealed_headers(
    conn: Conn<'_>,
    id: ServiceId,
    before: &[SealedHeader],
    after: &[SealedHeader],
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE mcp_services SET sealed_headers = $3, headers = '{}' WHERE id = $1 AND sealed_headers = $2",
        id,
        Json(before),
        Json(after)
    )
}

/// Enabled services the organization's members can use.
pub async fn count_available(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<i64> {
    let (n,): (i64,) = on_conn!(conn, c => sqlx::query_as(
        "SELECT COUNT(*) FROM mcp_services WHERE is_enabled = TRUE AND deleted_at IS NULL \
         AND (organization_id = $1 OR (organization_id IS NULL AND is_public = TRUE))",
    )
    .bind(organization_id)
    .fetch_one(c)
    .await)?;
    Ok(n)
}
