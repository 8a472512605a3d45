//! `/mcp/{service}`: the MCP Streamable HTTP transport towards clients. A request is checked
//! (media types, API key, size, JSON-RPC shape, service, scope, session), the caller's own
//! credential is put where the service says, and the exchange is relayed to the upstream, its
//! answer streamed back as it comes (JSON or SSE).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::cache::Lookups;
use super::jsonrpc::{self, Message, RpcError};
use super::record::{BODY_LIMIT, CallRecord, Outcome, error_in};
use super::stdio::{Launch, Process, SendError, SpawnError, StdioLimits, StdioPool, Waiting};
use crate::app::AppState;
use crate::auth::api_key::{self, KeyPrincipal, KeyRejection};
use crate::catalog::definition::CredentialPlacement;
use crate::crypto::keyring::Binding;
use crate::db::{self, services::ServiceRow};

/// Largest client message accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
pub const SESSION_HEADER: &str = "Mcp-Session-Id";
pub const PROTOCOL_HEADER: &str = "MCP-Protocol-Version";
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";
/// JSON-RPC codes the gateway itself answers with (implementation-defined range).
const UNAUTHORIZED: i64 = -32001;
const FORBIDDEN: i64 = -32003;
const NOT_FOUND: i64 = -32004;
const TOKEN_MISSING: i64 = -32005;
const UPSTREAM_FAILED: i64 = -32010;
const SESSION_LIMIT: i64 = -32011;

/// A client session of the gateway, bound to the API key that opened it.
#[derive(Clone)]
pub(super) struct GatewaySession {
    key_id: Uuid,
    service_id: Uuid,
    upstream: UpstreamSession,
    last_used: std::time::Instant,
}

#[derive(Clone)]
enum UpstreamSession {
    /// An HTTP upstream's own session id, if it uses one.
    Http(Option<String>),
    /// The child process serving this session.
    Stdio(Arc<Process>),
}

impl UpstreamSession {
    fn http_id(&self) -> Option<&str> {
        match self {
            UpstreamSession::Http(id) => id.as_deref(),
            UpstreamSession::Stdio(_) => None,
        }
    }
}

/// Shared by the gateway's handlers: the upstream connection pool, the stdio children and the
/// live sessions. Sessions live in this instance; the README says how to route a session to its
/// instance.
pub struct Gateway {
    client: reqwest::Client,
    sessions: Mutex<HashMap<String, GatewaySession>>,
    pub lookups: Lookups,
    pub stdio: StdioPool,
    /// Set when the platform stops: open server-to-client streams end, so the graceful stop
    /// does not wait for them.
    stopping: watch::Sender<bool>,
}

/// Sessions unused this long are forgotten (the client re-initializes on the 404).
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);

impl Gateway {
    pub fn new(limits: StdioLimits) -> Gateway {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client without TLS builds");
        Gateway {
            client,
            sessions: Mutex::new(HashMap::new()),
            lookups: Lookups::default(),
            stdio: StdioPool::new(limits),
            stopping: watch::Sender::new(false),
        }
    }

    /// Forgets sessions idle for longer than `SESSION_IDLE` and those whose child has ended, so
    /// the table stays bounded.
    pub fn forget_idle_sessions(&self) {
        let mut sessions = self.sessions.lock().expect("session table lock");
        sessions.retain(|_, s| match &s.upstream {
            UpstreamSession::Stdio(process) => !process.has_ended(),
            UpstreamSession::Http(_) => s.last_used.elapsed() < SESSION_IDLE,
        });
    }

    /// Ends the open server-to-client streams; called first when the platform stops.
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when the platform begins to stop.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    fn forget(&self, gateway_id: &str) {
        self.sessions.lock().expect("session table lock").remove(gateway_id);
    }
}

/// An answer that is not relayed: an HTTP status with a JSON-RPC error body.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    error: RpcError,
    challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refusal {
        Refusal { status, error: RpcError::new(code, message), challenge: false }
    }

    fn with_id(mut self, id: &Value) -> Refusal {
        self.error.id = id.clone();
        self
    }

    fn response(&self, correlation: &str) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((CORRELATION_HEADER, correlation.to_owned()));
        if self.challenge {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"mcp-platform\", error=\"invalid_token\"",
            ));
        }
        response.json(self.error.body())
    }
}

fn unauthorized(message: &str) -> Refusal {
    Refusal { challenge: true, ..Refusal::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, message) }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/mcp/{service}")
            .route(web::post().to(post))
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    );
}

fn header_str(req: &HttpRequest, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn principal(state: &AppState, req: &HttpRequest) -> Result<KeyPrincipal, Refusal> {
    let raw = header_str(req, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| unauthorized("An API key is required: Authorization: Bearer mcp_sk_..."))?;
    let checked = async {
        let hash = api_key::parse(raw)?.hash();
        let keys = &state.gateway.lookups.keys;
        let cached = keys.get(&hash);
        let mut found = match &cached {
            Some(found) => found.clone(),
            None => api_key::find(&state.db, &hash).await?,
        };
        let principal = api_key::admit(&state.db, &mut found, state.clock.now()).await;
        if cached.is_none_or(|c| c.last_used_at != found.last_used_at) {
            keys.insert(hash, found);
        }
        principal
    };
    checked.await.map_err(|rejection| match rejection {
        KeyRejection::Unavailable(e) => unavailable(&e, "The platform cannot check keys right now"),
        other => unauthorized(&format!("Unauthorized: {other}")),
    })
}

pub(super) async fn service(
    state: &AppState,
    principal: &KeyPrincipal,
    name: &str,
) -> Result<Arc<ServiceRow>, Refusal> {
    let services = &state.gateway.lookups.services;
    let cache_key = (principal.organization_id, name.to_owned());
    let found = match services.get(&cache_key) {
        Some(found) => found,
        None => {
            let found = async {
                let mut conn = state.db.acquire().await?;
                db::services::find_for_organization(conn.conn(), principal.organization_id, name).await
            }
            .await
            .map_err(|e: sqlx::Error| unavailable(&e, "The platform cannot look up services right now"))?;
            let found = found.map(Arc::new);
            services.insert(cache_key, found.clone());
            found
        }
    };
    found
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, format!("No service named \"{name}\"")))
}

/// The session the client names, if it belongs to this key and service and its upstream is
/// still there; otherwise 404 so the client starts a new one.
pub(super) fn session(
    state: &AppState,
    id: Option<&str>,
    key: Uuid,
    service: Uuid,
) -> Result<Option<(String, GatewaySession)>, Refusal> {
    let Some(id) = id else { return Ok(None) };
    let mut sessions = state.gateway.sessions.lock().expect("session table lock");
    match sessions.get_mut(id) {
        Some(s) if s.key_id == key && s.service_id == service => {
            if let UpstreamSession::Stdio(process) = &s.upstream
                && process.has_ended()
            {
                sessions.remove(id);
                return Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    NOT_FOUND,
                    "The session's service process has ended; initialize a new session",
                ));
            }
            s.last_used = std::time::Instant::now();
            Ok(Some((id.to_owned(), s.clone())))
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session not found; initialize a new one")),
    }
}

/// The caller's own token for the service, opened only for this request; `None` when the
/// service needs none.
async fn user_token(
    state: &AppState,
    principal: &KeyPrincipal,
    service: &ServiceRow,
) -> Result<Option<SecretString>, Refusal> {
    let Some(token_name) = &service.token_service_name else { return Ok(None) };
    let missing = || {
        Refusal::new(
            StatusCode::FORBIDDEN,
            TOKEN_MISSING,
            format!(
                "This service needs your own \"{token_name}\" token: set it on the dashboard's Service tokens page (/tokens)"
            ),
        )
    };
    let tokens = &state.gateway.lookups.tokens;
    let cache_key = (principal.organization_id, principal.user_id, token_name.clone());
    let row = match tokens.get(&cache_key) {
        Some(row) => row,
        None => {
            let row = async {
                let mut conn = state.db.acquire().await?;
                db::user_tokens::find_sealed(
                    conn.conn(),
                    principal.organization_id,
                    principal.user_id,
                    token_name,
                )
                .await
            }
            .await
            .map_err(|e: sqlx::Error| unavailable(&e, "The platform cannot read service tokens right now"))?;
            tokens.insert(cache_key.clone(), row.clone());
            row
        }
    };
    let mut row = row.ok_or_else(missing)?;
    let now = state.clock.now();
    if row.last_used_at.is_none_or(|t| now - t >= chrono::Duration::minutes(1)) {
        let touched =
            async { db::user_tokens::touch(state.db.acquire().await?.conn(), row.id, now).await }.await;
        touched
            .map_err(|e: sqlx::Error| unavailable(&e, "The platform cannot read service tokens right now"))?;
        row.last_used_at = Some(now);
        tokens.insert(cache_key, Some(row.clone()));
    }
    let binding = Binding {
        organization_id: row.organization_id,
        user_id: row.user_id,
        service_name: &row.service_name,
    };
    let token = state
        .keyring
        .open(&state.db, &row.ciphertext, binding)
        .await
        .map_err(|e| unavailable(&e, "The platform cannot read service tokens right now"))?;
    Ok(Some(token))
}

/// A 503 for a failure of the platform's own storage; the cause goes to the log only.
fn unavailable(cause: &dyn std::fmt::Debug, message: &str) -> Refusal {
    tracing::error!(error = ?cause, "{message}");
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, jsonrpc::INTERNAL_ERROR, message)
}

/// The caller's token for an HTTP upstream: the header it goes in, and the token itself (kept
/// to redact it from the record).
async fn credential_header(
    state: &AppState,
    principal: &KeyPrincipal,
    service: &ServiceRow,
) -> Result<Option<((String, String), SecretString)>, Refusal> {
    let Some(token) = user_token(state, principal, service).await? else { return Ok(None) };
    let Some(placement) = &service.token_placement else { return Ok(None) };
    let placement = CredentialPlacement::parse(placement)
        .map_err(|e| unavailable(&e, "This service's credential header is misconfigured"))?;
    Ok(Some((placement.render(token.expose_secret()), token)))
}

/// The headers every upstream request carries: the protocol version the client speaks, the
/// service's own headers, the caller's credential and the upstream's session id.
fn upstream_headers(
    mut upstream: reqwest::RequestBuilder,
    req: &HttpRequest,
    service: &ServiceRow,
    credential: Option<&(String, String)>,
    upstream_session: Option<&str>,
) -> reqwest::RequestBuilder {
    if let Some(version) = header_str(req, PROTOCOL_HEADER) {
        upstream = upstream.header(PROTOCOL_HEADER, version);
    }
    for (name, value) in service.headers.iter() {
        upstream = upstream.header(name, value);
    }
    if let Some((name, value)) = credential {
        upstream = upstream.header(name, value);
    }
    if let Some(session) = upstream_session {
        upstream = upstream.header(SESSION_HEADER, session);
    }
    upstream
}

async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, Refusal> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::PARSE_ERROR, "Could not read the request body")
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::INVALID_REQUEST,
                "The message is larger than 4 MiB",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What the gateway sends back for a relayed message.
struct Relayed {
    status: StatusCode,
    content_type: Option<String>,
    session: Option<String>,
    body: Body,
}

enum Body {
    /// Nothing (202 for notifications and responses).
    Empty,
    /// An answer known in full.
    Whole(String),
    /// The upstream's answer as it arrives.
    Stream { is_sse: bool, chunks: BoxStream<'static, Result<web::Bytes, Broken>> },
}

/// An answer that stopped before its end.
struct Broken {
    timeout: bool,
}

const SSE: &str = "text/event-stream";
/// How long an upstream's answer is held in the hope that it completes and goes out whole, and
/// the most that is held.
const HOLD_WAIT: Duration = Duration::from_millis(100);
const HOLD_LIMIT: usize = 4 * 1024 * 1024;

fn sse_event(message: &impl std::fmt::Display) -> String {
    format!("event: message\ndata: {message}\n\n")
}

pub async fn post(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let mut record = CallRecord::new(&req, &name);
    let relayed = relay_post(&req, &state, &name, payload, &mut record).await;
    answer(relayed, record, &state).await
}

/// One message of `principal`, relayed in the named session, as the answer a client would get;
/// for messages the platform sends itself (test connection).
pub(super) async fn send_as(
    state: &AppState,
    req: &HttpRequest,
    principal: &KeyPrincipal,
    name: &str,
    body: web::Bytes,
    session_id: Option<&str>,
    mut record: CallRecord,
) -> HttpResponse {
    let relayed = relay_message(state, req, principal, name, body, session_id, &mut record).await;
    answer(relayed, record, state).await
}

/// The client's answer to a relayed (or refused) message; the call is recorded when the answer
/// has gone out.
async fn answer(relayed: Result<Relayed, Refusal>, record: CallRecord, state: &AppState) -> HttpResponse {
    let correlation = record.correlation.clone();
    let relayed = match relayed {
        Ok(relayed) => relayed,
        Err(refusal) => {
            let body = refusal.error.body().to_string();
            let outcome = Outcome {
                http_status: refusal.status.as_u16(),
                error_code: Some(refusal.error.code),
                error_message: Some(refusal.error.message.clone()),
            };
            record.finish(outcome, Some(&body), &state.log_writer, &state.clock);
            return refusal.response(&correlation);
        }
    };
    let mut response = HttpResponse::build(relayed.status);
    response.insert_header((CORRELATION_HEADER, correlation));
    if let Some(content_type) = relayed.content_type {
        response.insert_header((header::CONTENT_TYPE, content_type));
    }
    if let Some(session) = relayed.session {
        response.insert_header((SESSION_HEADER, session));
    }
    let capture = Capture {
        rpc_id: record.rpc_id.clone(),
        record: Some(record),
        captured: Vec::new(),
        status: relayed.status.as_u16(),
        writer: state.log_writer.clone(),
        clock: state.clock.clone(),
    };
    match relayed.body {
        Body::Empty => {
            drop(capture);
            response.finish()
        }
        Body::Whole(text) => {
            let mut capture = capture;
            capture.keep(text.as_bytes());
            capture.done();
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
    rpc_id: Value,
    record: Option<CallRecord>,
    captured: Vec<u8>,
    status: u16,
    writer: crate::telemetry::writer::RequestLogWriter,
    clock: crate::clock::SharedClock,
}

impl Capture {
    fn keep(&mut self, chunk: &[u8]) {
        let room = (BODY_LIMIT + 1).saturating_sub(self.captured.len());
        self.captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn done(&mut self) {
        let Some(record) = self.record.take() else { return };
        let text = String::from_utf8_lossy(&self.captured).into_owned();
        let error = error_in(&text, &record.rpc_id);
        let outcome = Outcome {
            http_status: self.status,
            error_code: error.as_ref().map(|(code, _)| *code),
            error_message: error.map(|(_, message)| message),
        };
        let body = (!text.is_empty()).then_some(text.as_str());
        record.finish(outcome, body, &self.writer, &self.clock);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.done();
    }
}

/// Checks the message; the service's transport relays it.
async fn relay_post(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
    payload: web::Payload,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let content_type = header_str(req, header::CONTENT_TYPE).unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    let accept = header_str(req, header::ACCEPT).unwrap_or("");
    let acceptable = accept.contains("*/*") || (accept.contains("application/json") && accept.contains(SSE));
    if !acceptable {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            jsonrpc::INVALID_REQUEST,
            "Accept must list application/json and text/event-stream",
        ));
    }
    // A content length over the limit is refused before reading anything.
    if header_str(req, header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY)
    {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::INVALID_REQUEST,
            "The message is larger than 4 MiB",
        ));
    }
    let principal = principal(state, req).await?;
    record.organization_id = Some(principal.organization_id);
    record.user_id = Some(principal.user_id);
    record.api_key_id = Some(principal.key_id);
    let body = read_body(payload).await?.freeze();
    relay_message(state, req, &principal, name, body, header_str(req, SESSION_HEADER), record).await
}

/// Relays one client message of `principal` in the named session (if any) to the service.
async fn relay_message(
    state: &AppState,
    req: &HttpRequest,
    principal: &KeyPrincipal,
    name: &str,
    body: web::Bytes,
    session_id: Option<&str>,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    record.request_body = Some(String::from_utf8_lossy(&body).into_owned());
    let message = jsonrpc::parse(&body).map_err(|error| Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        challenge: false,
    })?;
    let id = match &message {
        Message::Request { id, .. } | Message::Response { id } => id.clone(),
        Message::Notification { .. } => Value::Null,
    };
    record.method = message.method().map(str::to_owned);
    record.tool = message.tool_name().map(str::to_owned);
    record.rpc_id = id.clone();
    let checked = async {
        let service = service(state, principal, name).await?;
        record.service_id = Some(service.id);
        let needed = message.required_scope();
        if !principal.scopes.contains(needed) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                FORBIDDEN,
                format!("This API key lacks the {} scope needed for this method", needed.as_str()),
            ));
        }
        let existing = session(state, session_id, principal.key_id, service.id)?;
        Ok((service, existing))
    };
    let (service, existing) = checked.await.map_err(|r| r.with_id(&id))?;
    let call = Call { req, state, principal, service: &service, message: &message, body };
    let relayed = if service.transport == "stdio" {
        relay_stdio(call, existing, record).await
    } else {
        relay_http(call, existing, record).await
    };
    relayed.map_err(|r| r.with_id(&id))
}

/// A checked client message on its way to the service.
struct Call<'a> {
    req: &'a HttpRequest,
    state: &'a AppState,
    principal: &'a KeyPrincipal,
    service: &'a ServiceRow,
    message: &'a Message,
    body: web::Bytes,
}

impl Call<'_> {
    fn is_initialize(&self) -> bool {
        self.message.method() == Some("initialize")
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.service.timeout_ms.max(1) as u64)
    }

    /// Opens a gateway session for the upstream after a successful initialize.
    fn open_session(&self, upstream: UpstreamSession) -> String {
        let gateway_id = crate::crypto::random_token();
        let entry = GatewaySession {
            key_id: self.principal.key_id,
            service_id: self.service.id,
            upstream,
            last_used: std::time::Instant::now(),
        };
        self.state.gateway.sessions.lock().expect("session table lock").insert(gateway_id.clone(), entry);
        gateway_id
    }
}

fn upstream_failed(status: StatusCode, message: &str) -> Refusal {
    Refusal::new(status, UPSTREAM_FAILED, message)
}

async fn relay_http(
    call: Call<'_>,
    existing: Option<(String, GatewaySession)>,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    let Call { req, state, service, .. } = call;
    let Some(url) = service.upstream_url.as_deref() else {
        return Err(upstream_failed(StatusCode::BAD_GATEWAY, "This service has no HTTP upstream"));
    };
    let credential = credential_header(state, call.principal, service).await?;
    let header = credential.as_ref().map(|(header, token)| {
        record.secrets.push(token.expose_secret().to_owned());
        header
    });
    let upstream = state
        .gateway
        .client
        .post(url)
        .timeout(call.timeout())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    let upstream_session = existing.as_ref().and_then(|(_, s)| s.upstream.http_id());
    let upstream = upstream_headers(upstream, req, service, header, upstream_session);
    let answer = upstream.body(call.body.clone()).send().await.map_err(|e| {
        if e.is_timeout() {
            upstream_failed(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time")
        } else {
            upstream_failed(StatusCode::BAD_GATEWAY, "The upstream cannot be reached")
        }
    })?;

    // The upstream forgot the session: the client must start again.
    if answer.status() == reqwest::StatusCode::NOT_FOUND
        && let Some((gateway_id, _)) = &existing
    {
        state.gateway.forget(gateway_id);
        return Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session expired; initialize a new one"));
    }
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type =
        answer.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let session = if call.is_initialize() && status.is_success() {
        let upstream_session =
            answer.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Some(call.open_session(UpstreamSession::Http(upstream_session)))
    } else {
        existing.map(|(gateway_id, _)| gateway_id)
    };
    let is_sse = content_type.as_deref().is_some_and(|v| v.starts_with(SSE));
    let chunks = answer.bytes_stream().map(|chunk| chunk.map_err(|e| Broken { timeout: e.is_timeout() }));
    Ok(Relayed { status, content_type, session, body: Body::Stream { is_sse, chunks: chunks.boxed() } })
}

async fn relay_stdio(
    call: Call<'_>,
    existing: Option<(String, GatewaySession)>,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    if call.is_initialize() {
        return initialize_stdio(call, record).await;
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

/// An answer (result or error), as opposed to a message the server starts.
fn is_answer(message: &Value) -> bool {
    message.get("method").is_none()
}

/// The next message for a waiting request, handing the request back for the one after.
async fn next_for(mut waiting: Waiting) -> Option<(Value, Waiting)> {
    let message = waiting.messages.recv().await?;
    Some((message, waiting))
}

/// Messages known in full: one answer as JSON, several as an event stream.
fn whole_answer(messages: &[Value], session: Option<String>) -> Relayed {
    let (content_type, body) = match messages {
        [answer] => ("application/json", answer.to_string()),
        _ => (SSE, messages.iter().map(sse_event).collect()),
    };
    Relayed {
        status: StatusCode::OK,
        content_type: Some(content_type.to_owned()),
        session,
        body: Body::Whole(body),
    }
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
    call.state.gateway.stdio.spawn(launch).map_err(|e| {
        let idle = call.state.gateway.stdio.limits().idle.as_secs();
        match e {
            SpawnError::UserCap(_) => Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                SESSION_LIMIT,
                format!("Too many sessions: {e}; end one (DELETE) or let one sit idle for {idle} s"),
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
        }
    })
}

/// The server-to-client stream of a session.
pub async fn get(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Uuid::now_v7().to_string();
    match relay_stream(&req, &state, &name).await {
        Ok(response) => response,
        Err(refusal) => refusal.response(&correlation),
    }
}

async fn relay_stream(req: &HttpRequest, state: &AppState, name: &str) -> Result<HttpResponse, Refusal> {
    let principal = principal(state, req).await?;
    let service = service(state, &principal, name).await?;
    let (gateway_id, session) =
        session(state, header_str(req, SESSION_HEADER), principal.key_id, service.id)?.ok_or_else(|| {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required")
        })?;
    let stopped = state.gateway.stopped();
    let (status, content_type, chunks) = match &session.upstream {
        UpstreamSession::Stdio(process) => {
            let messages = process.open_stream().ok_or_else(|| {
                Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "The session's service process has ended")
            })?;
            let events = futures_util::stream::unfold(messages, |mut messages| async move {
                let message = messages.recv().await?;
                Some((Ok::<_, actix_web::Error>(sse_event(&message).into()), messages))
            });
            (StatusCode::OK, Some(SSE.to_owned()), events.boxed())
        }
        UpstreamSession::Http(upstream_session) => {
            let url = service.upstream_url.as_deref().ok_or_else(|| {
                upstream_failed(StatusCode::BAD_GATEWAY, "This service has no HTTP upstream")
            })?;
            let credential = credential_header(state, &principal, &service).await?;
            let upstream = state.gateway.client.get(url).header("accept", SSE);
            let upstream = upstream_headers(
                upstream,
                req,
                &service,
                credential.as_ref().map(|(header, _)| header),
                upstream_session.as_deref(),
            );
            let answer = upstream
                .send()
                .await
                .map_err(|_| upstream_failed(StatusCode::BAD_GATEWAY, "The upstream cannot be reached"))?;
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let chunks = answer.bytes_stream().map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
            (status, content_type, chunks.boxed())
        }
    };
    let mut response = HttpResponse::build(status);
    if let Some(content_type) = content_type {
        response.insert_header((header::CONTENT_TYPE, content_type));
    }
    response.insert_header((SESSION_HEADER, gateway_id));
    Ok(response.streaming(chunks.take_until(stopped)))
}

/// Ends a session, here and upstream (a stdio child is gone when this returns).
pub(super) async fn end_session(
    state: &AppState,
    service: &ServiceRow,
    gateway_id: &str,
    session: &GatewaySession,
) {
    state.gateway.forget(gateway_id);
    match (&session.upstream, &service.upstream_url) {
        (UpstreamSession::Stdio(process), _) => process.end().await,
        (UpstreamSession::Http(Some(upstream_session)), Some(url)) => {
            let _ = state.gateway.client.delete(url).header(SESSION_HEADER, upstream_session).send().await;
        }
        (UpstreamSession::Http(_), _) => {}
    }
}

/// The client ends its session.
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Uuid::now_v7().to_string();
    let result = async {
        let principal = principal(&state, &req).await?;
        let service = service(&state, &principal, &name).await?;
        let (gateway_id, session) = session(
            &state,
            header_str(&req, SESSION_HEADER),
            principal.key_id,
            service.id,
        )?
        .ok_or_else(|| {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required")
        })?;
        end_session(&state, &service, &gateway_id, &session).await;
        Ok::<_, Refusal>(HttpResponse::NoContent().finish())
    }
    .await;
    result.unwrap_or_else(|refusal| refusal.response(&correlation))
}
