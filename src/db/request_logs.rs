//! The `request_logs` table: one row per client JSON-RPC request, already redacted.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::on_conn;

#[derive(Debug, Clone)]
pub struct NewRequestLog {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub mcp_service_id: Option<Uuid>,
    pub service_name: String,
    pub method: Option<String>,
    pub tool_name: Option<String>,
    pub correlation_id: String,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub success: bool,
    pub http_status: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub duration_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: Conn<'_>, row: &NewRequestLog) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO request_logs (id, organization_id, user_id, api_key_id, mcp_service_id, service_name, method, \
         tool_name, correlation_id, request_body, response_body, request_truncated, response_truncated, status, \
         http_status, error_code, error_message, duration_ms, ip, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(row.id)
    .bind(row.organization_id)
    .bind(row.user_id)
    .bind(row.api_key_id)
    .bind(row.mcp_service_id)
    .bind(&row.service_name)
    .bind(&row.method)
    .bind(&row.tool_name)
    .bind(&row.correlation_id)
    .bind(&row.request_body)
    .bind(&row.response_body)
    .bind(row.request_truncated)
    .bind(row.response_truncated)
    .bind(if row.success { "success" } else { "error" })
    .bind(row.http_status)
    .bind(row.error_code)
    .bind(&row.error_message)
    .bind(row.duration_ms)
    .bind(&row.ip)
    .bind(&row.user_agent)
    .bind(row.created_at)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
