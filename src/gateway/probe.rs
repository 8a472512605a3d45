//! "Test connection": initialize and tools/list through the gateway as a signed-in member, as a
//! client with one of their keys would, each message checked, relayed and recorded like any
//! other. The session ends afterwards (a stdio child with it).

use actix_web::HttpRequest;
use serde_json::{Value, json};
use uuid::Uuid;

use super::endpoint::{SESSION_HEADER, send_as, service};
use super::record::{CallRecord, message_in};
use super::sessions::{end_session, session};
use crate::app::AppState;
use crate::auth::api_key::KeyPrincipal;
use crate::domain::{Role, Scope, Scopes};
use crate::ids::{Id, KeyId, OrgId, UserId};
use crate::telemetry::redact::redact_text;

/// A tool as the service describes it.
pub struct Tool {
    pub name: String,
    pub description: String,
}

/// Most pages of tools followed.
const MAX_PAGES: usize = 20;

/// The member as the gateway sees a key of theirs that may read. No key is involved: the
/// session is bound to the nil key id, which no key has.
pub fn principal(organization_id: OrgId, user_id: UserId, role: Role) -> KeyPrincipal {
    KeyPrincipal {
        key_id: KeyId::from_uuid(Uuid::nil()),
        organization_id,
        user_id,
        role,
        scopes: Scopes::new([Scope::McpRead]).limited_to(role),
    }
}

/// The service's tools, or what went wrong, in words for the page.
pub async fn probe(
    state: &AppState,
    req: &HttpRequest,
    principal: &KeyPrincipal,
    name: &str,
) -> Result<Vec<Tool>, String> {
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "mcp-platform test connection", "version": env!("CARGO_PKG_VERSION") } } });
    let (session_id, _) = exchange(state, req, principal, name, None, &initialize).await?;
    let listed = async {
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        exchange(state, req, principal, name, session_id.as_deref(), &initialized).await?;
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_PAGES {
            let params = cursor.take().map_or(json!({}), |cursor| json!({ "cursor": cursor }));
            let list = json!({ "jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params });
            let (_, result) = exchange(state, req, principal, name, session_id.as_deref(), &list).await?;
            let result = result.unwrap_or_default();
            for tool in result["tools"].as_array().into_iter().flatten() {
                tools.push(Tool {
                    name: tool["name"].as_str().unwrap_or_default().to_owned(),
                    description: tool["description"].as_str().unwrap_or_default().to_owned(),
                });
            }
            match result.get("nextCursor") {
                Some(next) if !next.is_null() => cursor = Some(next.clone()),
                _ => break,
            }
        }
        Ok(tools)
    }
    .await;
    if let Some(session_id) = &session_id {
        end(state, principal, name, session_id).await;
    }
    listed
}

/// Sends one message; the session id the answer names, and the result of a request.
async fn exchange(
    state: &AppState,
    req: &HttpRequest,
    principal: &KeyPrincipal,
    name: &str,
    session_id: Option<&str>,
    message: &Value,
) -> Result<(Option<String>, Option<Value>), String> {
    let slot = state
        .log_writer
        .reserve()
        .map_err(|_| "The platform cannot record calls right now; try again in a moment".to_owned())?;
    let mut record = CallRecord::new(req, name, slot);
    record.organization_id = Some(principal.organization_id);
    record.user_id = Some(principal.user_id);
    let body = actix_web::web::Bytes::from(message.to_string());
    let response = send_as(state, req, principal, name, body, session_id, record).await;
    let status = response.status();
    let session = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .map_err(|_| "The service's answer broke off".to_owned())?;
    let text = String::from_utf8_lossy(&body);
    let Some(id) = message.get("id") else {
        return if status.is_success() {
            Ok((session, None))
        } else {
            Err(format!("The service refused {}: HTTP {status}", message["method"]))
        };
    };
    let reply = message_in(&text, id).ok_or_else(|| format!("The service did not answer (HTTP {status})"))?;
    if let Some(error) = reply.get("error") {
        // The upstream wrote this message; a credential it echoes must not reach the page.
        let message = error["message"].as_str().unwrap_or("The service answered with an error");
        return Err(redact_text(message, &[]).into_owned());
    }
    Ok((session, reply.get("result").cloned()))
}

/// Ends the probe's session.
async fn end(state: &AppState, principal: &KeyPrincipal, name: &str, session_id: &str) {
    let Ok(service) = service(state, principal, name).await else { return };
    if let Ok(Some((gateway_id, session))) = session(state, Some(session_id), principal.key_id, service.id) {
        end_session(state, &service, &gateway_id, &session).await;
    }
}
