//! Relaying client messages to a stdio service: `initialize` starts the session's child, other
//! messages go to its stdin, and answers come back as JSON, or as events when the server speaks
//! first.

use std::sync::Arc;

use actix_web::http::StatusCode;
use futures_util::StreamExt;
use serde_json::Value;

use super::answer::{Body, Broken, Relayed, SSE, is_answer, sse_event, whole_answer};
use super::endpoint::{Call, PROTOCOL_HEADER, Refusal, SESSION_LIMIT, upstream_failed, user_token};
use super::jsonrpc::{self, Message};
use super::record::CallRecord;
use super::sessions::{GatewaySession, UpstreamSession};
use super::stdio::{Launch, Process, SendError, SpawnError, Waiting};

pub(super) async fn relay_stdio(
    call: Call<'_>,
    existing: Option<(String, GatewaySession)>,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    if call.is_initialize() {
        return initialize_stdio(call, record).await;
    }
    // An HTTP upstream refuses a revision it does not serve; a stdio child has no header to
    // check, so the gateway does it (Streamable HTTP: 400).
    if let Some(version) = call.req.headers().get(PROTOCOL_HEADER)
        && !version.to_str().is_ok_and(|v| jsonrpc::PROTOCOL_VERSIONS.contains(&v))
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            format!(
                "Unsupported MCP-Protocol-Version {:?}; supported: {}",
                String::from_utf8_lossy(version.as_bytes()),
                jsonrpc::PROTOCOL_VERSIONS.join(", ")
            ),
        ));
    }
    let Some((session, GatewaySession { upstream: UpstreamSession::Stdio(process), .. })) = existing else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Mcp-Session-Id is required: send initialize first",
        ));
    };
    if let Some(secret) = process.secret() {
        record.secrets.push(secret.to_owned());
    }
    let Some(waiting) = send_to_child(&process, &call).await? else {
        return Ok(Relayed {
            status: StatusCode::ACCEPTED,
            content_type: None,
            session: Some(session),
            body: Body::Empty,
        });
    };
    let deadline = tokio::time::Instant::now() + call.timeout();
    let (first, waiting) = match tokio::time::timeout_at(deadline, next_for(waiting)).await {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(child_ended()),
        Err(_) => {
            if let Message::Request { id, .. } = call.message {
                let cancel = serde_json::json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": { "requestId": id, "reason": "The gateway's timeout passed" } });
                let _ = process.send(cancel.to_string().as_bytes(), None).await;
            }
            return Err(timed_out());
        }
    };
    if is_answer(&first) {
        return Ok(whole_answer(&[first], Some(session)));
    }
    // The server speaks before it answers (progress, sampling ...): relay it all as events
    // until the answer.
    let rest = futures_util::stream::unfold(Some(waiting), move |waiting| async move {
        let waiting = waiting?;
        match tokio::time::timeout_at(deadline, next_for(waiting)).await {
            Ok(Some((message, waiting))) => {
                let waiting = (!is_answer(&message)).then_some(waiting);
                Some((Ok(sse_event(&message).into()), waiting))
            }
            Ok(None) => Some((Err(Broken { timeout: false }), None)),
            Err(_) => Some((Err(Broken { timeout: true }), None)),
        }
    });
    let chunks = futures_util::stream::once(async move { Ok(sse_event(&first).into()) }).chain(rest);
    Ok(Relayed {
        status: StatusCode::OK,
        content_type: Some(SSE.to_owned()),
        session: Some(session),
        body: Body::Stream { is_sse: true, chunks: chunks.boxed() },
    })
}

/// Starts a child for a new session and relays its handshake; whatever the server says before
/// its answer comes along. A child that does not complete the handshake is ended.
async fn initialize_stdio(call: Call<'_>, record: &mut CallRecord) -> Result<Relayed, Refusal> {
    let process = start_process(&call).await?;
    if let Some(secret) = process.secret() {
        record.secrets.push(secret.to_owned());
    }
    let deadline = tokio::time::Instant::now() + call.timeout();
    let handshake = async {
        let mut waiting = send_to_child(&process, &call).await?.ok_or_else(child_ended)?;
        let mut messages = Vec::new();
        loop {
            let message = tokio::time::timeout_at(deadline, waiting.messages.recv())
                .await
                .map_err(|_| timed_out())?
                .ok_or_else(child_ended)?;
            let done = is_answer(&message);
            messages.push(message);
            if done {
                return Ok(messages);
            }
        }
    };
    let messages = match handshake.await {
        Ok(messages) => messages,
        Err(refusal) => {
            process.end().await;
            return Err(refusal);
        }
    };
    let succeeded = messages.last().is_some_and(|answer| answer.get("result").is_some());
    if !succeeded {
        process.end().await;
        return Ok(whole_answer(&messages, None));
    }
    let session = call.open_session(UpstreamSession::Stdio(process));
    Ok(whole_answer(&messages, Some(session)))
}

/// Writes the client's message to the child; for a request, the place its answer arrives.
async fn send_to_child(process: &Arc<Process>, call: &Call<'_>) -> Result<Option<Waiting>, Refusal> {
    let request = match call.message {
        Message::Request { id, params, .. } => {
            let progress = params.as_ref().and_then(|p| p.pointer("/_meta/progressToken")).cloned();
            Some((id, progress))
        }
        _ => None,
    };
    process.send(&call.body, request).await.map_err(|e| match e {
        SendError::DuplicateId => {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, e.to_string())
        }
        SendError::Ended => child_ended(),
    })
}

fn child_ended() -> Refusal {
    upstream_failed(StatusCode::BAD_GATEWAY, "The service's process has ended")
}

fn timed_out() -> Refusal {
    upstream_failed(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time")
}

/// The next message for a waiting request, handing the request back for the one after.
async fn next_for(mut waiting: Waiting) -> Option<(Value, Waiting)> {
    let message = waiting.messages.recv().await?;
    Some((message, waiting))
}

/// Starts the child for a new stdio session, with the caller's token in place.
async fn start_process(call: &Call<'_>) -> Result<Arc<Process>, Refusal> {
    let service = call.service;
    let token = user_token(call.state, call.principal, service).await?;
    let launch = Launch {
        service: &service.name,
        user_id: call.principal.user_id,
        command: service.command.as_deref().unwrap_or_default(),
        args: &service.args,
        env: &service.env,
        token,
    };
    call.state.gateway.stdio.spawn(launch).await.map_err(|e| match e {
        SpawnError::UserCap(_) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            SESSION_LIMIT,
            format!(
                "Too many sessions: {e} (a call in progress or an open stream). Wait for a call to finish \
                     and try again, or end a session you no longer use with DELETE"
            ),
        ),
        SpawnError::TotalCap(_) | SpawnError::Stopping => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SESSION_LIMIT,
            format!("No session can start now: {e}; try again later"),
        ),
        SpawnError::Spawn(ref cause) => {
            tracing::error!(service = %service.name, error = %cause, "stdio service did not start");
            upstream_failed(StatusCode::BAD_GATEWAY, "The service's command could not be started")
        }
    })
}
