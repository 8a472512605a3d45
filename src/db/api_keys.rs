//! The `api_keys` table. Keys are found by the SHA-256 of the full key through a unique index;
//! the dashboard reads them scoped to the organization (and to the owner for their own list).

use chrono::{DateTime, Utc};

use super::Conn;
use crate::domain::Role;
use crate::ids::{KeyId, OrgId, UserId};
use crate::{execute, execute_one, on_conn};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: KeyId,
    pub user_id: UserId,
    pub owner_email: String,
    pub name: String,
    pub display_key: String,
    pub scopes: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rolled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub rate_limit_per_minute: Option<i32>,
    /// The services and tools the key is narrowed to (`KeyReach`); `None`: all.
    pub reach: Option<String>,
}

/// Where a key stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    /// Rolled: it works until its grace time ends.
    InGrace,
    /// Rolled, and its grace time is over.
    Replaced,
    Expired,
    Revoked,
}

impl KeyStatus {
    /// Whether the key still lets its holder in.
    pub fn works(self) -> bool {
        matches!(self, KeyStatus::Active | KeyStatus::InGrace)
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyStatus::Active => "active",
            KeyStatus::InGrace => "replaced, in grace",
            KeyStatus::Replaced => "replaced",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        })
    }
}

impl serde::Serialize for KeyStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl KeyRow {
    /// What the key reaches, in words.
    pub fn reach_text(&self) -> String {
        crate::catalog::tool_policy::KeyReach::from_stored(self.reach.as_deref()).describe()
    }

    pub fn status(&self, now: DateTime<Utc>) -> KeyStatus {
        match (self.revoked_at, self.expires_at, self.rolled_at) {
            (Some(_), _, _) => KeyStatus::Revoked,
            (None, Some(expires), Some(_)) if expires <= now => KeyStatus::Replaced,
            (None, Some(expires), _) if expires <= now => KeyStatus::Expired,
            (None, _, Some(_)) => KeyStatus::InGrace,
            _ => KeyStatus::Active,
        }
    }
}

/// What authentication needs about a key and its owner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyAuth {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub scopes: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rolled_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub owner_active: bool,
    #[sqlx(try_from = "String")]
    pub owner_role: Role,
    /// The key's own rate limit in requests per minute; `None`: the plan's.
    pub rate_limit_per_minute: Option<i32>,
    /// The organization's plan.
    pub plan: String,
    /// The services and tools the key is narrowed to (`KeyReach`); `None`: all.
    pub reach: Option<String>,
}

pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub name: &'a str,
    pub key_hash: &'a [u8],
    pub display_key: &'a str,
    pub scopes: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub rolled_from_id: Option<KeyId>,
    /// Requests per minute; `None`: the plan's default.
    pub rate_limit_per_minute: Option<i32>,
    /// `KeyReach::to_stored`: `None` reaches every service.
    pub reach: Option<&'a str>,
}

pub async fn insert(conn: Conn<'_>, key: NewKey<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(
        conn,
        "INSERT INTO api_keys (id, organization_id, user_id, name, key_hash, display_key, scopes, \
         expires_at, rolled_from_id, rate_limit_per_minute, created_at, reach) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        key.id,
        key.organization_id,
        key.user_id,
        key.name,
        key.key_hash,
        key.display_key,
        key.scopes,
        key.expires_at,
        key.rolled_from_id,
        key.rate_limit_per_minute,
        now,
        key.reach
    )
    .map(drop)
}

const SELECT_ROW: &str = "SELECT k.id, k.user_id, u.email AS owner_email, k.name, k.display_key, k.scopes, \
     k.expires_at, k.last_used_at, k.revoked_at, k.rolled_at, k.created_at, k.rate_limit_per_minute, \
     k.reach FROM api_keys k JOIN users u ON u.id = k.user_id";

/// The user's own keys, newest first.
pub async fn list_for_user(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
) -> sqlx::Result<Vec<KeyRow>> {
    let sql = format!(
        "{SELECT_ROW} WHERE k.organization_id = $1 AND k.user_id = $2 ORDER BY k.created_at DESC LIMIT 500"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(user_id)
        .fetch_all(c)
        .await)
}

/// Every key of the organization, newest first.
pub async fn list_for_organization(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<Vec<KeyRow>> {
    let sql = format!("{SELECT_ROW} WHERE k.organization_id = $1 ORDER BY k.created_at DESC LIMIT 1000");
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .fetch_all(c)
        .await)
}

/// One key of the organization; with `owner`, only if that user owns it.
/// One of the user's own keys.
pub async fn find_mine(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
    id: KeyId,
) -> sqlx::Result<Option<KeyRow>> {
    let sql = format!("{SELECT_ROW} WHERE k.organization_id = $1 AND k.id = $2 AND k.user_id = $3");
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(id)
        .bind(user_id)
        .fetch_optional(c)
        .await)
}

/// Any key of the organization, whoever owns it (for its admins).
pub async fn find_in_organization(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: KeyId,
) -> sqlx::Result<Option<KeyRow>> {
    let sql = format!("{SELECT_ROW} WHERE k.organization_id = $1 AND k.id = $2");
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(c)
        .await)
}

/// Revokes a key that is not revoked yet; false when there was nothing to revoke.
pub async fn revoke(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: KeyId,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE api_keys SET revoked_at = $3 WHERE organization_id = $1 AND id = $2 AND revoked_at IS NULL",
        organization_id,
        id,
        now
    )
}

/// How many of a member's keys still work (or will, once rolled ones' grace time is counted):
/// what a deactivation would revoke.
pub async fn count_unrevoked_for_user(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
) -> sqlx::Result<i64> {
    let (count,): (i64,) = on_conn!(conn, c => sqlx::query_as(
        "SELECT COUNT(*) FROM api_keys WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_one(c)
    .await)?;
    Ok(count)
}

/// Revokes every key of a member not yet revoked (rolled ones in their grace time too); how many.
pub async fn revoke_all_for_user(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    execute!(
        conn,
        "UPDATE api_keys SET revoked_at = $3 WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        organization_id,
        user_id,
        now
    )
}

/// Marks an active key as rolled, its grace time starting now; false when it is no longer
/// active (revoked, or rolled by a concurrent request), so a key is replaced only once.
pub async fn mark_rolled(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: KeyId,
    now: DateTime<Utc>,
    grace_until: DateTime<Utc>,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE api_keys SET rolled_at = $3, \
         expires_at = CASE WHEN expires_at IS NULL OR expires_at > $4 THEN $4 ELSE expires_at END \
         WHERE organization_id = $1 AND id = $2 AND rolled_at IS NULL AND revoked_at IS NULL",
        organization_id,
        id,
        now,
        grace_until
    )
}

pub async fn by_hash(conn: Conn<'_>, key_hash: &[u8]) -> sqlx::Result<Option<KeyAuth>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT k.id, k.organization_id, k.user_id, k.scopes, k.expires_at, k.revoked_at, k.rolled_at, \
         k.last_used_at, u.is_active AS owner_active, u.role AS owner_role, k.rate_limit_per_minute, o.plan, \
         k.reach FROM api_keys k JOIN users u ON u.id = k.user_id JOIN organizations o ON o.id = k.organization_id \
         WHERE k.key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(c)
    .await)
}

/// Records use at most once a minute per key, and only ever forward in time.
pub async fn touch(conn: Conn<'_>, id: KeyId, now: DateTime<Utc>) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
        id,
        now,
        now - super::LAST_USE_INTERVAL
    )
}
