//! The gateway over stdio upstreams: each client session gets its own child process, started
//! with the caller's token in its arguments; the child ends with its session (DELETE, idle time,
//! its own exit, the platform's stop) and never outlives it. Checked against the process table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_platform::config::Settings;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::domain::Role;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::gateway::{api_key, error_of, open_session, post_in, request, settled_rows, usage_total};
use crate::helpers::upstream::{ROOT, RootsClient, UPSTREAM, call, notified_later};
use crate::helpers::{Backend, TestApp, TestUser, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    a_real_client_works_through_a_stdio_service_with_its_token_injected,
    stdio_children_end_on_delete_on_exit_when_idle_and_at_stop,
    stdio_sessions_are_capped_per_user_and_in_total,
);

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;

/// System services running the test upstream: directly, and behind a shell that stays its
/// parent (as `npx` does), with the caller's token on the command line; the last one's shell
/// lives on after its server, reading nothing.
fn services_file(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[[service]]
name = "local-tools"
kind = "stdio"
command = {UPSTREAM:?}
args = ["--stdio", "--announce", "--credential", "{{token}}"]
token = "github"
timeout_seconds = 10

[[service]]
name = "impatient-tools"
kind = "stdio"
command = {UPSTREAM:?}
args = ["--stdio", "--credential", "{{token}}"]
token = "github"
timeout_seconds = 1

[[service]]
name = "wrapped-tools"
kind = "stdio"
command = "sh"
args = ["-c", "\"$0\" --stdio --credential \"$1\"; exit 0", {UPSTREAM:?}, "{{token}}"]
token = "github"

[[service]]
name = "lingering-tools"
kind = "stdio"
command = "sh"
args = ["-c", "\"$0\" --stdio --credential \"$1\"; exec 0<&- sleep 60", {UPSTREAM:?}, "{{token}}"]
token = "github"
"#
    );
    let path = dir.join(format!("services-{}.toml", Uuid::now_v7().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

async fn stdio_app(backend: Backend, per_user: &str, total: &str, idle_seconds: &str) -> TestApp {
    let settings = Settings {
        services_file: Some(services_file(&std::env::temp_dir())),
        stdio_max_per_user: Some(per_user.into()),
        stdio_max_total: Some(total.into()),
        stdio_idle_seconds: Some(idle_seconds.into()),
        ..Settings::default()
    };
    spawn_app_with(backend, settings).await
}

/// A developer of a new organization with their own `github` token (unique, so the process
/// table shows which children are theirs) and an API key.
async fn developer_with_token(app: &TestApp, org: mcp_platform::ids::OrgId) -> (TestUser, String, String) {
    let developer = app.create_user(org, Role::Developer).await;
    let token = format!("ghp_stdio{}", Uuid::now_v7().simple());
    let browser = app.signed_in(&developer).await;
    let saved =
        app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", &token)]).await;
    assert_eq!(saved.status(), 200);
    let key = api_key(app, org, &developer, "mcp:read mcp:write").await;
    (developer, token, key)
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect();
    pids.sort();
    pids
}

/// Gone from the process table: ended and reaped (not a zombie).
fn is_reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Still running (present and not a zombie).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..150 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 15 s");
}

/// Opens a session and returns it with the processes it started.
async fn open_tracked(app: &TestApp, path: &str, key: &str, token: &str) -> (String, Vec<u32>) {
    let before = processes_with(token);
    let session = open_session(app, path, key).await;
    let started: Vec<u32> = processes_with(token).into_iter().filter(|pid| !before.contains(pid)).collect();
    assert!(!started.is_empty(), "no process started for the session");
    (session, started)
}

async fn delete_session(app: &TestApp, path: &str, key: &str, session: &str) -> u16 {
    let ended = reqwest::Client::new()
        .delete(app.url(path))
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    ended.status().as_u16()
}

async fn a_real_client_works_through_a_stdio_service_with_its_token_injected(backend: Backend) {
    let app = stdio_app(backend, "3", "50", "600").await;
    let org = app.create_organization("Acme").await;
    let (developer, token, key) = developer_with_token(&app, org).await;

    let config =
        StreamableHttpClientTransportConfig::with_uri(app.url("/mcp/local-tools")).auth_header(key.clone());
    let handler = RootsClient::default();
    let tools_changed = handler.tools_changed.clone();
    let client = handler.serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let children = processes_with(&token);
    assert_eq!(children.len(), 1, "one child for the session");
    assert_eq!(client.list_all_tools().await.unwrap().len(), 8);
    assert_eq!(call(&client, "echo", json!({ "text": "over stdio" })).await, "over stdio");
    // The child was started with the user's own token.
    assert_eq!(call(&client, "whoami", json!({})).await, token);
    // The child asks the client for its roots in the middle of a call, and gets the answer.
    assert_eq!(call(&client, "roots", json!({})).await, ROOT);
    assert_eq!(call(&client, "big", json!({})).await.len(), 1024 * 1024);
    // A notification outside any request comes over the session's GET stream.
    notified_later(&client, &tools_changed).await;
    client.cancel().await.unwrap();
    eventually("the child's end after the client left", || is_reaped(children[0])).await;

    let rows = settled_rows(&app, 9).await;
    let calls: Vec<&str> =
        rows.iter().filter(|r| r.method == "tools/call").map(|r| r.tool.as_str()).collect();
    assert_eq!(calls, ["echo", "whoami", "roots", "big", "notify_later"]);
    let whoami = rows.iter().find(|r| r.tool == "whoami").unwrap();
    assert!(whoami.response.contains("[REDACTED]"), "{}", whoami.response);
    let big = rows.iter().find(|r| r.tool == "big").unwrap();
    assert!(big.response_truncated && big.response.len() <= 16 * 1024);
    for row in &rows {
        assert!(!row.request.contains(&token) && !row.response.contains(&token), "the token was stored");
        assert!(!row.request.contains(&key) && !row.response.contains(&key), "the key was stored");
        assert_eq!(row.outcome, Outcome::Success, "{} failed", row.method);
    }
    assert_eq!(usage_total(&app).await, rows.len() as i64, "counters equal log rows");
    // The child printed its arguments, token included, on stdout and stderr: the stdout line was
    // skipped, both were logged redacted.
    // "Test connection" on the service's page does the same through the gateway as the member,
    // shows the tools with their descriptions, is recorded, and leaves no child behind.
    let browser = app.signed_in(&developer).await;
    let page = app.post_form(&browser, "/services/local-tools", "/services/local-tools/test", &[]).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Connected: 8 tools") && page.contains("Returns the text it is given"), "{page}");
    eventually("the test's child's end", || processes_with(&token).is_empty()).await;
    let probed = settled_rows(&app, rows.len() + 3).await;
    assert_eq!(probed.len(), rows.len() + 3, "initialize, initialized and tools/list are recorded");
    assert_eq!(usage_total(&app).await, probed.len() as i64);

    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains(&token) && !logs.contains(&key), "a secret reached a log line");
    assert!(logs.contains("stdio stdout line is not JSON-RPC: skipped"), "the skipped line is logged");
    assert!(logs.contains("stdio stderr"), "stderr is logged");
    assert!(logs.contains(r#"starting with ["--stdio", "--announce", "--credential", "[REDACTED]"]"#));
}

async fn stdio_children_end_on_delete_on_exit_when_idle_and_at_stop(backend: Backend) {
    let mut app = stdio_app(backend, "10", "50", "3").await;
    let org = app.create_organization("Acme").await;
    let (_, token, key) = developer_with_token(&app, org).await;
    let path = "/mcp/local-tools";

    // DELETE ends the child before it answers.
    let (session, children) = open_tracked(&app, path, &key, &token).await;
    assert_eq!(delete_session(&app, path, &key, &session).await, 204);
    assert!(is_reaped(children[0]), "the child is gone when DELETE returns");
    assert_eq!(error_of(post_in(&app, path, &key, &session, TOOLS_LIST).await).await.0, 404);

    // A child that exits ends its session: the client is told to start a new one.
    let (session, children) = open_tracked(&app, path, &key, &token).await;
    std::process::Command::new("kill").args(["-9", &children[0].to_string()]).status().unwrap();
    eventually("the killed child's reaping", || is_reaped(children[0])).await;
    let (status, code, message) = error_of(post_in(&app, path, &key, &session, TOOLS_LIST).await).await;
    assert_eq!((status, code), (404, -32004), "{message}");

    // A child that lives on but reads no more is as good as gone: its session ends at the next
    // message, and the child with it.
    let lingering = "/mcp/lingering-tools";
    let (session, children) = open_tracked(&app, lingering, &key, &token).await;
    let comm = |pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let (shell, server): (Vec<u32>, Vec<u32>) = children.iter().partition(|pid| comm(pid) == "sh\n");
    std::process::Command::new("kill").args(["-9", &server[0].to_string()]).status().unwrap();
    let shell_stdin = format!("/proc/{}/fd/0", shell[0]);
    eventually("the shell's closing of its stdin", || !Path::new(&shell_stdin).exists()).await;
    let (status, code, message) = error_of(post_in(&app, lingering, &key, &session, TOOLS_LIST).await).await;
    assert_eq!((status, code), (404, -32004), "{message}");
    eventually("the lingering child's end", || is_reaped(shell[0])).await;

    // A call that outlasts the service's timeout is a 504; the session goes on.
    let impatient = "/mcp/impatient-tools";
    let (session, children) = open_tracked(&app, impatient, &key, &token).await;
    let slow =
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"ms":3000}}}"#;
    let (status, code, message) = error_of(post_in(&app, impatient, &key, &session, slow).await).await;
    assert_eq!((status, code), (504, -32010), "{message}");
    let answer = post_in(&app, impatient, &key, &session, TOOLS_LIST).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(delete_session(&app, impatient, &key, &session).await, 204);
    assert!(is_reaped(children[0]));

    // Idle sessions end, the shell wrapper's child with its parent.
    let (idle, idle_children) = open_tracked(&app, path, &key, &token).await;
    let (_, wrapped) = open_tracked(&app, "/mcp/wrapped-tools", &key, &token).await;
    assert_eq!(wrapped.len(), 2, "the shell and the server it started");
    let answer = post_in(&app, path, &key, &idle, TOOLS_LIST).await;
    assert_eq!(answer.status(), 200, "a used session lives on");
    eventually("the idle children's end", || {
        idle_children.iter().all(|&pid| is_reaped(pid)) && wrapped.iter().all(|&pid| !is_running(pid))
    })
    .await;
    assert_eq!(error_of(post_in(&app, path, &key, &idle, TOOLS_LIST).await).await.0, 404);

    // The platform's stop ends every child, even with a server-to-client stream open.
    let (session, children) = open_tracked(&app, path, &key, &token).await;
    let stream = reqwest::Client::new()
        .get(app.url(path))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // A call in flight finishes before the child is ended.
    let in_flight = {
        let (url, key, session) = (app.url(path), key.clone(), session.clone());
        let slow = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"slow","arguments":{"ms":500}}}"#;
        tokio::spawn(
            async move { request(&url, &key, Some(&session), slow).send().await.unwrap().text().await },
        )
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), app.stop()).await.expect("the stop does not hang");
    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight).await.expect("the call ends");
    assert!(answer.unwrap().unwrap().contains("slept 500 ms"), "the call in flight was cut off");
    assert!(is_reaped(children[0]), "the child is gone when the platform has stopped");
    assert!(processes_with(&token).is_empty());
    let rows = app.count("request_logs").await;
    assert_eq!(usage_total(&app).await, rows, "counters equal log rows after a graceful stop");
}

async fn stdio_sessions_are_capped_per_user_and_in_total(backend: Backend) {
    let mut app = stdio_app(backend, "2", "3", "600").await;
    let org = app.create_organization("Acme").await;
    let (_, alice_token, alice) = developer_with_token(&app, org).await;
    let (_, bob_token, bob) = developer_with_token(&app, org).await;
    let path = "/mcp/local-tools";
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let initialize = |key: &str| request(&app.url(path), key, None, init).send();

    // Without a session, only initialize is accepted.
    let (status, code, message) =
        error_of(request(&app.url(path), &alice, None, TOOLS_LIST).send().await.unwrap()).await;
    assert_eq!((status, code), (400, -32600), "{message}");
    // A user without the token is told which one, and nothing starts.
    let carol = app.create_user(org, Role::Developer).await;
    let carol_key = api_key(&app, org, &carol, "mcp:read").await;
    let (status, code, message) = error_of(initialize(&carol_key).await.unwrap()).await;
    assert_eq!((status, code), (403, -32005), "{message}");
    assert!(message.contains("\"github\"") && message.contains("/tokens"), "{message}");
    let browser = app.signed_in(&carol).await;
    let page = app.post_form(&browser, "/services/local-tools", "/services/local-tools/test", &[]).await;
    let page = page.text().await.unwrap();
    assert!(page.contains("The test failed: This service needs your own &#34;github&#34; token"), "{page}");

    let (first, _) = open_tracked(&app, path, &alice, &alice_token).await;
    let (second, _) = open_tracked(&app, path, &alice, &alice_token).await;
    // A request with a revision the gateway does not serve is refused, as over HTTP.
    let wrong_version = request(&app.url(path), &alice, Some(&first), TOOLS_LIST)
        .header("mcp-protocol-version", "1999-01-01");
    let (status, code, message) = error_of(wrong_version.send().await.unwrap()).await;
    assert_eq!((status, code), (400, -32600), "{message}");
    assert!(message.contains("2025-11-25"), "the supported revisions are named: {message}");
    let right_version = request(&app.url(path), &alice, Some(&first), TOOLS_LIST)
        .header("mcp-protocol-version", "2025-11-25");
    assert_eq!(right_version.send().await.unwrap().status(), 200);

    // At the cap with both sessions busy, a new one is refused and told what to do.
    let slow =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","arguments":{"ms":1500}}}"#;
    let busy: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|session| {
            let (url, key) = (app.url(path), alice.clone());
            tokio::spawn(async move {
                request(&url, &key, Some(&session), slow).send().await.unwrap().text().await.unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, code, message) = error_of(initialize(&alice).await.unwrap()).await;
    assert_eq!((status, code), (429, -32011), "{message}");
    assert!(message.contains("2 stdio sessions open") && message.contains("DELETE"), "{message}");
    assert_eq!(processes_with(&alice_token).len(), 2, "no third child for alice");
    for call in busy {
        assert!(call.await.unwrap().contains("slept 1500 ms"));
    }
    // Idle sessions of a client that never says goodbye make room: the least recently used
    // one ends, the other goes on.
    assert_eq!(post_in(&app, path, &alice, &second, TOOLS_LIST).await.status(), 200);
    let opened = initialize(&alice).await.unwrap();
    assert_eq!(opened.status(), 200);
    let third = opened.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert_eq!(processes_with(&alice_token).len(), 2, "one ended, one started");
    assert_eq!(
        post_in(&app, path, &alice, &first, TOOLS_LIST).await.status(),
        404,
        "the oldest idle one ended"
    );
    assert_eq!(post_in(&app, path, &alice, &second, TOOLS_LIST).await.status(), 200);

    open_tracked(&app, path, &bob, &bob_token).await;
    let (status, code, message) = error_of(initialize(&bob).await.unwrap()).await;
    assert_eq!((status, code), (503, -32011), "{message}");
    assert!(message.contains("maximum of 3"), "{message}");

    // Ending a session makes room again.
    assert_eq!(delete_session(&app, path, &alice, &third).await, 204);
    let opened = initialize(&bob).await.unwrap();
    assert_eq!(opened.status(), 200);
    let body: Value = opened.json().await.unwrap();
    assert!(body["result"]["protocolVersion"].is_string(), "{body}");

    app.stop().await;
    assert!(processes_with(&alice_token).is_empty() && processes_with(&bob_token).is_empty());
    let rows = settled_rows(&app, 1).await;
    assert_eq!(rows.iter().filter(|r| r.error_code == Some(-32011)).count(), 2, "refusals are recorded");
    assert_eq!(usage_total(&app).await, rows.len() as i64);
}
