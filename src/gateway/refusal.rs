//! What the gateway answers instead of relaying a message: an HTTP status with a JSON-RPC
//! error, with the names and codes every phase of the gateway uses.

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use serde_json::Value;

use super::jsonrpc::{self, RpcError};
use crate::catalog::egress::Refused;

pub const SESSION_HEADER: &str = "Mcp-Session-Id";
pub const PROTOCOL_HEADER: &str = "MCP-Protocol-Version";
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";
pub const LAST_EVENT_ID_HEADER: &str = "Last-Event-ID";
pub const SSE: &str = "text/event-stream";

/// JSON-RPC codes the gateway itself answers with (implementation-defined range).
pub const UNAUTHORIZED: i64 = -32001;
pub const FORBIDDEN: i64 = -32003;
pub const NOT_FOUND: i64 = -32004;
pub const TOKEN_MISSING: i64 = -32005;
pub const UPSTREAM_FAILED: i64 = -32010;
pub const SESSION_LIMIT: i64 = -32011;
/// Over the key's rate limit or the organization's daily quota (429).
pub const RATE_LIMITED: i64 = -32029;

#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: RpcError,
    challenge: Challenge,
    /// Seconds after which trying again may work (`Retry-After`).
    retry_after: Option<u64>,
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    None,
    /// No credentials at all: the scheme alone, no error code.
    Missing,
    /// Credentials that are not valid.
    Invalid,
}

impl Refusal {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Refusal {
        Refusal { status, error: RpcError::new(code, message), challenge: Challenge::None, retry_after: None }
    }

    /// A message that is not JSON-RPC: 400 with the parser's error.
    pub fn malformed(error: RpcError) -> Refusal {
        Refusal { status: StatusCode::BAD_REQUEST, error, challenge: Challenge::None, retry_after: None }
    }

    pub fn unauthorized(challenge: Challenge, message: &str) -> Refusal {
        Refusal { challenge, ..Refusal::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, message) }
    }

    pub fn upstream_failed(status: StatusCode, message: &str) -> Refusal {
        Refusal::new(status, UPSTREAM_FAILED, message)
    }

    /// A stdio session whose child is gone: 404, so the client starts a new session.
    pub fn process_ended() -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "The session's service process has ended; initialize a new session",
        )
    }

    /// A tenant upstream at an address the platform may not reach (SSRF).
    pub fn not_allowed(refused: &Refused) -> Refusal {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            UPSTREAM_FAILED,
            format!("The upstream is not allowed: {refused}"),
        )
    }

    /// A 503 for a failure of the platform's own storage; the cause goes to the log only.
    pub fn unavailable(cause: &dyn std::fmt::Debug, message: &str) -> Refusal {
        tracing::error!(error = ?cause, "{message}");
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, jsonrpc::INTERNAL_ERROR, message)
    }

    /// The same refusal, saying when to try again.
    pub fn retry_after(mut self, seconds: u64) -> Refusal {
        self.retry_after = Some(seconds);
        self
    }

    /// Seconds after which trying again may work, when the refusal says so.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after
    }

    /// The same refusal, with the `data` its error code defines.
    pub fn with_data(mut self, data: Value) -> Refusal {
        self.error.data = Some(Box::new(data));
        self
    }

    /// The same refusal, answering the request with this id.
    pub fn with_id(mut self, id: &Value) -> Refusal {
        self.error.id = id.clone();
        self
    }

    pub fn response(&self, correlation: &str) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((CORRELATION_HEADER, correlation.to_owned()));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
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
