//! The `sessions` table behind the dashboard's session store. Rows are found by the SHA-256
//! of the cookie's key; the key itself is never stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::ids::UserId;
use crate::{execute, execute_one, on_conn};

pub struct NewSession<'a> {
    pub id: Uuid,
    pub key_hash: &'a [u8],
    pub user_id: Option<UserId>,
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
    execute!(
        conn,
        "INSERT INTO sessions (id, key_hash, user_id, state, ip, user_agent, created_at, \
         last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        s.id,
        s.key_hash,
        s.user_id,
        s.state,
        s.ip,
        s.user_agent,
        now,
        s.expires_at
    )
    .map(drop)
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
    execute!(
        conn,
        "UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1",
        id,
        now,
        expires_at
    )
    .map(drop)
}

/// Replaces the state of the session with this key; false when the row is gone.
pub async fn update_state(
    conn: Conn<'_>,
    key_hash: &[u8],
    user_id: Option<UserId>,
    state: &str,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE sessions SET state = $2, user_id = $3 WHERE key_hash = $1",
        key_hash,
        state,
        user_id
    )
}

pub async fn delete_by_key_hash(conn: Conn<'_>, key_hash: &[u8]) -> sqlx::Result<()> {
    execute!(conn, "DELETE FROM sessions WHERE key_hash = $1", key_hash).map(drop)
}

pub async fn delete_by_id(conn: Conn<'_>, id: Uuid) -> sqlx::Result<()> {
    execute!(conn, "DELETE FROM sessions WHERE id = $1", id).map(drop)
}

pub async fn list_for_user(
    conn: Conn<'_>,
    user_id: UserId,
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
pub async fn delete_for_user(conn: Conn<'_>, user_id: UserId, id: Uuid) -> sqlx::Result<bool> {
    execute_one!(conn, "DELETE FROM sessions WHERE user_id = $1 AND id = $2", user_id, id)
}

pub async fn delete_others_for_user(conn: Conn<'_>, user_id: UserId, keep: Uuid) -> sqlx::Result<u64> {
    let done = execute!(conn, "DELETE FROM sessions WHERE user_id = $1 AND id <> $2", user_id, keep)?;
    Ok(done)
}

pub async fn delete_all_for_user(conn: Conn<'_>, user_id: UserId) -> sqlx::Result<u64> {
    let done = execute!(conn, "DELETE FROM sessions WHERE user_id = $1", user_id)?;
    Ok(done)
}

pub async fn delete_expired(conn: Conn<'_>, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = execute!(conn, "DELETE FROM sessions WHERE expires_at <= $1", now)?;
    Ok(done)
}
