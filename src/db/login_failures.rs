//! Failed sign-ins per email address, with the client's IP and device cookie, kept for an hour,
//! for throttling (`auth::throttle`). Shared by every instance through the database.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::auth::throttle::Failure;
use crate::domain::Email;
use crate::{execute, on_conn};

pub async fn record(
    conn: Conn<'_>,
    email: &Email,
    ip: Option<&str>,
    device: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(
        conn,
        "INSERT INTO login_failures (id, email, ip, device, created_at) VALUES ($1, $2, $3, $4, $5)",
        Uuid::now_v7(),
        email.as_str(),
        ip,
        device,
        now
    )
    .map(drop)
}

/// This address's failures since `since`, oldest first.
pub async fn since(conn: Conn<'_>, email: &Email, since: DateTime<Utc>) -> sqlx::Result<Vec<Failure>> {
    let rows: Vec<(DateTime<Utc>, Option<String>, Option<String>)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT created_at, ip, device FROM login_failures WHERE email = $1 AND created_at > $2 \
         ORDER BY created_at LIMIT 1000",
    )
    .bind(email.as_str())
    .bind(since)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(|(at, ip, device)| Failure { at, ip, device }).collect())
}

/// Forgets the failures of the client that just signed in: its device's, or its address's
/// without a device. Others' failures keep counting against them.
pub async fn clear(
    conn: Conn<'_>,
    email: &Email,
    ip: Option<&str>,
    device: Option<&str>,
) -> sqlx::Result<()> {
    execute!(
        conn,
        "DELETE FROM login_failures WHERE email = $1 \
         AND (device = $3 OR ($3 IS NULL AND device IS NULL AND ip = $2))",
        email.as_str(),
        ip,
        device
    )
    .map(drop)
}

pub async fn delete_before(conn: Conn<'_>, before: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = execute!(conn, "DELETE FROM login_failures WHERE created_at <= $1", before)?;
    Ok(done)
}
