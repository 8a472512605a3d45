//! Relaying client messages to a stdio service: `initialize` starts the session's child, other
//! messages go to its stdin, and answers come back as JSON, or as events when the server speaks
//! first.

use std::sync::Arc;

use actix_web::http::StatusCode;
use futures_util::StreamExt;
use serde_json::Value;

use super::Streamed;
use crate::app::AppState;
use crate::gateway::answer::{Body, Broken, Relayed, is_answer, sse_event, whole_answer};
use crate::gateway::call::Call;
use crate::gateway::call::Credential;
use crate::gateway::era;
use crate::gateway::jsonrpc::{self, Message};
use crate::gateway::refusal::{Refusal, SESSION_LIMIT, SSE};
use crate::gateway::sessions::UpstreamSession;
use crate::gateway::stdio::{Launch, Process, SendError, SpawnError, Waiting};

pub(super) async fn post(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    process: Option<&Arc<Process>>,
    secrets: &mut Vec<String>,
) -> Result<Relayed, Refusal> {
    if call.is_initialize() {
        return initialize(state, call, credential, secrets).await;
    }
    // An HTTP upstream refuses a revision it does not serve; a stdio child has no header to
    // check, so the gateway does it (Streamable HTTP: 400).
    if let Some(version) = call.protocol_version.as_deref()
        && !jsonrpc::PROTOCOL_VERSIONS.contains(&version)
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            format!(
                "Unsupported MCP-Protocol-Version {version:?}; supported: {}",
                jsonrpc::PROTOCOL_VERSIONS.join(", ")
            ),
        ));
    }
    let Some(process) = process else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Mcp-Session-Id is required: send initialize first",
        ));
    };
    if let Some(secret) = process.secret() {
        secrets.push(secret.to_owned());
    }
    // A child found gone before the message reached it has ended the session, even when its
    // supervisor has not yet said so.
    let Some(waiting) = send_to_child(process, call, Refusal::process_ended).await? else {
        return Ok(Relayed {
            status: StatusCode::ACCEPTED,
            content_type: None,
            opened: None,
            body: Body::Empty,
        });
    };
    let deadline = tokio::time::Instant::now() + call.timeout();
    let (first, waiting) = match tokio::time::timeout_at(deadline, next_for(waiting)).await {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(child_ended()),
        Err(_) => {
            if let Message::Request { id, .. } = &call.message {
                let cancel = serde_json::json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": { "requestId": id, "reason": "The gateway's timeout passed" } });
                let _ = process.send(cancel.to_string().as_bytes(), None).await;
            }
            return Err(timed_out());
        }
    };
    if is_answer(&first) {
        return Ok(whole_answer(&[first], None));
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
        opened: None,
        body: Body::Stream { is_sse: true, chunks: chunks.boxed() },
    })
}

/// The session's server-to-client stream: what the child says outside any request.
pub(super) fn stream(process: &Process) -> Result<Streamed, Refusal> {
    let messages = process.open_stream().ok_or_else(Refusal::process_ended)?;
    let events = futures_util::stream::unfold(messages, |mut messages| async move {
        let message = messages.recv().await?;
        Some((Ok::<_, actix_web::Error>(sse_event(&message).into()), messages))
    });
    Ok(Streamed { status: StatusCode::OK, content_type: Some(SSE.to_owned()), chunks: events.boxed() })
}

/// Starts a child for a new session and relays its handshake; whatever the server says before
/// its answer comes along. A child that does not complete the handshake is ended.
async fn initialize(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    secrets: &mut Vec<String>,
) -> Result<Relayed, Refusal> {
    let process = start_process(state, call, credential).await?;
    if let Some(secret) = process.secret() {
        secrets.push(secret.to_owned());
    }
    let deadline = tokio::time::Instant::now() + call.timeout();
    let handshake = async {
        let mut waiting = send_to_child(&process, call, child_ended).await?.ok_or_else(child_ended)?;
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
    Ok(whole_answer(&messages, Some(UpstreamSession::Stdio(process))))
}

/// Writes the client's message to the child; for a request, the place its answer arrives.
/// `ended` is the refusal when the child is gone.
async fn send_to_child(
    process: &Arc<Process>,
    call: &Call,
    ended: fn() -> Refusal,
) -> Result<Option<Waiting>, Refusal> {
    let request = match &call.message {
        Message::Request { id, .. } => Some((id, era::progress_token(&call.message).cloned())),
        _ => None,
    };
    process.send(&call.body, request).await.map_err(|e| match e {
        SendError::DuplicateId => {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, e.to_string())
        }
        SendError::Ended => ended(),
    })
}

fn child_ended() -> Refusal {
    Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The service's process has ended")
}

fn timed_out() -> Refusal {
    Refusal::upstream_failed(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time")
}

/// The next message for a waiting request, handing the request back for the one after.
async fn next_for(mut waiting: Waiting) -> Option<(Value, Waiting)> {
    let message = waiting.messages.recv().await?;
    Some((message, waiting))
}

/// Starts the child for a new stdio session, with the caller's token in place.
async fn start_process(
    state: &AppState,
    call: &Call,
    credential: &Credential,
) -> Result<Arc<Process>, Refusal> {
    let service = &call.service;
    let token = credential.token().cloned();
    let launch = Launch {
        service: &service.name,
        user_id: call.caller.user_id,
        command: service.command.as_deref().unwrap_or_default(),
        args: &service.args,
        env: &service.env,
        token,
    };
    state.gateway.stdio.spawn(launch).await.map_err(|e| match e {
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
            Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The service's command could not be started")
        }
    })
}
