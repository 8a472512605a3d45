//! Between the two eras of MCP. What an HTTP upstream speaks is asked with `server/discover`
//! (once a minute at most per service). A 2026-07-28 (stateless) client to an upstream that
//! speaks it too is relayed as it is. To an upstream of 2025-11-25 only, the gateway keeps
//! upstream sessions of its own, one per API key, service and declared client capabilities,
//! initialised with those capabilities, reused across requests, initialised again when the
//! upstream forgets one, and forgotten when idle like a client's; each result is stamped as the
//! modern client expects, and `server/discover` is answered from the upstream's `initialize`.
//! A 2025-11-25 client of an upstream of 2026-07-28 only gets its `initialize` answered from the
//! upstream's `server/discover`, and each of its requests is sent as a stateless one with what
//! it declared. Wires the relay and answer phases, like `endpoint` and `probe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::StatusCode;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

use super::answer::{Body, Relayed, broken_off, keep_offered, messages_of, whole_answer};
use super::call::{Call, Credential};
use super::era::{self, BRIDGED_VERSION, Era, Modern};
use super::jsonrpc::{self, Message};
use super::record::{CallRecord, messages_in};
use super::refusal::{NOT_FOUND, Refusal};
use super::relay;
use super::sessions::{Awaiting, Bridged, Declared, Initialized, Speaks, UpstreamSession, session};
use crate::app::AppState;
use crate::catalog::definition::Transport;

/// The gateway's own request ids in its sessions for stateless clients.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the service's upstream speaks. A stdio service is taken to speak 2025-11-25 (its child
/// would have to be started to ask).
pub(super) async fn speaks(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Speaks, Refusal> {
    if call.service.transport != Transport::Http {
        return Ok(Speaks::Legacy);
    }
    if let Some(known) = state.gateway.speaks(call.service.id) {
        return Ok(known);
    }
    let probe = json!({ "jsonrpc": "2.0", "id": "mcp-platform-discover", "method": "server/discover",
        "params": { "_meta": { era::META_VERSION: era::MODERN_VERSION, era::META_CAPABILITIES: {},
            era::META_CLIENT_INFO: gateway_info() } } });
    let modern =
        Modern { version: era::MODERN_VERSION.to_owned(), capabilities: json!({}), client_info: None };
    let probe_call = stateless_call(own_call(call, &probe)?, modern);
    // Not reachable now: nothing is remembered, and it is asked again next time.
    let relayed = relay::post(state, &probe_call, credential, None, record).await?;
    let messages = messages_of(relayed.body).await.unwrap_or_default();
    let discovered = messages.iter().find_map(|m| m.get("result")?.as_object().cloned());
    let versions: Vec<&str> = discovered
        .iter()
        .flat_map(|result| result.get("supportedVersions").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let speaks = match discovered.clone() {
        Some(result) if versions.contains(&era::MODERN_VERSION) => {
            let dual = versions.iter().any(|v| jsonrpc::PROTOCOL_VERSIONS.contains(v));
            Speaks::Modern { dual, discovered: Arc::new(result) }
        }
        _ => Speaks::Legacy,
    };
    state.gateway.remember_speaks(call.service.id, speaks.clone());
    Ok(speaks)
}

fn gateway_info() -> Value {
    json!({ "name": "mcp-platform", "version": env!("CARGO_PKG_VERSION") })
}

/// A modern client's request to an upstream that speaks 2026-07-28: relayed as it is, except
/// `server/discover` (answered with the versions the gateway serves) and results the gateway
/// must look at (lists it filters for the caller, and caching hints: `private`).
pub(super) async fn relay_stateless(
    state: &AppState,
    call: &Call,
    discovered: &Initialized,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let method = call.message.method().unwrap_or_default().to_owned();
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    if method == "server/discover" {
        let mut result = (**discovered).clone();
        result.insert("supportedVersions".to_owned(), json!(era::supported_versions()));
        result.insert("cacheScope".to_owned(), json!("private"));
        return Ok(whole_answer(&[json!({ "jsonrpc": "2.0", "id": id, "result": result })], None));
    }
    let relayed = relay::post(state, call, credential, None, record).await?;
    if !era::is_cacheable(&method) {
        return Ok(relayed);
    }
    // (A subscription's stream goes on as it is.)
    let status = relayed.status;
    let mut messages = messages_of(relayed.body).await.ok_or_else(broken_off)?;
    if call.filters_tools() {
        keep_offered(&mut messages, |tool| call.offers(tool));
    }
    Ok(stamped(messages, &method, status))
}

/// A 2025-11-25 client's `initialize` for an upstream of 2026-07-28 only: answered from the
/// upstream's `server/discover`, in the revision the client asked for when the gateway serves
/// it; the session this opens is the gateway's alone.
pub(super) fn initialize_for_legacy(call: &Call, discovered: &Initialized) -> Relayed {
    let params = match &call.message {
        Message::Request { params, .. } => params.clone().unwrap_or_default(),
        _ => Value::Null,
    };
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(BRIDGED_VERSION);
    let version = if jsonrpc::PROTOCOL_VERSIONS.contains(&asked) { asked } else { BRIDGED_VERSION };
    let server_info = discovered
        .get("_meta")
        .and_then(|m| m.get(era::META_SERVER_INFO))
        .cloned()
        .unwrap_or_else(|| json!({ "name": call.service.name, "version": call.service.version }));
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": discovered.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "serverInfo": server_info,
    });
    if let Some(instructions) = discovered.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    let declared = Declared {
        capabilities: params.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        client_info: params.get("clientInfo").cloned().unwrap_or_else(gateway_info),
    };
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    whole_answer(
        &[json!({ "jsonrpc": "2.0", "id": id, "result": result })],
        Some(UpstreamSession::Stateless(Arc::new(declared))),
    )
}

/// A message in a 2025-11-25 client's session with an upstream of 2026-07-28 only. Requests go
/// as stateless ones with what the client declared; `ping` and the client's notifications stay
/// here (that revision has neither). A result that asks the client for input mid-call cannot
/// reach a client of this revision yet: it gets an error saying so.
pub(super) async fn relay_for_legacy(
    state: &AppState,
    call: &Call,
    declared: &Declared,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let Message::Request { id, method, .. } = &call.message else {
        return Ok(Relayed {
            status: StatusCode::ACCEPTED,
            content_type: None,
            opened: None,
            body: Body::Empty,
        });
    };
    if method == "ping" {
        return Ok(whole_answer(&[json!({ "jsonrpc": "2.0", "id": id, "result": {} })], None));
    }
    let body = era::with_modern_meta(&call.body, &declared.capabilities, &declared.client_info).ok_or_else(
        || {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                era::INVALID_PARAMS,
                "Invalid params: params must be an object",
            )
        },
    )?;
    let modern = Modern {
        version: era::MODERN_VERSION.to_owned(),
        capabilities: declared.capabilities.clone(),
        client_info: Some(declared.client_info.clone()),
    };
    let stateless = stateless_call(legacy_call(call, call.message.clone(), body.into()), modern);
    let relayed = relay::post(state, &stateless, credential, None, record).await?;
    let status = relayed.status;
    let mut messages = messages_of(relayed.body).await.ok_or_else(broken_off)?;
    for message in &mut messages {
        if message.pointer("/result/resultType").and_then(Value::as_str) == Some("input_required") {
            *message = jsonrpc::error_body(
                id,
                jsonrpc::INTERNAL_ERROR,
                "The service asks for more input in the middle of this call (2026-07-28 input requests), \
                 which the gateway does not bridge to a 2025-11-25 client yet",
            );
        }
    }
    if call.filters_tools() {
        keep_offered(&mut messages, |tool| call.offers(tool));
    }
    Ok(whole_answer(&messages, None).with_status(status))
}

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
    // Stateless clients share the gateway's session, and each numbers its requests its own way:
    // the request goes under an id of the gateway's, and its answer comes back under the client's.
    let bridged_id = json!(format!("mcp-platform-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
    let (message, body) = match (&call.message, era::for_legacy_upstream(&call.body, &bridged_id)) {
        (Message::Request { method, params, .. }, Some(body)) => {
            let message =
                Message::Request { id: bridged_id.clone(), method: method.clone(), params: params.clone() };
            (message, actix_web::web::Bytes::from(body))
        }
        _ => (call.message.clone(), call.body.clone()),
    };
    if call.is_listen() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            jsonrpc::METHOD_NOT_FOUND,
            "Method not found: subscriptions/listen is not bridged to this service's 2025-11-25 upstream yet",
        ));
    }
    // The retry of a request whose upstream asked the client something: the answers go to the
    // upstream, and the same answer is read on.
    if let Some(state_id) = resumed_state(call) {
        let awaiting =
            state.gateway.resume(&state_id, call.caller.key_id, call.service.id).ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    era::INVALID_PARAMS,
                    "Invalid params: unknown or expired requestState",
                )
            })?;
        let responses = match &call.message {
            Message::Request { params, .. } => params.as_ref().and_then(|p| p.get("inputResponses")).cloned(),
            _ => None,
        }
        .unwrap_or_default();
        for (key, upstream_id) in &awaiting.asked {
            let answer = match responses.get(key) {
                Some(result) => json!({ "jsonrpc": "2.0", "id": upstream_id, "result": result }),
                None => {
                    jsonrpc::error_body(upstream_id, jsonrpc::INTERNAL_ERROR, "The client gave no answer")
                }
            };
            relay::post(state, &own_call(call, &answer)?, credential, Some(&awaiting.upstream), record)
                .await?;
        }
        let Awaiting { upstream, bridged_id, reader, status, .. } = awaiting;
        return finish(state, call, modern, credential, &upstream, reader, bridged_id, status, record).await;
    }
    let mut forgotten = false;
    loop {
        let bridged = open(state, call, modern, credential, record).await?;
        let relayed_call = legacy_call(call, message.clone(), body.clone());
        match relay::post(state, &relayed_call, credential, Some(&bridged.upstream), record).await {
            Ok(relayed) => {
                let status = relayed.status;
                let reader = Reader::new(relayed.body);
                return finish(
                    state,
                    call,
                    modern,
                    credential,
                    &bridged.upstream,
                    reader,
                    bridged_id,
                    status,
                    record,
                )
                .await;
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

    let client_info = modern.client_info.clone().unwrap_or_else(gateway_info);
    let initialize = json!({ "jsonrpc": "2.0", "id": "mcp-platform-bridge", "method": "initialize",
        "params": { "protocolVersion": BRIDGED_VERSION, "capabilities": capabilities, "clientInfo": client_info } });
    let mut relayed = relay::post(state, &own_call(call, &initialize)?, credential, None, record).await?;
    let Some(upstream) = relayed.opened.take() else {
        let messages = messages_of(relayed.body).await.unwrap_or_default();
        return Err(refused_initialize(&messages));
    };
    let messages = messages_of(relayed.body).await.unwrap_or_default();
    let Some(initialized) = messages.iter().find_map(|m| m.get("result")?.as_object().cloned()) else {
        relay::end(state, &call.service, &upstream).await;
        return Err(refused_initialize(&messages));
    };
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    if let Err(refusal) =
        relay::post(state, &own_call(call, &note)?, credential, Some(&upstream), record).await
    {
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

/// The client's declared capabilities as the gateway declares them upstream (all of them: what
/// the upstream asks of the client mid-call reaches it as an `InputRequiredResult`).
fn bridged_capabilities(declared: &Value) -> Value {
    Value::Object(declared.as_object().cloned().unwrap_or_default())
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
        param_headers: Vec::new(),
    }
}

/// A message of the gateway's own (a handshake, an answer to the upstream) for the call's
/// upstream, as a call in the gateway's legacy session.
fn own_call(call: &Call, message: &Value) -> Result<Call, Refusal> {
    let body = message.to_string();
    let parsed = jsonrpc::parse(body.as_bytes()).map_err(Refusal::malformed)?;
    Ok(legacy_call(call, parsed, body.into()))
}

/// The same call sent as a 2026-07-28 request by a client that declared `modern`.
fn stateless_call(call: Call, modern: Modern) -> Call {
    Call { protocol_version: Some(era::MODERN_VERSION.to_owned()), era: Era::Modern(modern), ..call }
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

/// Reads the upstream's answer to its end, or to a request it makes of the client: one the
/// client declared it can answer becomes an `InputRequiredResult` (the answer's reading waits for
/// the client's retry); any other is answered with an error naming it, and reading goes on.
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &AppState,
    call: &Call,
    modern: &Modern,
    credential: &Credential,
    upstream: &UpstreamSession,
    mut reader: Reader,
    bridged_id: Value,
    status: StatusCode,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let method = call.message.method().unwrap_or_default().to_owned();
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    loop {
        match reader.next().await? {
            Stop::Asks(request) => {
                let asked = request["method"].as_str().unwrap_or_default();
                let declared =
                    ASKED_OF_CLIENTS.iter().find(|(m, _)| *m == asked).map(|(_, capability)| *capability);
                let may_ask =
                    matches!(declared, Some(capability) if modern.capabilities.get(capability).is_some());
                if !may_ask {
                    decline(state, call, credential, upstream, &request, record).await?;
                    continue;
                }
                let state_id = format!("{RESUMED}{}", crate::crypto::random_token());
                let question = json!({ "method": asked, "params": request.get("params").cloned().unwrap_or_else(|| json!({})) });
                let answer = json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "resultType": "input_required",
                    "inputRequests": { "upstream": question },
                    "requestState": state_id,
                } });
                let awaiting = Awaiting {
                    key_id: call.caller.key_id,
                    service_id: call.service.id,
                    upstream: upstream.clone(),
                    asked: vec![("upstream".to_owned(), request["id"].clone())],
                    bridged_id,
                    reader,
                    status,
                    since: std::time::Instant::now(),
                };
                if !state.gateway.wait_for_client(state_id, awaiting) {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        jsonrpc::INTERNAL_ERROR,
                        "Too many calls wait for their clients' input; try again later",
                    ));
                }
                return Ok(whole_answer(&[answer], None));
            }
            Stop::Done(mut messages) => {
                for answer in messages.iter_mut().filter(|m| m.get("id") == Some(&bridged_id)) {
                    answer["id"] = id.clone();
                }
                if !messages.iter().any(|m| m.get("result").is_some() || m.get("error").is_some()) {
                    return Err(broken_off());
                }
                if call.filters_tools() {
                    keep_offered(&mut messages, |tool| call.offers(tool));
                }
                return Ok(stamped(messages, &method, status));
            }
        }
    }
}

/// The requests a 2025-11-25 upstream may make of its client mid-call, with the capability the
/// client declares for each.
const ASKED_OF_CLIENTS: [(&str, &str); 3] =
    [("elicitation/create", "elicitation"), ("sampling/createMessage", "sampling"), ("roots/list", "roots")];

/// How the gateway's `requestState` for a question of the upstream begins.
const RESUMED: &str = "mcp-platform:asked:";

/// The `requestState` a retry carries, if it does: a 2025-11-25 upstream issues none, so only
/// the gateway's own are known.
fn resumed_state(call: &Call) -> Option<String> {
    let Message::Request { params: Some(params), .. } = &call.message else { return None };
    Some(params.get("requestState")?.as_str().unwrap_or_default().to_owned())
}

/// An upstream's answer read event by event, kept while its client is asked something.
pub(super) struct Reader {
    chunks: Option<
        futures_util::stream::BoxStream<'static, Result<actix_web::web::Bytes, super::answer::Broken>>,
    >,
    whole: Option<Body>,
    pending: String,
    messages: Vec<Value>,
}

enum Stop {
    /// The upstream asks the client this (a JSON-RPC request).
    Asks(Value),
    /// The answer ended: every message it had.
    Done(Vec<Value>),
}

impl Reader {
    fn new(body: Body) -> Reader {
        match body {
            Body::Stream { is_sse: true, chunks } => {
                Reader { chunks: Some(chunks), whole: None, pending: String::new(), messages: Vec::new() }
            }
            body => Reader { chunks: None, whole: Some(body), pending: String::new(), messages: Vec::new() },
        }
    }

    async fn next(&mut self) -> Result<Stop, Refusal> {
        if let Some(body) = self.whole.take() {
            return messages_of(body).await.map(Stop::Done).ok_or_else(broken_off);
        }
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                for message in messages_in(&event) {
                    if message.get("method").is_some() && message.get("id").is_some() {
                        return Ok(Stop::Asks(message));
                    }
                    self.messages.push(message);
                }
            }
            let Some(chunks) = self.chunks.as_mut() else { break };
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    self.pending.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"))
                }
                Some(Err(_)) => return Err(broken_off()),
                None => self.chunks = None,
            }
        }
        let rest = std::mem::take(&mut self.pending);
        self.messages.extend(messages_in(&rest));
        Ok(Stop::Done(std::mem::take(&mut self.messages)))
    }
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
        &format!("{asked}: the {} client behind the gateway cannot answer it", era::MODERN_VERSION),
    );
    relay::post(state, &own_call(call, &answer)?, credential, Some(upstream), record).await.map(drop)
}

/// The messages as the modern client gets them, each result stamped.
fn stamped(mut messages: Vec<Value>, method: &str, status: StatusCode) -> Relayed {
    for message in &mut messages {
        era::stamp(message, method);
    }
    whole_answer(&messages, None).with_status(status)
}
