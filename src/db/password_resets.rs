//! The `password_resets` table: single-use links to choose a new password, found by the
//! SHA-256 of their token. Issuing a link for a member makes their earlier unused ones void.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::ids::{OrgId, UserId};
use crate::{execute, execute_one, on_conn};

/// A link with the member it is for.
#[derive(Debug, sqlx::FromRow)]
pub struct PasswordReset {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub email: String,
    pub is_active: bool,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl PasswordReset {
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        self.used_at.is_none() && self.expires_at > now && self.is_active
    }
}

pub struct NewPasswordReset<'a> {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub token_hash: &'a [u8],
    /// `None` when the operator issued it from the command line.
    pub issued_by: Option<UserId>,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new link for the member; their earlier unused links stop working.
pub async fn issue(mut conn: Conn<'_>, reset: NewPasswordReset<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(
        conn.reborrow(),
        "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        reset.user_id,
        now
    )?;
    execute!(conn, "INSERT INTO password_resets (id, organization_id, user_id, token_hash, issued_by, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)", reset.id, reset.organization_id, reset.user_id, reset.token_hash, reset.issued_by, reset.expires_at, now).map(drop)
}

pub async fn find_by_token_hash(conn: Conn<'_>, token_hash: &[u8]) -> sqlx::Result<Option<PasswordReset>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT r.id, r.organization_id, r.user_id, u.email, u.is_active, r.expires_at, r.used_at \
         FROM password_resets r JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)
}

/// Uses the link up; false when it was no longer usable (used, void or expired).
pub async fn use_up(conn: Conn<'_>, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE password_resets SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
        id,
        now
    )
}
