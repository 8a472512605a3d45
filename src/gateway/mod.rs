//! The MCP gateway: `/mcp/{service}` for clients with an API key, relayed to the service's
//! upstream (Streamable HTTP or a stdio child) with the caller's own credential, every message
//! recorded, redacted. A message flows one way through phases, none importing an earlier one:
//!
//! endpoint     the handlers: wire the phases together for POST, GET and DELETE
//! admit        1. every check before relaying: origin, media types, key, size, JSON-RPC
//!                 shape, service, scope; what passes is a `Call`
//! credential   2. the caller's own token for the service, opened once
//! limits          then the organization's daily quota and the key's rate limit (429 past them)
//! relay        3. to the HTTP upstream (`relay/http`) or the session's stdio child
//!                 (`relay/stdio`); the session's stream; the end of a session
//! answer       4. the client's answer, whole or streamed, and its record
//! record       5. one request-log row per message, redacted and cut
//!
//! call         what the phases hand on: `Caller`, `Call`, `Credential`
//! refusal      the answer instead of a relay, with the names and codes all phases use
//! sessions     shared state: connection pools, live client sessions, the stdio pool
//! cache        short-lived copies of keys, services and sealed tokens
//! changes      changes announced to every instance (PostgreSQL `LISTEN`/`NOTIFY`)
//! stdio        the children themselves: start, route their output, end them, caps
//! jsonrpc      what a client message is and which scope it needs
//! era          2025-11-25 (sessions) or 2026-07-28 (stateless): which, and the latter's rules
//! bridge       a 2026-07-28 client to a 2025-11-25 upstream, in the gateway's own sessions
//! probe        "test connection" for the dashboard, through the same phases

pub mod admit;
pub mod answer;
mod bridge;
pub mod cache;
pub mod call;
pub mod changes;
pub mod credential;
pub mod endpoint;
pub mod era;
pub mod jsonrpc;
pub mod limits;
pub mod probe;
pub mod record;
pub mod refusal;
mod relay;
pub mod sessions;
pub mod stdio;
