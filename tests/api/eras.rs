//! Both MCP eras through one URL: a 2026-07-28 (stateless) client reaches upstreams that speak
//! 2025-11-25 only, over HTTP and stdio, through sessions the gateway keeps of its own; the
//! 2026-07-28 transport rules are enforced and every message is recorded with its era.

use std::process::{Command, Stdio};

use mcp_platform::config::Settings;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::domain::Role;
use mcp_platform::ids::OrgId;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::gateway::*;
use crate::helpers::gateway::{MODERN, modern, modern_with, result_of};
use crate::helpers::upstream::{HttpUpstream, ROOT, UPSTREAM};
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    a_stateless_client_reaches_a_legacy_http_upstream_through_the_gateways_own_session,
    a_stateless_client_of_an_upstream_that_speaks_2026_07_28_is_relayed_as_it_is,
    a_stateless_client_reaches_a_legacy_stdio_upstream_through_one_child_per_member,
    stateless_requests_follow_the_2026_07_28_rules_or_get_its_errors,
    a_missing_token_is_asked_for_with_a_url_and_the_retry_succeeds_once_it_is_set,
    what_a_legacy_upstream_asks_mid_call_reaches_a_stateless_client_as_an_input_request,
);

/// A developer of a new organization whose HTTP service "tools" is in front of `upstream`,
/// with their `github` token set: the organization, their key and the service's gateway URL.
async fn developer_of_tools(app: &TestApp, upstream: &HttpUpstream) -> (OrgId, String, String) {
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    http_service(app, org, "tools", &upstream.url).await;
    app.set_token(&developer, "github", TOKEN).await;
    (org, api_key(app, org, &developer, "mcp:read mcp:write").await, app.url("/mcp/tools"))
}

/// The result of a stateless call of the tool `name`.
async fn call_tool(url: &str, key: &str, id: u64, name: &str, arguments: Value) -> Value {
    let call = modern(url, key, id, "tools/call", json!({ "name": name, "arguments": arguments }));
    result_of(call.send().await.unwrap()).await
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {result}"))
}

/// The request log's era column, oldest first.
async fn stateless_flags(app: &TestApp) -> Vec<bool> {
    let sql = "SELECT stateless FROM request_logs ORDER BY id";
    match &app.db {
        mcp_platform::db::Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        mcp_platform::db::Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn a_stateless_client_reaches_a_legacy_http_upstream_through_the_gateways_own_session(
    backend: Backend,
) {
    let app = spawn_app_with(backend, Settings::default()).await;
    let mut upstream = HttpUpstream::start_legacy();
    let (_, key, url) = developer_of_tools(&app, &upstream).await;

    // Discovery: the versions the gateway serves for this upstream, and the upstream's own
    // capabilities and identity, learned from its `initialize`.
    let discovered =
        result_of(modern(&url, &key, 1, "server/discover", json!({})).send().await.unwrap()).await;
    assert_eq!(discovered["resultType"], "complete");
    let versions: Vec<&str> =
        discovered["supportedVersions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(versions.contains(&MODERN) && versions.contains(&"2025-11-25"), "{versions:?}");
    assert!(discovered["capabilities"]["tools"].is_object(), "{discovered}");
    assert!(discovered["_meta"]["io.modelcontextprotocol/serverInfo"]["name"].is_string(), "{discovered}");
    assert_eq!((discovered["cacheScope"].clone(), discovered["ttlMs"].is_u64()), (json!("private"), true));

    let tools = result_of(modern(&url, &key, 2, "tools/list", json!({})).send().await.unwrap()).await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 8);
    assert_eq!(
        (tools["resultType"].clone(), tools["cacheScope"].clone()),
        (json!("complete"), json!("private"))
    );
    assert!(tools["ttlMs"].is_u64());
    let echoed = call_tool(&url, &key, 3, "echo", json!({ "text": "stateless" })).await;
    assert_eq!((text_of(&echoed), echoed["resultType"].clone()), ("stateless", json!("complete")));
    // The upstream got the caller's own token, as a session's calls do.
    let whoami = call_tool(&url, &key, 4, "whoami", json!({})).await;
    assert_eq!(text_of(&whoami), format!("Bearer {TOKEN}"));
    // A large answer, read upstream in many pieces, comes back whole.
    let big = call_tool(&url, &key, 6, "big", json!({})).await;
    assert_eq!((text_of(&big).len(), big["resultType"].clone()), (1024 * 1024, json!("complete")));
    // A tool's own failure and the upstream's error come back as they ended, and are recorded so.
    let failed = call_tool(&url, &key, 40, "fail", json!({})).await;
    assert_eq!((failed["isError"].clone(), failed["resultType"].clone()), (json!(true), json!("complete")));
    let unknown = modern(&url, &key, 41, "tools/call", json!({ "name": "nope", "arguments": {} }))
        .send()
        .await
        .unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["id"], 41, "{unknown}");
    let unknown_code = unknown["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error in {unknown}"));
    // One gateway session served all of them.
    assert_eq!(gauge(&app, r#"gateway_sessions{kind="bridged"}"#).await, 1);
    // A subscription: acknowledged with what the upstream offers of what it asked for, then
    // what the upstream sends on the GET stream of the gateway's session (here, after a call in
    // that session), with the subscription's id.
    let listen = modern(
        &url,
        &key,
        40,
        "subscriptions/listen",
        json!({ "notifications": { "toolsListChanged": true, "promptsListChanged": true } }),
    );
    let mut subscription = listen.send().await.unwrap();
    assert_eq!(subscription.status(), 200);
    let mut seen = String::new();
    let mut read_until = async |wanted: &str, seen: &mut String| {
        while !seen.contains(wanted) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.chunk()).await;
            let chunk = chunk.unwrap_or_else(|_| panic!("no {wanted} in {seen}")).unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap_or_else(|| panic!("ended: {seen}"))));
        }
    };
    read_until("notifications/subscriptions/acknowledged", &mut seen).await;
    assert!(seen.contains(r#""notifications":{"toolsListChanged":true}"#), "only what it offers: {seen}");
    let later =
        modern(&url, &key, 41, "tools/call", json!({ "name": "notify_later", "arguments": { "ms": 100 } }));
    assert_eq!(text_of(&result_of(later.send().await.unwrap()).await), "will notify in 100 ms");
    read_until("notifications/tools/list_changed", &mut seen).await;
    let changed = seen.lines().find(|l| l.contains("notifications/tools/list_changed")).unwrap();
    assert!(changed.contains(r#""io.modelcontextprotocol/subscriptionId":40"#), "{changed}");
    // Stateless clients that share it number their requests alike: each gets its own answer.
    let same_ids = (0..8).map(|n| {
        let request = modern(
            &url,
            &key,
            1,
            "tools/call",
            json!({ "name": "echo", "arguments": { "text": format!("n{n}") } }),
        );
        async move { text_of(&result_of(request.send().await.unwrap()).await).to_owned() }
    });
    let answers = futures_util::future::join_all(same_ids).await;
    assert_eq!(answers, (0..8).map(|n| format!("n{n}")).collect::<Vec<_>>());

    // The upstream restarts and forgets its sessions: the gateway opens another, unseen.
    let port = upstream.url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    drop(upstream);
    // The subscription ends with a result as the upstream's stream ends.
    read_until(r#""resultType":"complete""#, &mut seen).await;
    upstream = HttpUpstream::start_legacy_on(&format!("127.0.0.1:{port}"));
    let again = call_tool(&url, &key, 5, "add", json!({ "a": 2, "b": 3 })).await;
    assert_eq!(text_of(&again), "5");
    assert_eq!(gauge(&app, r#"gateway_sessions{kind="bridged"}"#).await, 1);

    // A legacy client on the same URL keeps its sessions as before.
    let session = open_session(&app, "/mcp/tools", &key).await;
    let listed =
        post_in(&app, "/mcp/tools", &key, &session, r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#)
            .await;
    let text = listed.text().await.unwrap();
    assert!(text.contains("\"echo\"") && !text.contains("resultType"), "{text}");

    // Every message is recorded with its era; the gateway's own handshakes are not calls.
    let rows = settled_rows(&app, 21).await;
    let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).filter(|m| *m != "tools/call").collect();
    assert_eq!(
        methods,
        [
            "server/discover",
            "tools/list",
            "subscriptions/listen",
            "initialize",
            "notifications/initialized",
            "tools/list"
        ]
    );
    assert_eq!(rows.iter().filter(|r| r.method == "tools/call").count(), 15);
    let ended = |tool: &str| rows.iter().find(|r| r.tool == tool).map(|r| (r.outcome, r.error_code)).unwrap();
    assert_eq!(ended("fail"), (Outcome::ToolError, None));
    assert_eq!(ended("nope"), (Outcome::Failure, Some(unknown_code as i32)));
    let mut others = rows.iter().filter(|r| r.tool != "fail" && r.tool != "nope");
    assert!(others.all(|r| r.outcome == Outcome::Success), "{methods:?}");
    let listened = rows.iter().find(|r| r.method == "subscriptions/listen").unwrap();
    assert!(listened.response.contains("notifications/tools/list_changed"), "{}", listened.response);
    let flags = stateless_flags(&app).await;
    assert_eq!(
        (flags.len(), flags.iter().filter(|s| **s).count()),
        (21, 18),
        "the session's 3 are not stateless"
    );
    let whoami_row = rows.iter().find(|r| r.tool == "whoami").unwrap();
    assert!(!whoami_row.response.contains(TOKEN), "the token was stored");
    // Its record keeps the answer's first 16 KiB, and says that it was cut.
    let big_row = rows.iter().find(|r| r.tool == "big").unwrap();
    assert!(big_row.response_truncated && big_row.response.len() <= 16 * 1024, "{}", big_row.response.len());
    assert!(big_row.response.starts_with(r#"{"jsonrpc":"2.0","id":6,"result":{"resultType":"complete""#));
    drop(upstream);
}

async fn a_stateless_client_of_an_upstream_that_speaks_2026_07_28_is_relayed_as_it_is(backend: Backend) {
    let app = spawn_app_with(backend, Settings::default()).await;
    // The test upstream serves both eras.
    let upstream = HttpUpstream::start();
    let (org, key, url) = developer_of_tools(&app, &upstream).await;

    let discovered =
        result_of(modern(&url, &key, 1, "server/discover", json!({})).send().await.unwrap()).await;
    let versions: Vec<&str> =
        discovered["supportedVersions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(versions.contains(&MODERN) && versions.contains(&"2025-11-25"), "{versions:?}");
    let tools = result_of(modern(&url, &key, 2, "tools/list", json!({})).send().await.unwrap()).await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 8);
    assert_eq!(tools["cacheScope"], "private", "what the gateway relays for a caller is theirs");
    let whoami = call_tool(&url, &key, 3, "whoami", json!({})).await;
    assert_eq!(text_of(&whoami), format!("Bearer {TOKEN}"));
    assert_eq!(whoami["resultType"], "complete");
    // No session anywhere: the upstream serves the requests as they come.
    assert_eq!(gauge(&app, r#"gateway_sessions{kind="bridged"}"#).await, 0);
    assert_eq!(gauge(&app, r#"gateway_sessions{kind="client"}"#).await, 0);
    // The service's page says what its upstream speaks.
    let admin = app.create_user(org, Role::Admin).await;
    let page = app.get(&app.signed_in(&admin).await, "/services/tools").await.text().await.unwrap();
    assert!(page.contains("2026-07-28 and 2025-11-25"), "{page}");
    let rows = settled_rows(&app, 3).await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::Success));
    assert_eq!(stateless_flags(&app).await, [true, true, true]);
}

async fn a_stateless_client_reaches_a_legacy_stdio_upstream_through_one_child_per_member(backend: Backend) {
    let marker = format!("stateless{}", Uuid::now_v7().simple());
    let services = std::env::temp_dir().join(format!("services-{marker}.toml"));
    std::fs::write(
        &services,
        format!(
            "[[service]]\nname = \"local-tools\"\nkind = \"stdio\"\ncommand = {UPSTREAM:?}\n\
             args = [\"--stdio\", \"--credential\", \"{{token}}\"]\ntoken = \"github\"\ntimeout_seconds = 10\n"
        ),
    )
    .unwrap();
    let app =
        spawn_app_with(backend, Settings { services_file: Some(services), ..Settings::default() }).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let token = format!("ghp_{marker}");
    app.set_token(&developer, "github", &token).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let url = app.url("/mcp/local-tools");

    // The member's second key (a CI job's, say) shares the child: children are kept per member.
    let second_key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    for (id, text, key) in [(1, "first", &key), (2, "second", &key), (3, "third", &second_key)] {
        let answer =
            modern(&url, key, id, "tools/call", json!({ "name": "echo", "arguments": { "text": text } }))
                .send()
                .await
                .unwrap();
        assert_eq!(text_of(&result_of(answer).await), text);
    }
    // One child, started with the caller's token, served the three requests.
    assert_eq!(gauge(&app, "stdio_processes").await, 1);
    let children = Command::new("pgrep").args(["-f", &marker]).stdout(Stdio::piped()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&children.stdout).lines().count(), 1);
    // Another member gets a child of their own, with their own token.
    let colleague = app.create_user(org, Role::Developer).await;
    app.set_token(&colleague, "github", &format!("ghp_{marker}colleague")).await;
    let colleague_key = api_key(&app, org, &colleague, "mcp:read mcp:write").await;
    let answer = modern(
        &url,
        &colleague_key,
        4,
        "tools/call",
        json!({ "name": "echo", "arguments": { "text": "fourth" } }),
    );
    assert_eq!(text_of(&result_of(answer.send().await.unwrap()).await), "fourth");
    assert_eq!(gauge(&app, "stdio_processes").await, 2);
    let rows = settled_rows(&app, 4).await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::Success && r.tool == "echo"));
    assert!(rows.iter().all(|r| !r.request.contains(&token) && !r.response.contains(&token)));
}

async fn stateless_requests_follow_the_2026_07_28_rules_or_get_its_errors(backend: Backend) {
    let app = spawn_app_with(backend, Settings::default()).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let key = api_key(&app, org, &developer, "mcp:read").await;
    let url = app.url("/mcp/tools");
    let call = json!({ "name": "echo", "arguments": { "text": "x" } });

    let refused =
        |request: reqwest::RequestBuilder| async move { error_of(request.send().await.unwrap()).await };
    // Headers that disagree with the body, or are missing.
    let (status, code, message) =
        refused(modern_with(&url, &key, 1, "tools/call", call.clone(), "tools/call", Some("add"))).await;
    assert_eq!((status, code), (400, -32020), "{message}");
    assert!(message.contains("'add'") && message.contains("'echo'"), "{message}");
    let (status, code, _) =
        refused(modern_with(&url, &key, 2, "tools/list", json!({}), "tools/call", None)).await;
    assert_eq!((status, code), (400, -32020));
    let (status, code, _) =
        refused(modern_with(&url, &key, 2, "tools/call", call.clone(), "tools/call", None)).await;
    assert_eq!((status, code), (400, -32020));
    let bare = request(
        &url,
        &key,
        None,
        &json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list",
        "params": { "_meta": { "io.modelcontextprotocol/protocolVersion": MODERN } } })
        .to_string(),
    );
    assert_eq!(refused(bare).await.1, -32020);
    // A version the gateway does not serve: the supported ones are listed.
    let old = request(
        &url,
        &key,
        None,
        &json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/list",
        "params": { "_meta": { "io.modelcontextprotocol/protocolVersion": "2099-01-01" } } })
        .to_string(),
    )
    .header("mcp-protocol-version", "2099-01-01")
    .header("mcp-method", "tools/list")
    .send()
    .await
    .unwrap();
    assert_eq!(old.status(), 400);
    let body: Value = old.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["supported"][0], MODERN);
    assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
    // A method 2026-07-28 does not have.
    let (status, code, _) = refused(modern(&url, &key, 5, "ping", json!({}))).await;
    assert_eq!((status, code), (404, -32601));
    // `_meta` of the wrong type.
    let odd = request(
        &url,
        &key,
        None,
        r#"{"jsonrpc":"2.0","id":6,"method":"server/discover","params":{"_meta":[1]}}"#,
    )
    .header("mcp-protocol-version", MODERN)
    .header("mcp-method", "server/discover");
    assert_eq!(refused(odd).await.1, -32602);
    // Scopes hold in this era too: a read-only key may list but not call.
    assert_eq!(
        result_of(modern(&url, &key, 7, "tools/list", json!({})).send().await.unwrap()).await["tools"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let (status, code, _) = refused(modern(&url, &key, 8, "tools/call", call.clone())).await;
    assert_eq!((status, code), (403, -32003));

    // Every refusal is recorded, with the era the request declared.
    let rows = settled_rows(&app, 9).await;
    assert_eq!(rows.iter().filter(|r| r.outcome == Outcome::Failure).count(), 8);
    assert_eq!(stateless_flags(&app).await, [true; 9]);
}

async fn a_missing_token_is_asked_for_with_a_url_and_the_retry_succeeds_once_it_is_set(backend: Backend) {
    let app = spawn_app_with(backend, Settings::default()).await;
    // The same question and retry whether the gateway relays the request as it is, or sends it
    // in its own session to an upstream of 2025-11-25 only.
    let (upstream, legacy) = (HttpUpstream::start(), HttpUpstream::start_legacy());
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    http_service(&app, org, "legacy-tools", &legacy.url).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let (url, legacy_url) = (app.url("/mcp/tools"), app.url("/mcp/legacy-tools"));
    let tokens_page = app.url("/tokens");
    // A 2026-07-28 client that can send its user to a URL.
    let call = |url: &str, params: Value| {
        let mut params = params;
        params["name"] = json!("whoami");
        params["arguments"] = json!({});
        params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": { "elicitation": { "url": {} } } });
        let body = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params });
        request(url, &key, None, &body.to_string())
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "whoami")
    };

    let mut states = Vec::new();
    for url in [&url, &legacy_url] {
        let asked = result_of(call(url, json!({})).send().await.unwrap()).await;
        assert_eq!(asked["resultType"], "input_required", "{url}: {asked}");
        let question = &asked["inputRequests"]["token"];
        assert_eq!(
            (question["method"].clone(), question["params"]["mode"].clone()),
            (json!("elicitation/create"), json!("url"))
        );
        assert_eq!(question["params"]["url"], tokens_page);
        assert!(question["params"]["message"].as_str().unwrap().contains("\"github\" token"));
        states.push(asked["requestState"].clone());
    }

    // Clients that cannot open a URL keep the error, which names the page.
    let plain = modern(&url, &key, 8, "tools/call", json!({ "name": "whoami", "arguments": {} }));
    let (status, code, message) = error_of(plain.send().await.unwrap()).await;
    assert_eq!((status, code), (403, -32005));
    assert!(message.contains(&tokens_page), "{message}");
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"url":{}}},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (status, code, message) = error_of(request(&url, &key, None, init).send().await.unwrap()).await;
    assert_eq!((status, code), (403, -32005));
    assert!(message.contains(&tokens_page), "{message}");

    // The user sets the token; the retry, with the answer and the state, goes through (the
    // answer was the gateway's: no upstream gets it).
    app.set_token(&developer, "github", TOKEN).await;
    for (url, state) in [&url, &legacy_url].into_iter().zip(states) {
        let retry = json!({ "inputResponses": { "token": { "action": "accept" } }, "requestState": state });
        let done = result_of(call(url, retry).send().await.unwrap()).await;
        assert_eq!(text_of(&done), format!("Bearer {TOKEN}"), "{url}");
        assert_eq!(done["resultType"], "complete");
    }
}

async fn what_a_legacy_upstream_asks_mid_call_reaches_a_stateless_client_as_an_input_request(
    backend: Backend,
) {
    let app = spawn_app_with(backend, Settings::default()).await;
    let upstream = HttpUpstream::start_legacy();
    let (_, key, url) = developer_of_tools(&app, &upstream).await;
    // A client that can list its roots; the upstream's `roots` tool asks for them mid-call.
    let call = |id: u64, extra: Value| {
        let mut params = json!({ "name": "roots", "arguments": {} });
        for (name, value) in extra.as_object().unwrap() {
            params[name] = value.clone();
        }
        params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": { "roots": {} } });
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
        request(&url, &key, None, &body.to_string())
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "roots")
    };
    let asked = result_of(call(1, json!({})).send().await.unwrap()).await;
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let (question, state) = asked["inputRequests"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(state["method"], "roots/list");
    let request_state = asked["requestState"].as_str().unwrap().to_owned();

    // A state the gateway did not give, or gave to another key, is refused.
    let (status, code, _) =
        error_of(call(2, json!({ "inputResponses": {}, "requestState": "forged" })).send().await.unwrap())
            .await;
    assert_eq!((status, code), (400, -32602));

    // The retry's answer goes to the upstream, whose tool then completes.
    let answers = json!({ question.as_str(): { "roots": [{ "uri": ROOT, "name": "test" }] } });
    let retry = json!({ "inputResponses": answers, "requestState": request_state });
    let done = result_of(call(3, retry.clone()).send().await.unwrap()).await;
    assert_eq!((text_of(&done), done["resultType"].clone()), (ROOT, json!("complete")));
    // A state is used once.
    let (status, code, _) = error_of(call(4, retry).send().await.unwrap()).await;
    assert_eq!((status, code), (400, -32602));
}
