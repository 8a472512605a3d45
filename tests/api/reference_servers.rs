//! Reference MCP servers from npm behind the gateway (run when CI=true; `.ci/run` installs them
//! into tests/npm): `@modelcontextprotocol/server-everything` over Streamable HTTP and stdio, and
//! the GitHub project manager this product is built around, which prints its arguments, token
//! included, when it starts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mcp_platform::config::Settings;
use mcp_platform::db::request_logs::Outcome;
use rmcp::ServiceExt;
use rmcp::model::ClientConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::gateway::{api_key, open_session, post_in, settled_rows, usage_total};
use crate::helpers::upstream::call;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    server_everything_works_behind_the_gateway_over_http_and_stdio,
    the_github_project_manager_lists_its_tools_and_its_token_stays_secret,
    the_official_python_sdk_speaks_2026_07_28_through_the_gateway_to_legacy_upstreams,
    a_server_of_2026_07_28_only_serves_clients_of_both_eras_through_the_gateway,
    the_configuration_a_new_key_shows_works_in_the_sdks_and_curl,
);

const NPM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/npm");
const EVERYTHING: &str = "node_modules/@modelcontextprotocol/server-everything/dist/index.js";
const PROJECT_MANAGER: &str = "node_modules/@monsoft/mcp-github-project-manager/dist/src/index.js";
/// A server of 2026-07-28 only, made with the TypeScript SDK v2 (`legacy: 'reject'`).
const MODERN_ONLY: &str = "modern-only.mjs";

/// The installed packages, or `None` (test skipped) outside CI.
fn npm_packages() -> Option<PathBuf> {
    let root = PathBuf::from(NPM);
    let installed = root.join(EVERYTHING).exists() && root.join(PROJECT_MANAGER).exists();
    match std::env::var("CI").as_deref() {
        Ok("true") if installed => Some(root),
        Ok("true") => panic!("CI=true but the npm reference servers are missing: npm ci --prefix tests/npm"),
        _ => {
            crate::helpers::skipped("the npm reference servers run with CI=true");
            None
        }
    }
}

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");

/// The official Python SDK's interpreter, or `None` (test skipped) outside CI.
fn python_sdk() -> Option<PathBuf> {
    let python = PathBuf::from(PYTHON).join(".venv/bin/python");
    match std::env::var("CI").as_deref() {
        Ok("true") if python.exists() => Some(python),
        Ok("true") => panic!("CI=true but the Python SDK is missing: see .ci/run (tests/python/.venv)"),
        _ => {
            crate::helpers::skipped("the Python SDK client runs with CI=true");
            None
        }
    }
}

/// What the Python SDK's client saw: it probed with `server/discover`, listed the tools and
/// called `tool`.
async fn python_client_through(
    python: &Path,
    app: &TestApp,
    service: &str,
    key: &str,
    tool: &str,
    arguments: Value,
) -> Value {
    let output = tokio::process::Command::new(python)
        .arg(Path::new(PYTHON).join("modern_client.py"))
        .args([app.url(&format!("/mcp/{service}")), key.to_owned(), tool.to_owned(), arguments.to_string()])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{service}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{service}: {stdout}"))
}

/// The TypeScript SDK v2's server of 2026-07-28 only, on a free loopback port; stopped on drop.
struct ModernOnly {
    child: Child,
    url: String,
}

impl ModernOnly {
    fn start(root: &Path) -> ModernOnly {
        let mut child = Command::new("node")
            .arg(root.join(MODERN_ONLY))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening on ").expect("the server says its port").to_owned();
        ModernOnly { child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

impl Drop for ModernOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// server-everything over Streamable HTTP on a free loopback port; stopped on drop.
struct EverythingOverHttp {
    child: Child,
    url: String,
}

impl EverythingOverHttp {
    fn start(root: &Path) -> EverythingOverHttp {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("node")
            .arg("--import")
            .arg(root.join("loopback.mjs"))
            .arg(root.join(EVERYTHING))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            if line.unwrap().contains("listening on port") {
                break;
            }
        }
        EverythingOverHttp { child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

impl Drop for EverythingOverHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tool names a stdio server lists when asked directly, line by line as the transport says
/// (lines that are not JSON are skipped, as the gateway does).
fn tools_listed_directly(command: &Path, args: &[&str]) -> Vec<String> {
    let mut child = Command::new(command)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let mut stdin = child.stdin.take().unwrap();
    for message in [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let mut names = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(message) = serde_json::from_str::<Value>(&line.unwrap()) else { continue };
        if message["id"] == 2 {
            let tools = message["result"]["tools"].as_array().expect("a tools/list result").clone();
            names = tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
            break;
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    names.sort();
    names
}

/// server-everything as two system services: over HTTP (`everything-http`) and over stdio
/// (`everything-stdio`).
fn everything_services(root: &Path, http: &EverythingOverHttp) -> String {
    format!(
        r#"
[[service]]
name = "everything-http"
kind = "http"
url = "{url}"

[[service]]
name = "everything-stdio"
kind = "stdio"
command = "node"
args = [{script:?}, "stdio"]
"#,
        url = http.url,
        script = root.join(EVERYTHING),
    )
}

async fn app_with_services(backend: Backend, services: &str) -> TestApp {
    let path = std::env::temp_dir().join(format!("services-{}.toml", Uuid::now_v7().simple()));
    std::fs::write(&path, services).unwrap();
    let settings = Settings { services_file: Some(path), ..Settings::default() };
    spawn_app_with(backend, settings).await
}

async fn tool_names_through(app: &TestApp, service: &str, key: &str) -> (Vec<String>, String) {
    let config =
        StreamableHttpClientTransportConfig::with_uri(app.url(&format!("/mcp/{service}"))).auth_header(key);
    let client =
        ClientConfig::default().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let mut names: Vec<String> =
        client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    names.sort();
    let echoed = if names.iter().any(|n| n == "echo") {
        call(&client, "echo", json!({ "message": format!("hello {service}") })).await
    } else {
        String::new()
    };
    client.cancel().await.unwrap();
    (names, echoed)
}

async fn server_everything_works_behind_the_gateway_over_http_and_stdio(backend: Backend) {
    let Some(root) = npm_packages() else { return };
    let http = EverythingOverHttp::start(&root);
    let services = everything_services(&root, &http);
    let app = app_with_services(backend, &services).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;

    let direct =
        tools_listed_directly(Path::new("node"), &[root.join(EVERYTHING).to_str().unwrap(), "stdio"]);
    assert!(direct.len() >= 10 && direct.contains(&"echo".to_owned()), "{direct:?}");
    for service in ["everything-http", "everything-stdio"] {
        let (names, echoed) = tool_names_through(&app, service, &key).await;
        assert_eq!(names, direct, "{service} lists every tool");
        assert!(echoed.contains(&format!("hello {service}")), "{service}: {echoed}");
    }
    let rows = settled_rows(&app, 8).await;
    assert!(
        rows.iter().filter(|r| r.tool == "echo").all(|r| r.outcome == Outcome::Success),
        "the echo calls are recorded"
    );
    assert_eq!(usage_total(&app).await, rows.len() as i64);
}

async fn the_github_project_manager_lists_its_tools_and_its_token_stays_secret(backend: Backend) {
    let Some(root) = npm_packages() else { return };
    let script = root.join(PROJECT_MANAGER);
    let services = format!(
        r#"
[[service]]
name = "github-projects"
description = "GitHub project manager"
kind = "stdio"
command = "node"
args = [{script:?}, "--GITHUB_PERSONAL_TOKEN={{token}}"]
token = "github"
"#
    );
    let app = app_with_services(backend, &services).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let token = format!("ghp_{}", Uuid::now_v7().simple());
    app.set_token(&developer, "github", &token).await;
    let key = api_key(&app, org, &developer, "mcp:read").await;

    let direct = tools_listed_directly(
        Path::new("node"),
        &[script.to_str().unwrap(), "--GITHUB_PERSONAL_TOKEN=ghp_direct000000000000000000000000000000"],
    );
    assert!(direct.len() >= 10, "{direct:?}");
    let (names, _) = tool_names_through(&app, "github-projects", &key).await;
    assert_eq!(names, direct, "tools/list through the gateway returns all its tools");

    let rows = settled_rows(&app, 3).await;
    for row in &rows {
        assert!(!row.request.contains(&token) && !row.response.contains(&token), "the token was stored");
    }
    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains(&token), "the token reached a log line");
    assert!(
        logs.contains("GITHUB_PERSONAL_TOKEN: '[REDACTED]'"),
        "the server's own printout is logged, redacted"
    );
}

async fn the_official_python_sdk_speaks_2026_07_28_through_the_gateway_to_legacy_upstreams(backend: Backend) {
    let Some(root) = npm_packages() else { return };
    let Some(python) = python_sdk() else { return };
    let everything = EverythingOverHttp::start(&root);
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    let services = format!(
        "{}\n[[service]]\nname = \"test-upstream\"\nkind = \"http\"\nurl = \"{}\"\n",
        everything_services(&root, &everything),
        upstream.url
    );
    let app = app_with_services(backend, &services).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let direct =
        tools_listed_directly(Path::new("node"), &[root.join(EVERYTHING).to_str().unwrap(), "stdio"]);

    // server-everything speaks 2025-11-25 only; the SDK's client stays on 2026-07-28 all along.
    for service in ["everything-http", "everything-stdio"] {
        let seen =
            python_client_through(&python, &app, service, &key, "echo", json!({ "message": service })).await;
        assert_eq!(seen["protocol"], "2026-07-28", "{service}: {seen}");
        assert!(seen["server"].as_str().is_some_and(|s| !s.is_empty()), "{service}: {seen}");
        let tools: Vec<String> =
            seen["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        // The client declares elicitation, so the server offers its elicitation tools too.
        let mut expected = direct.clone();
        expected.extend(["trigger-elicitation-request".to_owned(), "trigger-url-elicitation".to_owned()]);
        expected.sort();
        assert_eq!(tools, expected, "{service} lists every tool");
        assert!(seen["text"].as_str().unwrap().contains(service), "{service}: {seen}");
    }
    // server-everything asks the client for input in the middle of a call (elicitation): the
    // gateway hands the question to the stateless client, and its answer back.
    let seen = python_client_through(
        &python,
        &app,
        "everything-http",
        &key,
        "trigger-elicitation-request",
        json!({}),
    )
    .await;
    assert_eq!(seen["elicited"].as_array().map(Vec::len), Some(1), "{seen}");
    assert!(seen["text"].as_str().unwrap().contains("User provided the requested information"), "{seen}");
    let seen =
        python_client_through(&python, &app, "test-upstream", &key, "add", json!({ "a": 40, "b": 2 })).await;
    assert_eq!((seen["protocol"].clone(), seen["text"].clone()), (json!("2026-07-28"), json!("42")));

    // Each request is recorded once, as a stateless one; the asked call twice (it, and its retry).
    let rows = settled_rows(&app, 12).await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::Success), "every call succeeded");
    assert_eq!(rows.iter().filter(|r| r.method == "tools/call").count(), 5);
    assert_eq!(usage_total(&app).await, rows.len() as i64);

    // A subscription to one of its resources: subscribed to in the gateway's session, whose
    // GET stream brings the updates server-everything sends once its simulation is on.
    let url = app.url("/mcp/everything-http");
    let resource = "demo://resource/static/document/architecture.md";
    let listen = crate::helpers::gateway::modern(
        &url,
        &key,
        50,
        "subscriptions/listen",
        json!({ "notifications": { "resourceSubscriptions": [resource], "toolsListChanged": true } }),
    );
    let mut subscription = listen.send().await.unwrap();
    assert_eq!(subscription.status(), 200);
    let toggle = crate::helpers::gateway::modern(
        &url,
        &key,
        51,
        "tools/call",
        json!({ "name": "toggle-subscriber-updates", "arguments": {} }),
    );
    crate::helpers::gateway::result_of(toggle.send().await.unwrap()).await;
    let mut seen = String::new();
    while !seen.contains("notifications/resources/updated") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.chunk()).await;
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the update comes").unwrap().expect("more")));
    }
    assert!(seen.contains(&format!(r#""resourceSubscriptions":["{resource}"]"#)), "{seen}");
    assert!(seen.contains(resource) && !seen.contains("notifications/message"), "{seen}");

    // Two calls at once with the same progress token, in the member's one child: each gets its
    // own progress, under its own token (the gateway numbers them apart in the child).
    let url = app.url("/mcp/everything-stdio");
    let long_call = |id: u64| {
        let params =
            json!({ "name": "trigger-long-running-operation", "arguments": { "duration": 0.4, "steps": 2 } });
        let mut request = crate::helpers::gateway::modern(&url, &key, id, "tools/call", params);
        request = request.body(
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "trigger-long-running-operation", "arguments": { "duration": 0.4, "steps": 2 },
                "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "mine" } } })
            .to_string(),
        );
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let (first, second) = tokio::join!(long_call(60), long_call(61));
    for answer in [first, second] {
        let progress = mcp_platform::gateway::record::messages_in(&answer)
            .into_iter()
            .filter(|m| m["method"] == "notifications/progress")
            .map(|m| m["params"]["progressToken"].clone())
            .collect::<Vec<_>>();
        assert_eq!(progress, [json!("mine"), json!("mine")], "{answer}");
        assert!(answer.contains("Long running operation completed"), "{answer}");
    }
}

async fn a_server_of_2026_07_28_only_serves_clients_of_both_eras_through_the_gateway(backend: Backend) {
    let Some(root) = npm_packages() else { return };
    let Some(python) = python_sdk() else { return };
    let modern_only = ModernOnly::start(&root);
    let services = format!(
        r#"
[[service]]
name = "modern-only"
kind = "http"
url = "{url}"
token = "github"
credential_header = "Authorization: Bearer {{token}}"
"#,
        url = modern_only.url,
    );
    let app = app_with_services(backend, &services).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let token = format!("ghp_{}", Uuid::now_v7().simple());
    app.set_token(&developer, "github", &token).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;

    // A 2025-11-25 client (rmcp): the gateway answers its initialize from the server's
    // discovery, and sends each request as a stateless one with what the client declared.
    let config =
        StreamableHttpClientTransportConfig::with_uri(app.url("/mcp/modern-only")).auth_header(key.clone());
    let client =
        ClientConfig::default().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    assert_eq!(client.peer_info().unwrap().server_info.as_ref().unwrap().name, "modern-only");
    let mut names: Vec<String> =
        client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["echo", "greet", "located", "region", "whoami"]);
    assert_eq!(call(&client, "echo", json!({ "text": "from 2025-11-25" })).await, "from 2025-11-25");
    assert_eq!(call(&client, "whoami", json!({})).await, format!("Bearer {token}"));
    // A tool that marks a parameter for a header (`x-mcp-header`) gets it as Mcp-Param-Region,
    // which the server checks against the body.
    assert_eq!(call(&client, "located", json!({ "region": "eu-central" })).await, "eu-central");
    client.cancel().await.unwrap();

    // Its GET stream: the gateway listens upstream (subscriptions/listen) for list changes and
    // for the resources the client subscribes to, listening again when those change (the
    // subscription is answered once it does), and relays what comes as that revision has it.
    let path = "/mcp/modern-only";
    let session = open_session(&app, path, &key).await;
    let mut legacy_stream = reqwest::Client::new()
        .get(app.url(path))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(legacy_stream.status(), 200);
    let subscribe = r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"note://modern-only/greeting"}}"#;
    let subscribed = post_in(&app, path, &key, &session, subscribe).await.text().await.unwrap();
    assert!(subscribed.contains(r#""result":{}"#), "{subscribed}");
    let greet = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"greet","arguments":{"greeting":"hi"}}}"#;
    let greeted = post_in(&app, path, &key, &session, greet).await.text().await.unwrap();
    assert!(greeted.contains("greeted"), "{greeted}");
    let mut seen = String::new();
    while !(seen.contains("notifications/resources/updated")
        && seen.contains("notifications/tools/list_changed"))
    {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), legacy_stream.chunk()).await;
        seen.push_str(&String::from_utf8_lossy(
            &chunk.expect("the notifications come").unwrap().expect("more"),
        ));
    }
    assert!(seen.contains("note://modern-only/greeting"), "{seen}");
    assert!(!seen.contains("subscriptionId") && !seen.contains("acknowledged"), "{seen}");

    // A 2026-07-28 client (the Python SDK) is relayed as it is.
    let seen =
        python_client_through(&python, &app, "modern-only", &key, "echo", json!({ "text": "from 2026" }))
            .await;
    assert_eq!((seen["protocol"].clone(), seen["text"].clone()), (json!("2026-07-28"), json!("from 2026")));
    assert_eq!(seen["tools"], json!(["echo", "greet", "located", "region", "whoami"]));
    // Its Mcp-Param-* headers are passed on.
    let region = crate::helpers::gateway::modern(
        &app.url("/mcp/modern-only"),
        &key,
        40,
        "tools/call",
        json!({ "name": "region", "arguments": {} }),
    )
    .header("mcp-param-region", "eu-west");
    let region = crate::helpers::gateway::result_of(region.send().await.unwrap()).await;
    assert_eq!(region["content"][0]["text"], "eu-west");

    // A subscription is relayed as a stream that stays open, until the key is revoked.
    let listen = crate::helpers::gateway::modern(
        &app.url("/mcp/modern-only"),
        &key,
        41,
        "subscriptions/listen",
        json!({ "notifications": { "toolsListChanged": true } }),
    );
    let mut stream = listen.send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    let mut seen = String::new();
    while !seen.contains("notifications/subscriptions/acknowledged") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk()).await;
        seen.push_str(&String::from_utf8_lossy(
            &chunk.expect("the acknowledgment comes").unwrap().expect("more"),
        ));
    }
    assert!(seen.contains("\"io.modelcontextprotocol/subscriptionId\":41"), "{seen}");
    let key_id = crate::helpers::gateway::key_id(&app, &key).await;
    let browser = app.signed_in(&developer).await;
    let revoked = app.post_form(&browser, "/keys", &format!("/keys/{key_id}/revoke"), &[]).await;
    assert_eq!(revoked.status(), 303);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
        while let Ok(Some(_)) = legacy_stream.chunk().await {}
    });
    ended.await.expect("the streams end when their key is revoked");

    let rows = settled_rows(&app, 14).await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::Success), "every message succeeded");
    assert!(rows.iter().all(|r| !r.request.contains(&token) && !r.response.contains(&token)));
    assert_eq!(rows.iter().filter(|r| r.method == "tools/call").count(), 6);
    assert_eq!(rows.iter().filter(|r| r.method == "resources/subscribe").count(), 1);
    assert_eq!(rows.iter().filter(|r| r.method == "subscriptions/listen").count(), 1);
}

/// The text of the snippet box `id` on a page (the page escapes it as HTML).
fn snippet(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {id}"));
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</textarea>").unwrap();
    [("&#34;", "\""), ("&#39;", "'"), ("&#60;", "<"), ("&#62;", ">"), ("&#38;", "&")]
        .iter()
        .fold(html[start..end].to_owned(), |text, (entity, character)| text.replace(entity, character))
}

async fn the_configuration_a_new_key_shows_works_in_the_sdks_and_curl(backend: Backend) {
    let Some(root) = npm_packages() else { return };
    let Some(python) = python_sdk() else { return };
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    let services = format!("[[service]]\nname = \"tools\"\nkind = \"http\"\nurl = \"{}\"\n", upstream.url);
    let app = app_with_services(backend, &services).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let browser = app.signed_in(&developer).await;
    let fields = [("name", "laptop"), ("scope", "mcp:read"), ("scope", "mcp:write"), ("expiry", "90")];
    let created = app.post_form(&browser, "/keys", "/keys", &fields).await;
    assert_eq!(created.status(), 303);
    let html = app.get(&browser, "/keys/new").await.text().await.unwrap();
    let marker = "id=\"new-key\" class=\"secret\" value=\"";
    let start = html.find(marker).expect("the new key is shown") + marker.len();
    let key = &html[start..start + html[start..].find('"').unwrap()];
    let url = app.url("/mcp/tools");

    // Claude Code's command and the JSON of Cursor, VS Code and Claude Desktop, with the key.
    assert_eq!(
        snippet(&html, "connect-1-1"),
        format!("claude mcp add --transport http tools {url} --header \"Authorization: Bearer {key}\"")
    );
    for id in ["connect-1-2", "connect-1-3", "connect-1-4"] {
        let config: Value = serde_json::from_str(&snippet(&html, id)).unwrap();
        assert!(config.to_string().contains(&format!("Bearer {key}")), "{config}");
    }
    // The SDKs' examples and curl, run as they are, with the key from the environment.
    let dir = std::env::temp_dir().join(format!("connect-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let python_file = dir.join("list_tools.py");
    std::fs::write(&python_file, snippet(&html, "connect-1-5")).unwrap();
    // In the npm folder, where the SDK is installed.
    let node_file = root.join(format!("list-tools-{}.mjs", Uuid::now_v7().simple()));
    std::fs::write(&node_file, snippet(&html, "connect-1-6")).unwrap();
    let runs = [
        (python.to_str().unwrap().to_owned(), vec![python_file.to_str().unwrap().to_owned()]),
        ("node".to_owned(), vec![node_file.to_str().unwrap().to_owned()]),
        ("bash".to_owned(), vec!["-c".to_owned(), snippet(&html, "connect-1-7")]),
    ];
    let mut outputs = Vec::new();
    for (program, args) in runs {
        let mut run = tokio::process::Command::new(&program);
        run.args(&args).env("MCP_PLATFORM_KEY", key).current_dir(&root);
        outputs.push((program, run.output().await.unwrap()));
    }
    std::fs::remove_file(&node_file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for (program, output) in outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("echo") && stdout.contains("whoami"),
            "{program}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // A service's page shows the same with a placeholder: the key is on that one page only.
    let page = app.get(&browser, "/services/tools").await.text().await.unwrap();
    assert!(
        snippet(&page, "connect-1")
            .contains(&format!("{url} --header \"Authorization: Bearer <your API key>\""))
    );
    assert!(!page.contains(key), "the key is not on the service page");
}
