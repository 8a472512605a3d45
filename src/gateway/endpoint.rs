//! `/mcp/{service}`: the MCP Streamable HTTP transport towards clients. A request is checked
//! (media types, API key, size, JSON-RPC shape, service, scope, session), the caller's own
//! credential is put where the service says, and the exchange is relayed to the upstream, its
//! answer streamed back as it comes (JSON or SSE).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;
use uuid::Uuid;

use super::jsonrpc::{self, Message, RpcError};
use super::record::{BODY_LIMIT, CallRecord, Outcome, error_in};
use crate::app::AppState;
use crate::auth::api_key::{KeyPrincipal, KeyRejection, authenticate_api_key};
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

/// A client session of the gateway, bound to the API key that opened it.
#[derive(Debug, Clone)]
struct GatewaySession {
    key_id: Uuid,
    service_id: Uuid,
    /// The upstream's own session id, if it uses one.
    upstream: Option<String>,
    last_used: std::time::Instant,
}

/// Shared by the gateway's handlers: the upstream connection pool and the live sessions.
/// Sessions live in this instance; the README says how to route a session to its instance.
pub struct Gateway {
    client: reqwest::Client,
    sessions: Mutex<HashMap<String, GatewaySession>>,
}

/// Sessions unused this long are forgotten (the client re-initializes on the 404).
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);

impl Gateway {
    /// Forgets sessions idle for longer than `SESSION_IDLE`, so the table stays bounded.
    pub fn forget_idle_sessions(&self) {
        let mut sessions = self.sessions.lock().expect("session table lock");
        sessions.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
    }
}

impl Default for Gateway {
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client without TLS builds");
        Gateway { client, sessions: Mutex::new(HashMap::new()) }
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
    authenticate_api_key(&state.db, state.clock.now(), raw).await.map_err(|rejection| match rejection {
        KeyRejection::Unavailable(e) => {
            tracing::error!(error = ?e, "API key check failed");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                jsonrpc::INTERNAL_ERROR,
                "The platform cannot check keys right now",
            )
        }
        other => unauthorized(&format!("Unauthorized: {other}")),
    })
}

async fn service(state: &AppState, principal: &KeyPrincipal, name: &str) -> Result<ServiceRow, Refusal> {
    let found = async {
        db::services::find_for_organization(state.db.acquire().await?.conn(), principal.organization_id, name)
            .await
    }
    .await
    .map_err(|e: sqlx::Error| {
        tracing::error!(error = ?e, "service lookup failed");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            jsonrpc::INTERNAL_ERROR,
            "The platform cannot look up services right now",
        )
    })?;
    found
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, format!("No service named \"{name}\"")))
}

/// The session the client names, if it belongs to this key and service; otherwise 404 so the
/// client starts a new one.
fn session(
    state: &AppState,
    req: &HttpRequest,
    key: Uuid,
    service: Uuid,
) -> Result<Option<(String, GatewaySession)>, Refusal> {
    let Some(id) = header_str(req, SESSION_HEADER) else { return Ok(None) };
    let mut sessions = state.gateway.sessions.lock().expect("session table lock");
    match sessions.get_mut(id) {
        Some(s) if s.key_id == key && s.service_id == service => {
            s.last_used = std::time::Instant::now();
            Ok(Some((id.to_owned(), s.clone())))
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session not found; initialize a new one")),
    }
}

/// The caller's own credential for the service, opened only for this request.
async fn credential(
    state: &AppState,
    principal: &KeyPrincipal,
    service: &ServiceRow,
) -> Result<Option<(String, String, String)>, Refusal> {
    let (Some(token_name), Some(placement)) = (&service.token_service_name, &service.token_placement) else {
        return Ok(None);
    };
    let missing = || {
        Refusal::new(
            StatusCode::FORBIDDEN,
            TOKEN_MISSING,
            format!(
                "This service needs your own \"{token_name}\" token: set it on the dashboard's Service tokens page (/tokens)"
            ),
        )
    };
    let unavailable = |e: &dyn std::fmt::Debug| {
        tracing::error!(error = ?e, "service token lookup failed");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            jsonrpc::INTERNAL_ERROR,
            "The platform cannot read service tokens right now",
        )
    };
    let row = async {
        db::user_tokens::find_sealed(
            state.db.acquire().await?.conn(),
            principal.organization_id,
            principal.user_id,
            token_name,
        )
        .await
    }
    .await
    .map_err(|e: sqlx::Error| unavailable(&e))?
    .ok_or_else(missing)?;
    let now = state.clock.now();
    if row.last_used_at.is_none_or(|t| now - t >= chrono::Duration::minutes(1)) {
        let touched =
            async { db::user_tokens::touch(state.db.acquire().await?.conn(), row.id, now).await }.await;
        touched.map_err(|e: sqlx::Error| unavailable(&e))?;
    }
    let binding = Binding {
        organization_id: row.organization_id,
        user_id: row.user_id,
        service_name: &row.service_name,
    };
    let token = state.keyring.open(&state.db, &row.ciphertext, binding).await.map_err(|e| unavailable(&e))?;
    let placement = CredentialPlacement::parse(placement).map_err(|e| unavailable(&e))?;
    let (name, value) = placement.render(token.expose_secret());
    Ok(Some((name, value, token.expose_secret().to_owned())))
}

/// The headers every upstream request carries: the protocol version the client speaks, the
/// service's own headers, the caller's credential and the upstream's session id.
fn upstream_headers(
    mut upstream: reqwest::RequestBuilder,
    req: &HttpRequest,
    service: &ServiceRow,
    credential: Option<&(String, String, String)>,
    upstream_session: Option<&str>,
) -> reqwest::RequestBuilder {
    if let Some(version) = header_str(req, PROTOCOL_HEADER) {
        upstream = upstream.header(PROTOCOL_HEADER, version);
    }
    for (name, value) in service.headers.iter() {
        upstream = upstream.header(name, value);
    }
    if let Some((name, value, _)) = credential {
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
    let mut record = CallRecord::new(&req, &name);
    let correlation = record.correlation.clone();
    match relay_post(&req, &state, &name, payload, &mut record).await {
        Ok((mut response, answer)) => {
            response.insert_header((CORRELATION_HEADER, correlation));
            let status = answer.status().as_u16();
            let is_sse = answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let capture = Capture {
                rpc_id: record.rpc_id.clone(),
                is_sse,
                record: Some(record),
                captured: Vec::new(),
                status,
                writer: state.log_writer.clone(),
                clock: state.clock.clone(),
            };
            let chunks = futures_util::stream::unfold(
                (Box::pin(answer.bytes_stream()), capture),
                |(mut inner, mut capture)| async move {
                    match inner.next().await {
                        Some(Ok(chunk)) => {
                            capture.keep(&chunk);
                            Some((Ok(chunk), (inner, capture)))
                        }
                        // An event stream that breaks off (or runs past the service's timeout)
                        // ends with a JSON-RPC error event, so the client is not left waiting.
                        Some(Err(e)) if capture.is_sse => {
                            let message = if e.is_timeout() {
                                "The upstream did not answer in time"
                            } else {
                                "The upstream broke off its answer"
                            };
                            let error = jsonrpc::error_body(&capture.rpc_id, UPSTREAM_FAILED, message);
                            let event = web::Bytes::from(format!("event: message\ndata: {error}\n\n"));
                            capture.keep(&event);
                            capture.done();
                            Some((Ok(event), (inner, capture)))
                        }
                        Some(Err(e)) => {
                            capture.done();
                            Some((Err(actix_web::error::ErrorBadGateway(e)), (inner, capture)))
                        }
                        None => {
                            capture.done();
                            None
                        }
                    }
                },
            );
            response.streaming(chunks)
        }
        Err(refusal) => {
            let body = refusal.error.body().to_string();
            let outcome = Outcome {
                http_status: refusal.status.as_u16(),
                error_code: Some(refusal.error.code),
                error_message: Some(refusal.error.message.clone()),
            };
            record.finish(outcome, Some(&body), &state.log_writer, &state.clock);
            refusal.response(&correlation)
        }
    }
}

/// Keeps the first part of the upstream's answer as it streams to the client, and records the
/// call when the answer ends or the client goes away.
struct Capture {
    rpc_id: Value,
    is_sse: bool,
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
        record.finish(outcome, Some(&text), &self.writer, &self.clock);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.done();
    }
}

/// Checks the message and sends it upstream; the caller streams the answer back.
async fn relay_post(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
    payload: web::Payload,
    record: &mut CallRecord,
) -> Result<(actix_web::HttpResponseBuilder, reqwest::Response), Refusal> {
    let content_type = header_str(req, header::CONTENT_TYPE).unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    let accept = header_str(req, header::ACCEPT).unwrap_or("");
    let acceptable = accept.contains("*/*")
        || (accept.contains("application/json") && accept.contains("text/event-stream"));
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
    let body = read_body(payload).await?;
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
    let service = service(state, &principal, name).await.map_err(|r| r.with_id(&id))?;
    record.service_id = Some(service.id);
    let needed = message.required_scope();
    if !principal.scopes.contains(needed) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            format!("This API key lacks the {} scope needed for this method", needed.as_str()),
        )
        .with_id(&id));
    }
    let is_initialize = message.method() == Some("initialize");
    let existing = session(state, req, principal.key_id, service.id).map_err(|r| r.with_id(&id))?;
    let Some(url) = service.upstream_url.clone() else {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            UPSTREAM_FAILED,
            "This service has no HTTP upstream",
        )
        .with_id(&id));
    };
    let credential = credential(state, &principal, &service).await.map_err(|r| r.with_id(&id))?;
    if let Some((_, _, token)) = &credential {
        record.secrets.push(token.clone());
    }

    let mut upstream = state
        .gateway
        .client
        .post(&url)
        .timeout(Duration::from_millis(service.timeout_ms.max(1) as u64))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    let upstream_session = existing.as_ref().and_then(|(_, s)| s.upstream.as_deref());
    upstream = upstream_headers(upstream, req, &service, credential.as_ref(), upstream_session);
    let answer = upstream.body(body.freeze()).send().await.map_err(|e| {
        if e.is_timeout() {
            Refusal::new(StatusCode::GATEWAY_TIMEOUT, UPSTREAM_FAILED, "The upstream did not answer in time")
                .with_id(&id)
        } else {
            Refusal::new(StatusCode::BAD_GATEWAY, UPSTREAM_FAILED, "The upstream cannot be reached")
                .with_id(&id)
        }
    })?;

    // The upstream forgot the session: the client must start again.
    if answer.status() == reqwest::StatusCode::NOT_FOUND
        && let Some((gateway_id, _)) = &existing
    {
        state.gateway.sessions.lock().expect("session table lock").remove(gateway_id);
        return Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session expired; initialize a new one")
            .with_id(&id));
    }
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    if let Some(content_type) =
        answer.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    {
        response.insert_header((header::CONTENT_TYPE, content_type.to_owned()));
    }
    if is_initialize && status.is_success() {
        let upstream_session =
            answer.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let gateway_id = crate::crypto::random_token();
        let entry = GatewaySession {
            key_id: principal.key_id,
            service_id: service.id,
            upstream: upstream_session,
            last_used: std::time::Instant::now(),
        };
        state.gateway.sessions.lock().expect("session table lock").insert(gateway_id.clone(), entry);
        response.insert_header((SESSION_HEADER, gateway_id));
    } else if let Some((gateway_id, _)) = &existing {
        response.insert_header((SESSION_HEADER, gateway_id.clone()));
    }
    Ok((response, answer))
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
    let (gateway_id, session) = session(state, req, principal.key_id, service.id)?.ok_or_else(|| {
        Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required")
    })?;
    let url = service
        .upstream_url
        .clone()
        .ok_or_else(|| Refusal::new(StatusCode::BAD_GATEWAY, UPSTREAM_FAILED, "No HTTP upstream"))?;
    let credential = credential(state, &principal, &service).await?;
    let upstream = state.gateway.client.get(&url).header("accept", "text/event-stream");
    let upstream =
        upstream_headers(upstream, req, &service, credential.as_ref(), session.upstream.as_deref());
    let answer = upstream.send().await.map_err(|_| {
        Refusal::new(StatusCode::BAD_GATEWAY, UPSTREAM_FAILED, "The upstream cannot be reached")
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    if let Some(content_type) =
        answer.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
    {
        response.insert_header((header::CONTENT_TYPE, content_type.to_owned()));
    }
    response.insert_header((SESSION_HEADER, gateway_id));
    Ok(response
        .streaming(answer.bytes_stream().map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway))))
}

/// Ends a session, here and upstream.
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Uuid::now_v7().to_string();
    let result = async {
        let principal = principal(&state, &req).await?;
        let service = service(&state, &principal, &name).await?;
        let (gateway_id, session) =
            session(&state, &req, principal.key_id, service.id)?.ok_or_else(|| {
                Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required")
            })?;
        state.gateway.sessions.lock().expect("session table lock").remove(&gateway_id);
        if let (Some(url), Some(upstream_session)) = (&service.upstream_url, &session.upstream) {
            let _ = state.gateway.client.delete(url).header(SESSION_HEADER, upstream_session).send().await;
        }
        Ok::<_, Refusal>(HttpResponse::NoContent().finish())
    }
    .await;
    result.unwrap_or_else(|refusal| refusal.response(&correlation))
}
