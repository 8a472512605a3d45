//! `/mcp/{service}`: the MCP Streamable HTTP transport towards clients. Each message flows one
//! way: `admit` (origin, media types, key, size, JSON-RPC shape, service, scope) and the
//! client's session, then `credential` (the caller's own token, opened once), `relay` (to the
//! HTTP upstream or the session's stdio child), `answer` (whole or streamed back) and `record`
//! (one redacted row). The handlers here only wire the phases together.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use super::admit::{self, header_str};
use super::answer::{self, Body, Relayed, answer};
use super::bridge;
use super::call::{Caller, Credential};
use super::credential;
use super::era::{self, Era};
use super::jsonrpc;
use super::limits::Headroom;
use super::record::{CallRecord, session_tag};
use super::refusal::{
    LAST_EVENT_ID_HEADER, NOT_FOUND, PROTOCOL_HEADER, Refusal, SESSION_HEADER, TOKEN_MISSING,
};
use super::relay;
use super::sessions::{GatewaySession, Speaks, UpstreamSession, session};
use crate::app::AppState;
use crate::auth::api_key::{self, KeyPrincipal, KeyRejection};
use crate::domain::Scope;
use crate::telemetry::logging::Correlation;
use crate::telemetry::metrics::Observed;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/mcp/{service}")
            .route(web::post().to(post))
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    );
}

/// A client message.
pub async fn post(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let slot = match state.log_writer.reserve() {
        Ok(slot) => slot,
        Err(_) => return unrecordable(&req, &state),
    };
    // The row's id is the request's correlation id, in every line it logs too.
    let now = state.clock.now();
    let mut record = CallRecord::new(Correlation::of(&req, now), &req, &name, slot, now);
    let mut headroom = None;
    let mut response = match relay_post(&req, &state, &name, payload, &mut record, &mut headroom).await {
        Ok((relayed, session_id)) => answer(Ok(relayed), session_id, record, &state).await,
        Err(refusal) => answer(Err(refusal), None, record, &state).await,
    };
    if let Some(headroom) = headroom {
        headroom.apply(response.headers_mut());
    }
    response
}

/// Every phase of one message; the answer with the gateway session it belongs to.
async fn relay_post(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    name: &str,
    payload: web::Payload,
    record: &mut CallRecord,
    headroom: &mut Option<Headroom>,
) -> Result<(Relayed, Option<String>), Refusal> {
    admit::check_origin(state, req)?;
    admit::check_post(req)?;
    let principal = admit::principal(state, req).await?;
    record.organization_id = Some(principal.organization_id);
    record.user_id = Some(principal.user_id);
    record.api_key_id = Some(principal.key_id);
    let body = admit::read_body(payload).await?;
    relay_message(req, state, name, &principal, body, req.headers(), record, headroom).await
}

/// A tool call made for the JSON API (`POST /api/v1/mcp/execute/tool`): a 2026-07-28 request
/// that declares no client capabilities, through every phase of a client's message from the
/// checks of the message on (the API checked the key), recorded like any other. The call's
/// JSON-RPC answer: its `result`, or the service's `error`.
pub async fn call_tool(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    principal: &KeyPrincipal,
    name: &str,
    tool: &str,
    arguments: serde_json::Value,
) -> Result<Result<serde_json::Value, serde_json::Value>, Refusal> {
    let Ok(slot) = state.log_writer.reserve() else { return Err(cannot_record(state)) };
    let now = state.clock.now();
    let mut record = CallRecord::new(Correlation::of(req, now), req, name, slot, now);
    record.organization_id = Some(principal.organization_id);
    record.user_id = Some(principal.user_id);
    record.api_key_id = Some(principal.key_id);
    let request = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool,
        "arguments": arguments,
        "_meta": {
            era::META_VERSION: era::MODERN_VERSION,
            era::META_CAPABILITIES: {},
            era::META_CLIENT_INFO: { "name": "mcp-platform api", "version": env!("CARGO_PKG_VERSION") },
        },
    } });
    let mut headers = header::HeaderMap::new();
    let mirrored = [
        (PROTOCOL_HEADER, era::MODERN_VERSION.to_owned()),
        (era::METHOD_HEADER, "tools/call".to_owned()),
        (era::NAME_HEADER, era::encoded(tool)),
    ];
    for (name, value) in mirrored {
        // The encoded name is visible ASCII: a valid header value.
        if let (Ok(name), Ok(value)) =
            (header::HeaderName::try_from(name), header::HeaderValue::try_from(value))
        {
            headers.insert(name, value);
        }
    }
    let body = web::Bytes::from(request.to_string());
    let mut headroom = None;
    let relayed =
        relay_message(req, state, name, principal, body, &headers, &mut record, &mut headroom).await;
    let relayed = match relayed {
        Ok((relayed, _)) => relayed,
        Err(refusal) => {
            answer::record_refusal(&refusal, record, state);
            return Err(refusal);
        }
    };
    let messages = answer::collect(relayed, record, state).await.ok_or_else(|| {
        Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream broke off its answer")
    })?;
    let reply = messages.into_iter().find(|m| m["id"] == 1 && m.get("method").is_none());
    match reply {
        Some(mut reply) if reply.get("error").is_some() => Ok(Err(reply["error"].take())),
        Some(mut reply) if reply.get("result").is_some() => Ok(Ok(reply["result"].take())),
        _ => Err(Refusal::upstream_failed(StatusCode::BAD_GATEWAY, "The upstream did not answer the call")),
    }
}

/// Every phase of one message from its checks on, for the caller the request's key named.
#[allow(clippy::too_many_arguments)]
async fn relay_message(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    name: &str,
    principal: &KeyPrincipal,
    body: web::Bytes,
    headers: &header::HeaderMap,
    record: &mut CallRecord,
    headroom: &mut Option<Headroom>,
) -> Result<(Relayed, Option<String>), Refusal> {
    let mut call = admit::message(state, Caller::from(principal), name, body, headers, record).await?;
    let id = call.message.id().cloned().unwrap_or_default();
    let relayed = async {
        // A stateless (2026-07-28) request belongs to no client session, whatever it sends.
        let existing = match &call.era {
            Era::Legacy => {
                session(state, header_str(req, SESSION_HEADER), principal.key_id, call.service.id)?
            }
            Era::Modern(_) => None,
        };
        let credential = if call.needs_credential() {
            let tokens_page = || credential::tokens_page(state, req);
            match credential::open(state, &call.caller, &call.service, tokens_page).await {
                Ok(credential) => credential,
                // A client of 2026-07-28 that can open a URL is asked to set the token, and
                // retries once it has.
                Err(refusal) if refusal.error.code == TOKEN_MISSING && era::opens_urls(&call.era) => {
                    let token_name = call.service.token_service_name.as_deref().unwrap_or_default();
                    let url = tokens_page();
                    let message = credential::missing_message(token_name, &url);
                    let asked = era::asking_for_token(&id, &url, &message);
                    return Ok((answer::whole_answer(&[asked], None), None));
                }
                Err(refusal) => return Err(refusal),
            }
        } else {
            Credential::none()
        };
        // The retry after that question: its answer was for the gateway, not for the service.
        if call.era.modern().is_some()
            && let Some(body) = era::take_answers_for_gateway(&mut call.message, &call.body)
        {
            call.body = body.into();
        }
        // Last before relaying, so that only what is relayed takes from the limits.
        let plan = state.plans.of(&principal.plan);
        let limits = state.limits.take(
            &state.db,
            principal.organization_id,
            principal.key_id,
            plan,
            principal.rate_limit_per_minute,
            &call.message,
        );
        match limits.await {
            Ok(taken) => {
                *headroom = taken.headroom;
                record.quota_counted = taken.counted;
            }
            Err(limited) => {
                state.metrics.limited(limited.limit);
                *headroom = Some(limited.headroom);
                return Err(*limited.refusal);
            }
        }
        if let Era::Modern(modern) = &call.era {
            let mut relayed = match bridge::speaks(state, &call, &credential, record).await? {
                Speaks::Modern { discovered, .. } => {
                    call.param_headers = era::client_param_headers(headers);
                    bridge::relay_stateless(state, &call, &discovered, &credential, record).await?
                }
                Speaks::Legacy => bridge::relay(state, &call, modern, &credential, record).await?,
            };
            if call.is_listen() {
                let revoked = until_revoked(state.clone(), admit::presented_key(req)?, principal.clone());
                relayed = kept_open(relayed, state.gateway.stopped(), revoked);
            }
            return Ok((relayed, None));
        }
        let upstream = existing.as_ref().map(|(_, s)| &s.upstream);
        if let Some(UpstreamSession::Stateless(declared)) = upstream {
            let relayed = bridge::relay_for_legacy(state, &call, declared, &credential, record).await?;
            let session_id = existing.map(|(gateway_id, _)| gateway_id);
            record.session_tag = session_id.as_deref().map(session_tag);
            return Ok((relayed, session_id));
        }
        if call.is_initialize()
            && let Speaks::Modern { dual: false, discovered } =
                bridge::speaks(state, &call, &credential, record).await?
        {
            let mut relayed = bridge::initialize_for_legacy(&call, &discovered);
            let opened = relayed.opened.take().expect("an initialize answered here opens a session");
            let session_id = state.gateway.open(principal.key_id, call.service.id, opened);
            record.session_tag = Some(session_tag(&session_id));
            return Ok((relayed, Some(session_id)));
        }
        match relay::post(state, &call, &credential, upstream, &mut record.secrets).await {
            Ok(mut relayed) => {
                if call.filters_tools() {
                    relayed = answer::offered_only(relayed, |tool| call.offers(tool)).await?;
                }
                let session_id = match relayed.opened.take() {
                    Some(opened) => Some(state.gateway.open(principal.key_id, call.service.id, opened)),
                    None => existing.map(|(gateway_id, _)| gateway_id),
                };
                record.session_tag = session_id.as_deref().map(session_tag);
                Ok((relayed, session_id))
            }
            // The upstream forgot the session: so does the gateway, and the client starts again.
            Err(refusal) if refusal.error.code == NOT_FOUND => {
                if let Some((gateway_id, _)) = &existing {
                    state.gateway.forget(gateway_id);
                }
                Err(refusal)
            }
            Err(refusal) => Err(refusal),
        }
    };
    relayed.await.map_err(|r| r.with_id(&id))
}

/// A subscription's stream, as the client gets it: a comment when it is quiet, and its end
/// when the platform stops or the key may no longer read (as the GET stream's).
fn kept_open(
    mut relayed: Relayed,
    stopped: impl Future<Output = ()> + Send + 'static,
    revoked: impl Future<Output = ()> + Send + 'static,
) -> Relayed {
    let Body::Stream { is_sse, chunks } = relayed.body else { return relayed };
    let kept = futures_util::stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        tokio::select! {
            next = chunks.next() => next.map(|chunk| (chunk, Some(chunks))),
            _ = tokio::time::sleep(era::KEEP_ALIVE) => Some((Ok(web::Bytes::from_static(b":\n\n")), Some(chunks))),
        }
    });
    relayed.body = Body::Stream { is_sse, chunks: kept.take_until(stopped).take_until(revoked).boxed() };
    relayed
}

/// A call refused because the request-log queue is full: every accepted call is recorded, so
/// none is accepted that could not be.
fn unrecordable(req: &HttpRequest, state: &AppState) -> HttpResponse {
    cannot_record(state).response(&Correlation::of(req, state.clock.now()).to_string())
}

/// The refusal of a call the request-log queue has no room for, counted.
fn cannot_record(state: &AppState) -> Refusal {
    state.metrics.refused_unrecordable();
    state.metrics.message(Observed {
        kind: "none",
        method: None,
        outcome: "failure",
        status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
        seconds: 0.0,
    });
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::INTERNAL_ERROR,
        "The platform cannot record calls right now; try again in a moment",
    )
    .retry_after(1)
}

/// The client's session named by the request, of this key and service; 400 without one.
async fn named_session(
    state: &AppState,
    req: &HttpRequest,
    principal: &KeyPrincipal,
    name: &str,
) -> Result<(std::sync::Arc<super::cache::LoadedService>, String, GatewaySession), Refusal> {
    let service = admit::service(state, principal.organization_id, name).await?;
    let (gateway_id, session) =
        session(state, header_str(req, SESSION_HEADER), principal.key_id, service.id)?.ok_or_else(|| {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required")
        })?;
    Ok((service, gateway_id, session))
}

/// The server-to-client stream of a session.
pub async fn get(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Correlation::of(&req, state.clock.now()).to_string();
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
    admit::check_origin(&state, req)?;
    let principal = admit::principal(&state, req).await?;
    let revoked = until_revoked(state.clone(), admit::presented_key(req)?, principal.clone());
    let (service, gateway_id, session) = named_session(&state, req, &principal, name).await?;
    let credential = match session.upstream.process() {
        Some(_) => Credential::none(),
        None => {
            let tokens_page = || credential::tokens_page(&state, req);
            credential::open(&state, &Caller::from(&principal), &service, tokens_page).await?
        }
    };
    let streamed = match &session.upstream {
        UpstreamSession::Stateless(declared) => {
            let caller = Caller::from(&principal);
            bridge::listen_for_legacy(state.clone(), caller, service, credential, declared.clone()).await?
        }
        upstream => {
            relay::stream(
                &state,
                &service,
                &credential,
                upstream,
                header_str(req, PROTOCOL_HEADER),
                header_str(req, LAST_EVENT_ID_HEADER),
            )
            .await?
        }
    };
    let mut response = HttpResponse::build(streamed.status);
    if let Some(content_type) = streamed.content_type {
        response.insert_header((header::CONTENT_TYPE, content_type));
    }
    response.insert_header((SESSION_HEADER, gateway_id));
    let stopped = state.gateway.stopped();
    Ok(response.streaming(streamed.chunks.take_until(stopped).take_until(revoked)))
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

/// The client ends its session, here and upstream.
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let correlation = Correlation::of(&req, state.clock.now()).to_string();
    let result = async {
        admit::check_origin(&state, &req)?;
        let principal = admit::principal(&state, &req).await?;
        let (service, gateway_id, session) = named_session(&state, &req, &principal, &name).await?;
        state.gateway.forget(&gateway_id);
        relay::end(&state, &service, &session.upstream).await;
        Ok::<_, Refusal>(HttpResponse::NoContent().finish())
    }
    .await;
    result.unwrap_or_else(|refusal| refusal.response(&correlation))
}
