//! The test upstream (`mcp-test-upstream`): started over Streamable HTTP, and a real MCP client
//! (rmcp) that answers the server's requests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use serde_json::json;

pub const UPSTREAM: &str = env!("CARGO_BIN_EXE_mcp-test-upstream");
/// The root `RootsClient` names when the server asks.
pub const ROOT: &str = "file:///srv/gateway-roots-test";

/// A client that answers the server's roots request, to prove that server-to-client requests
/// reach the client and its answer reaches the server, and that notes the server's tool-list
/// notifications.
#[derive(Default)]
pub struct RootsClient {
    pub tools_changed: std::sync::Arc<tokio::sync::Notify>,
}

#[allow(deprecated)]
impl rmcp::ClientHandler for RootsClient {
    async fn list_roots(
        &self,
        _: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        Ok(rmcp::model::ListRootsResult::new(vec![rmcp::model::Root::new(ROOT)]))
    }

    async fn on_tool_list_changed(&self, _: rmcp::service::NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }
}

/// Calls `notify_later` and waits for the notification the server sends afterwards, outside any
/// request (so on the session's GET stream).
pub async fn notified_later(
    client: &RunningService<RoleClient, RootsClient>,
    tools_changed: &tokio::sync::Notify,
) {
    assert_eq!(call(client, "notify_later", json!({ "ms": 200 })).await, "will notify in 200 ms");
    tokio::time::timeout(std::time::Duration::from_secs(10), tools_changed.notified())
        .await
        .expect("the notification sent outside any request reached the client");
}

/// The test upstream serving Streamable HTTP on a free loopback port; stopped on drop.
pub struct HttpUpstream {
    child: Child,
    pub url: String,
}

impl HttpUpstream {
    pub fn start() -> HttpUpstream {
        HttpUpstream::start_with(&["--http", "127.0.0.1:0"])
    }

    /// On a given address, speaking 2025-11-25 only: a restarted upstream has forgotten its
    /// sessions.
    pub fn start_legacy_on(address: &str) -> HttpUpstream {
        HttpUpstream::start_with(&["--http", address, "--legacy-only"])
    }

    /// Speaking 2025-11-25 only, as most servers do.
    pub fn start_legacy() -> HttpUpstream {
        HttpUpstream::start_legacy_on("127.0.0.1:0")
    }

    fn start_with(args: &[&str]) -> HttpUpstream {
        let mut child = Command::new(UPSTREAM)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the test upstream starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.trim().strip_prefix("listening on ").expect("the upstream says where it listens").to_owned();
        HttpUpstream { child, url }
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn call(
    client: &RunningService<RoleClient, impl rmcp::service::Service<RoleClient>>,
    tool: &str,
    args: serde_json::Value,
) -> String {
    let arguments = args.as_object().cloned().unwrap_or_default();
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap();
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect()
}
