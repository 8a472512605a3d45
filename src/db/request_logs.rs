//! The `request_logs` table: one row per client JSON-RPC request, already redacted.

use chrono::{DateTime, Utc};

use super::CompactTime;
use super::Conn;
use crate::ids::{KeyId, LogId, OrgId, ServiceId, UserId};
use crate::on_conn;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewRequestLog {
    /// Also the correlation id the client received.
    pub id: LogId,
    pub organization_id: OrgId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<KeyId>,
    pub mcp_service_id: Option<ServiceId>,
    pub service_name: String,
    pub method: Option<String>,
    pub tool_name: Option<String>,
    /// Shared by the messages of one client session.
    pub session_tag: Option<i64>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub outcome: Outcome,
    pub http_status: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub duration_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the call arrived.
    pub created_at: DateTime<Utc>,
}

/// How a call ended, as the `outcome` column stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An answer without error.
    Success,
    /// A tool's result with `isError: true`: the tool ran and reported a failure.
    ToolError,
    /// A JSON-RPC error, a refusal by the gateway or an upstream failure.
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::ToolError, Outcome::Failure];

    pub fn code(self) -> i16 {
        match self {
            Outcome::Success => 0,
            Outcome::ToolError => 1,
            Outcome::Failure => 2,
        }
    }

    pub fn from_code(code: i16) -> Outcome {
        match code {
            0 => Outcome::Success,
            1 => Outcome::ToolError,
            _ => Outcome::Failure,
        }
    }

    /// As written in URLs and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ToolError => "tool_error",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(raw: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

impl NewRequestLog {
    /// A row kept as a JSON line (spilled at a stop), including the form written before the
    /// correlation id became the row's id and the outcome had three values.
    pub fn from_json_line(line: &str) -> serde_json::Result<NewRequestLog> {
        let mut value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(object) = value.as_object_mut()
            && !object.contains_key("outcome")
        {
            if let Some(correlation) = object.remove("correlation_id") {
                object.insert("id".into(), correlation);
            }
            let success = object.remove("success").and_then(|s| s.as_bool()).unwrap_or(false);
            let outcome = if success { Outcome::Success } else { Outcome::Failure };
            object.insert("outcome".into(), serde_json::json!(outcome));
        }
        serde_json::from_value(value)
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
                 method, tool_name, session_tag, request_body, response_body, request_truncated, \
                 response_truncated, outcome, http_status, error_code, error_message, duration_ms, ip, user_agent, \
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
                    .push_bind(row.session_tag)
                    .push_bind(&row.request_body)
                    .push_bind(&row.response_body)
                    .push_bind(row.request_truncated)
                    .push_bind(row.response_truncated)
                    .push_bind(row.outcome.code())
                    .push_bind(row.http_status)
                    .push_bind(row.error_code)
                    .push_bind(&row.error_message)
                    .push_bind(row.duration_ms)
                    .push_bind(&row.ip)
                    .push_bind(&row.user_agent)
                    .push_bind(CompactTime(row.created_at));
            });
            // Full chunks repeat one statement (worth keeping prepared); the last one varies.
            insert.build().persistent(chunk.len() == ROWS_PER_STATEMENT).execute(&mut *c).await?;
        }
        Ok(())
    })
}

/// Keeps a row the database refused, whole, with the reason.
/// Whether the organization has any request-log row.
pub async fn any_for_organization(conn: Conn<'_>, organization_id: OrgId) -> sqlx::Result<bool> {
    on_conn!(conn, c => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM request_logs WHERE organization_id = $1)")
        .bind(organization_id)
        .fetch_one(c)
        .await)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_spilled_by_the_release_before_are_read() {
        let correlation = "01a22932-a37e-7019-a56d-44e731447ac3";
        let legacy = format!(
            r#"{{"id":"01a22932-0000-7000-8000-000000000001","organization_id":"01a22932-0000-7000-8000-000000000002",
            "user_id":null,"api_key_id":null,"mcp_service_id":null,"service_name":"tools","method":"ping",
            "tool_name":null,"correlation_id":"{correlation}","request_body":null,"response_body":null,
            "request_truncated":false,"response_truncated":false,"success":false,"http_status":502,
            "error_code":-32000,"error_message":"down","duration_ms":4,"ip":null,"user_agent":null,
            "created_at":"2026-03-10T12:00:00Z"}}"#
        );
        let row = NewRequestLog::from_json_line(&legacy.replace('\n', "")).unwrap();
        assert_eq!(row.id.to_string(), correlation);
        assert_eq!(row.outcome, Outcome::Failure);
        let again = NewRequestLog::from_json_line(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!((again.id, again.outcome, again.session_tag), (row.id, row.outcome, None));
    }
}
