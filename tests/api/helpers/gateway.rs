//! The gateway as a client reaches it: keys and services made for a test, requests to
//! `/mcp/{service}`, and the request-log rows they leave.

use mcp_platform::crypto::api_key::ApiKey;
use mcp_platform::db;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::ids::{KeyId, OrgId, ServiceId};
use serde_json::{Value, json};

use super::{TestApp, TestUser};

pub const TOKEN: &str = "ghp_gatewayInjectedTokenValue00000000001";

/// An API key made directly in the database for `user`, with `scopes`.
pub async fn api_key(app: &TestApp, org: OrgId, user: &TestUser, scopes: &str) -> String {
    let key = ApiKey::generate();
    let row = db::api_keys::NewKey {
        id: KeyId::new(),
        organization_id: org,
        user_id: user.id,
        name: "test",
        key_hash: &key.hash(),
        display_key: &key.display(),
        scopes,
        expires_at: Some(app.clock_now() + chrono::Duration::days(30)),
        rolled_from_id: None,
        rate_limit_per_minute: None,
        reach: None,
    };
    db::api_keys::insert(app.db.acquire().await.unwrap().conn(), row, app.clock_now()).await.unwrap();
    super::used_secret(key.expose());
    key.expose().to_owned()
}

/// An HTTP service of `org` in front of `url` that injects the caller's `github` token.
pub async fn http_service(app: &TestApp, org: OrgId, name: &str, url: &str) {
    add_service(app, org, name, url, Some("github"), 10_000).await;
}

pub async fn add_service(
    app: &TestApp,
    org: OrgId,
    name: &str,
    url: &str,
    token: Option<&str>,
    timeout_ms: i32,
) {
    let id = ServiceId::new();
    let headers = app.seal_headers(id, &[("X-Team", "platform")]).await;
    let fields = db::services::ServiceFields {
        name,
        description: "the test upstream",
        version: "1",
        is_public: true,
        upstream_url: url,
        headers: &headers,
        token_service_name: token,
        token_placement: token.map(|_| "Authorization: Bearer {token}"),
        timeout_ms,
    };
    let mut conn = app.db.acquire().await.unwrap();
    db::services::insert(conn.conn(), org, id, &fields, app.clock_now()).await.unwrap();
}

pub struct Row {
    pub id: mcp_platform::ids::LogId,
    pub method: String,
    pub tool: String,
    pub request: String,
    pub response: String,
    pub response_truncated: bool,
    pub outcome: Outcome,
    pub error_code: Option<i32>,
}

type RawRow = (
    mcp_platform::ids::LogId,
    Option<String>,
    Option<String>,
    Option<mcp_platform::db::CompactBody<'static>>,
    Option<mcp_platform::db::CompactBody<'static>>,
    bool,
    i16,
    Option<i32>,
);

/// The request-log rows once the batched writer has written them all (it waits up to 50 ms).
pub async fn settled_rows(app: &TestApp, at_least: usize) -> Vec<Row> {
    let sql = "SELECT id, method, tool_name, request_body, response_body, response_truncated, outcome, error_code \
               FROM request_logs ORDER BY id";
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let raw: Vec<RawRow> = match &app.db {
            mcp_platform::db::Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            mcp_platform::db::Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        };
        if raw.len() >= at_least && raw.len() == last {
            return raw
                .into_iter()
                .map(|(id, method, tool, request, response, response_truncated, outcome, error_code)| Row {
                    id,
                    method: method.unwrap_or_default(),
                    tool: tool.unwrap_or_default(),
                    request: request.unwrap_or_default().0.into_owned(),
                    response: response.unwrap_or_default().0.into_owned(),
                    response_truncated,
                    outcome: Outcome::from_code(outcome),
                    error_code,
                })
                .collect();
        }
        last = raw.len();
    }
    panic!("the request log did not settle at {at_least} rows or more (has {last})");
}

pub async fn usage_total(app: &TestApp) -> i64 {
    let sql = "SELECT CAST(COALESCE(SUM(request_count), 0) AS BIGINT) FROM service_usage WHERE day IS NULL";
    match &app.db {
        mcp_platform::db::Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        mcp_platform::db::Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

pub async fn post(app: &TestApp, path: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let request = match key {
        Some(key) => request(&app.url(path), key, None, body),
        None => reqwest::Client::new()
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_owned()),
    };
    request.send().await.unwrap()
}

pub async fn error_of(response: reqwest::Response) -> (u16, i64, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_i64().unwrap(), body["error"]["message"].as_str().unwrap().to_owned())
}

pub fn request(url: &str, key: &str, session: Option<&str>, body: &str) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .body(body.to_owned());
    match session {
        Some(session) => request.header("mcp-session-id", session),
        None => request,
    }
}

pub async fn post_in(app: &TestApp, path: &str, key: &str, session: &str, body: &str) -> reqwest::Response {
    request(&app.url(path), key, Some(session), body).send().await.unwrap()
}

/// Initializes an MCP session through the gateway, as a client would, and returns its id.
pub async fn open_session(app: &TestApp, path: &str, key: &str) -> String {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let opened = request(&app.url(path), key, None, init).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers().get("mcp-session-id").unwrap().to_str().unwrap().to_owned();
    opened.text().await.unwrap();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(post_in(app, path, key, &session, initialized).await.status(), 202);
    session
}

pub async fn key_id(app: &TestApp, raw: &str) -> KeyId {
    let hash = ApiKey::parse(raw).unwrap().hash();
    db::api_keys::by_hash(app.db.acquire().await.unwrap().conn(), &hash).await.unwrap().unwrap().id
}

/// What the gateway says of a key: `Ok(())` when it lets the key in (a call to a service that
/// does not exist then gets 404), else the reason of its refusal (401, or 503 when it cannot
/// check keys).
pub async fn key_verdict(app: &TestApp, key: &str) -> Result<(), String> {
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (status, _, message) = error_of(post(app, "/mcp/no-such-service", Some(key), list).await).await;
    match status {
        404 => Ok(()),
        _ => Err(message.strip_prefix("Unauthorized: ").unwrap_or(&message).to_owned()),
    }
}

/// Whether the key may call a tool (`mcp:write`) of the organization's service `name`, which
/// points nowhere: 403 when the scope is missing, 502 when the call was let through.
pub async fn may_call_tools(app: &TestApp, key: &str, service: &str) -> bool {
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}"#;
    let (status, _, message) = error_of(post(app, &format!("/mcp/{service}"), Some(key), call).await).await;
    match status {
        403 => false,
        502 => true,
        other => panic!("tools/call answered {other}: {message}"),
    }
}

/// The stateless revision of MCP.
pub const MODERN: &str = "2026-07-28";

/// A 2026-07-28 request: the version, capabilities and client in `_meta`, with the headers
/// that mirror the body.
pub fn modern(url: &str, key: &str, id: u64, method: &str, params: Value) -> reqwest::RequestBuilder {
    let name = params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str).map(str::to_owned);
    modern_with(url, key, id, method, params, method, name.as_deref())
}

/// The same, with the `Mcp-Method` and `Mcp-Name` headers given.
pub fn modern_with(
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    params: Value,
    method_header: &str,
    name_header: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "raw-modern-client", "version": "1" },
    });
    let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    let request = request(url, key, None, &body.to_string())
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method_header);
    match name_header {
        Some(name) => request.header("mcp-name", name),
        None => request,
    }
}

pub async fn result_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_none(), "a stateless answer names no session");
    let text = response.text().await.unwrap();
    let answer = mcp_platform::gateway::record::messages_in(&text)
        .into_iter()
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no answer in {text}"));
    answer.get("result").cloned().unwrap_or_else(|| panic!("not a result: {answer}"))
}

/// A gauge of the platform's `/metrics`, as it reads now.
pub async fn gauge(app: &TestApp, name: &str) -> i64 {
    let metrics = app.get(&crate::helpers::client(), "/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("mcp_platform_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}
