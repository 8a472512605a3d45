//! The `token_keys` table: wrapped keys for sealing service tokens.

use chrono::{DateTime, Utc};

use super::Conn;
use crate::{execute, on_conn};

pub async fn insert(conn: Conn<'_>, id: &str, wrapped: &[u8], now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(
        conn,
        "INSERT INTO token_keys (id, wrapped_key, created_at) VALUES ($1, $2, $3)",
        id,
        wrapped,
        now
    )
    .map(drop)
}

/// The newest key: the one new tokens are sealed with.
pub async fn current(conn: Conn<'_>) -> sqlx::Result<Option<(String, Vec<u8>)>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, wrapped_key FROM token_keys ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(c)
    .await)
}

pub async fn find(conn: Conn<'_>, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
    let row: Option<(Vec<u8>,)> = on_conn!(conn, c => sqlx::query_as("SELECT wrapped_key FROM token_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await)?;
    Ok(row.map(|(wrapped,)| wrapped))
}
