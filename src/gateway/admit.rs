//! The first phase of a message: everything checked before anything is relayed. The request's
//! origin and media types, the API key (who calls, with which scopes), the size, the JSON-RPC
//! shape, the service and the scope the method needs; what passes is a `Call`.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::cache::LoadedService;
use super::call::{Call, Caller};
use super::era::{self, Era};
use super::jsonrpc;
use super::record::CallRecord;
use super::refusal::{Challenge, FORBIDDEN, NOT_FOUND, PROTOCOL_HEADER, Refusal, SSE};
use crate::app::AppState;
use crate::auth::api_key::{self, KeyPrincipal, KeyRejection};
use crate::db;
use crate::ids::OrgId;

/// Largest client message accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn header_str(req: &HttpRequest, name: impl header::AsHeaderName) -> Option<&str> {
    header_str_of(req.headers(), name)
}

fn header_str_of(headers: &header::HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Streamable HTTP: a request whose `Origin` is present and not allowed is refused (DNS
/// rebinding); requests without one (non-browser clients) are fine.
pub fn check_origin(state: &AppState, req: &HttpRequest) -> Result<(), Refusal> {
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

/// A POST's media types and announced size, before anything is read.
pub fn check_post(req: &HttpRequest) -> Result<(), Refusal> {
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
    if header_str(req, header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY)
    {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, jsonrpc::INVALID_REQUEST, "The message is larger than 4 MiB")
}

pub async fn read_body(mut payload: web::Payload) -> Result<web::Bytes, Refusal> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::PARSE_ERROR, "Could not read the request body")
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The key the request presents, as its hash; refused when there is none or it is malformed.
pub fn presented_key(req: &HttpRequest) -> Result<[u8; 32], Refusal> {
    let raw = header_str(req, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| {
            Refusal::unauthorized(
                Challenge::Missing,
                "An API key is required: Authorization: Bearer mcp_sk_...",
            )
        })?;
    api_key::parse(raw)
        .map(|key| key.hash())
        .map_err(|rejection| Refusal::unauthorized(Challenge::Invalid, &format!("Unauthorized: {rejection}")))
}

/// Who calls, from the key the request presents (kept for a few seconds; checked every time).
pub async fn principal(state: &AppState, req: &HttpRequest) -> Result<KeyPrincipal, Refusal> {
    let hash = presented_key(req)?;
    key_principal(state, hash).await.map_err(|rejection| match rejection {
        KeyRejection::Unavailable(e) => Refusal::unavailable(&e, "The platform cannot check keys right now"),
        other => Refusal::unauthorized(Challenge::Invalid, &format!("Unauthorized: {other}")),
    })
}

/// The owner of the key with this hash, as every check of it today allows (the key's record is
/// kept for a few seconds; the checks run every time).
pub async fn key_principal(state: &AppState, hash: [u8; 32]) -> Result<KeyPrincipal, KeyRejection> {
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
}

/// The service the organization's members reach by this name (kept for a few seconds).
pub async fn service(
    state: &AppState,
    organization_id: OrgId,
    name: &str,
) -> Result<Arc<LoadedService>, Refusal> {
    let lookups = &state.gateway.lookups;
    let found = match lookups.service(organization_id, name) {
        Some(found) => found,
        None => {
            let found = async {
                let mut conn = state.db.acquire().await?;
                let Some(row) =
                    db::services::find_for_organization(conn.conn(), organization_id, name).await?
                else {
                    return Ok(None);
                };
                let policy = db::tool_policies::effective(conn.conn(), organization_id, row.id).await?;
                Ok(Some((row, policy)))
            }
            .await
            .map_err(|e: sqlx::Error| {
                Refusal::unavailable(&e, "The platform cannot look up services right now")
            })?;
            let found = match found {
                Some((row, policy)) => {
                    let headers =
                        crate::crypto::headers::open(&state.keyring, &state.db, row.id, &row.sealed_headers)
                            .await
                            .map_err(|e| {
                                Refusal::unavailable(
                                    &e,
                                    "The platform cannot read this service's headers right now",
                                )
                            })?;
                    Some(Arc::new(state.gateway.load(row, headers, policy)?))
                }
                None => None,
            };
            lookups.keep_service(organization_id, name, found.clone());
            found
        }
    };
    found
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND, format!("No service named \"{name}\"")))
}

/// Checks a message of `caller` for the named service: its JSON-RPC shape, the service, and the
/// scope its method needs. What is learned goes into the call's record as it is learned.
pub async fn message(
    state: &AppState,
    caller: Caller,
    name: &str,
    body: web::Bytes,
    headers: &header::HeaderMap,
    record: &mut CallRecord,
) -> Result<Call, Refusal> {
    record.request_body = Some(body.clone());
    let message = jsonrpc::parse(&body).map_err(Refusal::malformed)?;
    let id = message.id().cloned().unwrap_or(Value::Null);
    record.method = message.method().map(str::to_owned);
    record.tool = message.tool_name().map(str::to_owned);
    record.rpc_id = id.clone();
    let era = era::of(&message, headers);
    // (`of` refuses only requests that declare 2026-07-28.)
    record.modern = !matches!(era, Ok(Era::Legacy));
    let era = era.map_err(|r| r.with_id(&id))?;
    let protocol_version = match &era {
        // (Its header was checked against the body: it names this revision.)
        Era::Modern(modern) => Some(modern.version.into()),
        Era::Legacy => header_str_of(headers, PROTOCOL_HEADER).map(|v| v.to_owned().into()),
    };
    let checked = async {
        let service = service(state, caller.organization_id, name).await?;
        record.service_id = Some(service.id);
        record.service_kind = service.transport.as_str();
        let needed = message.required_scope();
        if !caller.scopes.contains(needed) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                FORBIDDEN,
                format!("This API key lacks the {} scope needed for this method", needed.as_str()),
            ));
        }
        if !caller.reach.allows_service(name) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                FORBIDDEN,
                format!("This API key is not for the service \"{name}\""),
            ));
        }
        Ok(service)
    };
    let service = checked.await.map_err(|r| r.with_id(&id))?;
    // (The client's `Mcp-Param-*` headers are taken where they are relayed: `era::client_param_headers`.)
    let call = Call { caller, service, message, body, protocol_version, era, param_headers: Vec::new() };
    if let Some(tool) = call.message.tool_name()
        && !call.offers(tool)
    {
        let refusal = Refusal::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            format!(
                "The tool \"{tool}\" of \"{name}\" is not offered to you (the organization's tool policy or this key)"
            ),
        );
        return Err(refusal.with_id(&id));
    }
    Ok(call)
}
