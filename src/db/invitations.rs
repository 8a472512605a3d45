//! The `invitations` table: single-use links, found by the SHA-256 of their token.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::domain::Role;
use crate::ids::{OrgId, UserId};
use crate::{execute, execute_one, on_conn};

#[derive(Debug, sqlx::FromRow)]
pub struct PendingInvitation {
    pub id: Uuid,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub invited_by_email: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub organization_name: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Invitation {
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

pub struct NewInvitation<'a> {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub email: &'a str,
    pub role: Role,
    pub token_hash: &'a [u8],
    pub invited_by: UserId,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(conn: Conn<'_>, invitation: NewInvitation<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(conn, "INSERT INTO invitations (id, organization_id, email, role, token_hash, invited_by, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", invitation.id, invitation.organization_id, invitation.email, invitation.role.as_str(), invitation.token_hash, invitation.invited_by, invitation.expires_at, now).map(drop)
}

pub async fn list_pending(
    conn: Conn<'_>,
    organization_id: OrgId,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<PendingInvitation>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT i.id, i.email, i.role, u.email AS invited_by_email, i.expires_at, i.created_at \
         FROM invitations i LEFT JOIN users u ON u.id = i.invited_by \
         WHERE i.organization_id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > $2 \
         ORDER BY i.created_at DESC LIMIT 500",
    )
    .bind(organization_id)
    .bind(now)
    .fetch_all(c)
    .await)
}

/// Whether the organization already has a usable invitation for this email.
pub async fn pending_for_email(
    conn: Conn<'_>,
    organization_id: OrgId,
    email: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let row: Option<(i32,)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT 1 FROM invitations WHERE organization_id = $1 AND email = $2 AND accepted_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $3 LIMIT 1",
    )
    .bind(organization_id)
    .bind(email)
    .bind(now)
    .fetch_optional(c)
    .await)?;
    Ok(row.is_some())
}

pub async fn find_by_token_hash(conn: Conn<'_>, token_hash: &[u8]) -> sqlx::Result<Option<Invitation>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT i.id, i.organization_id, o.name AS organization_name, i.email, i.role, i.expires_at, \
         i.accepted_at, i.revoked_at FROM invitations i JOIN organizations o ON o.id = i.organization_id \
         WHERE i.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)
}

/// Uses the invitation up; false when it was no longer usable (used, revoked or expired).
pub async fn accept(conn: Conn<'_>, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE invitations SET accepted_at = $2 WHERE id = $1 AND accepted_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $2",
        id,
        now
    )
}

/// The email of a pending invitation of the organization.
pub async fn pending_email(conn: Conn<'_>, organization_id: OrgId, id: Uuid) -> sqlx::Result<Option<String>> {
    let email: Option<(String,)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT email FROM invitations WHERE organization_id = $1 AND id = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(organization_id)
    .bind(id)
    .fetch_optional(c)
    .await)?;
    Ok(email.map(|(e,)| e))
}

/// Revokes a pending invitation of the organization; false when there is none.
pub async fn revoke(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    let email: Option<(String,)> = on_conn!(conn, c => sqlx::query_as(
        "UPDATE invitations SET revoked_at = $3 WHERE organization_id = $1 AND id = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL RETURNING email",
    )
    .bind(organization_id)
    .bind(id)
    .bind(now)
    .fetch_optional(c)
    .await)?;
    Ok(email.map(|(e,)| e))
}
