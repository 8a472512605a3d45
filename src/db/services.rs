//! The `mcp_services` table: the organization's own services and the public system services.

use uuid::Uuid;

use super::Conn;
use crate::on_conn;

/// Enabled services the organization's members can use.
pub async fn count_available(conn: Conn<'_>, organization_id: Uuid) -> sqlx::Result<i64> {
    let (n,): (i64,) = on_conn!(conn, c => sqlx::query_as(
        "SELECT COUNT(*) FROM mcp_services WHERE is_enabled = TRUE \
         AND (organization_id = $1 OR (organization_id IS NULL AND is_public = TRUE))",
    )
    .bind(organization_id)
    .fetch_one(c)
    .await)?;
    Ok(n)
}
