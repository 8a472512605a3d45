//! The MCP gateway: `/mcp/{service}` for clients with an API key, relayed to the service's
//! upstream (Streamable HTTP or a stdio child) with the caller's own credential, every message
//! recorded, redacted.
//!
//! endpoint     the handlers and every check before a message is relayed; HTTP upstreams
//! stdio_relay  messages to and from a session's stdio child
//! stdio        the children themselves: start, route their output, end them, caps
//! answer       the client's answer (whole or streamed) and its record
//! sessions     shared state: connection pool, live sessions, cached lookups
//! cache        short-lived copies of keys, services and sealed tokens
//! jsonrpc      what a client message is and which scope it needs
//! record       one request-log row per message, redacted and cut
//! probe        "test connection" for the dashboard

pub mod answer;
pub mod cache;
pub mod endpoint;
pub mod jsonrpc;
pub mod probe;
pub mod record;
pub mod sessions;
pub mod stdio;
pub mod stdio_relay;
