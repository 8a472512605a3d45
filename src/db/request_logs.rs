//! The `request_logs` table: one row per client JSON-RPC request, already redacted.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use crate::ids::{KeyId, OrgId, ServiceId, UserId};
use crate::on_conn;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewRequestLog {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<KeyId>,
    pub mcp_service_id: Option<ServiceId>,
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

/// How a call ended, as the `status` column stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    Success,
    Error,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Success => "success",
            LogStatus::Error => "error",
        }
    }
}

impl NewRequestLog {
    pub fn status(&self) -> LogStatus {
        if self.success { LogStatus::Success } else { LogStatus::Error }
    }
}

/// Rows per INSERT statement: 21 parameters each stays within both databases' limits.
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts the rows with one multi-row statement per `ROWS_PER_STATEMENT`.
pub async fn insert_many(conn: Conn<'_>, rows: &[NewRequestLog]) -> sqlx::Result<()> {
    on_conn!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO request_logs (id, organization_id, user_id, api_key_id, mcp_service_id, service_name, \
                 method, tool_name, correlation_id, request_body, response_body, request_truncated, \
                 response_truncated, status, http_status, error_code, error_message, duration_ms, ip, user_agent, \
                 created_at) ",
            );
            insert.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.id)
                    .push_bind(row.organization_id)
                    .push_bind(row.user_id)
                    .push_bind(row.api_key_id)
                    .push_bind(row.mcp_service_id)
                    .push_bind(&row.service_name)
                    .push_bind(&row.method)
                    .push_bind(&row.tool_name)
                    .push_bind(&row.correlation_id)
                    .push_bind(&row.request_body)
                    .push_bind(&row.response_body)
                    .push_bind(row.request_truncated)
                    .push_bind(row.response_truncated)
                    .push_bind(row.status().as_str())
                    .push_bind(row.http_status)
                    .push_bind(row.error_code)
                    .push_bind(&row.error_message)
                    .push_bind(row.duration_ms)
                    .push_bind(&row.ip)
                    .push_bind(&row.user_agent)
                    .push_bind(row.created_at);
            });
            // Batches differ in size: their statements are not worth keeping prepared.
            insert.build().persistent(false).execute(&mut *c).await?;
        }
        Ok(())
    })
}

/// Keeps a row the database refused, whole, with the reason.
pub async fn insert_reject(
    conn: Conn<'_>,
    row: &NewRequestLog,
    row_json: &str,
    error: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    on_conn!(conn, c => sqlx::query(
        "INSERT INTO request_log_rejects (id, organization_id, row_json, error, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.id)
    .bind(row.organization_id)
    .bind(row_json)
    .bind(error)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))
}
