//! One request-log row per client message: what is known about a call is gathered as the
//! gateway learns it, redacted (including the credential it injected), cut at 16 KiB, and handed
//! to the batched writer, off the response path.

use std::sync::LazyLock;
use std::time::Instant;

use crate::auth::ClientInfo;
use crate::db::request_logs::{NewRequestLog, Outcome};
use crate::gateway::refusal::UPSTREAM_FAILED;
use crate::ids::{KeyId, LogId, OrgId, ServiceId, UserId};
use crate::telemetry::metrics::Observed;
use crate::telemetry::redact::{redact_body, redact_text, truncate};
use crate::telemetry::writer::{RequestLogWriter, Slot};
use actix_web::HttpRequest;
use memchr::memmem::Finder;
use serde_json::Value;

/// Bodies are stored up to this size and marked as cut beyond it.
pub const BODY_LIMIT: usize = 16 * 1024;

pub struct CallRecord {
    /// The row's id, which the client receives as its correlation id.
    pub id: LogId,
    arrived: chrono::DateTime<chrono::Utc>,
    started: Instant,
    pub organization_id: Option<OrgId>,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<KeyId>,
    pub service_id: Option<ServiceId>,
    /// The service's transport, for the metrics: `http`, `stdio`, or `none` before it is known.
    pub service_kind: &'static str,
    service_name: String,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub session_tag: Option<i64>,
    /// The call counted against the organization's daily quota.
    pub quota_counted: bool,
    /// A 2026-07-28 (stateless) request.
    pub modern: bool,
    pub rpc_id: Value,
    pub request_body: Option<actix_web::web::Bytes>,
    /// Values that must never be stored: the credential injected for this call.
    pub secrets: Vec<String>,
    /// How the answer ended, when the gateway learnt it writing the answer itself: then the
    /// answer is not read again for the record.
    pub answered: Option<Answered>,
    client: ClientInfo,
    /// The writer's room for this call's row, taken when the call was admitted.
    slot: Slot,
}

/// How a call ended, as far as the gateway can tell.
#[derive(Debug, PartialEq)]
pub struct Ending {
    pub http_status: u16,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// The answer was a tool's result with `isError: true`.
    pub tool_error: bool,
}

impl Ending {
    fn outcome(&self) -> Outcome {
        if !(200..300).contains(&self.http_status) || self.error_code.is_some() {
            Outcome::Failure
        } else if self.tool_error {
            Outcome::ToolError
        } else {
            Outcome::Success
        }
    }
}

impl CallRecord {
    /// The record of a call that arrived `now`, with row id `id`.
    pub fn new(
        id: LogId,
        req: &HttpRequest,
        service_name: &str,
        slot: Slot,
        now: chrono::DateTime<chrono::Utc>,
    ) -> CallRecord {
        CallRecord {
            id,
            arrived: now,
            started: Instant::now(),
            organization_id: None,
            user_id: None,
            api_key_id: None,
            service_id: None,
            service_kind: "none",
            // The name is whatever the client put in the path.
            service_name: redact_text(service_name, &[]).chars().take(100).collect(),
            method: None,
            tool: None,
            session_tag: None,
            quota_counted: false,
            modern: false,
            rpc_id: Value::Null,
            request_body: None,
            secrets: Vec::new(),
            answered: None,
            client: ClientInfo::of(req),
            slot,
        }
    }

    fn secrets(&self) -> Vec<&str> {
        self.secrets.iter().map(String::as_str).collect()
    }

    /// The row for this call, or `None` before the caller's organization is known (a call
    /// without a valid key belongs to no organization's log).
    fn row(&self, ending: Ending, response_body: Option<&str>) -> Option<NewRequestLog> {
        let organization_id = self.organization_id?;
        let secrets = self.secrets();
        let cut = |text: &str| {
            let mut redacted = redact_body(text, &secrets);
            let (kept, was_cut) = truncate(&redacted, BODY_LIMIT);
            redacted.truncate(kept.len());
            (redacted, was_cut)
        };
        let (request_body, request_truncated) = self
            .request_body
            .as_deref()
            .map(|body| cut(&lossy(body)))
            .map_or((None, false), |(b, c)| (Some(b), c));
        let (response_body, response_truncated) =
            response_body.map(cut).map_or((None, false), |(b, c)| (Some(b), c));
        Some(NewRequestLog {
            id: self.id,
            organization_id,
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            mcp_service_id: self.service_id,
            service_name: self.service_name.clone(),
            method: self.method.clone(),
            tool_name: self.tool.clone(),
            session_tag: self.session_tag,
            request_body,
            response_body,
            request_truncated,
            response_truncated,
            outcome: ending.outcome(),
            http_status: i32::from(ending.http_status),
            error_code: ending.error_code.map(|c| c as i32),
            error_message: ending.error_message.map(|m| redact_text(&m, &secrets).into_owned()),
            duration_ms: self.started.elapsed().as_millis() as i64,
            ip: self.client.ip_string(),
            user_agent: self.client.user_agent.clone(),
            created_at: self.arrived,
            quota_counted: self.quota_counted,
            stateless: self.modern,
        })
    }

    /// Puts the row in the room taken for it, without holding up the response.
    pub fn finish(self, ending: Ending, response_body: Option<&str>, writer: &RequestLogWriter) {
        let metrics = writer.metrics();
        if ending.error_code == Some(UPSTREAM_FAILED) {
            let error = if ending.http_status == 504 { "timeout" } else { "unreachable" };
            metrics.upstream_error(self.service_kind, error);
        }
        metrics.message(Observed {
            kind: self.service_kind,
            method: self.method.as_deref(),
            outcome: ending.outcome().as_str(),
            status: ending.http_status,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        if let Some(row) = self.row(ending, response_body) {
            self.slot.fill(row);
        }
    }
}

/// Bytes as text, with what is not UTF-8 replaced (checked the fast way first: nearly all is).
pub fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The messages of a captured answer (plain JSON or SSE events).
pub fn messages_in(captured: &str) -> Vec<Value> {
    texts_in(captured).into_iter().filter_map(|text| serde_json::from_str(text).ok()).collect()
}

/// The text of each message in a captured answer (a JSON body or the `data:` lines of SSE).
pub fn texts_in(captured: &str) -> Vec<&str> {
    if captured.trim_start().starts_with('{') {
        vec![captured]
    } else {
        // (An event without data, as a stream's priming event, holds no message.)
        let data = captured.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim);
        data.filter(|text| !text.is_empty()).collect()
    }
}

/// What the record reads of a message: the rest (a result above all) is skipped, not built.
#[derive(serde::Deserialize)]
struct AnswerParts<'a> {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    method: Given<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Given<Value>,
    #[serde(default, borrow)]
    result: Option<&'a serde_json::value::RawValue>,
}

/// A member that is there, whatever its value (`null` too), as opposed to one left out.
struct Given<T>(Option<T>);

impl<T> Default for Given<T> {
    fn default() -> Self {
        Given(None)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Given<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| Given(Some(value)))
    }
}

/// How a captured answer with HTTP status `http_status` to request `id` ended: its JSON-RPC
/// error, or whether it is a tool's result with `isError: true`.
pub fn ending_of(captured: &str, id: &Value, http_status: u16) -> Ending {
    let answered = texts_in(captured).into_iter().find_map(|text| {
        let parts: AnswerParts = serde_json::from_str(text).ok()?;
        (parts.id == *id && parts.method.0.is_none())
            .then(|| Answered::of(parts.error.0.as_ref(), parts.result))
    });
    answered.unwrap_or_default().ending(http_status)
}

/// How an answer ended, from its error and its result.
#[derive(Debug, Default, PartialEq)]
pub struct Answered {
    error: Option<(i64, String)>,
    tool_error: bool,
}

/// What `Answered::of` looks for in a result, each searcher built once: a key, and an escape
/// (which could spell one).
static IS_ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("isError"));
pub(super) static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\\u"));

impl Answered {
    pub fn of(error: Option<&Value>, result: Option<&serde_json::value::RawValue>) -> Answered {
        // Only a result that names `isError` (or could, escaped) is read again, for that alone.
        let tool_error = result.is_some_and(|result| {
            #[derive(serde::Deserialize)]
            struct Flagged {
                #[serde(rename = "isError")]
                is_error: bool,
            }
            let text = result.get();
            (IS_ERROR_KEY.find(text.as_bytes()).is_some() || ESCAPE.find(text.as_bytes()).is_some())
                && serde_json::from_str::<Flagged>(text).is_ok_and(|r| r.is_error)
        });
        let error =
            error.map(|e| (e["code"].as_i64().unwrap_or(0), e["message"].as_str().unwrap_or("").to_owned()));
        Answered { error, tool_error }
    }

    pub fn ending(self, http_status: u16) -> Ending {
        let (error_code, error_message) = self.error.unzip();
        Ending { http_status, error_code, error_message, tool_error: self.tool_error }
    }
}

/// A tag shared by the rows of one client session that says nothing about its id.
pub fn session_tag(gateway_id: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(gateway_id.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_in(captured: &str, id: &Value) -> Option<(i64, String)> {
        let ending = ending_of(captured, id, 200);
        Some((ending.error_code?, ending.error_message?))
    }

    #[test]
    fn errors_are_found_in_json_and_in_sse() {
        let plain = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"Method not found"}}"#;
        assert_eq!(error_in(plain, &json!(3)), Some((-32601, "Method not found".into())));
        let sse = "id: 0\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"error\":{\"code\":-32000,\"message\":\"boom\"}}\n\n";
        assert_eq!(error_in(sse, &json!("a")), Some((-32000, "boom".into())));
        let ok = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(error_in(ok, &json!(1)), None);
        // The server's own request under the same id is not the answer.
        let asked = r#"{"jsonrpc":"2.0","id":1,"method":"roots/list","error":{"code":1}}"#;
        assert_eq!(error_in(asked, &json!(1)), None);
        // An error that is there is one, whatever it holds.
        let odd = r#"{"jsonrpc":"2.0","id":1,"error":null}"#;
        assert_eq!(error_in(odd, &json!(1)), Some((0, String::new())));
        let odd = r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":7}}"#;
        assert_eq!(error_in(odd, &json!(1)), Some((0, String::new())));
    }

    #[test]
    fn tool_errors_are_told_from_successes_and_failures() {
        let tool_error = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        assert_eq!(ending_of(tool_error, &json!(1), 200).outcome(), Outcome::ToolError);
        let fine = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#;
        assert_eq!(ending_of(fine, &json!(1), 200).outcome(), Outcome::Success);
        let failed = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no such tool"}}"#;
        assert_eq!(ending_of(failed, &json!(1), 200).outcome(), Outcome::Failure);
        assert_eq!(ending_of("", &Value::Null, 202).outcome(), Outcome::Success, "a notification taken");
        assert_eq!(ending_of("", &json!(1), 502).outcome(), Outcome::Failure);
        // Another request's result says nothing about this one.
        assert_eq!(ending_of(tool_error, &json!(2), 200).outcome(), Outcome::Success);
        // The flag counts however it is written, and only as `true` in a result.
        let escaped = r#"{"jsonrpc":"2.0","id":1,"result":{"\u0069sError":true}}"#;
        assert_eq!(ending_of(escaped, &json!(1), 200).outcome(), Outcome::ToolError);
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"isError"}]}}"#;
        assert_eq!(ending_of(text, &json!(1), 200).outcome(), Outcome::Success);
        let odd = r#"{"jsonrpc":"2.0","id":1,"result":7}"#;
        assert_eq!(ending_of(odd, &json!(1), 200).outcome(), Outcome::Success);
        let odd = r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"true"}}"#;
        assert_eq!(ending_of(odd, &json!(1), 200).outcome(), Outcome::Success);
        let said = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"isError":true}],"isError":false}}"#;
        assert_eq!(ending_of(said, &json!(1), 200).outcome(), Outcome::Success);
    }
}
