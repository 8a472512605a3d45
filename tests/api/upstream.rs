//! The test upstream itself, reached directly by a real MCP client (rmcp) over both transports,
//! so the gateway's tests can rely on it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
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
        let mut child = Command::new(UPSTREAM)
            .args(["--http", "127.0.0.1:0"])
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

#[tokio::test]
async fn the_test_upstream_answers_over_streamable_http() {
    let upstream = HttpUpstream::start();
    let config = StreamableHttpClientTransportConfig::with_uri(upstream.url.clone())
        .auth_header("upstream-credential-1");
    let handler = RootsClient::default();
    let tools_changed = handler.tools_changed.clone();
    let client = handler.serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let mut names: Vec<String> =
        client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["add", "big", "echo", "notify_later", "roots", "slow", "whoami"]);
    assert_eq!(call(&client, "echo", json!({ "text": "hello" })).await, "hello");
    assert_eq!(call(&client, "add", json!({ "a": 2, "b": 40 })).await, "42");
    assert_eq!(call(&client, "whoami", json!({})).await, "Bearer upstream-credential-1");
    assert_eq!(call(&client, "big", json!({})).await.len(), 1024 * 1024);
    assert_eq!(call(&client, "slow", json!({ "ms": 10 })).await, "slept 10 ms");
    assert_eq!(call(&client, "roots", json!({})).await, ROOT);
    notified_later(&client, &tools_changed).await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_test_upstream_answers_over_stdio() {
    let mut command = tokio::process::Command::new(UPSTREAM);
    command.args(["--stdio", "--credential", "stdio-credential-2"]).stderr(Stdio::null());
    let handler = RootsClient::default();
    let tools_changed = handler.tools_changed.clone();
    let client = handler.serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    assert_eq!(client.list_all_tools().await.unwrap().len(), 7);
    assert_eq!(call(&client, "echo", json!({ "text": "over stdio" })).await, "over stdio");
    assert_eq!(call(&client, "whoami", json!({})).await, "stdio-credential-2");
    assert_eq!(call(&client, "roots", json!({})).await, ROOT);
    notified_later(&client, &tools_changed).await;
    client.cancel().await.unwrap();
}

#[test]
fn the_test_upstream_prints_its_usage_when_asked_and_names_a_mistake() {
    let help = Command::new(UPSTREAM).arg("--help").env("RUST_BACKTRACE", "1").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: mcp-test-upstream"));
    assert!(help.stderr.is_empty(), "{}", String::from_utf8_lossy(&help.stderr));
    let wrong = Command::new(UPSTREAM).arg("--serve").env("RUST_BACKTRACE", "1").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(message.starts_with("usage:") && !message.contains("backtrace"), "{message}");
}
