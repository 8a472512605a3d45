//! The `tool_policies` table: each organization's tool policy for a service, and the policy the
//! gateway applies (the organization's own, else the operator's default for a system service,
//! else every tool to every role).

use chrono::{DateTime, Utc};

use super::Conn;
use crate::catalog::tool_policy::ToolPolicy;
use crate::ids::{OrgId, ServiceId};
use crate::on_conn;

/// The policy that applies to the organization's members on this service.
pub async fn effective(
    conn: Conn<'_>,
    organization_id: OrgId,
    service_id: ServiceId,
) -> sqlx::Result<ToolPolicy> {
    let stored: Option<Option<String>> = on_conn!(conn, c => sqlx::query_scalar(
        "SELECT COALESCE(p.policy, s.tool_policy) FROM mcp_services s \
         LEFT JOIN tool_policies p ON p.mcp_service_id = s.id AND p.organization_id = $1 WHERE s.id = $2",
    )
    .bind(organization_id)
    .bind(service_id)
    .fetch_optional(c)
    .await)?;
    Ok(stored.flatten().map(|text| ToolPolicy::from_stored(&text)).unwrap_or_default())
}

/// Sets the organization's own policy for the service.
pub async fn set(
    conn: Conn<'_>,
    organization_id: OrgId,
    service_id: ServiceId,
    policy: &ToolPolicy,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    crate::execute!(
        conn,
        "INSERT INTO tool_policies (organization_id, mcp_service_id, policy, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id, mcp_service_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
        organization_id,
        service_id,
        policy.to_stored(),
        now
    )
    .map(drop)
}
