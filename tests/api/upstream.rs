//! The test upstream itself, reached directly by a real MCP client (rmcp) over both transports,
//! so the gateway's tests can rely on it.

use std::process::{Command, Stdio};

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::json;

use crate::helpers::upstream::{HttpUpstream, ROOT, RootsClient, UPSTREAM, call, notified_later};

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
    assert_eq!(names, ["add", "big", "echo", "fail", "notify_later", "roots", "slow", "whoami"]);
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
    assert_eq!(client.list_all_tools().await.unwrap().len(), 8);
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
