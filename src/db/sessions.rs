//! The `sessions` table behind the dashboard's session store. Rows are found by the SHA-256
//! of the cookie's key; the key itself is never stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::on_conn;

pub struct NewSession<'a> {
    pub id: Uuid,
    pub key_hash: &'a [u8],
    pub user_id: Option<Uuid>,
    pub state: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct StoredSession {
    pub id: Uuid,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// A session as its owner sees it on the account page.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: Uuid,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

pub async fn insert(conn: Conn<'_>, s: NewSession<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO sessions (id, key_hash, user_id, state, ip, user_agent, created_at, \
         last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(s.id)
    .bind(s.key_hash)
    .bind(s.user_id)
    .bind(s.state)
    .bind(s.ip)
    .bind(s.user_agent)
    .bind(now)
    .bind(s.expires_at)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

pub async fn find_by_key_hash(conn: Conn<'_>, key_hash: &[u8]) -> sqlx::Result<Option<StoredSession>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, state, created_at, last_seen_at FROM sessions WHERE key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(c)
    .await)
}

pub async fn touch(
    conn: Conn<'_>,
    id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Replaces the state of the session with this key; false when the row is gone.
pub async fn update_state(
    conn: Conn<'_>,
    key_hash: &[u8],
    user_id: Option<Uuid>,
    state: &str,
) -> sqlx::Result<bool> {
    let done = on_conn!(conn, c => sqlx::query(
        "UPDATE sessions SET state = $2, user_id = $3 WHERE key_hash = $1",
    )
    .bind(key_hash)
    .bind(state)
    .bind(user_id)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(done == 1)
}

pub async fn delete_by_key_hash(conn: Conn<'_>, key_hash: &[u8]) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE key_hash = $1")
        .bind(key_hash)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(())
}

pub async fn delete_by_id(conn: Conn<'_>, id: Uuid) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(())
}

pub async fn list_for_user(
    conn: Conn<'_>,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<SessionInfo>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, ip, user_agent, created_at, last_seen_at FROM sessions \
         WHERE user_id = $1 AND expires_at > $2 ORDER BY last_seen_at DESC LIMIT 100",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(c)
    .await)
}

/// Ends one of the user's sessions; false when the user has no session with that id.
pub async fn delete_for_user(conn: Conn<'_>, user_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let done = on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
        .bind(user_id)
        .bind(id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(done == 1)
}

pub async fn delete_others_for_user(conn: Conn<'_>, user_id: Uuid, keep: Uuid) -> sqlx::Result<u64> {
    let done = on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(done)
}

pub async fn delete_all_for_user(conn: Conn<'_>, user_id: Uuid) -> sqlx::Result<u64> {
    let done = on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(done)
}

pub async fn delete_expired(conn: Conn<'_>, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = on_conn!(conn, c => sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(done)
}
