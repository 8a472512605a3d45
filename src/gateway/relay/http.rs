//! Relaying to a Streamable HTTP upstream: the message goes with the client's protocol version,
//! the service's own headers, the caller's token where the service says and the upstream's
//! session id; the answer comes back as it arrives.

use std::sync::Arc;

use actix_web::http::StatusCode;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use secrecy::ExposeSecret;

use super::Streamed;
use crate::app::AppState;
use crate::catalog::egress::refusal_in;
use crate::gateway::answer::{Body, Broken, Relayed};
use crate::gateway::cache::LoadedService;
use crate::gateway::call::Call;
use crate::gateway::call::Credential;
use crate::gateway::era;
use crate::gateway::refusal::{LAST_EVENT_ID_HEADER, NOT_FOUND, Refusal, SESSION_HEADER, SSE};
use crate::gateway::sessions::UpstreamSession;

/// What every upstream request carries, made once rather than parsed per call.
const PROTOCOL_NAME: HeaderName = HeaderName::from_static("mcp-protocol-version");
const SESSION_NAME: HeaderName = HeaderName::from_static("mcp-session-id");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const JSON_OR_SSE: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

pub(super) async fn post(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    upstream_session: Option<&str>,
    secrets: &mut Vec<String>,
) -> Result<Relayed, Refusal> {
    // The caller's token, and the service's own header values: credentials all.
    secrets.extend(credential.secret().map(str::to_owned));
    secrets.extend(call.service.headers.iter().map(|(_, value)| value.expose_secret().to_owned()));
    send(state, call, credential, upstream_session).await
}

/// Sends the message; what is sent and answered is for the caller to record.
pub(super) async fn send(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    upstream_session: Option<&str>,
) -> Result<Relayed, Refusal> {
    let service = &call.service;
    let mut request = request(state, service, reqwest::Method::POST)?;
    // A subscription's stream lasts as long as the client keeps it; every other answer has
    // the service's time.
    if !call.is_listen() {
        request = request.timeout(call.timeout());
    }
    let request = request.header(CONTENT_TYPE, JSON).header(ACCEPT, JSON_OR_SSE);
    let mut request =
        with_headers(request, service, credential, call.protocol_version.as_deref(), upstream_session);
    // A 2026-07-28 request mirrors its method and name in headers.
    if call.era.modern().is_some() {
        for (name, value) in era::mirrored_headers(&call.message) {
            request = request.header(name, value);
        }
        for (name, value) in &call.param_headers {
            request = request.header(name, value);
        }
    }
    let answer = request.body(call.body.clone()).send().await.map_err(|e| {
        if let Some(refused) = refusal_in(&e) {
            Refusal::not_allowed(refused)
        } else if e.is_timeout() {
            Refusal::upstream_failed(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time")
        } else {
            Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream cannot be reached")
        }
    })?;
    // The upstream forgot the session: the client must start again.
    if answer.status() == reqwest::StatusCode::NOT_FOUND && upstream_session.is_some() {
        return Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, "Session expired; initialize a new one"));
    }
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = header(&answer, CONTENT_TYPE.as_str());
    let opened = (call.is_initialize() && status.is_success())
        .then(|| UpstreamSession::Http(header(&answer, SESSION_HEADER).map(Arc::from)));
    let is_sse = content_type.as_deref().is_some_and(|v| v.starts_with(SSE));
    let chunks = answer.bytes_stream().map(|chunk| chunk.map_err(|e| Broken { timeout: e.is_timeout() }));
    Ok(Relayed { status, content_type, opened, body: Body::Stream { is_sse, chunks: chunks.boxed() } })
}

pub(super) async fn stream(
    state: &AppState,
    service: &LoadedService,
    credential: &Credential,
    upstream_session: Option<&str>,
    protocol_version: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Streamed, Refusal> {
    let request = request(state, service, reqwest::Method::GET)?.header("accept", SSE);
    let mut request = with_headers(request, service, credential, protocol_version, upstream_session);
    if let Some(last) = last_event_id {
        request = request.header(LAST_EVENT_ID_HEADER, last);
    }
    let answer = request.send().await.map_err(|e| match refusal_in(&e) {
        Some(refused) => Refusal::not_allowed(refused),
        None => Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream cannot be reached"),
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = header(&answer, CONTENT_TYPE.as_str());
    let chunks = answer.bytes_stream().map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
    Ok(Streamed { status, content_type, chunks: chunks.boxed() })
}

pub(super) async fn end(state: &AppState, service: &LoadedService, upstream_session: &str) {
    if let Ok(request) = request(state, service, reqwest::Method::DELETE) {
        let _ = request.header(SESSION_NAME, upstream_session).send().await;
    }
}

/// A request to the service's upstream, through the client its kind of service uses.
fn request(
    state: &AppState,
    service: &LoadedService,
    method: reqwest::Method,
) -> Result<reqwest::RequestBuilder, Refusal> {
    let Some(url) = service.upstream_url.as_deref() else {
        return Err(Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "This service has no HTTP upstream"));
    };
    state.gateway.upstream(service, method, url).map_err(|refused| Refusal::not_allowed(&refused))
}

/// The headers every upstream request carries: the protocol version the client speaks, the
/// service's own headers, the caller's credential and the upstream's session id.
fn with_headers(
    mut request: reqwest::RequestBuilder,
    service: &LoadedService,
    credential: &Credential,
    protocol_version: Option<&str>,
    upstream_session: Option<&str>,
) -> reqwest::RequestBuilder {
    if let Some(version) = protocol_version {
        request = request.header(PROTOCOL_NAME, version);
    }
    for (name, value) in &service.headers {
        request = request.header(name, value.expose_secret());
    }
    if let Some((name, value)) = credential.header(service) {
        request = request.header(name, value);
    }
    if let Some(session) = upstream_session {
        request = request.header(SESSION_NAME, session);
    }
    request
}

fn header(answer: &reqwest::Response, name: &str) -> Option<String> {
    answer.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
