//! The gateway over HTTP upstreams: a real MCP client (rmcp) with only the gateway URL and an
//! API key reaches the test upstream with the user's own token injected, and every bad request
//! gets its HTTP status and a JSON-RPC error.

use mcp_platform::crypto::api_key::ApiKey;
use mcp_platform::db;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::domain::Role;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

use crate::helpers::gateway::*;
use crate::helpers::upstream::{HttpUpstream, ROOT, RootsClient, call, notified_later};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_real_client_works_through_the_gateway_with_its_token_injected,
    bad_requests_are_refused_with_json_rpc_errors,
    a_slow_upstream_times_out_and_a_graceful_stop_keeps_every_row,
    changes_apply_at_once_here_and_within_the_cache_lifetime_elsewhere,
    secrets_in_paths_user_agents_and_arguments_are_stored_and_logged_redacted,
    an_open_stream_ends_when_its_key_is_revoked_its_owner_deactivated_or_given_another_role,
    streamable_http_rules_origins_challenges_and_resumption,
);

async fn a_real_client_works_through_the_gateway_with_its_token_injected(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    let browser = app.signed_in(&developer).await;
    let saved =
        app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    assert_eq!(saved.status(), 200);
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let key_text = key.clone();

    let config = StreamableHttpClientTransportConfig::with_uri(app.url("/mcp/tools")).auth_header(key);
    let handler = RootsClient::default();
    let tools_changed = handler.tools_changed.clone();
    let client = handler.serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    assert_eq!(client.list_all_tools().await.unwrap().len(), 8);
    assert_eq!(call(&client, "echo", json!({ "text": "through the gateway" })).await, "through the gateway");
    assert_eq!(call(&client, "add", json!({ "a": 20, "b": 22 })).await, "42");
    // The upstream received the user's own token, not the API key.
    assert_eq!(call(&client, "whoami", json!({})).await, format!("Bearer {TOKEN}"));
    assert_eq!(call(&client, "big", json!({})).await.len(), 1024 * 1024);
    // The upstream asks the client for its roots in the middle of a call, and gets the answer.
    assert_eq!(call(&client, "roots", json!({})).await, ROOT);
    // A notification outside any request comes over the session's GET stream.
    notified_later(&client, &tools_changed).await;
    client.cancel().await.unwrap();

    // Every message is in the request log, redacted, and the usage counters moved with it.
    let rows = settled_rows(&app, 10).await;
    let calls: Vec<&str> =
        rows.iter().filter(|r| r.method == "tools/call").map(|r| r.tool.as_str()).collect();
    assert_eq!(calls, ["echo", "add", "whoami", "big", "roots", "notify_later"]);
    let whoami = rows.iter().find(|r| r.tool == "whoami").unwrap();
    assert!(whoami.response.contains("[REDACTED]"), "{}", whoami.response);
    let big = rows.iter().find(|r| r.tool == "big").unwrap();
    assert!(big.response_truncated && big.response.len() <= 16 * 1024);
    for row in &rows {
        assert!(!row.request.contains(TOKEN) && !row.response.contains(TOKEN), "the token was stored");
        assert!(!row.request.contains(&key_text) && !row.response.contains(&key_text), "the key was stored");
        assert_eq!(row.outcome, Outcome::Success, "{} failed", row.method);
    }
    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains(TOKEN) && !logs.contains(&key_text), "a secret reached a log line");
    assert_eq!(usage_total(&app).await, rows.len() as i64, "counters equal log rows");
    // The instance's metrics count them too, and name no tenant.
    let metrics = app.get(&crate::helpers::client(), "/metrics").await;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    // By kind, method class and outcome: as many as the rows, each class as many as its rows.
    let counted = |labels: &str| -> usize {
        metrics
            .lines()
            .filter(|l| l.starts_with("mcp_platform_gateway_messages_total{") && l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<usize>().ok())
            .sum()
    };
    assert_eq!(counted(r#"kind="http""#), rows.len(), "{metrics}");
    let calls = rows.iter().filter(|r| r.method == "tools/call").count();
    assert_eq!(counted(r#"kind="http",method="tools/call",outcome="success",status="2xx""#), calls);
    assert!(metrics.contains(r#"mcp_platform_upstream_duration_seconds_count{kind="http"}"#), "{metrics}");
    assert!(metrics.contains("mcp_platform_request_log_batch_rows_count"), "{metrics}");
    assert!(metrics.contains(r#"mcp_platform_database_connections{state="idle"}"#), "{metrics}");
    let written = format!("mcp_platform_request_logs_written_total {}", rows.len());
    assert!(metrics.contains(&written), "{metrics}");
    assert!(metrics.contains("mcp_platform_gateway_message_duration_seconds_bucket"), "{metrics}");
    assert!(!metrics.contains("Acme") && !metrics.contains("/mcp/tools"), "{metrics}");
    // The token's last use is shown to its owner.
    let tokens = app.get(&browser, "/tokens").await.text().await.unwrap();
    assert!(tokens.contains("<code>github</code>") && !tokens.contains(">never<"), "{tokens}");
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;

async fn bad_requests_are_refused_with_json_rpc_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let tokenless = app.create_user(org, Role::Developer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    let browser = app.signed_in(&developer).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let read_only = api_key(&app, org, &developer, "mcp:read").await;
    let no_token_key = api_key(&app, org, &tokenless, "mcp:read mcp:write").await;

    // No key, a malformed key, an unknown key: 401 with a challenge and a JSON-RPC error.
    for candidate in [None, Some("mcp_sk_not-a-key"), Some(ApiKey::generate().expose())] {
        let response = post(&app, "/mcp/tools", candidate, LIST).await;
        assert!(response.headers().get("www-authenticate").is_some());
        assert!(response.headers().get("x-correlation-id").is_some());
        let (status, code, _) = error_of(response).await;
        assert_eq!((status, code), (401, -32001));
    }
    // Scopes: a read-only key may list but not call.
    let (status, code, message) = error_of(post(&app, "/mcp/tools", Some(&read_only), CALL).await).await;
    assert_eq!((status, code), (403, -32003));
    assert!(message.contains("mcp:write"), "{message}");
    // Scopes go by method, notifications included: a call sent without an id is still a call.
    let read_session = open_session(&app, "/mcp/tools", &read_only).await;
    let call_note =
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    let (status, code, _) =
        error_of(post_in(&app, "/mcp/tools", &read_only, &read_session, call_note).await).await;
    assert_eq!((status, code), (403, -32003), "a read-only key may not call a tool as a notification");
    let cancelled = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
    assert_eq!(post_in(&app, "/mcp/tools", &read_only, &read_session, cancelled).await.status(), 202);
    // Unknown service, and another organization's service, are 404.
    let other_org = app.create_organization("Globex").await;
    http_service(&app, other_org, "globex-only", &upstream.url).await;
    for path in ["/mcp/nothing-here", "/mcp/globex-only"] {
        let (status, code, _) = error_of(post(&app, path, Some(&key), LIST).await).await;
        assert_eq!((status, code), (404, -32004), "{path}");
    }
    // Malformed JSON and non-JSON-RPC messages.
    assert_eq!(error_of(post(&app, "/mcp/tools", Some(&key), "{oops").await).await.1, -32700);
    for body in ["[]", "42", r#"{"id":1,"method":"tools/list"}"#] {
        let (status, code, _) = error_of(post(&app, "/mcp/tools", Some(&key), body).await).await;
        assert_eq!((status, code), (400, -32600), "{body}");
    }
    // Too big, wrong media types.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"pad":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    assert_eq!(post(&app, "/mcp/tools", Some(&key), &big).await.status(), 413);
    let wrong_type = reqwest::Client::new()
        .post(app.url("/mcp/tools"))
        .header("content-type", "text/plain")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .body(LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let wrong_accept = reqwest::Client::new()
        .post(app.url("/mcp/tools"))
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .header("authorization", format!("Bearer {key}"))
        .body(LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_accept.status(), 406);
    // A user without the token the service needs is told which one and where to set it.
    let (status, code, message) = error_of(post(&app, "/mcp/tools", Some(&no_token_key), LIST).await).await;
    assert_eq!((status, code), (403, -32005));
    assert!(message.contains("\"github\"") && message.contains("/tokens"), "{message}");

    // Session hijack: a session opened by one key is not found for another.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let opened = post(&app, "/mcp/tools", Some(&key), init).await;
    assert_eq!(opened.status(), 200);
    let session = opened.headers().get("mcp-session-id").unwrap().to_str().unwrap().to_owned();
    let intruder = api_key(&app, org, &tokenless, "mcp:read mcp:write").await;
    let hijack = reqwest::Client::new()
        .post(app.url("/mcp/tools"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {intruder}"))
        .header("mcp-session-id", &session)
        .body(LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);
    // The unreachable upstream is a 502.
    http_service(&app, org, "down", "http://127.0.0.1:9/mcp").await;
    let (status, code, _) = error_of(post(&app, "/mcp/down", Some(&key), LIST).await).await;
    assert_eq!((status, code), (502, -32010));

    // Refusals after the key was checked are logged with their codes; those before are not
    // (they belong to no organization).
    let rows = settled_rows(&app, 10).await;
    for code in [-32700, -32600, -32003, -32004, -32005, -32010] {
        assert!(
            rows.iter().any(|r| r.error_code == Some(code) && r.outcome == Outcome::Failure),
            "no row for {code}"
        );
    }
    assert!(rows.iter().all(|r| r.error_code != Some(-32001)), "401s are not in an organization's log");
}

async fn a_slow_upstream_times_out_and_a_graceful_stop_keeps_every_row(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    let browser = app.signed_in(&developer).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;

    // A service whose timeout is shorter than the call: the client gets a JSON-RPC error (the
    // upstream answers with an event stream, so the error is its last event).
    add_service(&app, org, "impatient", &upstream.url, None, 300).await;
    let slow =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","arguments":{"ms":2000}}}"#;
    let impatient = open_session(&app, "/mcp/impatient", &key).await;
    let answer = post_in(&app, "/mcp/impatient", &key, &impatient, slow).await.text().await.unwrap();
    assert!(
        answer.contains(r#""id":9"#)
            && answer.contains("-32010")
            && answer.contains("did not answer in time"),
        "{answer}"
    );

    // An upstream that takes the connection but never answers: 504 with a JSON-RPC error.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    add_service(&app, org, "silent", &silent_url, None, 300).await;
    let (status, code, message) = error_of(post(&app, "/mcp/silent", Some(&key), LIST).await).await;
    assert_eq!((status, code), (504, -32010), "{message}");
    holding.abort();

    // Calls in flight when the server is told to stop still finish, and all are recorded.
    let session = open_session(&app, "/mcp/tools", &key).await;
    // (Each call holds room for its row from its start: the queue counts the calls in flight
    // once the rows before them are written.)
    let queued = async |wanted: fn(i64) -> bool| {
        for _ in 0..1000 {
            if wanted(gauge(&app, "request_log_queue").await) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the request-log queue never came to what was wanted");
    };
    queued(|rows| rows == 0).await;
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            let url = app.url("/mcp/tools");
            let (key, session) = (key.clone(), session.clone());
            tokio::spawn(async move {
                let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"slow","arguments":{{"ms":300}}}}}}"#);
                request(&url, &key, Some(&session), &body).send().await.unwrap().text().await.unwrap()
            })
        })
        .collect();
    queued(|rows| rows >= 8).await;
    app.stop().await;
    for call in in_flight {
        assert!(call.await.unwrap().contains("slept 300 ms"), "a call in flight was cut off");
    }
    let rows = app.count("request_logs").await;
    assert_eq!(
        rows, 14,
        "two sessions opened (initialize and initialized each), two timed-out calls, eight in flight"
    );
    assert_eq!(usage_total(&app).await, rows, "counters equal log rows after a graceful stop");
}

async fn changes_apply_at_once_here_and_within_the_cache_lifetime_elsewhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let colleague = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    http_service(&app, org, "tokened", &upstream.url).await;
    let (here, elsewhere) =
        (api_key(&app, org, &developer, "mcp:read").await, api_key(&app, org, &developer, "mcp:read").await);
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let status_at = |path: &'static str, key: String| {
        let url = app.url(path);
        async move { request(&url, &key, None, init).send().await.unwrap().status().as_u16() }
    };
    let status = |key: String| status_at("/mcp/tools", key);
    // Both keys are used, so the gateway keeps their records for a few seconds.
    assert_eq!(status(here.clone()).await, 200);
    assert_eq!(status(elsewhere.clone()).await, 200);

    // Revoked on this instance's dashboard: refused with the next call.
    let browser = app.signed_in(&developer).await;
    let id = key_id(&app, &here).await;
    assert_eq!(app.post_form(&browser, "/keys", &format!("/keys/{id}/revoke"), &[]).await.status(), 303);
    assert_eq!(status(here).await, 401);

    // A token set and then deleted here: the next call sees each change.
    let browser_token =
        app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]);
    assert_eq!(browser_token.await.status(), 200);
    assert_eq!(status_at("/mcp/tokened", elsewhere.clone()).await, 200);
    assert_eq!(app.post_form(&browser, "/tokens", "/tokens/github/delete", &[]).await.status(), 303);
    assert_eq!(status_at("/mcp/tokened", elsewhere.clone()).await, 403, "the token is gone at once");

    // A service deleted here: gone with the next call.
    let admin = app.signed_in(&admin_user).await;
    assert_eq!(
        app.post_form(&admin, "/services/tokened", "/services/tokened/delete", &[]).await.status(),
        303
    );
    assert_eq!(status_at("/mcp/tokened", elsewhere.clone()).await, 404);

    // A member deactivated here: their key stops with the next call.
    let colleague_key = api_key(&app, org, &colleague, "mcp:read").await;
    assert_eq!(status(colleague_key.clone()).await, 200);
    let deactivated =
        app.post_form(&admin, "/members", &format!("/members/{}/deactivate", colleague.id), &[]).await;
    assert_eq!(deactivated.status(), 303);
    assert_eq!(status(colleague_key).await, 401);

    // Revoked by another instance (straight in the database): still accepted from this
    // instance's copy, refused once the copy's lifetime has passed on the application's clock.
    assert_eq!(status(elsewhere.clone()).await, 200);
    let id = key_id(&app, &elsewhere).await;
    let mut conn = app.db.acquire().await.unwrap();
    assert!(db::api_keys::revoke(conn.conn(), org, id, app.clock_now()).await.unwrap());
    assert_eq!(status(elsewhere.clone()).await, 200, "this instance's copy is still fresh");
    app.clock.advance(chrono::Duration::from_std(mcp_platform::gateway::cache::LIFETIME).unwrap());
    assert_eq!(status(elsewhere).await, 401);
}

const OPENAI_KEY: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789T3BlbkFJ";
const NPM_TOKEN: &str = "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
const GOOGLE_KEY: &str = "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe";

/// A client that puts a credential in the path, its user agent or a tool's arguments (under an
/// ordinary key): none of them is stored or logged as sent.
async fn secrets_in_paths_user_agents_and_arguments_are_stored_and_logged_redacted(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let agent = format!("leaky-client/1.0 ({OPENAI_KEY})");
    let send = |path: String, session: Option<String>, body: String| {
        let request = request(&app.url(&path), &key, session.as_deref(), &body).header("user-agent", &agent);
        async move { request.send().await.unwrap() }
    };

    let wrong_path = format!("/mcp/{TOKEN}");
    assert_eq!(send(wrong_path, None, LIST.to_owned()).await.status(), 404);
    let session = open_session(&app, "/mcp/tools", &key).await;
    let call = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "name": "echo",
        "arguments": { "text": format!("deploy with {NPM_TOKEN} and {GOOGLE_KEY}") } } });
    let echoed = send("/mcp/tools".into(), Some(session), call.to_string()).await.text().await.unwrap();
    assert!(echoed.contains(NPM_TOKEN), "the client gets its answer as the upstream sent it");

    // Every stored text of every row (bodies as stored, then read back whole).
    let sql = "SELECT service_name || ' ' || COALESCE(user_agent, '') || ' ' || COALESCE(error_message, ''), \
               request_body, response_body FROM request_logs";
    settled_rows(&app, 4).await;
    type Stored = (String, Option<db::CompactBody<'static>>, Option<db::CompactBody<'static>>);
    let stored: Vec<Stored> = match &app.db {
        db::Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        db::Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    let stored: Vec<String> = stored
        .into_iter()
        .map(|(texts, request, response)| {
            format!("{texts} {} {}", request.unwrap_or_default().0, response.unwrap_or_default().0)
        })
        .collect();
    let stored = stored.join("\n");
    assert!(stored.contains("leaky-client/1.0 ([REDACTED])"), "{stored}");
    assert!(stored.contains("deploy with [REDACTED] and [REDACTED]"), "{stored}");
    // The browser's user agent is kept with sessions and audit rows, redacted too.
    let browser = reqwest::Client::builder().cookie_store(true).user_agent(agent.clone()).build().unwrap();
    app.login(&browser, &developer.email, &developer.password).await;
    let sql = "SELECT COALESCE(user_agent, '') FROM sessions UNION ALL SELECT COALESCE(user_agent, '') FROM audit_logs";
    let agents: Vec<String> = match &app.db {
        db::Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        db::Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    };
    assert!(agents.iter().filter(|a| a.contains("leaky-client")).count() >= 2, "{agents:?}");
    let everything = format!("{stored}\n{}\n{}", agents.join("\n"), crate::helpers::captured_logs());
    for secret in [TOKEN, OPENAI_KEY, NPM_TOKEN, GOOGLE_KEY] {
        assert!(!everything.contains(secret), "{secret} was stored or logged");
    }
}

/// Opens a session and its server-to-client stream (GET) for `key`; the stream's body.
async fn open_stream(
    app: &TestApp,
    key: &str,
) -> impl futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>> {
    let session = open_session(app, "/mcp/tools", key).await;
    let stream = reqwest::Client::new()
        .get(app.url("/mcp/tools"))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream.bytes_stream()
}

/// Whether the stream ends within `limit`.
async fn ends_within(
    stream: impl futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>>,
    limit: std::time::Duration,
) -> bool {
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(limit, async { while let Some(Ok(_)) = stream.next().await {} }).await.is_ok()
}

/// A key revoked, an owner deactivated, a role changed: the new POSTs are refused, and the
/// event streams already open end too, at once when the change is made on this instance and
/// within the cache lifetime when it is made through another.
async fn an_open_stream_ends_when_its_key_is_revoked_its_owner_deactivated_or_given_another_role(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let (ada, bob, cy) = (
        app.create_user(org, Role::Developer).await,
        app.create_user(org, Role::Developer).await,
        app.create_user(org, Role::Developer).await,
    );
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let admin = app.signed_in(&admin_user).await;
    let quick = std::time::Duration::from_secs(2);

    // Revoked in this instance's dashboard.
    let ada_key = api_key(&app, org, &ada, "mcp:read").await;
    let stream = open_stream(&app, &ada_key).await;
    let revoked_here = key_id(&app, &ada_key).await;
    let response = app
        .post_form(&admin, "/organization/keys", &format!("/organization/keys/{revoked_here}/revoke"), &[])
        .await;
    assert_eq!(response.status(), 303);
    assert!(ends_within(stream, quick).await, "the stream of a revoked key goes on");

    // Owner deactivated in this instance's dashboard.
    let bob_key = api_key(&app, org, &bob, "mcp:read").await;
    let stream = open_stream(&app, &bob_key).await;
    let response = app.post_form(&admin, "/members", &format!("/members/{}/deactivate", bob.id), &[]).await;
    assert_eq!(response.status(), 303);
    assert!(ends_within(stream, quick).await, "the stream of a deactivated owner goes on");

    // Role changed through another instance (straight in the database): within the lifetime.
    let cy_key = api_key(&app, org, &cy, "mcp:read").await;
    let stream = open_stream(&app, &cy_key).await;
    let mut conn = app.db.acquire().await.unwrap();
    db::users::set_role(conn.conn(), org, cy.id, Role::Viewer, app.clock_now()).await.unwrap();
    drop(conn);
    let limit = mcp_platform::gateway::cache::LIFETIME + quick;
    assert!(ends_within(stream, limit).await, "the stream of a member made viewer goes on");
    let (status, _, _) = error_of(post(&app, "/mcp/tools", Some(&cy_key), LIST).await).await;
    assert_eq!(status, 403, "a viewer's key may not read");
}

/// The Streamable HTTP transport's rules as the gateway serves them: a foreign `Origin` is
/// refused (DNS rebinding), a 401 without credentials challenges with the scheme alone, and an
/// interrupted answer resumes where it broke off with `Last-Event-ID`.
async fn streamable_http_rules_origins_challenges_and_resumption(backend: Backend) {
    let settings = mcp_platform::config::Settings {
        allowed_origins: Some("http://localhost:6274".into()),
        ..Default::default()
    };
    let app = crate::helpers::spawn_app_with(backend, settings).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let session = open_session(&app, "/mcp/tools", &key).await;

    // Origins: none, the platform's own and the listed ones pass; any other is 403.
    let with_origin = |origin: &str| {
        request(&app.url("/mcp/tools"), &key, Some(&session), LIST).header("origin", origin.to_owned())
    };
    for origin in [app.address.as_str(), "http://localhost:6274"] {
        assert_eq!(with_origin(origin).send().await.unwrap().status(), 200, "{origin}");
    }
    for origin in ["http://evil.example", "http://localhost:6275", "null"] {
        let (status, code, _) = error_of(with_origin(origin).send().await.unwrap()).await;
        assert_eq!((status, code), (403, -32003), "{origin}");
    }
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let refused = reqwest::Client::new()
            .request(method.clone(), app.url("/mcp/tools"))
            .header("authorization", format!("Bearer {key}"))
            .header("mcp-session-id", &session)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{method}");
    }

    // Challenges (RFC 6750 3.1): no error code without credentials, invalid_token for a bad key.
    let missing = post(&app, "/mcp/tools", None, LIST).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer realm=\"mcp-platform\"");
    let bad = post(&app, "/mcp/tools", Some(ApiKey::generate().expose()), LIST).await;
    assert_eq!(bad.headers()["www-authenticate"], "Bearer realm=\"mcp-platform\", error=\"invalid_token\"");

    // Resumption: the client loses a long answer after its first event, and gets the rest by
    // naming that event on the session's stream.
    let slow =
        r#"{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":"slow","arguments":{"ms":1500}}}"#;
    let mut answer = post_in(&app, "/mcp/tools", &key, &session, slow).await;
    let first = String::from_utf8_lossy(&answer.chunk().await.unwrap().unwrap()).into_owned();
    let last_id = first
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .expect("the first event has an id")
        .trim()
        .to_owned();
    drop(answer);
    let resumed = reqwest::Client::new()
        .get(app.url("/mcp/tools"))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-session-id", &session)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut stream = resumed.bytes_stream();
    let mut rest = String::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = stream.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
            if rest.contains("slept 1500 ms") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the rest of the answer after event {last_id}: {rest}");
}
