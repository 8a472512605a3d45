//! One request-log row per client message: what is known about a call is gathered as the
//! gateway learns it, redacted (including the credential it injected), cut at 16 KiB, and handed
//! to the batched writer, off the response path.

use std::time::Instant;

use actix_web::HttpRequest;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::ClientInfo;
use crate::clock::SharedClock;
use crate::db::request_logs::NewRequestLog;
use crate::ids::{KeyId, OrgId, ServiceId, UserId};
use crate::telemetry::redact::{redact_body, redact_text, truncate};
use crate::telemetry::writer::{RequestLogWriter, Slot};

/// Bodies are stored up to this size and marked as cut beyond it.
pub const BODY_LIMIT: usize = 16 * 1024;

pub struct CallRecord {
    pub correlation: String,
    started: Instant,
    pub organization_id: Option<OrgId>,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<KeyId>,
    pub service_id: Option<ServiceId>,
    service_name: String,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub rpc_id: Value,
    pub request_body: Option<String>,
    /// Values that must never be stored: the credential injected for this call.
    pub secrets: Vec<String>,
    client: ClientInfo,
    /// The writer's room for this call's row, taken when the call was admitted.
    slot: Slot,
}

/// How a call ended, as far as the gateway can tell.
pub struct Outcome {
    pub http_status: u16,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
}

impl CallRecord {
    pub fn new(req: &HttpRequest, service_name: &str, slot: Slot) -> CallRecord {
        CallRecord {
            correlation: Uuid::now_v7().to_string(),
            started: Instant::now(),
            organization_id: None,
            user_id: None,
            api_key_id: None,
            service_id: None,
            // The name is whatever the client put in the path.
            service_name: redact_text(service_name, &[]).chars().take(100).collect(),
            method: None,
            tool: None,
            rpc_id: Value::Null,
            request_body: None,
            secrets: Vec::new(),
            client: ClientInfo::of(req),
            slot,
        }
    }

    fn secrets(&self) -> Vec<&str> {
        self.secrets.iter().map(String::as_str).collect()
    }

    /// The row for this call, or `None` before the caller's organization is known (a call
    /// without a valid key belongs to no organization's log).
    fn row(
        &self,
        outcome: Outcome,
        response_body: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<NewRequestLog> {
        let organization_id = self.organization_id?;
        let secrets = self.secrets();
        let cut = |text: &str| {
            let redacted = redact_body(text, &secrets);
            let (kept, was_cut) = truncate(&redacted, BODY_LIMIT);
            (kept.to_owned(), was_cut)
        };
        let (request_body, request_truncated) =
            self.request_body.as_deref().map(cut).map_or((None, false), |(b, c)| (Some(b), c));
        let (response_body, response_truncated) =
            response_body.map(cut).map_or((None, false), |(b, c)| (Some(b), c));
        let success = (200..300).contains(&outcome.http_status) && outcome.error_code.is_none();
        Some(NewRequestLog {
            id: Uuid::now_v7(),
            organization_id,
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            mcp_service_id: self.service_id,
            service_name: self.service_name.clone(),
            method: self.method.clone(),
            tool_name: self.tool.clone(),
            correlation_id: self.correlation.clone(),
            request_body,
            response_body,
            request_truncated,
            response_truncated,
            success,
            http_status: i32::from(outcome.http_status),
            error_code: outcome.error_code.map(|c| c as i32),
            error_message: outcome.error_message.map(|m| redact_text(&m, &secrets).into_owned()),
            duration_ms: self.started.elapsed().as_millis() as i64,
            ip: self.client.ip_string(),
            user_agent: self.client.user_agent.clone(),
            created_at: now,
        })
    }

    /// Puts the row in the room taken for it, without holding up the response.
    pub fn finish(
        self,
        outcome: Outcome,
        response_body: Option<&str>,
        writer: &RequestLogWriter,
        clock: &SharedClock,
    ) {
        writer.count(outcome.http_status, self.started.elapsed());
        if let Some(row) = self.row(outcome, response_body, clock.now()) {
            self.slot.fill(row);
        }
    }
}

/// The messages of a captured answer (plain JSON or SSE events).
pub fn messages_in(captured: &str) -> Vec<Value> {
    if captured.trim_start().starts_with('{') {
        serde_json::from_str(captured).ok().into_iter().collect()
    } else {
        captured
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    }
}

/// The message answering request `id` in a captured answer.
pub fn message_in(captured: &str, id: &Value) -> Option<Value> {
    messages_in(captured).into_iter().find(|m| &m["id"] == id && m.get("method").is_none())
}

/// The JSON-RPC error, if any, in a captured answer to request `id`.
pub fn error_in(captured: &str, id: &Value) -> Option<(i64, String)> {
    let answer = message_in(captured, id)?;
    let error = answer.get("error")?;
    Some((error["code"].as_i64().unwrap_or(0), error["message"].as_str().unwrap_or("").to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_found_in_json_and_in_sse() {
        let plain = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"Method not found"}}"#;
        assert_eq!(error_in(plain, &json!(3)), Some((-32601, "Method not found".into())));
        let sse = "id: 0\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"error\":{\"code\":-32000,\"message\":\"boom\"}}\n\n";
        assert_eq!(error_in(sse, &json!("a")), Some((-32000, "boom".into())));
        let ok = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(error_in(ok, &json!(1)), None);
    }
}
