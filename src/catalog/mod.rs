//! MCP service definitions: the organization's own services (managed in the dashboard, HTTP
//! upstreams only) and the operator's system services (from a TOML file, HTTP or stdio), and
//! which of their tools are offered to whom.

pub mod definition;
pub mod egress;
pub mod plans;
pub mod system;
pub mod tool_policy;
