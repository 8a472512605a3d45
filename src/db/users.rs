//! The `users` table. Lookups for the dashboard take the organization id from the session.

use chrono::{DateTime, Utc};

use super::Conn;
use crate::domain::{Email, Role};
use crate::ids::{OrgId, UserId};
use crate::{execute, execute_one, on_conn};

/// A member as the dashboard shows them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub organization_id: OrgId,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub is_active: bool,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The signed-in user with the organization they belong to, read once per request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionUser {
    pub id: UserId,
    pub organization_id: OrgId,
    pub organization_name: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub is_active: bool,
}

/// What sign-in needs to check a password.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: UserId,
    pub organization_id: OrgId,
    pub password_hash: String,
    pub is_active: bool,
}

pub struct NewUser<'a> {
    pub id: UserId,
    pub organization_id: OrgId,
    pub email: &'a Email,
    pub password_hash: &'a str,
    pub role: Role,
}

pub async fn insert(conn: Conn<'_>, user: NewUser<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(
        conn,
        "INSERT INTO users (id, organization_id, email, password_hash, role, is_active, \
         password_changed_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6, $6)",
        user.id,
        user.organization_id,
        user.email.as_str(),
        user.password_hash,
        user.role.as_str(),
        now
    )
    .map(drop)
}

pub async fn any_exists(conn: Conn<'_>) -> sqlx::Result<bool> {
    let row: Option<(i32,)> = on_conn!(conn, c => sqlx::query_as("SELECT 1 FROM users LIMIT 1")
        .fetch_optional(c)
        .await)?;
    Ok(row.is_some())
}

pub async fn credentials_by_email(conn: Conn<'_>, email: &Email) -> sqlx::Result<Option<Credentials>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, organization_id, password_hash, is_active FROM users WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(c)
    .await)
}

pub async fn password_hash(conn: Conn<'_>, id: UserId) -> sqlx::Result<Option<String>> {
    let row: Option<(String,)> = on_conn!(conn, c => sqlx::query_as(
        "SELECT password_hash FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|(hash,)| hash))
}

pub async fn session_user(conn: Conn<'_>, id: UserId) -> sqlx::Result<Option<SessionUser>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT u.id, u.organization_id, o.name AS organization_name, u.email, u.role, u.is_active \
         FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1",
    )
    .bind(id)
    .fetch_optional(c)
    .await)
}

pub async fn set_password_hash(
    conn: Conn<'_>,
    id: UserId,
    hash: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(
        conn,
        "UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3 WHERE id = $1",
        id,
        hash,
        now
    )
    .map(drop)
}

/// Replaces a hash made with older parameters; leaves `password_changed_at` alone.
pub async fn upgrade_password_hash(conn: Conn<'_>, id: UserId, hash: &str) -> sqlx::Result<()> {
    execute!(conn, "UPDATE users SET password_hash = $2 WHERE id = $1", id, hash).map(drop)
}

pub async fn record_login(conn: Conn<'_>, id: UserId, now: DateTime<Utc>) -> sqlx::Result<()> {
    execute!(conn, "UPDATE users SET last_login_at = $2 WHERE id = $1", id, now).map(drop)
}

pub async fn set_active(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: UserId,
    active: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    execute_one!(
        conn,
        "UPDATE users SET is_active = $3, updated_at = $4 WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        active,
        now
    )
}

pub async fn list_members(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<Vec<User>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, organization_id, email, role, is_active, last_login_at, created_at \
         FROM users WHERE organization_id = $1 ORDER BY email LIMIT 500",
    )
    .bind(organization_id)
    .fetch_all(c)
    .await)
}

/// Active members per role.
pub async fn count_active_by_role(
    conn: Conn<'_>,
    organization_id: OrgId,
) -> sqlx::Result<Vec<(String, i64)>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT role, COUNT(*) FROM users WHERE organization_id = $1 AND is_active = TRUE \
         GROUP BY role ORDER BY role",
    )
    .bind(organization_id)
    .fetch_all(c)
    .await)
}

/// Filters of the member directory.
pub struct MemberFilter<'a> {
    /// Part of the email, already lower-cased.
    pub query: &'a str,
    pub role: Option<Role>,
    pub active: Option<bool>,
    /// Keyset pagination: emails after this one.
    pub after: &'a str,
}

/// One page of the directory, ordered by email; `limit` + 1 rows tell whether more follow.
pub async fn search(
    conn: Conn<'_>,
    organization_id: OrgId,
    filter: &MemberFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<User>> {
    let pattern = super::like_pattern(filter.query, false);
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, organization_id, email, role, is_active, last_login_at, created_at FROM users \
         WHERE organization_id = $1 AND email LIKE $2 ESCAPE '\\' AND ($3 IS NULL OR role = $3) \
         AND ($4 IS NULL OR is_active = $4) AND email > $5 ORDER BY email LIMIT $6",
    )
    .bind(organization_id)
    .bind(&pattern)
    .bind(filter.role.map(Role::as_str))
    .bind(filter.active)
    .bind(filter.after)
    .bind(limit)
    .fetch_all(c)
    .await)
}

pub async fn find_member(conn: Conn<'_>, organization_id: OrgId, id: UserId) -> sqlx::Result<Option<User>> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, organization_id, email, role, is_active, last_login_at, created_at FROM users \
         WHERE organization_id = $1 AND id = $2",
    )
    .bind(organization_id)
    .bind(id)
    .fetch_optional(c)
    .await)
}

pub async fn set_role(
    conn: Conn<'_>,
    organization_id: OrgId,
    id: UserId,
    role: Role,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    execute!(
        conn,
        "UPDATE users SET role = $3, updated_at = $4 WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        role.as_str(),
        now
    )
    .map(drop)
}

pub async fn count_active_admins(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<i64> {
    on_conn!(conn, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE organization_id = $1 AND role = 'admin' AND is_active = TRUE",
    )
    .bind(organization_id)
    .fetch_one(c)
    .await)
}

/// Whether the organization has a member (active or not) with this email.
pub async fn member_email_exists(conn: Conn<'_>, organization_id: OrgId, email: &str) -> sqlx::Result<bool> {
    let row: Option<(i32,)> = on_conn!(conn, c => sqlx::query_as("SELECT 1 FROM users WHERE organization_id = $1 AND email = $2")
        .bind(organization_id)
        .bind(email)
        .fetch_optional(c)
        .await)?;
    Ok(row.is_some())
}

/// Whether a write failed because another account has the email (the unique index, by the name
/// each backend gives it).
pub fn email_taken(err: &sqlx::Error) -> bool {
    matches!(super::unique_violation(err).as_deref(), Some("users_email_key" | "users.email"))
}

/// Whether any organization has an account with this email.
pub async fn email_exists(conn: Conn<'_>, email: &str) -> sqlx::Result<bool> {
    let row: Option<(i32,)> = on_conn!(conn, c => sqlx::query_as("SELECT 1 FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(c)
        .await)?;
    Ok(row.is_some())
}
