//! Failed sign-ins per email address, kept for an hour, for per-account throttling.
//! Shared by every instance through the database.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::domain::Email;
use crate::on_conn;

pub async fn record(conn: Conn<'_>, email: &Email, ip: Option<&str>, now: DateTime<Utc>) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO login_failures (id, email, ip, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(email.as_str())
    .bind(ip)
    .bind(now)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Times of this address's failures since `since`, oldest first.
pub async fn since(conn: Conn<'_>, email: &Email, since: DateTime<Utc>) -> sqlx::Result<Vec<DateTime<Utc>>> {
    let rows: Vec<(DateTime<Utc>,)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT created_at FROM login_failures WHERE email = $1 AND created_at > $2 \
         ORDER BY created_at LIMIT 1000",
    )
    .bind(email.as_str())
    .bind(since)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

pub async fn clear(conn: Conn<'_>, email: &Email) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query("DELETE FROM login_failures WHERE email = $1")
        .bind(email.as_str())
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(())
}

pub async fn delete_before(conn: Conn<'_>, before: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = on_conn!(conn, c => sqlx::query("DELETE FROM login_failures WHERE created_at <= $1")
        .bind(before)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
    Ok(done)
}
