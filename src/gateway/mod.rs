//! The MCP path: classify client messages, check scopes, and (with the gateway issue) resolve the
//! service, inject the caller's credential and relay to the upstream.

pub mod cache;
pub mod endpoint;
pub mod jsonrpc;
pub mod probe;
pub mod record;
pub mod stdio;
