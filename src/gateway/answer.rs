//! The client's answer to a relayed message: a whole JSON or SSE body, or the upstream's stream
//! passed through; the call is recorded (redacted, cut) once the answer has gone out.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::jsonrpc;
use super::record::{BODY_LIMIT, CallRecord, Ending, ending_of, lossy, messages_in};
use super::refusal::{CORRELATION_HEADER, Refusal, SESSION_HEADER, SSE, UPSTREAM_FAILED};
use super::sessions::UpstreamSession;
use crate::app::AppState;
use crate::telemetry::redact::truncate;

/// What the gateway sends back for a relayed message.
pub(super) struct Relayed {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<String>,
    /// The upstream session an `initialize` opened.
    pub(super) opened: Option<UpstreamSession>,
    pub(super) body: Body,
}

pub(super) enum Body {
    /// Nothing (202 for notifications and responses).
    Empty,
    /// An answer known in full.
    Whole(String),
    /// The upstream's answer as it arrives.
    Stream { is_sse: bool, chunks: BoxStream<'static, Result<web::Bytes, Broken>> },
}

/// An answer that stopped before its end.
pub(super) struct Broken {
    pub(super) timeout: bool,
}

/// How long an upstream's answer is held in the hope that it completes and goes out whole, and
/// the most that is held.
const HOLD_WAIT: Duration = Duration::from_millis(100);
const HOLD_LIMIT: usize = 4 * 1024 * 1024;

pub(super) fn sse_event(message: &impl std::fmt::Display) -> String {
    format!("event: message\ndata: {message}\n\n")
}

/// A message as JSON text (written straight into the string, not through `Display`).
fn json_text(message: &Value) -> String {
    serde_json::to_string(message).expect("a JSON value serializes")
}

/// The client's answer to a relayed (or refused) message in the gateway session `session_id`;
/// the call is recorded when the answer has gone out.
pub(super) async fn answer(
    relayed: Result<Relayed, Refusal>,
    session_id: Option<String>,
    record: CallRecord,
    state: &AppState,
) -> HttpResponse {
    let correlation = record.id.to_string();
    let relayed = match relayed {
        Ok(relayed) => relayed,
        Err(refusal) => {
            record_refusal(&refusal, record, state);
            return refusal.response(&correlation);
        }
    };
    let mut response = HttpResponse::build(relayed.status);
    response.insert_header((CORRELATION_HEADER, correlation));
    if let Some(content_type) = relayed.content_type {
        // An event stream is not to be held back by a proxy (nginx).
        if content_type.starts_with(SSE) {
            response.insert_header(("X-Accel-Buffering", "no"));
        }
        response.insert_header((header::CONTENT_TYPE, content_type));
    }
    if let Some(session) = session_id {
        response.insert_header((SESSION_HEADER, session));
    }
    let capture = capture(record, relayed.status, state);
    match relayed.body {
        Body::Empty => {
            drop(capture);
            response.finish()
        }
        Body::Whole(text) => {
            let mut capture = capture;
            capture.done_with(&text);
            response.body(text)
        }
        Body::Stream { is_sse, mut chunks } => {
            // An answer complete within a moment goes out whole, in one write rather than one
            // per piece; a longer one streams on from what was held.
            let deadline = tokio::time::Instant::now() + HOLD_WAIT;
            let mut held = web::BytesMut::new();
            let complete = loop {
                match tokio::time::timeout_at(deadline, chunks.next()).await {
                    Ok(Some(Ok(chunk))) if held.len() + chunk.len() <= HOLD_LIMIT => {
                        held.extend_from_slice(&chunk)
                    }
                    Ok(Some(piece)) => {
                        chunks = futures_util::stream::once(async { piece }).chain(chunks).boxed();
                        break false;
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            let held = held.freeze();
            if complete {
                let mut capture = capture;
                capture.keep(&held);
                capture.done();
                return response.body(held);
            }
            let chunks = futures_util::stream::once(async { Ok(held) }).chain(chunks).boxed();
            response.streaming(recorded(chunks, capture, is_sse))
        }
    }
}

/// Records a refused message.
pub(super) fn record_refusal(refusal: &Refusal, record: CallRecord, state: &AppState) {
    let body = refusal.error.body().to_string();
    let ending = Ending {
        http_status: refusal.status.as_u16(),
        error_code: Some(refusal.error.code),
        error_message: Some(refusal.error.message.clone()),
        tool_error: false,
    };
    record.finish(ending, Some(&body), &state.log_writer);
}

/// The messages of a relayed answer, read to its end, for the platform itself (test
/// connection); the call is recorded as any other. `None` when the answer broke off.
pub(super) async fn collect(relayed: Relayed, record: CallRecord, state: &AppState) -> Option<Vec<Value>> {
    let mut capture = capture(record, relayed.status, state);
    let text = match relayed.body {
        Body::Empty => String::new(),
        Body::Whole(text) => text,
        Body::Stream { mut chunks, .. } => {
            let mut body = Vec::new();
            while let Some(chunk) = chunks.next().await {
                body.extend_from_slice(&chunk.ok()?);
            }
            lossy(&body).into_owned()
        }
    };
    capture.done_with(&text);
    Some(messages_in(&text))
}

fn capture(record: CallRecord, status: StatusCode, state: &AppState) -> Capture {
    Capture {
        rpc_id: record.rpc_id.clone(),
        record: Some(record),
        captured: Vec::new(),
        status: status.as_u16(),
        writer: state.log_writer.clone(),
    }
}

/// Streams an upstream's answer to the client while keeping its first part for the record,
/// which is written when the answer ends or the client goes away.
fn recorded(
    chunks: BoxStream<'static, Result<web::Bytes, Broken>>,
    capture: Capture,
    is_sse: bool,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures_util::stream::unfold((chunks, Some(capture)), move |(mut chunks, capture)| async move {
        let mut capture = capture?;
        match chunks.next().await {
            Some(Ok(chunk)) => {
                capture.keep(&chunk);
                Some((Ok(chunk), (chunks, Some(capture))))
            }
            // An event stream that breaks off (or runs past the service's timeout) ends with
            // a JSON-RPC error event, so the client is not left waiting.
            Some(Err(broken)) if is_sse => {
                let message = if broken.timeout {
                    "The upstream did not answer in time"
                } else {
                    "The upstream broke off its answer"
                };
                let event = web::Bytes::from(sse_event(&jsonrpc::error_body(
                    &capture.rpc_id,
                    UPSTREAM_FAILED,
                    message,
                )));
                capture.keep(&event);
                capture.done();
                Some((Ok(event), (chunks, None)))
            }
            Some(Err(_)) => {
                capture.done();
                let error = actix_web::error::ErrorBadGateway("the upstream broke off its answer");
                Some((Err(error), (chunks, None)))
            }
            None => {
                capture.done();
                None
            }
        }
    })
}

/// Keeps the first part of the upstream's answer as it streams to the client, and records the
/// call when the answer ends or the client goes away.
struct Capture {
    pub(super) rpc_id: Value,
    pub(super) record: Option<CallRecord>,
    pub(super) captured: Vec<u8>,
    pub(super) status: u16,
    pub(super) writer: crate::telemetry::writer::RequestLogWriter,
}

impl Capture {
    fn keep(&mut self, chunk: &[u8]) {
        let room = (BODY_LIMIT + 1).saturating_sub(self.captured.len());
        self.captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Records the call with what was kept of its answer.
    pub(super) fn done(&mut self) {
        let captured = std::mem::take(&mut self.captured);
        self.done_with(&lossy(&captured));
    }

    /// Records the call with `answer`, of which it keeps what `keep` would have.
    fn done_with(&mut self, answer: &str) {
        let Some(mut record) = self.record.take() else { return };
        let (text, _) = truncate(answer, BODY_LIMIT + 1);
        let ending = match record.answered.take() {
            Some(answered) => answered.ending(self.status),
            None => ending_of(text, &record.rpc_id, self.status),
        };
        record.finish(ending, (!text.is_empty()).then_some(text), &self.writer);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.done();
    }
}

/// An answer (result or error), as opposed to a message the server starts.
pub(super) fn is_answer(message: &Value) -> bool {
    message.get("method").is_none()
}

/// Every message of an answer, read to its end; `None` when it broke off.
pub(super) async fn messages_of(body: Body) -> Option<Vec<Value>> {
    Some(messages_in(&text_of(body).await?))
}

/// An answer's whole text; `None` if it broke off.
pub(super) async fn text_of(body: Body) -> Option<String> {
    match body {
        Body::Empty => Some(String::new()),
        Body::Whole(text) => Some(text),
        Body::Stream { mut chunks, .. } => {
            let mut text = Vec::new();
            while let Some(chunk) = chunks.next().await {
                text.extend_from_slice(&chunk.ok()?);
            }
            Some(lossy(&text).into_owned())
        }
    }
}

/// Leaves out of each `tools/list` result the tools the caller may not call.
pub(super) fn keep_offered(messages: &mut [Value], offers: impl Fn(&str) -> bool) {
    for message in messages {
        if let Some(tools) = message.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
            tools.retain(|tool| tool.get("name").and_then(Value::as_str).is_some_and(&offers));
        }
    }
}

/// A `tools/list` answer without the tools the caller may not call, whole.
pub(super) async fn offered_only(
    relayed: Relayed,
    offers: impl Fn(&str) -> bool,
) -> Result<Relayed, Refusal> {
    let status = relayed.status;
    let mut messages = messages_of(relayed.body).await.ok_or_else(broken_off)?;
    keep_offered(&mut messages, offers);
    Ok(whole_answer(&messages, relayed.opened).with_status(status))
}

/// An upstream answer that ended before its end.
pub(super) fn broken_off() -> Refusal {
    Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream broke off its answer")
}

impl Relayed {
    /// The same answer under the upstream's status.
    pub(super) fn with_status(mut self, status: StatusCode) -> Relayed {
        self.status = status;
        self
    }
}

/// Messages known in full: one answer as JSON, several as an event stream.
pub(super) fn whole_answer(messages: &[Value], opened: Option<UpstreamSession>) -> Relayed {
    let (content_type, body) = match messages {
        [answer] => ("application/json", json_text(answer)),
        _ => (SSE, messages.iter().map(sse_event).collect()),
    };
    Relayed {
        status: StatusCode::OK,
        content_type: Some(content_type.to_owned()),
        opened,
        body: Body::Whole(body),
    }
}

/// One message, already JSON text, as the whole answer.
pub(super) fn json_answer(text: String) -> Relayed {
    Relayed {
        status: StatusCode::OK,
        content_type: Some("application/json".to_owned()),
        opened: None,
        body: Body::Whole(text),
    }
}
