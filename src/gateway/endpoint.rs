//! `/mcp/{service}`: the MCP Streamable HTTP transport towards clients. A request is checked
//! (media types, API key, size, JSON-RPC shape, service, scope, session), then relayed: to an
//! HTTP upstream here, with the caller's own credential where the service says, or to the
//! session's stdio child (`stdio_relay`); `answer` sends the result back and records it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

use super::answer::{Body, Broken, Relayed, SSE, answer, sse_event};
use super::cache::LoadedService;
use super::jsonrpc::{self, Message, RpcError};
use super::record::CallRecord;
use super::sessions::{GatewaySession, UpstreamSession, end_session, session};
use super::stdio_relay::relay_stdio;
use crate::app::AppState;
use crate::auth::api_key::{self, KeyPrincipal, KeyRejection};
use crate::catalog::definition::CredentialPlacement;
use crate::catalog::egress::{Refused, refusal_in};
use crate::crypto::keyring::Binding;
use crate::db::{self, services::ServiceRow};
use crate::domain::Scope;

/// Largest client message accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
pub const SESSION_HEADER: &str = "Mcp-Session-Id";
pub const PROTOCOL_HEADER: &str = "MCP-Protocol-Version";
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";
const LAST_EVENT_ID_HEADER: &str = "Last-Event-ID";
/// JSON-RPC codes the gateway itself answers with (implementation-defined range).
const UNAUTHORIZED: i64 = -32001;
const FORBIDDEN: i64 = -32003;
pub(super) const NOT_FOUND: i64 = -32004;
const TOKEN_MISSING: i64 = -32005;
pub(super) const UPSTREAM_FAILED: i64 = -32010;
pub(super) const SESSION_LIMIT: i64 = -32011;

/// An answer that is not relayed: an HTTP status with a JSON-RPC error body.
#[derive(Debug)]
pub struct Refusal {
    pub(super) status: StatusCode,
    pub(super) error: RpcError,
    challenge: Challenge,
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    /// No credentials at all: the scheme alone, no error code.
    Missing,
    /// Credentials that are not valid.
    Invalid,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refusal {
        Refusal { status, error: RpcError::new(code, message), challenge: Challenge::None }
    }

    fn with_id(mut self, id: &Value) -> Refusal {
        self.error.id = id.clone();
        self
    }

    pub(super) fn response(&self, correlation: &str) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((CORRELATION_HEADER, correlation.to_owned()));
        match self.challenge {
            Challenge::None => {}
            Challenge::Missing => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"mcp-platform\""));
            }
            Challenge::Invalid => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"mcp-platform\", error=\"invalid_token\"",
                ));
            }
        }
        response.json(self.error.body())
    }
}

fn unauthorized(challenge: Challenge, message: &str) -> Refusal {
    Refusal { challenge, ..Refusal::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, message) }
}

/// Streamable HTTP: a request whose `Origin` is present and not allowed is refused (DNS
/// rebinding); requests without one (non-browser clients) are fine.
fn check_origin(state: &AppState, req: &HttpRequest) -> Result<(), Refusal> {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let allowed = origin.to_str().is_ok_and(|origin| {
        origin == state.settings.public_base(req)
            || state.settings.allowed_origins.iter().any(|o| o == origin)
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            "This Origin may not use the gateway (the operator lists the allowed ones)",
        ))
    }
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

/// The key the request presents, as its hash; refused when there is none or it is malformed.
fn presented_key(req: &HttpRequest) -> Result<[u8; 32], Refusal> {
    let raw = header_str(req, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| {
            unauthorized(Challenge::Missing, "An API key is required: Authorization: Bearer mcp_sk_...")
        })?;
    api_key::parse(raw)
        .map(|key| key.hash())
        .map_err(|rejection| unauthorized(Challenge::Invalid, &format!("Unauthorized: {rejection}")))
}

pub(super) async fn principal(state: &AppState, req: &HttpRequest) -> Result<KeyPrincipal, Refusal> {
    let hash = presented_key(req)?;
    let checked = async {
        let lookups = &state.gateway.lookups;
        let cached = lookups.key(&hash);
        let mut found = match &cached {
            Some(found) => found.clone(),
            None => api_key::find(&state.db, &hash).await?,
        };
        let principal = api_key::admit(&state.db, &mut found, state.clock.now()).await;
        if cached.is_none_or(|c| c.last_used_at != found.last_used_at) {
            lookups.keep_key(hash, found);
        }
        principal
    };
    checked.await.map_err(|rejection| match rejection {
        KeyRejection::Unavailable(e) => unavailable(&e, "The platform cannot check keys right now"),
        other => unauthorized(Challenge::Invalid, &format!("Unauthorized: {other}")),
    })
}

pub(super) async fn service(
    state: &AppState,
    principal: &KeyPrincipal,
    name: &str,
) -> Result<Arc<LoadedService>, Refusal> {
    let lookups = &state.gateway.lookups;
    let found = match lookups.service(principal.organization_id, name) {
        Some(found) => found,
        None => {
            let found = async {
                let mut conn = state.db.acquire().await?;
                db::services::find_for_organization(conn.conn(), principal.organization_id, name).await
            }
            .await
            .map_err(|e: sqlx::Error| unavailable(&e, "The platform cannot look up services right now"))?;
            let found = match found {
                Some(row) => {
                    let headers =
                        crate::crypto::headers::open(&state.keyring, &state.db, row.id, &row.sealed_headers)
                            .await
                            .map_err(|e| {
                                unavailable(&e, "The platform cannot read this service's headers right now")
                            })?;
                    Some(Arc::new(state.gateway.load(row, headers)))
                }
                None => None,
            };
            lookups.keep_service(principal.organization_id, name, found.clone());
            found
        }
    };
    found
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, format!("No service named \"{name}\"")))
}

/// The caller's own token for the service, opened only for this request; `None` when the
/// service needs none.
pub(super) async fn user_token(
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
    let lookups = &state.gateway.lookups;
    let row = match lookups.token(principal.organization_id, principal.user_id, token_name) {
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
            lookups.keep_token(principal.organization_id, principal.user_id, token_name, row.clone());
            row
        }
    };
    let mut row = row.ok_or_else(missing)?;
    let now = state.clock.now();
    if db::last_use_due(row.last_used_at, now) {
        let touched =
            async { db::user_tokens::touch(state.db.acquire().await?.conn(), row.id, now).await }.await;
        touched
            .map_err(|e: sqlx::Error| unavailable(&e, "The platform cannot read service tokens right now"))?;
        row.last_used_at = Some(now);
        lookups.keep_token(principal.organization_id, principal.user_id, token_name, Some(row.clone()));
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
    service: &LoadedService,
    credential: Option<&(String, String)>,
    upstream_session: Option<&str>,
) -> reqwest::RequestBuilder {
    if let Some(version) = header_str(req, PROTOCOL_HEADER) {
        upstream = upstream.header(PROTOCOL_HEADER, version);
    }
    for (name, value) in &service.headers {
        upstream = upstream.header(name, value.expose_secret());
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

pub async fn post(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let slot = match state.log_writer.reserve() {
        Ok(slot) => slot,
        Err(_) => return unrecordable(&state),
    };
    let mut record = CallRecord::new(&req, &name, slot);
    let relayed = relay_post(&req, &state, &name, payload, &mut record).await;
    answer(relayed, record, &state).await
}

/// A call refused because the request-log queue is full: every accepted call is recorded, so
/// none is accepted that could not be.
fn unrecordable(state: &AppState) -> HttpResponse {
    state.metrics.refused_unrecordable();
    state.log_writer.count(StatusCode::SERVICE_UNAVAILABLE.as_u16(), Duration::ZERO);
    let refusal = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::INTERNAL_ERROR,
        "The platform cannot record calls right now; try again in a moment",
    );
    let mut response = refusal.response(&Uuid::now_v7().to_string());
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
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

/// Checks the message; the service's transport relays it.
async fn relay_post(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
    payload: web::Payload,
    record: &mut CallRecord,
) -> Result<Relayed, Refusal> {
    check_origin(state, req)?;
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
        challenge: Challenge::None,
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
    let relayed = if service.transport == crate::catalog::definition::Transport::Stdio {
        relay_stdio(call, existing, record).await
    } else {
        relay_http(call, existing, record).await
    };
    relayed.map_err(|r| r.with_id(&id))
}

/// A checked client message on its way to the service.
pub(super) struct Call<'a> {
    pub(super) req: &'a HttpRequest,
    pub(super) state: &'a AppState,
    pub(super) principal: &'a KeyPrincipal,
    pub(super) service: &'a LoadedService,
    pub(super) message: &'a Message,
    pub(super) body: web::Bytes,
}

impl Call<'_> {
    pub(super) fn is_initialize(&self) -> bool {
        self.message.method() == Some("initialize")
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.service.timeout_ms.max(1) as u64)
    }

    /// Opens a gateway session for the upstream after a successful initialize.
    pub(super) fn open_session(&self, upstream: UpstreamSession) -> String {
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

pub(super) fn upstream_failed(status: StatusCode, message: &str) -> Refusal {
    Refusal::new(status, UPSTREAM_FAILED, message)
}

/// A tenant upstream at an address the platform may not reach (SSRF).
fn not_allowed(refused: &Refused) -> Refusal {
    Refusal::new(StatusCode::BAD_GATEWAY, UPSTREAM_FAILED, format!("The upstream is not allowed: {refused}"))
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
    // The service's own header values are credentials too, should the upstream echo them.
    record.secrets.extend(service.headers.iter().map(|(_, value)| value.expose_secret().to_owned()));
    let upstream = state
        .gateway
        .upstream(service, reqwest::Method::POST, url)
        .map_err(|refused| not_allowed(&refused))?
        .timeout(call.timeout())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    let upstream_session = existing.as_ref().and_then(|(_, s)| s.upstream.http_id());
    let upstream = upstream_headers(upstream, req, service, header, upstream_session);
    let answer = upstream.body(call.body.clone()).send().await.map_err(|e| {
        if let Some(refused) = refusal_in(&e) {
            not_allowed(refused)
        } else if e.is_timeout() {
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

/// The server-to-client stream of a session.
pub async fn get(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Uuid::now_v7().to_string();
    match relay_stream(&req, state, &name).await {
        Ok(response) => response,
        Err(refusal) => refusal.response(&correlation),
    }
}

async fn relay_stream(
    req: &HttpRequest,
    state: web::Data<AppState>,
    name: &str,
) -> Result<HttpResponse, Refusal> {
    check_origin(&state, req)?;
    let principal = principal(&state, req).await?;
    let revoked = until_revoked(state.clone(), presented_key(req)?, principal.clone());
    let state = &*state;
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
            let upstream = state
                .gateway
                .upstream(&service, reqwest::Method::GET, url)
                .map_err(|refused| not_allowed(&refused))?
                .header("accept", SSE);
            let mut upstream = upstream_headers(
                upstream,
                req,
                &service,
                credential.as_ref().map(|(header, _)| header),
                upstream_session.as_deref(),
            );
            // A client resuming an interrupted answer names the last event it received.
            if let Some(last) = header_str(req, LAST_EVENT_ID_HEADER) {
                upstream = upstream.header(LAST_EVENT_ID_HEADER, last);
            }
            let answer = upstream.send().await.map_err(|e| match refusal_in(&e) {
                Some(refused) => not_allowed(refused),
                None => upstream_failed(StatusCode::BAD_GATEWAY, "The upstream cannot be reached"),
            })?;
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
    Ok(response.streaming(chunks.take_until(stopped).take_until(revoked)))
}

/// Resolves when a stream's key may no longer read: revoked, expired or rolled, its owner
/// deactivated or given another role. Checked at once after a change on this instance, and
/// every `cache::LIFETIME` for changes made through another.
fn until_revoked(
    state: web::Data<AppState>,
    key_hash: [u8; 32],
    opened: KeyPrincipal,
) -> impl Future<Output = ()> + 'static {
    let mut changes = state.gateway.lookups.changes();
    async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(super::cache::LIFETIME) => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
            let now = state.clock.now();
            let checked = async {
                let mut found = api_key::find(&state.db, &key_hash).await?;
                api_key::admit(&state.db, &mut found, now).await
            };
            match checked.await {
                Ok(current) if current.role == opened.role && current.scopes.contains(Scope::McpRead) => {}
                // The key store cannot answer now: the stream goes on until it can.
                Err(KeyRejection::Unavailable(_)) => {}
                _ => return,
            }
        }
    }
}

/// The client ends its session.
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Uuid::now_v7().to_string();
    let result = async {
        check_origin(&state, &req)?;
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
