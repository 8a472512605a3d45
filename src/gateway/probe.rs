//! "Test connection": initialize and tools/list through the gateway's own phases as a signed-in
//! member, as a client with one of their keys would: each message checked, relayed with the
//! member's credential and recorded like any other. The upstream session is the probe's own and
//! ends afterwards (a stdio child with it); no client session is opened.

use actix_web::HttpRequest;
use actix_web::web::Bytes;
use serde_json::{Value, json};

use super::admit;
use super::answer::{collect, record_refusal};
use super::call::{Caller, Credential};
use super::credential;
use super::record::CallRecord;
use super::relay;
use super::sessions::UpstreamSession;
use crate::app::AppState;
use crate::catalog::tool_policy::KeyReach;
use crate::domain::{Role, Scope, Scopes};
use crate::ids::{OrgId, UserId};
use crate::telemetry::redact::redact_text;

/// A tool as the service describes it.
pub struct Tool {
    pub name: String,
    pub description: String,
}

/// Most pages of tools followed.
const MAX_PAGES: usize = 20;
const PROTOCOL_VERSION: &str = "2025-11-25";

/// The member as the gateway sees them here: reading only, and through no key.
pub fn caller(organization_id: OrgId, user_id: UserId, role: Role) -> Caller {
    Caller {
        organization_id,
        user_id,
        role,
        scopes: Scopes::new([Scope::McpRead]).limited_to(role),
        reach: KeyReach::everything(),
        key_id: None,
    }
}

/// The service's tools, or what went wrong, in words for the page.
pub async fn probe(
    state: &AppState,
    req: &HttpRequest,
    caller: &Caller,
    name: &str,
) -> Result<Vec<Tool>, String> {
    let service = admit::service(state, caller.organization_id, name).await.map_err(|r| r.error.message)?;
    let credential = credential::open(state, caller, &service, || "/tokens".to_owned())
        .await
        .map_err(|r| r.error.message)?;
    let probe = Probe { state, req, caller, name, credential: &credential };
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
        "clientInfo": { "name": "mcp-platform test connection", "version": env!("CARGO_PKG_VERSION") } } });
    let (session, _) = probe.exchange(None, &initialize).await?;
    let listed = probe.list_tools(session.as_ref()).await;
    if let Some(session) = &session {
        relay::end(state, &service, session).await;
    }
    listed
}

struct Probe<'a> {
    state: &'a AppState,
    req: &'a HttpRequest,
    caller: &'a Caller,
    name: &'a str,
    credential: &'a Credential,
}

impl Probe<'_> {
    async fn list_tools(&self, session: Option<&UpstreamSession>) -> Result<Vec<Tool>, String> {
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.exchange(session, &initialized).await?;
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_PAGES {
            let params = cursor.take().map_or(json!({}), |cursor| json!({ "cursor": cursor }));
            let list = json!({ "jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params });
            let (_, result) = self.exchange(session, &list).await?;
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

    /// Sends one message through the phases; the session an initialize opened, and the
    /// result of a request.
    async fn exchange(
        &self,
        session: Option<&UpstreamSession>,
        message: &Value,
    ) -> Result<(Option<UpstreamSession>, Option<Value>), String> {
        let state = self.state;
        let slot = state
            .log_writer
            .reserve()
            .map_err(|_| "The platform cannot record calls right now; try again in a moment".to_owned())?;
        // One row per message of the probe, each its own.
        let now = self.state.clock.now();
        let mut record = CallRecord::new(crate::ids::LogId::at(now), self.req, self.name, slot, now);
        record.organization_id = Some(self.caller.organization_id);
        record.user_id = Some(self.caller.user_id);
        let body = Bytes::from(message.to_string());
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("mcp-protocol-version"),
            actix_web::http::header::HeaderValue::from_static(PROTOCOL_VERSION),
        );
        let relayed =
            match admit::message(state, self.caller.clone(), self.name, body, &headers, &mut record).await {
                Ok(call) => relay::post(state, &call, self.credential, session, &mut record.secrets).await,
                Err(refusal) => Err(refusal),
            };
        let mut relayed = match relayed {
            Ok(relayed) => relayed,
            Err(refusal) => {
                record_refusal(&refusal, record, state);
                // The upstream may have written this message; a credential it echoes must not
                // reach the page.
                return Err(redact_text(&refusal.error.message, &[]).into_owned());
            }
        };
        let opened = relayed.opened.take();
        let status = relayed.status;
        let messages = collect(relayed, record, state).await.ok_or("The service's answer broke off")?;
        let Some(id) = message.get("id") else {
            return if status.is_success() {
                Ok((opened, None))
            } else {
                Err(format!("The service refused {}: HTTP {status}", message["method"]))
            };
        };
        let reply = messages
            .into_iter()
            .find(|m| &m["id"] == id && m.get("method").is_none())
            .ok_or_else(|| format!("The service did not answer (HTTP {status})"))?;
        if let Some(error) = reply.get("error") {
            let message = error["message"].as_str().unwrap_or("The service answered with an error");
            return Err(redact_text(message, &[]).into_owned());
        }
        Ok((opened, reply.get("result").cloned()))
    }
}
