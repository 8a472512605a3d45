//! A message on its way through the gateway's phases, as they hand it on: who it is for, the
//! checked message and its service (from `admit`), and the caller's credential (from
//! `credential`). Later phases read it; none of them reaches back into an earlier one.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use secrecy::{ExposeSecret, SecretString};

use super::cache::LoadedService;
use super::era::Era;
use super::jsonrpc::Message;
use crate::auth::api_key::KeyPrincipal;
use crate::catalog::definition::Transport;
use crate::catalog::tool_policy::KeyReach;
use crate::domain::{Role, Scopes};
use crate::ids::{KeyId, OrgId, UserId};

/// Who a message is relayed for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub role: Role,
    pub scopes: Scopes,
    /// The services and tools the key is narrowed to.
    pub reach: KeyReach,
    /// The key the member called with; `None` for the dashboard's own test connection.
    pub key_id: Option<KeyId>,
}

impl From<&KeyPrincipal> for Caller {
    fn from(principal: &KeyPrincipal) -> Caller {
        Caller {
            organization_id: principal.organization_id,
            user_id: principal.user_id,
            role: principal.role,
            scopes: principal.scopes.clone(),
            reach: principal.reach.clone(),
            key_id: Some(principal.key_id),
        }
    }
}

/// A client message that passed every check, on its way to the service.
pub struct Call {
    pub caller: Caller,
    pub service: Arc<LoadedService>,
    pub message: Message,
    pub body: web::Bytes,
    /// The MCP revision the client says it speaks, passed on to an HTTP upstream.
    pub protocol_version: Option<Cow<'static, str>>,
    /// Whether the client speaks 2026-07-28 (stateless) or an earlier revision.
    pub era: Era,
    /// A 2026-07-28 client's `Mcp-Param-*` headers, passed on to an upstream of that revision.
    pub param_headers: Vec<(String, String)>,
}

impl Call {
    pub fn is_initialize(&self) -> bool {
        self.message.method() == Some("initialize")
    }

    /// A `subscriptions/listen`: its answer is a stream that lasts as long as the client wants.
    pub fn is_listen(&self) -> bool {
        self.message.method() == Some(super::era::LISTEN)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.service.timeout_ms.max(1) as u64)
    }

    /// Whether the caller may call `tool` on this service: the organization's policy for their
    /// role, and their key's reach.
    pub fn offers(&self, tool: &str) -> bool {
        self.service.policy.allows(tool, self.caller.role)
            && self.caller.reach.allows_tool(&self.service.name, tool)
    }

    /// Whether this is a `tools/list` whose answer leaves out tools the caller may not call.
    pub fn filters_tools(&self) -> bool {
        self.message.method() == Some("tools/list")
            && (!self.service.policy.is_open() || self.caller.reach.narrows_tools_of(&self.service.name))
    }

    /// Whether the caller's own token is needed now: on every call to an HTTP upstream, and
    /// when a stdio session's child may be started (an `initialize`, or a stateless request,
    /// for which the gateway opens a session of its own when it has none).
    pub fn needs_credential(&self) -> bool {
        self.service.transport == Transport::Http || self.is_initialize() || self.era.modern().is_some()
    }
}

/// The caller's token for a service, when the service takes one (shared, not copied, with a
/// task that relays for the call).
#[derive(Default, Clone)]
pub struct Credential {
    pub(super) token: Option<Arc<SecretString>>,
}

impl Credential {
    /// No credential: the service takes none, or none is needed now.
    pub fn none() -> Credential {
        Credential::default()
    }

    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_deref()
    }

    /// The token as a value to redact from everything recorded about the call.
    pub fn secret(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// The header an HTTP upstream gets it in, where the service says.
    pub fn header(&self, service: &LoadedService) -> Option<(String, String)> {
        let (token, placement) = (self.token.as_ref()?, service.placement.as_ref()?);
        Some(placement.render(token.expose_secret()))
    }
}
