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

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use memchr::memmem::Finder;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::AbortOnDropHandle;

use super::answer::{
    Body, Relayed, broken_off, json_answer, keep_offered, messages_of, sse_event, text_of, whole_answer,
};
use super::cache::LoadedService;
use super::call::{Call, Caller, Credential};
use super::era::{self, BRIDGED_VERSION, Era, Modern};
use super::jsonrpc::{self, Message};
use super::record::{CallRecord, ESCAPE, lossy, texts_in};
use super::refusal::{NOT_FOUND, Refusal, SSE};
use super::relay::{self, Streamed};
use super::sessions::{
    Awaiting, BridgeKey, Bridged, Declared, Initialized, MarkedTools, Owner, Speaks, Subscriptions,
    UpstreamSession,
};
use crate::app::AppState;
use crate::catalog::definition::Transport;

/// The gateway's own request ids in its sessions for stateless clients.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Digests the capabilities a stateless client declares, for the id of its session upstream.
static CAPABILITIES_DIGEST: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);

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
    let modern = Modern { version: era::MODERN_VERSION, capabilities: json!({}), client_info: None };
    let probe_call = stateless_call(own_call(call, &probe)?, modern);
    // Not reachable now: nothing is remembered, and it is asked again next time.
    let relayed = relay::post(state, &probe_call, credential, None, &mut record.secrets).await?;
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
    let relayed = relay::post(state, call, credential, None, &mut record.secrets).await?;
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
        subscriptions: Default::default(),
    };
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    whole_answer(
        &[json!({ "jsonrpc": "2.0", "id": id, "result": result })],
        Some(UpstreamSession::Stateless(Arc::new(declared))),
    )
}

/// A message in a 2025-11-25 client's session with an upstream of 2026-07-28 only. Requests go
/// as stateless ones with what the client declared, and a `tools/call` with the `Mcp-Param-*`
/// headers its tool's schema asks for; `ping`, the client's notifications and its resource
/// subscriptions stay here (that revision has none of them; the session's GET stream listens
/// for the subscribed resources). A result that asks the client for input mid-call cannot
/// reach a client of this revision yet: it gets an error saying so.
pub(super) async fn relay_for_legacy(
    state: &AppState,
    call: &Call,
    declared: &Declared,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let Message::Request { id, method, params, .. } = &call.message else {
        return Ok(Relayed {
            status: StatusCode::ACCEPTED,
            content_type: None,
            opened: None,
            body: Body::Empty,
        });
    };
    let answered =
        |result: Value| whole_answer(&[json!({ "jsonrpc": "2.0", "id": id, "result": result })], None);
    match method.as_str() {
        "ping" => return Ok(answered(json!({}))),
        "resources/subscribe" | "resources/unsubscribe" => {
            let uri = params.as_ref().and_then(|p| p.get("uri")).and_then(Value::as_str);
            let uri = uri.ok_or_else(|| invalid_params("uri is required"))?;
            subscribe(declared, uri, method == "resources/subscribe").await?;
            return Ok(answered(json!({})));
        }
        _ => {}
    }
    let mut listed_again = false;
    loop {
        let param_headers = param_headers(state, call, declared, credential, record, listed_again).await?;
        let stateless = declared_call(call, declared, &call.message, &call.body, param_headers)?;
        let relayed = relay::post(state, &stateless, credential, None, &mut record.secrets).await?;
        let status = relayed.status;
        let mut messages = messages_of(relayed.body).await.ok_or_else(broken_off)?;
        // The tool's schema may have changed since its list was read: read again, once.
        let mismatch = messages
            .iter()
            .any(|m| m.pointer("/error/code").and_then(Value::as_i64) == Some(era::HEADER_MISMATCH));
        if mismatch && method == "tools/call" && !listed_again {
            listed_again = true;
            continue;
        }
        let whole_list = params.as_ref().is_none_or(|p| p.get("cursor").is_none());
        if method == "tools/list" && whole_list {
            remember_marked(state, call, &messages);
        }
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
        return Ok(whole_answer(&messages, None).with_status(status));
    }
}

fn invalid_params(message: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, era::INVALID_PARAMS, format!("Invalid params: {message}"))
}

/// A message sent as a 2026-07-28 request with what a 2025-11-25 client declared at
/// `initialize`.
fn declared_call(
    call: &Call,
    declared: &Declared,
    message: &Message,
    body: &[u8],
    param_headers: Vec<(String, String)>,
) -> Result<Call, Refusal> {
    let body = era::with_modern_meta(body, &declared.capabilities, &declared.client_info)
        .ok_or_else(|| invalid_params("params must be an object"))?;
    let modern = Modern {
        version: era::MODERN_VERSION,
        capabilities: declared.capabilities.clone(),
        client_info: Some(declared.client_info.clone()),
    };
    let stateless = stateless_call(legacy_call(call, message.clone(), body.into()), modern);
    Ok(Call { param_headers, ..stateless })
}

/// The `Mcp-Param-*` headers of a `tools/call` for an upstream of 2026-07-28, from its tool's
/// input schema: as the service's latest whole tool list had it, or (`fresh`, or none known) as
/// it has it now.
async fn param_headers(
    state: &AppState,
    call: &Call,
    declared: &Declared,
    credential: &Credential,
    record: &mut CallRecord,
    fresh: bool,
) -> Result<Vec<(String, String)>, Refusal> {
    let Message::Request { method, params: Some(params), .. } = &call.message else { return Ok(Vec::new()) };
    let Some(tool) = params.get("name").and_then(Value::as_str).filter(|_| method == "tools/call") else {
        return Ok(Vec::new());
    };
    let marked = match state.gateway.marked_tools(call.service.id) {
        Some(marked) if !fresh => marked,
        _ => list_marked(state, call, declared, credential, record).await?,
    };
    let arguments = params.get("arguments").unwrap_or(&Value::Null);
    Ok(marked.get(tool).map(|schema| era::param_headers(schema, arguments)).unwrap_or_default())
}

/// The most pages of a tool list read for its marked parameters.
const TOOL_PAGES: usize = 20;

/// The service's tools that mark parameters for headers, read from its whole tool list now.
async fn list_marked(
    state: &AppState,
    call: &Call,
    declared: &Declared,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<MarkedTools, Refusal> {
    let mut marked = HashMap::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..TOOL_PAGES {
        let mut request =
            json!({ "jsonrpc": "2.0", "id": "mcp-platform-tools", "method": "tools/list", "params": {} });
        if let Some(cursor) = cursor.take() {
            request["params"]["cursor"] = cursor;
        }
        let own = own_call(call, &request)?;
        let listing = declared_call(call, declared, &own.message, &own.body, Vec::new())?;
        let relayed = relay::post(state, &listing, credential, None, &mut record.secrets).await?;
        let messages = messages_of(relayed.body).await.unwrap_or_default();
        let Some(result) = messages.iter().find_map(|m| m.get("result")) else { break };
        add_marked(result, &mut marked);
        cursor = result.get("nextCursor").filter(|c| c.is_string()).cloned();
        if cursor.is_none() {
            let marked = Arc::new(marked);
            state.gateway.remember_marked_tools(call.service.id, marked.clone());
            return Ok(marked);
        }
    }
    // Not read whole: used for this call only.
    Ok(Arc::new(marked))
}

/// Remembers the marked tools of a whole tool list the client read.
fn remember_marked(state: &AppState, call: &Call, messages: &[Value]) {
    let Some(result) = messages.iter().find_map(|m| m.get("result")) else { return };
    if result.get("nextCursor").is_some_and(Value::is_string) {
        return;
    }
    let mut marked = HashMap::new();
    add_marked(result, &mut marked);
    state.gateway.remember_marked_tools(call.service.id, Arc::new(marked));
}

fn add_marked(result: &Value, marked: &mut HashMap<String, Value>) {
    for tool in result.get("tools").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(schema)) = (tool.get("name").and_then(Value::as_str), tool.get("inputSchema"))
        else {
            continue;
        };
        if schema.to_string().contains("\"x-mcp-header\"") {
            marked.insert(name.to_owned(), schema.clone());
        }
    }
}

/// The most resources one session subscribes to.
const SUBSCRIBED_MAX: usize = 1000;

/// How long a subscription's answer waits for the session's open stream to listen for it.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Subscribes the session to a resource (`on`), or ends that; answered once the session's open
/// stream listens for it upstream (if one is open).
async fn subscribe(declared: &Declared, uri: &str, on: bool) -> Result<(), Refusal> {
    let mut version = None;
    declared.subscriptions.send_if_modified(|subscribed| {
        let changed = match on {
            true if subscribed.resources.len() >= SUBSCRIBED_MAX => return false,
            true => subscribed.resources.insert(uri.to_owned()),
            false => subscribed.resources.remove(uri),
        };
        subscribed.version += u64::from(changed);
        version = Some(subscribed.version);
        changed
    });
    let Some(version) = version else {
        return Err(invalid_params(&format!("a session subscribes to {SUBSCRIBED_MAX} resources at most")));
    };
    let mut subscribed = declared.subscriptions.subscribe();
    let listening = subscribed.wait_for(|s| s.listened.is_none_or(|listened| listened >= version));
    let _ = tokio::time::timeout(SUBSCRIBE_WAIT, listening).await;
    Ok(())
}

/// The GET stream of a 2025-11-25 client's session with an upstream of 2026-07-28 only: a
/// subscription upstream to every list change and to the resources the client subscribed to,
/// opened again when those change. Answered once the upstream acknowledged it; its
/// notifications reach the client as that revision has them.
pub(super) async fn listen_for_legacy(
    state: web::Data<AppState>,
    caller: Caller,
    service: Arc<LoadedService>,
    credential: Credential,
    declared: Arc<Declared>,
) -> Result<Streamed, Refusal> {
    let template = Call {
        caller,
        service,
        message: Message::Notification { method: era::LISTEN.to_owned() },
        body: web::Bytes::new(),
        protocol_version: None,
        era: Era::Legacy,
        param_headers: Vec::new(),
    };
    let changes = declared.subscriptions.subscribe();
    let mut listener = Listener {
        state,
        template,
        credential,
        declared,
        changes,
        version: 0,
        reader: Reader::new(Body::Empty),
    };
    listener.listen().await?;
    let events = futures_util::stream::unfold(listener, |mut listener| async move {
        let event = listener.next().await?;
        Some((Ok::<_, actix_web::Error>(event), listener))
    });
    Ok(Streamed { status: StatusCode::OK, content_type: Some(SSE.to_owned()), chunks: events.boxed() })
}

/// A legacy session's GET stream, listening upstream.
struct Listener {
    state: web::Data<AppState>,
    /// Whose stream it is, for which service.
    template: Call,
    credential: Credential,
    declared: Arc<Declared>,
    changes: tokio::sync::watch::Receiver<Subscriptions>,
    /// The version of the subscriptions listened for.
    version: u64,
    reader: Reader,
}

enum Woke {
    Upstream(Result<Option<Value>, Refusal>),
    Changed(bool),
    Quiet,
}

impl Listener {
    /// Opens the subscription upstream for what the session subscribed to now; returns once
    /// the upstream acknowledged it.
    async fn listen(&mut self) -> Result<(), Refusal> {
        let (version, resources) = {
            let subscribed = self.changes.borrow_and_update();
            (subscribed.version, subscribed.resources.clone())
        };
        let mut filter =
            json!({ "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true });
        if !resources.is_empty() {
            filter["resourceSubscriptions"] = json!(resources);
        }
        let id = format!("mcp-platform-listen-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": era::LISTEN, "params": { "notifications": filter } });
        let own = own_call(&self.template, &request)?;
        let listening = declared_call(&self.template, &self.declared, &own.message, &own.body, Vec::new())?;
        let relayed = relay::listen(&self.state, &listening, &self.credential).await?;
        let mut reader = Reader::new(relayed.body);
        while let Some(message) = reader.message().await? {
            if message.get("method").and_then(Value::as_str) == Some(era::ACKNOWLEDGED) {
                self.reader = reader;
                self.version = version;
                self.declared.subscriptions.send_modify(|s| s.listened = Some(version));
                return Ok(());
            }
            if let Some(error) = message.get("error") {
                let reason = error.get("message").and_then(Value::as_str).unwrap_or("no reason given");
                return Err(no_subscriptions(reason));
            }
        }
        Err(no_subscriptions("it ended the subscription at once"))
    }

    /// The next event for the client: a notification, or a comment when it is quiet; `None`
    /// when the subscription ends.
    async fn next(&mut self) -> Option<web::Bytes> {
        loop {
            let woke = tokio::select! {
                message = self.reader.message() => Woke::Upstream(message),
                changed = self.changes.changed() => Woke::Changed(changed.is_ok()),
                _ = tokio::time::sleep(era::KEEP_ALIVE) => Woke::Quiet,
            };
            match woke {
                Woke::Upstream(message) => {
                    let message = message.ok()??;
                    // A result ends the subscription (the upstream stops, say).
                    if message.get("id").is_some() {
                        return None;
                    }
                    if message.get("method").and_then(Value::as_str) != Some(era::ACKNOWLEDGED) {
                        return Some(sse_event(&era::without_subscription_id(message)).into());
                    }
                }
                Woke::Changed(open) => {
                    let version = self.changes.borrow().version;
                    if !open || (version != self.version && self.listen().await.is_err()) {
                        return None;
                    }
                }
                Woke::Quiet => return Some(web::Bytes::from_static(b":\n\n")),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.declared.subscriptions.send_modify(|s| s.listened = None);
    }
}

fn no_subscriptions(reason: &str) -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        jsonrpc::INVALID_REQUEST,
        format!("The service offers no stream of notifications: {reason}"),
    )
}

/// Relays a modern client's request to a legacy upstream in the gateway's own session.
pub(super) async fn relay(
    state: &web::Data<AppState>,
    call: &Call,
    modern: &Modern,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let method = call.message.method().unwrap_or_default();
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    if method == "server/discover" {
        let initialized = match state.gateway.discovered(call.service.id) {
            Some(initialized) => initialized,
            None => open(state, call, modern, credential, record).await?.initialized,
        };
        let result = era::discover_result(&initialized, era::DISCOVER_TTL.as_millis() as u64);
        return Ok(whole_answer(&[json!({ "jsonrpc": "2.0", "id": id, "result": result })], None));
    }
    if call.is_listen() {
        return listen(state, call, modern, credential, record).await;
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
            post_own(state, call, &answer, credential, Some(&awaiting.upstream), record).await?;
        }
        let Awaiting { upstream, bridged_id, mut reader, status, .. } = awaiting;
        let stop = reader.next().await?;
        return finish(state, call, modern, credential, &upstream, reader, stop, bridged_id, status, record)
            .await;
    }
    // Stateless clients share the gateway's session, and each numbers its requests its own way:
    // the request goes under an id of the gateway's, and its answer comes back under the client's.
    let bridged_id = Value::String(own_id());
    let (message, body) = match &call.message {
        Message::Request { method, params, .. } => {
            // Written piece by piece (this runs on every bridged call); about the client's body
            // in size: the `_meta` it loses, the gateway's id it gains (plain ASCII, written as
            // it is).
            let mut body = Vec::with_capacity(call.body.len() + 16);
            body.extend_from_slice(br#"{"jsonrpc":"2.0","id":""#);
            body.extend_from_slice(bridged_id.as_str().unwrap_or_default().as_bytes());
            body.extend_from_slice(br#"","method":"#);
            serde_json::to_writer(&mut body, method).expect("a string serializes");
            if let Some(params) = params {
                body.extend_from_slice(br#","params":"#);
                let params = era::ForLegacyUpstream { params, token: &bridged_id };
                serde_json::to_writer(&mut body, &params).expect("a JSON value serializes");
            }
            body.push(b'}');
            // Of the params, the relay reads only the progress token (a stdio child's
            // notifications find their request by it): the body has the rest.
            let progress = era::progress_token(&call.message)
                .map(|_| json!({ "_meta": { "progressToken": bridged_id } }));
            (
                Message::Request {
                    id: bridged_id.clone(),
                    method: method.clone(),
                    params: progress,
                    declared: None,
                },
                body.into(),
            )
        }
        _ => (call.message.clone(), call.body.clone()),
    };
    let mut relayed_call = legacy_call(call, message, body);
    let mut forgotten = false;
    loop {
        let bridged = open(state, call, modern, credential, record).await?;
        let exchange =
            exchange(state.clone(), relayed_call, credential.clone(), bridged.upstream.clone()).await?;
        relayed_call = exchange.call;
        record.secrets.extend(exchange.secrets);
        match exchange.answered {
            Ok((status, reader, stop)) => {
                return finish(
                    state,
                    call,
                    modern,
                    credential,
                    &bridged.upstream,
                    reader,
                    stop,
                    bridged_id,
                    status,
                    record,
                )
                .await;
            }
            // The upstream forgot the session: once, the gateway opens another.
            Err(refusal) if refusal.error.code == NOT_FOUND && !forgotten => {
                state.gateway.forget_bridge(&bridged.key);
                forgotten = true;
            }
            Err(refusal) => return Err(refusal),
        }
    }
}

/// A bridged request's exchange with its upstream, as far as the answer's first stop.
struct Exchange {
    call: Call,
    /// The credentials sent, for the record.
    secrets: Vec<String>,
    answered: Result<(StatusCode, Reader, Stop), Refusal>,
}

/// Sends the request in the gateway's session and reads the answer to its end, or to the
/// upstream's first request of the client, in a task of its own: the upstream's answer wakes
/// that task, and the client's connection (which actix-web polls whole on every wake-up, its
/// request decoder included) only once, when it is read. The task ends with the call, should
/// the client go away first.
async fn exchange(
    state: web::Data<AppState>,
    call: Call,
    credential: Credential,
    upstream: UpstreamSession,
) -> Result<Exchange, Refusal> {
    // (Boxed, so that the task moves a pointer as it starts and ends, not the whole future.)
    let task = actix_web::rt::spawn(Box::pin(async move {
        let mut secrets = Vec::new();
        let answered = async {
            let relayed = relay::post(&state, &call, &credential, Some(&upstream), &mut secrets).await?;
            let mut reader = Reader::new(relayed.body);
            let stop = reader.next().await?;
            Ok((relayed.status, reader, stop))
        }
        .await;
        Exchange { call, secrets, answered }
    }));
    AbortOnDropHandle::new(task).await.map_err(|_| broken_off())
}

/// A modern client's subscription to an upstream of 2025-11-25 only: acknowledged with what
/// the client asked for that the upstream offers (the resources named are subscribed to in the
/// gateway's session), then the notifications the upstream sends on that session's GET stream
/// (read once, shared by the session's subscriptions) that the client asked for, each with the
/// subscription's id. When the upstream ends that stream, the subscription ends with a result.
async fn listen(
    state: &AppState,
    call: &Call,
    modern: &Modern,
    credential: &Credential,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    let bridged = open(state, call, modern, credential, record).await?;
    let asked = match &call.message {
        Message::Request { params: Some(params), .. } => params.get("notifications").cloned(),
        _ => None,
    }
    .unwrap_or_default();
    let capabilities = bridged.initialized.get("capabilities").cloned().unwrap_or_default();
    let offers = |pointer: &str| capabilities.pointer(pointer).and_then(Value::as_bool) == Some(true);
    let mut honored = serde_json::Map::new();
    for (field, offered) in [
        ("toolsListChanged", "/tools/listChanged"),
        ("promptsListChanged", "/prompts/listChanged"),
        ("resourcesListChanged", "/resources/listChanged"),
    ] {
        if asked.get(field) == Some(&Value::Bool(true)) && offers(offered) {
            honored.insert(field.to_owned(), Value::Bool(true));
        }
    }
    let uris = asked.get("resourceSubscriptions").and_then(Value::as_array);
    let uris = uris.into_iter().flatten().filter_map(Value::as_str).take(SUBSCRIBED_MAX);
    let mut subscribed = Vec::new();
    for uri in uris.filter(|_| offers("/resources/subscribe")) {
        let request = json!({ "jsonrpc": "2.0", "id": own_id(),
            "method": "resources/subscribe", "params": { "uri": uri } });
        let relayed = post_own(state, call, &request, credential, Some(&bridged.upstream), record).await?;
        if messages_of(relayed.body).await.unwrap_or_default().iter().any(|m| m.get("result").is_some()) {
            subscribed.push(Value::String(uri.to_owned()));
        }
    }
    if !subscribed.is_empty() {
        honored.insert("resourceSubscriptions".to_owned(), Value::Array(subscribed));
    }
    let receiver = match state.gateway.notifications(&bridged.key) {
        Some(receiver) => receiver,
        None => {
            let streamed = relay::stream(
                state,
                &call.service,
                credential,
                &bridged.upstream,
                Some(BRIDGED_VERSION),
                None,
            )
            .await?;
            if !streamed.status.is_success() {
                return Err(Refusal::upstream_failed(
                    StatusCode::BAD_GATEWAY,
                    &format!("The upstream did not open its stream of notifications ({})", streamed.status),
                ));
            }
            let (sender, receiver) = tokio::sync::broadcast::channel(NOTIFICATIONS_KEPT);
            state.gateway.share_notifications(&bridged.key, &sender);
            tokio::spawn(read_notifications(streamed, sender));
            receiver
        }
    };
    let acknowledged = era::with_subscription_id(
        json!({ "jsonrpc": "2.0", "method": era::ACKNOWLEDGED, "params": { "notifications": honored } }),
        &id,
    );
    let filter = Value::Object(honored);
    let notifications = futures_util::stream::unfold(Some(receiver), move |receiver| {
        let (id, filter) = (id.clone(), filter.clone());
        async move {
            let mut receiver = receiver?;
            loop {
                match receiver.recv().await {
                    Ok(message) if era::is_subscribed(&filter, &message) => {
                        let message = era::with_subscription_id((*message).clone(), &id);
                        return Some((Ok(sse_event(&message).into()), Some(receiver)));
                    }
                    // Those it did not ask for; and those lost while it was slow.
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => {
                        let ended =
                            json!({ "jsonrpc": "2.0", "id": id, "result": { "resultType": "complete" } });
                        return Some((Ok(sse_event(&era::with_subscription_id(ended, &id)).into()), None));
                    }
                }
            }
        }
    });
    let events =
        futures_util::stream::once(async move { Ok(sse_event(&acknowledged).into()) }).chain(notifications);
    Ok(Relayed {
        status: StatusCode::OK,
        content_type: Some(SSE.to_owned()),
        opened: None,
        body: Body::Stream { is_sse: true, chunks: events.boxed() },
    })
}

/// Notifications kept for a slow subscriber of a session's stream before it misses some.
const NOTIFICATIONS_KEPT: usize = 256;

/// Reads the upstream's GET stream of a gateway's session into `sender`, until it ends or
/// nobody subscribes any more. Its requests of the client are not answered: the subscriptions
/// cannot answer them.
async fn read_notifications(streamed: Streamed, sender: tokio::sync::broadcast::Sender<Arc<Value>>) {
    let chunks = streamed.chunks.map(|chunk| chunk.map_err(|_| super::answer::Broken { timeout: false }));
    let mut reader = Reader::new(Body::Stream { is_sse: true, chunks: chunks.boxed() });
    loop {
        tokio::select! {
            message = reader.message() => match message {
                Ok(Some(message)) if message.get("id").is_none() => {
                    if sender.send(Arc::new(message)).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            _ = tokio::time::sleep(era::KEEP_ALIVE) => if sender.receiver_count() == 0 {
                return;
            },
        }
    }
}

/// A new id for a request of the gateway's own in one of its sessions.
fn own_id() -> String {
    let mut id = String::with_capacity(32);
    id.push_str("mcp-platform-");
    id.push_str(itoa::Buffer::new().format(NEXT_ID.fetch_add(1, Ordering::Relaxed)));
    id
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
    let Some(key) = call.caller.key_id else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "An API key is required",
        ));
    };
    // Capabilities are the client's to write: they are told apart by a digest keyed by this
    // process, so that no client can choose one.
    let declared = {
        let mut hasher = CAPABILITIES_DIGEST.build_hasher();
        serde_json::to_writer(Digesting(&mut hasher), &modern.capabilities).expect("a JSON value serializes");
        hasher.finish()
    };
    // A stdio child serves its user whichever key they call with (the cap per user counts
    // children); an HTTP upstream's session is the key's.
    let owner = match call.service.transport {
        Transport::Stdio => Owner::User(call.caller.user_id),
        Transport::Http => Owner::Key(key),
    };
    let key = BridgeKey { owner, service_id: call.service.id, declared };
    if let Some(bridged) = state.gateway.bridged(key) {
        return Ok(bridged);
    }

    let capabilities = bridged_capabilities(&modern.capabilities);
    let client_info = modern.client_info.clone().unwrap_or_else(gateway_info);
    let initialize = json!({ "jsonrpc": "2.0", "id": "mcp-platform-bridge", "method": "initialize",
        "params": { "protocolVersion": BRIDGED_VERSION, "capabilities": capabilities, "clientInfo": client_info } });
    let mut relayed = post_own(state, call, &initialize, credential, None, record).await?;
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
    if let Err(refusal) = post_own(state, call, &note, credential, Some(&upstream), record).await {
        relay::end(state, &call.service, &upstream).await;
        return Err(refusal);
    }
    let bridged = Bridged { key, upstream, initialized: Arc::new(initialized) };
    // Two first requests at once may both have opened one: the first registered is used.
    match state.gateway.open_bridge(bridged.clone()) {
        Ok(()) => Ok(bridged),
        Err(registered) => {
            relay::end(state, &call.service, &bridged.upstream).await;
            Ok(registered)
        }
    }
}

/// Feeds what is written to a hasher (a value is digested as its JSON text, without keeping it).
struct Digesting<'a, H>(&'a mut H);

impl<H: Hasher> std::io::Write for Digesting<'_, H> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        protocol_version: Some(BRIDGED_VERSION.into()),
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

/// Relays a message of the gateway's own in its session with the call's upstream (or to open one).
async fn post_own(
    state: &AppState,
    call: &Call,
    message: &Value,
    credential: &Credential,
    upstream: Option<&UpstreamSession>,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    relay::post(state, &own_call(call, message)?, credential, upstream, &mut record.secrets).await
}

/// The same call sent as a 2026-07-28 request by a client that declared `modern`.
fn stateless_call(call: Call, modern: Modern) -> Call {
    Call { protocol_version: Some(era::MODERN_VERSION.into()), era: Era::Modern(modern), ..call }
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
    first: Stop,
    bridged_id: Value,
    status: StatusCode,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let method = call.message.method().unwrap_or_default();
    let id = call.message.id().cloned().unwrap_or(Value::Null);
    let mut stop = first;
    loop {
        match stop {
            Stop::Asks(request) => {
                let asked = request["method"].as_str().unwrap_or_default();
                let declared =
                    ASKED_OF_CLIENTS.iter().find(|(m, _)| *m == asked).map(|(_, capability)| *capability);
                let may_ask =
                    matches!(declared, Some(capability) if modern.capabilities.get(capability).is_some());
                if !may_ask {
                    decline(state, call, credential, upstream, &request, record).await?;
                    stop = reader.next().await?;
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
            Stop::Done(texts) => {
                // The one answer of most calls is written as it came, under the client's id.
                if let [text] = texts.as_slice()
                    && !era::is_cacheable(method)
                    && let Some((answer, answered)) = era::answer_as_modern(text, &bridged_id, &id)
                {
                    record.answered = Some(answered);
                    return Ok(json_answer(answer).with_status(status));
                }
                let mut messages: Vec<Value> =
                    texts.iter().filter_map(|text| serde_json::from_str(text).ok()).collect();
                // Under the client's id and progress token again.
                for message in &mut messages {
                    if message.get("id") == Some(&bridged_id) {
                        message["id"] = id.clone();
                    }
                    if let Some(token) = message.pointer_mut("/params/progressToken")
                        && *token == bridged_id
                    {
                        *token = era::progress_token(&call.message).cloned().unwrap_or(Value::Null);
                    }
                }
                if !messages.iter().any(|m| m.get("result").is_some() || m.get("error").is_some()) {
                    return Err(broken_off());
                }
                if call.filters_tools() {
                    keep_offered(&mut messages, |tool| call.offers(tool));
                }
                return Ok(stamped(messages, method, status));
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

/// What `Reader` looks for, each built once: the end of an event, and what a request holds (with
/// `record::ESCAPE`).
static EVENT_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
static METHOD_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"method\""));

/// An upstream's answer read message by message, kept while its client is asked something.
pub(super) struct Reader {
    chunks: Option<BoxStream<'static, Result<web::Bytes, super::answer::Broken>>>,
    whole: Option<Body>,
    /// What arrived of the event being read (without carriage returns, which JSON text holds
    /// only escaped and SSE only at line ends).
    pending: Vec<u8>,
    /// Messages read and not yet taken, as the upstream wrote them.
    queued: VecDeque<String>,
    /// The messages of the answer taken so far.
    read: Vec<String>,
}

enum Stop {
    /// The upstream asks the client this (a JSON-RPC request).
    Asks(Value),
    /// The answer ended: every message it had, as the upstream wrote it.
    Done(Vec<String>),
}

impl Reader {
    fn new(body: Body) -> Reader {
        let (chunks, whole) = match body {
            Body::Stream { is_sse: true, chunks } => (Some(chunks), None),
            body => (None, Some(body)),
        };
        Reader { chunks, whole, pending: Vec::new(), queued: VecDeque::new(), read: Vec::new() }
    }

    /// The answer's next message; `None` at its end.
    async fn message(&mut self) -> Result<Option<Value>, Refusal> {
        while let Some(text) = self.text().await? {
            if let Ok(message) = serde_json::from_str(&text) {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// The text of the answer's next message; `None` at its end.
    async fn text(&mut self) -> Result<Option<String>, Refusal> {
        loop {
            if let Some(text) = self.queued.pop_front() {
                return Ok(Some(text));
            }
            if let Some(body) = self.whole.take() {
                self.queue(&text_of(body).await.ok_or_else(broken_off)?);
                continue;
            }
            let read = queue_events(&self.pending, &mut self.queued);
            if read > 0 {
                self.pending.drain(..read);
                continue;
            }
            let Some(chunks) = self.chunks.as_mut() else {
                if !self.pending.is_empty() {
                    let rest = std::mem::take(&mut self.pending);
                    self.queue(&lossy(&rest));
                }
                return Ok(self.queued.pop_front());
            };
            match chunks.next().await {
                Some(Ok(chunk)) if memchr::memchr(b'\r', &chunk).is_none() => {
                    // The whole events a chunk begins with are read from it; the rest is kept.
                    let read =
                        if self.pending.is_empty() { queue_events(&chunk, &mut self.queued) } else { 0 };
                    self.pending.extend_from_slice(&chunk[read..]);
                }
                Some(Ok(chunk)) => self.pending.extend(chunk.iter().filter(|&&b| b != b'\r')),
                Some(Err(_)) => return Err(broken_off()),
                None => self.chunks = None,
            }
        }
    }

    fn queue(&mut self, captured: &str) {
        self.queued.extend(texts_in(captured).into_iter().map(str::to_owned));
    }

    /// Reads on to the answer's end, or to a request of the client.
    async fn next(&mut self) -> Result<Stop, Refusal> {
        while let Some(text) = self.text().await? {
            // Only a text that names a method can be a request (a key may be escaped).
            let may_ask =
                METHOD_KEY.find(text.as_bytes()).is_some() || ESCAPE.find(text.as_bytes()).is_some();
            if may_ask
                && let Ok(message) = serde_json::from_str::<Value>(&text)
                && message.get("method").is_some()
                && message.get("id").is_some()
            {
                return Ok(Stop::Asks(message));
            }
            self.read.push(text);
        }
        Ok(Stop::Done(std::mem::take(&mut self.read)))
    }
}

/// Queues the messages of the whole events `bytes` begins with; how many bytes they take.
fn queue_events(bytes: &[u8], queued: &mut VecDeque<String>) -> usize {
    let mut read = 0;
    while let Some(end) = EVENT_END.find(&bytes[read..]) {
        // Only its data lines are read as text. (An event without data, as a stream's priming
        // event, holds no message.)
        let mut lines = &bytes[read..read + end];
        while !lines.is_empty() {
            let (line, rest) = match memchr::memchr(b'\n', lines) {
                Some(at) => (&lines[..at], &lines[at + 1..]),
                None => (lines, &[][..]),
            };
            if let Some(data) = line.strip_prefix(b"data:").map(<[u8]>::trim_ascii)
                && !data.is_empty()
            {
                queued.push_back(lossy(data).into_owned());
            }
            lines = rest;
        }
        read += end + 2;
    }
    read
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
    post_own(state, call, &answer, credential, Some(upstream), record).await.map(drop)
}

/// The messages as the modern client gets them, each result stamped.
fn stamped(mut messages: Vec<Value>, method: &str, status: StatusCode) -> Relayed {
    for message in &mut messages {
        era::stamp(message, method);
    }
    whole_answer(&messages, None).with_status(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_events_are_queued_by_their_data_lines_and_the_rest_is_left() {
        let bytes = b"data: \nid: 0/0\nretry: 3000\n\nevent: message\ndata: {\"id\":1}\nid: 1/0\n\n\
            data:{\"a\":2}  \ndata: {\"b\":3}\n\ndata: {\"cut";
        let mut queued = VecDeque::new();
        let read = queue_events(bytes, &mut queued);
        // The priming event holds no message; each data line of an event is one.
        assert_eq!(queued, [r#"{"id":1}"#, r#"{"a":2}"#, r#"{"b":3}"#]);
        assert_eq!(&bytes[read..], b"data: {\"cut");
        assert_eq!(queue_events(b"data: {}", &mut queued), 0);
        assert_eq!(queued.len(), 3);
    }
}
