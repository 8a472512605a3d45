//! A 2026-07-28 (stateless) client to an upstream that speaks 2025-11-25: the gateway keeps
//! upstream sessions of its own, one per API key, service and declared client capabilities,
//! initialised with those capabilities, reused across requests, initialised again when the
//! upstream forgets one, and forgotten when idle like a client's. Each result is stamped as the
//! modern client expects; `server/discover` is answered from the upstream's `initialize` result.
//! Wires the relay and answer phases, like `endpoint` and `probe`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

use super::answer::{Body, Relayed, whole_answer};
use super::call::{Call, Credential};
use super::era::{self, BRIDGED_VERSION, Era, Modern};
use super::jsonrpc::{self, Message};
use super::record::{CallRecord, messages_in};
use super::refusal::{NOT_FOUND, Refusal};
use super::relay;
use super::sessions::{Bridged, UpstreamSession, session};
use crate::app::AppState;

/// Capabilities a legacy upstream would use to send the client requests mid-call (MRTR is not
/// bridged yet): the upstream is not told of them, so it does not send such requests.
const NOT_BRIDGED: [&str; 3] = ["elicitation", "sampling", "roots"];

/// Relays a modern client's request to a legacy upstream in the gateway's own session.
pub(super) async fn relay(
    state: &AppState,
    call: &Call,
    modern: &Modern,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let method = call.message.method().unwrap_or_default().to_owned();
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    if method == "server/discover" {
        let initialized = match state.gateway.discovered(call.service.id) {
            Some(initialized) => initialized,
            None => open(state, call, modern, credential, record).await?.initialized,
        };
        let result = era::discover_result(&initialized, era::DISCOVER_TTL.as_millis() as u64);
        return Ok(whole_answer(&[json!({ "jsonrpc": "2.0", "id": id, "result": result })], None));
    }
    let body = era::for_legacy_upstream(&call.body).map(Into::into).unwrap_or_else(|| call.body.clone());
    let mut forgotten = false;
    loop {
        let bridged = open(state, call, modern, credential, record).await?;
        let relayed_call = legacy_call(call, call.message.clone(), body.clone());
        match relay::post(state, &relayed_call, credential, Some(&bridged.upstream), record).await {
            Ok(relayed) => {
                let status = relayed.status;
                let messages = read(state, call, credential, &bridged.upstream, relayed, record).await?;
                if !messages.iter().any(|m| m.get("result").is_some() || m.get("error").is_some()) {
                    return Err(broken());
                }
                return Ok(stamped(messages, &method, status));
            }
            // The upstream forgot the session: once, the gateway opens another.
            Err(refusal) if refusal.error.code == NOT_FOUND && !forgotten => {
                state.gateway.forget(&bridged.id);
                forgotten = true;
            }
            Err(refusal) => return Err(refusal),
        }
    }
}

/// The gateway's session for this caller, service and declared capabilities: the one open, or
/// a new one initialised now.
async fn open(
    state: &AppState,
    call: &Call,
    modern: &Modern,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Bridged, Refusal> {
    let capabilities = bridged_capabilities(&modern.capabilities);
    let Some(key) = call.caller.key_id else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "An API key is required",
        ));
    };
    // Capabilities are the client's to write: they enter the id as a digest.
    let declared = sha2::Sha256::digest(capabilities.to_string().as_bytes());
    let declared = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&declared[..12]);
    let id = format!("bridge:{key}:{}:{declared}", call.service.id);
    if let Ok(Some((_, existing))) = session(state, Some(&id), key, call.service.id)
        && let Some(initialized) = existing.initialized
    {
        return Ok(Bridged { id, upstream: existing.upstream, initialized });
    }

    let client_info = modern
        .client_info
        .clone()
        .unwrap_or_else(|| json!({ "name": "mcp-platform", "version": env!("CARGO_PKG_VERSION") }));
    let initialize = json!({ "jsonrpc": "2.0", "id": "mcp-platform-bridge", "method": "initialize",
        "params": { "protocolVersion": BRIDGED_VERSION, "capabilities": capabilities, "clientInfo": client_info } });
    let message = jsonrpc::parse(initialize.to_string().as_bytes()).map_err(Refusal::malformed)?;
    let init_call = legacy_call(call, message, initialize.to_string().into());
    let mut relayed = relay::post(state, &init_call, credential, None, record).await?;
    let Some(upstream) = relayed.opened.take() else {
        let messages = collect(relayed.body).await.unwrap_or_default();
        return Err(refused_initialize(&messages));
    };
    let messages = collect(relayed.body).await.unwrap_or_default();
    let Some(initialized) = messages.iter().find_map(|m| m.get("result")?.as_object().cloned()) else {
        relay::end(state, &call.service, &upstream).await;
        return Err(refused_initialize(&messages));
    };
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let message = jsonrpc::parse(note.to_string().as_bytes()).map_err(Refusal::malformed)?;
    let note_call = legacy_call(call, message, note.to_string().into());
    if let Err(refusal) = relay::post(state, &note_call, credential, Some(&upstream), record).await {
        relay::end(state, &call.service, &upstream).await;
        return Err(refusal);
    }
    let bridged = Bridged { id, upstream, initialized: Arc::new(initialized) };
    // Two first requests at once may both have opened one: the first registered is used.
    match state.gateway.open_bridge(key, call.service.id, bridged.clone()) {
        Ok(()) => Ok(bridged),
        Err(registered) => {
            relay::end(state, &call.service, &bridged.upstream).await;
            Ok(registered)
        }
    }
}

/// The client's declared capabilities as the gateway declares them upstream.
fn bridged_capabilities(declared: &Value) -> Value {
    let mut capabilities = declared.as_object().cloned().unwrap_or_default();
    for name in NOT_BRIDGED {
        capabilities.remove(name);
    }
    Value::Object(capabilities)
}

/// The call as relayed in the gateway's legacy session.
fn legacy_call(call: &Call, message: Message, body: actix_web::web::Bytes) -> Call {
    Call {
        caller: call.caller.clone(),
        service: call.service.clone(),
        message,
        body,
        protocol_version: Some(BRIDGED_VERSION.to_owned()),
        era: Era::Legacy,
    }
}

fn refused_initialize(messages: &[Value]) -> Refusal {
    let reason = messages
        .iter()
        .find_map(|m| m.pointer("/error/message").and_then(Value::as_str))
        .unwrap_or("no answer");
    Refusal::upstream_failed(
        StatusCode::BAD_GATEWAY,
        &format!(
            "The upstream did not open a {BRIDGED_VERSION} session for this {} client: {reason}",
            era::MODERN_VERSION
        ),
    )
}

/// Every message of an answer, to its end; `None` when it broke off.
async fn collect(body: Body) -> Option<Vec<Value>> {
    match body {
        Body::Empty => Some(Vec::new()),
        Body::Whole(text) => Some(messages_in(&text)),
        Body::Stream { mut chunks, .. } => {
            let mut text = Vec::new();
            while let Some(chunk) = chunks.next().await {
                text.extend_from_slice(&chunk.ok()?);
            }
            Some(messages_in(&String::from_utf8_lossy(&text)))
        }
    }
}

/// Reads the upstream's answer event by event. A request the upstream makes of the client on
/// the way (it should not: the capabilities it needs were not declared) is answered with an
/// error naming what is not bridged, so the upstream goes on to its answer.
async fn read(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    upstream: &UpstreamSession,
    relayed: Relayed,
    record: &mut CallRecord,
) -> Result<Vec<Value>, Refusal> {
    let mut messages = Vec::new();
    let Body::Stream { is_sse: true, mut chunks } = relayed.body else {
        return collect(relayed.body).await.ok_or_else(broken);
    };
    let mut pending = String::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| broken())?;
        pending.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for message in messages_in(&event) {
                if message.get("method").is_some() && message.get("id").is_some() {
                    decline(state, call, credential, upstream, &message, record).await?;
                } else {
                    messages.push(message);
                }
            }
        }
    }
    messages.extend(messages_in(&pending));
    Ok(messages)
}

/// Answers an upstream's request of the client with an error.
async fn decline(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    upstream: &UpstreamSession,
    request: &Value,
    record: &mut CallRecord,
) -> Result<(), Refusal> {
    let asked = request["method"].as_str().unwrap_or("a request");
    let answer = jsonrpc::error_body(
        &request["id"],
        jsonrpc::METHOD_NOT_FOUND,
        &format!("{asked} is not bridged by the gateway to a {} client", era::MODERN_VERSION),
    );
    let message = jsonrpc::parse(answer.to_string().as_bytes()).map_err(Refusal::malformed)?;
    relay::post(
        state,
        &legacy_call(call, message, answer.to_string().into()),
        credential,
        Some(upstream),
        record,
    )
    .await
    .map(drop)
}

fn broken() -> Refusal {
    Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream broke off its answer")
}

/// The messages as the modern client gets them, each result stamped.
fn stamped(mut messages: Vec<Value>, method: &str, status: StatusCode) -> Relayed {
    for message in &mut messages {
        era::stamp(message, method);
    }
    let mut relayed = whole_answer(&messages, None);
    relayed.status = status;
    relayed
}
