//! The `organizations` table and the one-row `installation` marker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::Conn;
use crate::ids::OrgId;
use crate::{execute, execute_one, on_conn};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub slug: String,
    pub contact_email: Option<String>,
    pub plan: String,
    pub settings: Json<Settings>,
    pub created_at: DateTime<Utc>,
}

/// The organization's settings, stored as JSON but edited as typed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Preselected expiry for new API keys: 30, 90 or 365 days.
    pub default_key_expiry_days: u16,
    /// How long request logs (and hourly roll-ups) are kept.
    pub log_retention_days: u16,
    /// How long daily and monthly roll-ups (the usage charts) are kept.
    pub rollup_retention_days: u16,
    /// How long the audit trail is kept.
    pub audit_retention_days: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_key_expiry_days: 365,
            log_retention_days: 90,
            rollup_retention_days: 3 * 365,
            audit_retention_days: 365,
        }
    }
}

pub async fn update(
    conn: Conn<'_>,
    id: OrgId,
    name: &str,
    contact_email: &str,
    settings: Settings,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(conn, "UPDATE organizations SET name = $2, contact_email = $3, settings = $4, updated_at = $5 WHERE id = $1", id, name, contact_email, Json(settings), now).map(drop)
}

pub async fn insert(
    conn: Conn<'_>,
    id: OrgId,
    name: &str,
    slug: &str,
    contact_email: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(
        conn,
        "INSERT INTO organizations (id, name, slug, contact_email, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
        id,
        name,
        slug,
        contact_email,
        now
    )
    .map(drop)
}

pub async fn find(conn: Conn<'_>, id: OrgId) -> sqlx::Result<Option<Organization>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, name, slug, contact_email, plan, settings, created_at FROM organizations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(c)
    .await)
}

pub async fn find_by_slug(conn: Conn<'_>, slug: &str) -> sqlx::Result<Option<Organization>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, name, slug, contact_email, plan, settings, created_at FROM organizations WHERE slug = $1",
    )
    .bind(slug)
    .fetch_optional(c)
    .await)
}

/// The organization with this name (by its slug), created with `contact_email` when there is none.
pub async fn find_or_create(
    mut conn: Conn<'_>,
    name: &crate::domain::OrganizationName,
    contact_email: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<OrgId> {
    let slug = name.slug();
    if let Some(existing) = find_by_slug(conn.reborrow(), &slug).await? {
        return Ok(existing.id);
    }
    let id = OrgId::new();
    insert(conn, id, name.as_str(), &slug, contact_email, now).await?;
    Ok(id)
}

/// Marks the installation as set up. Returns false when it already was, which makes the
/// first-run setup happen exactly once even when two requests race.
pub async fn claim_installation(conn: Conn<'_>, now: DateTime<Utc>) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "INSERT INTO installation (id, completed_at) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        now
    )
}

/// Takes the organization's write lock for the rest of the transaction, so checks such as
/// "is this the last admin" cannot race with each other (row lock on PostgreSQL, the
/// database write lock on SQLite).
pub async fn lock(conn: Conn<'_>, id: OrgId) -> sqlx::Result<()> {
    execute!(conn, "UPDATE organizations SET updated_at = updated_at WHERE id = $1", id).map(drop)
}

/// Puts the organization on another plan.
pub async fn set_plan(conn: Conn<'_>, id: OrgId, plan: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
    execute_one!(conn, "UPDATE organizations SET plan = $2, updated_at = $3 WHERE id = $1", id, plan, now)
}

/// What the organization uses of its plan's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanUse {
    /// Active members and invitations still open.
    pub members: i64,
    /// The organization's own services (system services count against no plan).
    pub services: i64,
    /// Today's requests that count against the daily quota, as written so far.
    pub requests_today: i64,
}

pub async fn plan_use(conn: Conn<'_>, id: OrgId, now: DateTime<Utc>) -> sqlx::Result<PlanUse> {
    on_conn!(conn, c => {
        let (members, services, requests_today): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
             (SELECT COUNT(*) FROM users WHERE organization_id = $1 AND is_active = TRUE) \
             + (SELECT COUNT(*) FROM invitations WHERE organization_id = $1 AND accepted_at IS NULL \
                AND revoked_at IS NULL AND expires_at > $2), \
             (SELECT COUNT(*) FROM mcp_services WHERE organization_id = $1 AND deleted_at IS NULL), \
             COALESCE((SELECT requests FROM daily_requests WHERE organization_id = $1 AND day = $3), 0)",
        )
        .bind(id)
        .bind(now)
        .bind(now.date_naive())
        .fetch_one(c)
        .await?;
        Ok(PlanUse { members, services, requests_today })
    })
}

/// Every organization's retention settings.
pub async fn retention_settings(conn: Conn<'_>) -> sqlx::Result<Vec<(OrgId, Settings)>> {
    let rows: Vec<(OrgId, Json<Settings>)> =
        on_conn!(conn, c => sqlx::query_as("SELECT id, settings FROM organizations").fetch_all(c).await)?;
    Ok(rows.into_iter().map(|(id, settings)| (id, settings.0)).collect())
}
