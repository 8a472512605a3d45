//! The `audit_logs` table: who did what to which thing, written in the same transaction as
//! the change it records.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Conn, like_pattern};
use crate::ids::{OrgId, UserId};
use crate::{execute, on_conn};

/// What an audit row records someone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SignIn,
    SignInFailed,
    SignOut,
    PasswordChanged,
    SessionEnded,
    OrganizationCreated,
    OrganizationUpdated,
    /// The operator moved the organization to another plan (`org set-plan`).
    PlanChanged,
    InvitationCreated,
    InvitationRevoked,
    InvitationAccepted,
    MemberRoleChanged,
    MemberDeactivated,
    MemberReactivated,
    /// An admin erased the member's request logs.
    MemberLogsErased,
    /// An admin (or the operator) issued a link to choose a new password.
    PasswordResetIssued,
    /// A member chose a new password with such a link.
    PasswordReset,
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyRolled,
    ServiceCreated,
    ServiceUpdated,
    ServiceDeleted,
    /// An admin set which tools of a service are offered, and to whom.
    ToolPolicyChanged,
    ServiceTokenCreated,
    ServiceTokenReplaced,
    ServiceTokenDeleted,
}

impl Action {
    /// As stored, and as the audit page filters by prefix (`api_key.`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SignIn => "auth.sign_in",
            Action::SignInFailed => "auth.sign_in_failed",
            Action::SignOut => "auth.sign_out",
            Action::PasswordChanged => "account.password_changed",
            Action::SessionEnded => "account.session_ended",
            Action::OrganizationCreated => "organization.created",
            Action::OrganizationUpdated => "organization.updated",
            Action::PlanChanged => "organization.plan_changed",
            Action::InvitationCreated => "invitation.created",
            Action::InvitationRevoked => "invitation.revoked",
            Action::InvitationAccepted => "invitation.accepted",
            Action::MemberRoleChanged => "member.role_changed",
            Action::MemberDeactivated => "member.deactivated",
            Action::MemberReactivated => "member.reactivated",
            Action::MemberLogsErased => "member.logs_erased",
            Action::PasswordResetIssued => "member.password_reset_issued",
            Action::PasswordReset => "account.password_reset",
            Action::ApiKeyCreated => "api_key.created",
            Action::ApiKeyRevoked => "api_key.revoked",
            Action::ApiKeyRolled => "api_key.rolled",
            Action::ServiceCreated => "service.created",
            Action::ServiceUpdated => "service.updated",
            Action::ServiceDeleted => "service.deleted",
            Action::ToolPolicyChanged => "service.tool_policy_changed",
            Action::ServiceTokenCreated => "service_token.created",
            Action::ServiceTokenReplaced => "service_token.replaced",
            Action::ServiceTokenDeleted => "service_token.deleted",
        }
    }

    /// The kind of thing the row's target id names.
    pub fn target_type(self) -> Option<&'static str> {
        Some(match self {
            Action::SignIn | Action::SignInFailed | Action::SignOut => return None,
            Action::PasswordChanged
            | Action::MemberRoleChanged
            | Action::MemberDeactivated
            | Action::MemberReactivated
            | Action::MemberLogsErased
            | Action::PasswordResetIssued
            | Action::PasswordReset => "user",
            Action::SessionEnded => "session",
            Action::OrganizationCreated | Action::OrganizationUpdated | Action::PlanChanged => "organization",
            Action::InvitationCreated | Action::InvitationRevoked | Action::InvitationAccepted => {
                "invitation"
            }
            Action::ApiKeyCreated | Action::ApiKeyRevoked | Action::ApiKeyRolled => "api_key",
            Action::ServiceCreated
            | Action::ServiceUpdated
            | Action::ServiceDeleted
            | Action::ToolPolicyChanged => "service",
            Action::ServiceTokenCreated | Action::ServiceTokenReplaced | Action::ServiceTokenDeleted => {
                "service_token"
            }
        })
    }
}

pub struct Entry<'a> {
    pub organization_id: Option<OrgId>,
    pub actor_user_id: Option<UserId>,
    pub actor_email: Option<&'a str>,
    pub action: Action,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub success: bool,
}

impl<'a> Entry<'a> {
    pub fn new(action: Action) -> Entry<'a> {
        Entry {
            organization_id: None,
            actor_user_id: None,
            actor_email: None,
            action,
            target_id: None,
            before: None,
            after: None,
            ip: None,
            user_agent: None,
            success: true,
        }
    }
}

/// The value with every secret replaced (names and formats of DESIGN.md section 7).
pub fn without_secrets(mut value: Value) -> Value {
    crate::telemetry::redact::redact_json(&mut value, &[]);
    value
}

pub async fn record(conn: Conn<'_>, entry: Entry<'_>, now: DateTime<Utc>) -> sqlx::Result<()> {
    let before = entry.before.map(|v| Json(without_secrets(v)));
    let after = entry.after.map(|v| Json(without_secrets(v)));
    execute!(
        conn,
        "INSERT INTO audit_logs (id, organization_id, actor_user_id, actor_email, action, target_type, \
         target_id, before_state, after_state, ip, user_agent, success, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        Uuid::now_v7(),
        entry.organization_id,
        entry.actor_user_id,
        entry.actor_email,
        entry.action.as_str(),
        entry.action.target_type(),
        entry.target_id,
        before,
        after,
        entry.ip,
        entry.user_agent,
        entry.success,
        now
    )
    .map(drop)
}

/// An audit row as the audit page shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_email: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub before_state: Option<Json<Value>>,
    pub after_state: Option<Json<Value>>,
    pub ip: Option<String>,
    pub success: bool,
    pub created_at: DateTime<Utc>,
}

pub struct AuditFilter<'a> {
    /// Part of the actor's email, lower-cased.
    pub actor: &'a str,
    /// An action, or the start of one (`member.`).
    pub action: &'a str,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Keyset pagination: rows older than this (time, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// One page of the organization's audit trail, newest first; `limit` + 1 rows tell whether
/// more follow.
pub async fn search(
    conn: Conn<'_>,
    organization_id: OrgId,
    filter: &AuditFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    let (before_time, before_id) = filter.before.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    on_conn!(conn, c => sqlx::query_as(
        "SELECT id, actor_email, action, target_type, target_id, before_state, after_state, ip, success, created_at \
         FROM audit_logs WHERE organization_id = $1 \
         AND COALESCE(actor_email, '') LIKE $2 ESCAPE '\\' AND action LIKE $3 ESCAPE '\\' \
         AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5) \
         AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND id < $7)) \
         ORDER BY created_at DESC, id DESC LIMIT $8",
    )
    .bind(organization_id)
    .bind(like_pattern(filter.actor, false))
    .bind(like_pattern(filter.action, true))
    .bind(filter.from)
    .bind(filter.until)
    .bind(before_time)
    .bind(before_id)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Deletes the organization's audit entries made before `cutoff`.
pub async fn delete_before(
    conn: Conn<'_>,
    organization_id: OrgId,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<u64> {
    execute!(
        conn,
        "DELETE FROM audit_logs WHERE organization_id = $1 AND created_at < $2",
        organization_id,
        cutoff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_removed_at_any_depth() {
        let cleaned = without_secrets(json!({
            "name": "ci",
            "password_hash": "$argon2id$...",
            "nested": { "GitHub_Token": "ghp_x", "scopes": ["mcp:read"] },
            "list": [{ "api_key": "mcp_sk_x" }]
        }));
        assert_eq!(
            cleaned,
            json!({
                "name": "ci",
                "password_hash": "[REDACTED]",
                "nested": { "GitHub_Token": "[REDACTED]", "scopes": ["mcp:read"] },
                "list": [{ "api_key": "[REDACTED]" }]
            })
        );
    }
}
