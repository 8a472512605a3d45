//! The third phase: a checked message goes to the service's upstream, over HTTP or to the
//! session's stdio child, with the caller's credential; what comes back is a `Relayed` answer
//! for the next phase. Also the session's server-to-client stream, and the end of a session.

mod http;
mod stdio;

use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::stream::BoxStream;

use super::answer::Relayed;
use super::cache::LoadedService;
use super::call::Call;
use super::call::Credential;
use super::refusal::Refusal;
use super::sessions::UpstreamSession;
use crate::app::AppState;
use crate::catalog::definition::Transport;

/// A session's server-to-client stream.
pub(super) struct Streamed {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<String>,
    pub(super) chunks: BoxStream<'static, Result<web::Bytes, actix_web::Error>>,
}

/// Relays one message in the session (if any); an `initialize` that succeeds brings back the
/// upstream session it opened. The credentials it sends go into `secrets`, for the record to
/// redact should the upstream echo them.
pub(super) async fn post(
    state: &AppState,
    call: &Call,
    credential: &Credential,
    session: Option<&UpstreamSession>,
    secrets: &mut Vec<String>,
) -> Result<Relayed, Refusal> {
    let started = std::time::Instant::now();
    let relayed = match call.service.transport {
        Transport::Http => {
            http::post(state, call, credential, session.and_then(UpstreamSession::http_id), secrets).await
        }
        Transport::Stdio => {
            stdio::post(state, call, credential, session.and_then(UpstreamSession::process), secrets).await
        }
    };
    if relayed.is_ok() {
        state.metrics.upstream(call.service.transport.as_str(), started.elapsed().as_secs_f64());
    }
    relayed
}

/// Opens a subscription upstream for the GET stream of a 2025-11-25 client's session with an
/// upstream of 2026-07-28 only; like the GET stream it stands for, it is not recorded.
pub(super) async fn listen(
    state: &AppState,
    call: &Call,
    credential: &Credential,
) -> Result<Relayed, Refusal> {
    http::send(state, call, credential, None).await
}

/// Opens the session's server-to-client stream; `last_event_id` resumes an answer that broke off.
pub(super) async fn stream(
    state: &AppState,
    service: &LoadedService,
    credential: &Credential,
    session: &UpstreamSession,
    protocol_version: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Streamed, Refusal> {
    match session {
        UpstreamSession::Stdio(process) => stdio::stream(process),
        // Mapped to a subscription by the bridge.
        UpstreamSession::Stateless(_) => Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            crate::gateway::jsonrpc::INVALID_REQUEST,
            "This session has no GET stream upstream",
        )),
        UpstreamSession::Http(id) => {
            http::stream(state, service, credential, id.as_deref(), protocol_version, last_event_id).await
        }
    }
}

/// Ends a session upstream (a stdio child is gone when this returns).
pub(super) async fn end(state: &AppState, service: &LoadedService, session: &UpstreamSession) {
    match session {
        UpstreamSession::Stdio(process) => process.end().await,
        UpstreamSession::Http(Some(id)) => http::end(state, service, id).await,
        UpstreamSession::Http(None) | UpstreamSession::Stateless(_) => {}
    }
}
