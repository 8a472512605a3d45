//! Who is asking: passwords, the session store and its typed wrapper, CSRF, sign-in
//! throttling, and the gate that enforces the route table's roles before any handler runs.

pub mod api_key;
pub mod csrf;
pub mod device;
pub mod gate;
pub mod password;
pub mod session;
pub mod session_store;
pub mod throttle;

use std::net::IpAddr;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::{Ready, ready};

use crate::app::AppState;
use crate::telemetry::redact::redact_text;

/// The client's address and user agent (redacted), as recorded with sessions, sign-in attempts,
/// audit rows and request logs.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> ClientInfo {
        let ip = ClientInfo::ip_of(req);
        // Stored with sessions, audit rows and request logs: redacted like a body.
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| redact_text(s, &[]).chars().take(256).collect());
        ClientInfo { ip, user_agent }
    }

    /// The client's address alone: the proxy's word for it only when the proxy is trusted.
    pub fn ip_of(req: &HttpRequest) -> Option<IpAddr> {
        let trust_proxy =
            req.app_data::<web::Data<AppState>>().is_some_and(|state| state.settings.trust_proxy);
        if trust_proxy {
            req.connection_info().realip_remote_addr().and_then(parse_ip)
        } else {
            req.peer_addr().map(|a| a.ip())
        }
    }

    pub fn ip_string(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

impl FromRequest for ClientInfo {
    type Error = actix_web::Error;
    type Future = Ready<Result<ClientInfo, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(ClientInfo::of(req)))
    }
}
