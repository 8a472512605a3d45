//! The `user_tokens` table: each user's sealed credential per service name.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::ids::{OrgId, UserId};
use crate::{execute, execute_one, on_conn};

/// What the tokens page shows: never the token.
#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub service_name: String,
    pub last4: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A sealed token with the row it is bound to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedRow {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub service_name: String,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub last_used_at: Option<DateTime<Utc>>,
}

const SEALED_COLUMNS: &str = "id, organization_id, user_id, service_name, ciphertext, key_id, last_used_at";

pub struct NewToken<'a> {
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub service_name: &'a str,
    pub ciphertext: &'a [u8],
    pub key_id: &'a str,
    pub last4: &'a str,
}

/// Stores or replaces the user's token for a service; true when it replaced one.
pub async fn upsert(conn: Conn<'_>, token: NewToken<'_>, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let replaced: Option<(Uuid,)> = on_conn!(conn, c => {
        let existing: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM user_tokens WHERE organization_id = $1 AND user_id = $2 AND service_name = $3",
        )
        .bind(token.organization_id)
        .bind(token.user_id)
        .bind(token.service_name)
        .fetch_optional(&mut *c)
        .await?;
        match existing {
            Some((id,)) => {
                sqlx::query(
                    "UPDATE user_tokens SET ciphertext = $2, key_id = $3, last4 = $4, updated_at = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(token.ciphertext)
                .bind(token.key_id)
                .bind(token.last4)
                .bind(now)
                .execute(&mut *c)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO user_tokens (id, organization_id, user_id, service_name, ciphertext, key_id, \
                     last4, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(Uuid::now_v7())
                .bind(token.organization_id)
                .bind(token.user_id)
                .bind(token.service_name)
                .bind(token.ciphertext)
                .bind(token.key_id)
                .bind(token.last4)
                .bind(now)
                .execute(&mut *c)
                .await?;
            }
        }
        Ok::<_, sqlx::Error>(existing)
    })?;
    Ok(replaced.is_some())
}

pub async fn list_for_user(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
) -> sqlx::Result<Vec<TokenRow>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT service_name, last4, created_at, updated_at, last_used_at FROM user_tokens \
         WHERE organization_id = $1 AND user_id = $2 ORDER BY service_name",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_all(c)
    .await)
}

pub async fn delete(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
    service_name: &str,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "DELETE FROM user_tokens WHERE organization_id = $1 AND user_id = $2 AND service_name = $3",
        organization_id,
        user_id,
        service_name
    )
}

pub async fn find_sealed(
    conn: Conn<'_>,
    organization_id: OrgId,
    user_id: UserId,
    service_name: &str,
) -> sqlx::Result<Option<SealedRow>> {
    let sql = format!(
        "SELECT {SEALED_COLUMNS} FROM user_tokens WHERE organization_id = $1 AND user_id = $2 AND service_name = $3"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
    .bind(organization_id)
    .bind(user_id)
    .bind(service_name)
    .fetch_optional(c)
    .await)
}

/// The next rows, in id order after `after`, still sealed under a key other than `key_id`.
pub async fn sealed_under_other_keys(
    conn: Conn<'_>,
    key_id: &str,
    after: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<SealedRow>> {
    let sql = format!(
        "SELECT {SEALED_COLUMNS} FROM user_tokens WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
    .bind(key_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await)
}

pub async fn count_under_other_keys(conn: Conn<'_>, key_id: &str) -> sqlx::Result<i64> {
    on_conn!(conn, c => sqlx::query_scalar("SELECT COUNT(*) FROM user_tokens WHERE key_id <> $1")
        .bind(key_id)
        .fetch_one(c)
        .await)
}

/// Swaps in a re-sealed token, unless the row changed since it was read.
pub async fn replace_sealed(
    conn: Conn<'_>,
    id: Uuid,
    old_key_id: &str,
    old_ciphertext: &[u8],
    ciphertext: &[u8],
    key_id: &str,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE user_tokens SET ciphertext = $4, key_id = $5 WHERE id = $1 AND key_id = $2 AND ciphertext = $3",
        id,
        old_key_id,
        old_ciphertext,
        ciphertext,
        key_id
    )
}

/// Records use at most once a minute per token, and only ever forward in time.
pub async fn touch(conn: Conn<'_>, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(conn, "UPDATE user_tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)", id, now, now - super::LAST_USE_INTERVAL).map(drop)
}
