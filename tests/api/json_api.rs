//! The JSON API under `/api/v1`: API keys and their scopes, the envelope and its error codes,
//! pages by cursor, another organization's service answering 404, and the OpenAPI document.

use mcp_platform::domain::Role;
use serde_json::Value;

use crate::helpers::gateway::{TOKEN, add_service, api_key, http_service};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    the_api_answers_keys_in_its_envelope_and_pages_services,
    keys_and_tokens_made_through_the_api_hold_no_more_than_the_key_that_makes_them,
    tool_calls_logs_and_usage_through_the_api,
    admins_change_the_organization_and_its_members_through_the_api,
);

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> (u16, Value) {
    send(app, reqwest::Method::GET, path, key, None).await
}

/// One request of the API, its status and envelope (checked to be the envelope).
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let request = reqwest::Client::new().request(method, app.url(path));
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let correlation = response.headers().get("x-correlation-id").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    if status < 300 {
        assert_eq!(body["success"], true, "{body}");
        assert_eq!(body["meta"]["requestId"].as_str(), correlation.as_deref(), "{body}");
    } else {
        assert_eq!(body["success"], false, "{body}");
        assert!(body["error"]["message"].is_string() && body["error"]["details"].is_object(), "{body}");
    }
    (status, body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap()
}

async fn the_api_answers_keys_in_its_envelope_and_pages_services(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    for name in ["alpha", "beta"] {
        add_service(&app, org, name, "http://127.0.0.1:9/mcp", None, 1_000).await;
    }
    http_service(&app, org, "github-tools", "http://127.0.0.1:9/mcp").await;
    let other = app.create_organization("Globex").await;
    add_service(&app, other, "theirs", "http://127.0.0.1:9/mcp", None, 1_000).await;
    let key = api_key(&app, org, &developer, "mcp:read").await;

    // Who: the key's owner and the scopes it holds.
    let (status, body) = get(&app, "/api/v1/users/me", Some(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["email"], developer.email.as_str());
    assert_eq!(body["data"]["role"], "developer");
    assert_eq!(body["data"]["scopes"], serde_json::json!(["mcp:read"]));

    // No key, a malformed one, one of the wrong scope.
    let (status, body) = get(&app, "/api/v1/users/me", None).await;
    assert_eq!((status, code(&body)), (401, "AUTH_INVALID_CREDENTIALS"));
    let (status, body) = get(&app, "/api/v1/users/me", Some("mcp_sk_notakey")).await;
    assert_eq!((status, code(&body)), (401, "AUTH_INVALID_CREDENTIALS"));
    let logs_only = api_key(&app, org, &developer, "logs:read").await;
    let (status, body) = get(&app, "/api/v1/mcp/services", Some(&logs_only)).await;
    assert_eq!((status, code(&body)), (403, "AUTH_INSUFFICIENT_SCOPE"));
    assert_eq!(body["error"]["details"]["required"], "mcp:read");

    // The organization's services by pages of two; the caller's token is what `configured` says.
    let (status, first) = get(&app, "/api/v1/mcp/services?limit=2", Some(&key)).await;
    assert_eq!(status, 200);
    let names = |body: &Value| -> Vec<String> {
        body["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&first), ["alpha", "beta"]);
    let cursor = first["meta"]["nextCursor"].as_str().expect("a next page").to_owned();
    let (_, second) = get(&app, &format!("/api/v1/mcp/services?limit=2&cursor={cursor}"), Some(&key)).await;
    assert_eq!(names(&second), ["github-tools"]);
    assert!(second["meta"].get("nextCursor").is_none(), "{second}");
    let github = &second["data"][0];
    assert_eq!((github["tokenName"].as_str(), github["configured"].as_bool()), (Some("github"), Some(false)));
    assert!(github["path"].as_str().unwrap().ends_with("/mcp/github-tools"), "{github}");
    app.set_token(&developer, "github", TOKEN).await;
    let id = github["id"].as_str().unwrap().to_owned();
    let (status, one) = get(&app, &format!("/api/v1/mcp/services/{id}"), Some(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (one["data"]["name"].as_str(), one["data"]["configured"].as_bool()),
        (Some("github-tools"), Some(true))
    );

    // Bad pages and ids; another organization's service is not there.
    for bad in ["limit=0", "limit=101", "limit=ten", "cursor=nonsense"] {
        let (status, body) = get(&app, &format!("/api/v1/mcp/services?{bad}"), Some(&key)).await;
        assert_eq!((status, code(&body)), (400, "VALIDATION_ERROR"), "{bad}");
    }
    let (status, body) = get(&app, "/api/v1/mcp/services/not-an-id", Some(&key)).await;
    assert_eq!((status, code(&body)), (400, "VALIDATION_ERROR"));
    let theirs = {
        let conn = &mut app.db.acquire().await.unwrap();
        let catalog = mcp_platform::db::services::catalog(conn.conn(), other).await.unwrap();
        catalog.into_iter().find(|s| s.name == "theirs").unwrap().id
    };
    let (status, body) = get(&app, &format!("/api/v1/mcp/services/{theirs}"), Some(&key)).await;
    assert_eq!((status, code(&body)), (404, "RESOURCE_NOT_FOUND"));
    let (status, body) = get(&app, "/api/v1/no-such-thing", Some(&key)).await;
    assert_eq!((status, code(&body)), (404, "RESOURCE_NOT_FOUND"));

    // The organization and its members, for keys of an admin with the admin scopes; a
    // developer's key holds none of them, whatever it was made with.
    let admin = app.create_user(org, Role::Admin).await;
    let admin_key = api_key(&app, org, &admin, "admin:users admin:organization").await;
    let (status, body) = get(&app, "/api/v1/organizations/me", Some(&admin_key)).await;
    assert_eq!(status, 200);
    assert_eq!((body["data"]["name"].as_str(), body["data"]["plan"].as_str()), (Some("Acme"), Some("free")));
    assert_eq!(body["data"]["retention"]["requestLogs"], 90);
    let wishful = api_key(&app, org, &developer, "admin:users admin:organization").await;
    for path in ["/api/v1/organizations/me", "/api/v1/organizations/me/users"] {
        let (status, body) = get(&app, path, Some(&wishful)).await;
        assert_eq!((status, code(&body)), (403, "AUTH_INSUFFICIENT_SCOPE"), "{path}");
    }
    let (_, first) = get(&app, "/api/v1/organizations/me/users?limit=1", Some(&admin_key)).await;
    let cursor = first["meta"]["nextCursor"].as_str().unwrap().to_owned();
    let (_, rest) =
        get(&app, &format!("/api/v1/organizations/me/users?cursor={cursor}"), Some(&admin_key)).await;
    let mut emails: Vec<&str> = [&first, &rest]
        .iter()
        .flat_map(|page| page["data"].as_array().unwrap())
        .map(|member| member["email"].as_str().unwrap())
        .collect();
    emails.sort();
    let mut expected = vec![developer.email.as_str(), admin.email.as_str()];
    expected.sort();
    assert_eq!(emails, expected, "each member once, over two pages");
    assert!(rest["meta"].get("nextCursor").is_none());

    // An expired key says so.
    app.clock.advance(chrono::Duration::days(31));
    let (status, body) = get(&app, "/api/v1/users/me", Some(&key)).await;
    assert_eq!((status, code(&body)), (401, "AUTH_TOKEN_EXPIRED"));

    // The OpenAPI 3.1 document describes these operations and the bearer key.
    let document: Value = reqwest::get(app.url("/api/v1/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{document}");
    for path in [
        "/api/v1/users/me",
        "/api/v1/mcp/services",
        "/api/v1/mcp/services/{id}",
        "/api/v1/organizations/me",
        "/api/v1/organizations/me/users",
    ] {
        assert!(document["paths"][path]["get"].is_object(), "{path} in {document}");
    }
    assert_eq!(document["components"]["securitySchemes"]["apiKey"]["scheme"], "bearer");
}

/// schemathesis (PyPI, in `tests/python/.venv`) against the OpenAPI document, with a key of
/// every scope of an organization that has services: no server error, no answer the document
/// does not describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_api() {
    let st = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/.venv/bin/st");
    if !std::path::Path::new(st).exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but schemathesis is not installed");
        return crate::helpers::skipped("schemathesis is not installed in tests/python/.venv");
    }
    let app = spawn_app(Backend::Sqlite).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Admin).await;
    http_service(&app, org, "github-tools", "http://127.0.0.1:9/mcp").await;
    let scopes = "mcp:read mcp:write logs:read keys:write tokens:write admin:users admin:organization";
    let key = api_key(&app, org, &developer, scopes).await;
    let schema = app.url("/api/v1/openapi.json");
    let authorization = format!("Authorization: Bearer {key}");
    let output = tokio::process::Command::new(st)
        .args(["run", &schema, "--url", &app.address, "-H", &authorization, "--checks", "all"])
        // Rules beyond the document refuse data it allows (a service id must name a service, an
        // invitee must not be a member): 400 VALIDATION_ERROR, as documented.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "40", "--no-color"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = said.lines().filter(|l| l.contains("passed") || l.contains("failed")).collect();
    println!("schemathesis: {}", summary.join(" / "));
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A request with a body as written, for bodies that are not the JSON an operation takes.
async fn send_raw(app: &TestApp, path: &str, key: &str, content_type: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn keys_and_tokens_made_through_the_api_hold_no_more_than_the_key_that_makes_them(backend: Backend) {
    use reqwest::Method;
    use serde_json::json;
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let colleague = app.create_user(org, Role::Developer).await;
    for name in ["alpha", "beta"] {
        add_service(&app, org, name, "http://127.0.0.1:9/mcp", None, 1_000).await;
    }
    http_service(&app, org, "github-tools", "http://127.0.0.1:9/mcp").await;
    add_service(&app, org, "github-issues", "http://127.0.0.1:9/mcp", Some("github"), 1_000).await;
    let maker = api_key(&app, org, &developer, "mcp:read keys:write tokens:write").await;
    let keys_path = "/api/v1/users/me/api-keys";

    // A key narrowed to alpha, made with keys:write, for ten days.
    let asked = json!({ "name": "ci", "scopes": ["mcp:read", "keys:write"], "reach": ["alpha"], "expiresInDays": 10 });
    let (status, made) = send(&app, Method::POST, keys_path, Some(&maker), Some(&asked)).await;
    assert_eq!(status, 201, "{made}");
    let child = made["data"]["key"].as_str().unwrap().to_owned();
    crate::helpers::used_secret(&child);
    assert!(child.starts_with("mcp_sk_"), "{made}");
    let info = &made["data"]["apiKey"];
    assert_eq!(info["scopes"], json!(["mcp:read", "keys:write"]));
    assert_eq!((info["reach"].clone(), info["status"].as_str()), (json!(["alpha"]), Some("active")));
    let (status, me) = get(&app, "/api/v1/users/me", Some(&child)).await;
    assert_eq!((status, me["data"]["email"].as_str()), (200, Some(developer.email.as_str())));
    let (_, services) = get(&app, "/api/v1/mcp/services", Some(&child)).await;
    assert_eq!(services["data"].as_array().unwrap().len(), 1, "the child reaches alpha only: {services}");

    // The child can make nothing wider than itself: a scope, a service, a later expiry.
    let keys_before = app.count("api_keys").await;
    let wider = [
        (json!({ "name": "x", "scopes": ["tokens:write"] }), 403, "AUTH_INSUFFICIENT_SCOPE"),
        (json!({ "name": "x", "reach": ["beta"] }), 403, "AUTH_INSUFFICIENT_SCOPE"),
        (json!({ "name": "x", "reach": [] }), 403, "AUTH_INSUFFICIENT_SCOPE"),
        (json!({ "name": "x", "expiresInDays": 30 }), 400, "VALIDATION_ERROR"),
        (json!({ "name": "x", "scopes": ["root"] }), 400, "VALIDATION_ERROR"),
        (json!({ "name": "x", "reach": ["nowhere"] }), 400, "VALIDATION_ERROR"),
        (json!({ "name": "  " }), 400, "VALIDATION_ERROR"),
        (json!({ "name": 5 }), 400, "VALIDATION_ERROR"),
        (json!({ "name": "x", "admin": true }), 400, "VALIDATION_ERROR"),
        (json!({}), 400, "VALIDATION_ERROR"),
        (json!({ "name": "x", "expiresInDays": -1 }), 400, "VALIDATION_ERROR"),
    ];
    for (body, want_status, want_code) in wider {
        let (status, refused) = send(&app, Method::POST, keys_path, Some(&child), Some(&body)).await;
        assert_eq!((status, code(&refused)), (want_status, want_code), "{body} → {refused}");
    }
    for (content_type, body) in [("application/json", "{\"name\": "), ("text/plain", "{\"name\": \"x\"}")] {
        let (status, refused) = send_raw(&app, keys_path, &child, content_type, body).await;
        assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{body} → {refused}");
        assert_eq!(refused["error"]["details"]["field"], "body");
    }
    let oversized = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, refused) = send_raw(&app, keys_path, &child, "application/json", &oversized).await;
    assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{refused}");
    assert_eq!(app.count("api_keys").await, keys_before, "no refused call made a key");
    // What it leaves out it inherits: reach, and an expiry no later than its own.
    let (status, grandchild) =
        send(&app, Method::POST, keys_path, Some(&child), Some(&json!({ "name": "grandchild" }))).await;
    assert_eq!(status, 201, "{grandchild}");
    crate::helpers::used_secret(grandchild["data"]["key"].as_str().unwrap());
    let grandchild = &grandchild["data"]["apiKey"];
    assert_eq!(
        (grandchild["reach"].clone(), grandchild["scopes"].clone()),
        (json!(["alpha"]), json!(["mcp:read"]))
    );
    assert_eq!(grandchild["expiresAt"], info["expiresAt"]);

    // Without keys:write: no key; the list needs no scope.
    let reader = api_key(&app, org, &developer, "mcp:read").await;
    let (status, refused) =
        send(&app, Method::POST, keys_path, Some(&reader), Some(&json!({ "name": "x" }))).await;
    assert_eq!(
        (status, code(&refused), refused["error"]["details"]["required"].as_str()),
        (403, "AUTH_INSUFFICIENT_SCOPE", Some("keys:write"))
    );
    let (status, listed) = get(&app, &format!("{keys_path}?limit=100"), Some(&reader)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 4, "{listed}");
    assert!(
        listed["data"].as_array().unwrap().iter().all(|k| k.get("key").is_none()),
        "never the key itself"
    );

    // Revoking: the caller's own keys only.
    let id = grandchild["id"].as_str().unwrap();
    let (status, revoked) =
        send(&app, Method::DELETE, &format!("{keys_path}/{id}"), Some(&child), None).await;
    assert_eq!((status, revoked["data"]["status"].as_str()), (200, Some("revoked")));
    let theirs = api_key(&app, org, &colleague, "mcp:read").await;
    let their_id = crate::helpers::gateway::key_id(&app, &theirs).await;
    let (status, refused) =
        send(&app, Method::DELETE, &format!("{keys_path}/{their_id}"), Some(&child), None).await;
    assert_eq!((status, code(&refused)), (404, "RESOURCE_NOT_FOUND"));
    assert!(
        crate::helpers::gateway::key_verdict(&app, &theirs).await.is_ok(),
        "the colleague's key still works"
    );
    let (status, refused) =
        send(&app, Method::DELETE, &format!("{keys_path}/nonsense"), Some(&child), None).await;
    assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"));
    let (status, refused) = send(&app, Method::PUT, keys_path, Some(&child), None).await;
    assert_eq!(
        (status, code(&refused), refused["error"]["details"]["allowed"].clone()),
        (405, "METHOD_NOT_ALLOWED", json!(["GET", "POST"]))
    );
    let audit = app.audit_rows().await;
    let by_developer = |action: &str| {
        audit
            .iter()
            .filter(|(a, ok, row)| a == action && *ok && row.starts_with(developer.email.as_str()))
            .count()
    };
    assert_eq!((by_developer("api_key.created"), by_developer("api_key.revoked")), (2, 1), "{audit:?}");

    // Tokens: stored under the service's token name; the answer names the other users of it.
    let github = {
        let (_, listed) = get(&app, "/api/v1/mcp/services", Some(&maker)).await;
        listed["data"].as_array().unwrap().iter().find(|s| s["name"] == "github-tools").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let configure = format!("/api/v1/mcp/services/{github}/configure");
    let (status, refused) =
        send(&app, Method::POST, &configure, Some(&reader), Some(&json!({ "token": TOKEN }))).await;
    assert_eq!((status, code(&refused)), (403, "AUTH_INSUFFICIENT_SCOPE"));
    for bad in [
        json!({ "token": "" }),
        json!({ "token": 5 }),
        json!({ "token": TOKEN, "extra": 1 }),
        json!({ "token": "a\u{7}b" }),
    ] {
        let (status, refused) = send(&app, Method::POST, &configure, Some(&maker), Some(&bad)).await;
        assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{bad}");
    }
    assert_eq!(app.count("user_tokens").await, 0, "no refused call stored a token");
    crate::helpers::used_secret(TOKEN);
    let (status, configured) =
        send(&app, Method::POST, &configure, Some(&maker), Some(&json!({ "token": TOKEN }))).await;
    assert_eq!(status, 200, "{configured}");
    assert_eq!(configured["data"]["tokenName"], "github");
    assert_eq!(
        (configured["data"]["replaced"].as_bool(), configured["data"]["alsoUsedBy"].clone()),
        (Some(false), json!(["github-issues"]))
    );
    assert!(!configured.to_string().contains(TOKEN), "the token is never sent back");
    let (_, one) = get(&app, &format!("/api/v1/mcp/services/{github}"), Some(&maker)).await;
    assert_eq!(one["data"]["configured"], true);
    let alpha = {
        let (_, listed) = get(&app, "/api/v1/mcp/services", Some(&maker)).await;
        listed["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let (status, refused) = send(
        &app,
        Method::POST,
        &format!("/api/v1/mcp/services/{alpha}/configure"),
        Some(&maker),
        Some(&json!({ "token": TOKEN })),
    )
    .await;
    assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "alpha needs no token: {refused}");
    assert!(
        app.audit_rows()
            .await
            .iter()
            .any(|(a, _, row)| a == "service_token.created" && row.starts_with(developer.email.as_str()))
    );
}

async fn tool_calls_logs_and_usage_through_the_api(backend: Backend) {
    use reqwest::Method;
    use serde_json::json;
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    add_service(&app, org, "tools", &upstream.url, None, 1_000).await;
    http_service(&app, org, "github-tools", &upstream.url).await;
    add_service(&app, org, "down", "http://127.0.0.1:9/mcp", None, 1_000).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write logs:read").await;
    let ids = {
        let (_, listed) = get(&app, "/api/v1/mcp/services", Some(&key)).await;
        let ids: std::collections::HashMap<String, String> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s["id"].as_str().unwrap().to_owned()))
            .collect();
        ids
    };
    let execute = "/api/v1/mcp/execute/tool";
    let call = |service: &str, tool: &str, parameters: Value| json!({ "serviceId": ids[service], "toolName": tool, "parameters": parameters });

    // A call through the gateway: the result, its time, and its row in the log under the
    // request's id.
    let (status, called) = send(
        &app,
        Method::POST,
        execute,
        Some(&key),
        Some(&call("tools", "echo", json!({ "text": "hello" }))),
    )
    .await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["data"]["result"]["content"][0]["text"], "hello");
    assert!(called["data"]["executionTime"].is_u64(), "{called}");
    let request_id = called["meta"]["requestId"].as_str().unwrap().to_owned();
    let (status, failed) =
        send(&app, Method::POST, execute, Some(&key), Some(&call("tools", "fail", json!({})))).await;
    assert_eq!(
        (status, failed["data"]["result"]["isError"].as_bool()),
        (200, Some(true)),
        "a tool's own failure is its result"
    );

    // What the gateway refuses, in the API's words.
    let refusals = [
        (call("github-tools", "echo", json!({ "text": "x" })), 400, "MCP_SERVICE_UNCONFIGURED"),
        (call("down", "echo", json!({ "text": "x" })), 502, "MCP_SERVICE_ERROR"),
        (call("tools", "slow", json!({ "ms": 5_000 })), 504, "MCP_SERVICE_ERROR"),
        (call("tools", "no-such-tool", json!({})), 502, "MCP_SERVICE_ERROR"),
        (json!({ "serviceId": "nonsense", "toolName": "echo" }), 400, "VALIDATION_ERROR"),
        (
            json!({ "serviceId": ids["tools"], "toolName": "echo", "parameters": [1] }),
            400,
            "VALIDATION_ERROR",
        ),
        (json!({ "serviceId": ids["tools"] }), 400, "VALIDATION_ERROR"),
    ];
    for (body, want_status, want_code) in refusals {
        let (status, refused) = send(&app, Method::POST, execute, Some(&key), Some(&body)).await;
        assert_eq!((status, code(&refused)), (want_status, want_code), "{body} → {refused}");
    }
    let github_message = {
        let (_, refused) = send(
            &app,
            Method::POST,
            execute,
            Some(&key),
            Some(&call("github-tools", "echo", json!({ "text": "x" }))),
        )
        .await;
        refused["error"]["message"].as_str().unwrap().to_owned()
    };
    assert!(
        github_message.contains("/tokens"),
        "the message says where to store the token: {github_message}"
    );
    let reader = api_key(&app, org, &developer, "mcp:read").await;
    let (status, refused) = send(
        &app,
        Method::POST,
        execute,
        Some(&reader),
        Some(&call("tools", "echo", json!({ "text": "x" }))),
    )
    .await;
    assert_eq!((status, code(&refused)), (403, "AUTH_INSUFFICIENT_SCOPE"));

    // The log: the call by its id, with its bodies; a page of the developer's own calls, filtered.
    crate::helpers::gateway::settled_rows(&app, 7).await;
    let (status, row) = get(&app, &format!("/api/v1/logs/requests/{request_id}"), Some(&key)).await;
    assert_eq!(status, 200, "{row}");
    let row = &row["data"];
    assert_eq!(
        (row["method"].as_str(), row["tool"].as_str(), row["outcome"].as_str()),
        (Some("tools/call"), Some("echo"), Some("success"))
    );
    assert_eq!((row["era"].as_str(), row["service"].as_str()), (Some("2026-07-28"), Some("tools")));
    assert!(row["responseBody"].as_str().unwrap().contains("hello"), "{row}");
    let (status, page) = get(&app, "/api/v1/logs/requests?tool=echo&service=tools&limit=1", Some(&key)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["data"][0].get("requestBody").is_none(), "lists leave the bodies out");
    let (_, failures) = get(&app, "/api/v1/logs/requests?outcome=failure&limit=100", Some(&key)).await;
    assert!(failures["data"].as_array().unwrap().len() >= 4, "{failures}");
    for bad in ["outcome=maybe", "from=yesterday", "service=nowhere", "cursor=nonsense", "limit=1000"] {
        let (status, refused) = get(&app, &format!("/api/v1/logs/requests?{bad}"), Some(&key)).await;
        assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{bad}: {refused}");
    }
    let (_, refused) = get(&app, "/api/v1/logs/requests?outcome=maybe", Some(&key)).await;
    assert!(refused["error"]["details"]["fields"]["outcome"].is_string(), "{refused}");
    // Another member's calls are not the developer's to read; the admin reads them all.
    let admin_key = api_key(&app, org, &admin, "mcp:write logs:read").await;
    let (status, admin_call) = send(
        &app,
        Method::POST,
        execute,
        Some(&admin_key),
        Some(&call("tools", "add", json!({ "a": 2, "b": 3 }))),
    )
    .await;
    assert_eq!((status, admin_call["data"]["result"]["content"][0]["text"].as_str()), (200, Some("5")));
    let admin_call = admin_call["meta"]["requestId"].as_str().unwrap().to_owned();
    crate::helpers::gateway::settled_rows(&app, 8).await;
    let (status, _) = get(&app, &format!("/api/v1/logs/requests/{admin_call}"), Some(&key)).await;
    assert_eq!(status, 404);
    let (status, _) = get(&app, &format!("/api/v1/logs/requests/{request_id}"), Some(&admin_key)).await;
    assert_eq!(status, 200);

    // Usage, from the roll-ups.
    let (status, usage) = get(&app, "/api/v1/usage?range=24h", Some(&key)).await;
    assert_eq!(status, 200, "{usage}");
    let usage = &usage["data"];
    assert_eq!((usage["range"].as_str(), usage["grain"].as_str()), (Some("24h"), Some("hour")));
    let total = usage["totals"]["requests"].as_i64().unwrap();
    assert_eq!(total, crate::helpers::gateway::settled_rows(&app, 8).await.len() as i64, "{usage}");
    let tools_row = usage["services"].as_array().unwrap().iter().find(|s| s["name"] == "tools").unwrap();
    assert_eq!(tools_row["requests"], 5, "echo, fail, slow, no-such-tool and add: {usage}");
    assert!(
        usage["tools"].as_array().unwrap().iter().any(|t| t["name"] == "echo" && t["service"] == "tools"),
        "{usage}"
    );
    let (_, one_service) = get(&app, "/api/v1/usage?service=down", Some(&key)).await;
    assert_eq!(one_service["data"]["totals"]["requests"], 1);
    for bad in ["range=forever", "service=nowhere"] {
        let (status, refused) = get(&app, &format!("/api/v1/usage?{bad}"), Some(&key)).await;
        assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{bad}");
    }
    let (status, refused) = get(&app, "/api/v1/usage", Some(&reader)).await;
    assert_eq!((status, code(&refused)), (403, "AUTH_INSUFFICIENT_SCOPE"));

    // A key of two calls a minute (made through the API) gets the third refused, saying when to
    // try again.
    let maker = api_key(&app, org, &developer, "mcp:write keys:write").await;
    let limited = json!({ "name": "limited", "scopes": ["mcp:write"], "rateLimitPerMinute": 2 });
    let (status, made) =
        send(&app, Method::POST, "/api/v1/users/me/api-keys", Some(&maker), Some(&limited)).await;
    assert_eq!(status, 201, "{made}");
    let limited = made["data"]["key"].as_str().unwrap().to_owned();
    crate::helpers::used_secret(&limited);
    let echo = call("tools", "echo", json!({ "text": "again" }));
    for _ in 0..2 {
        let (status, _) = send(&app, Method::POST, execute, Some(&limited), Some(&echo)).await;
        assert_eq!(status, 200);
    }
    let response =
        reqwest::Client::new().post(app.url(execute)).bearer_auth(&limited).json(&echo).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some(), "{:?}", response.headers());
    let refused: Value = response.json().await.unwrap();
    assert_eq!(code(&refused), "RATE_LIMIT_EXCEEDED");
}

async fn admins_change_the_organization_and_its_members_through_the_api(backend: Backend) {
    use reqwest::Method;
    use serde_json::json;
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin_key = api_key(&app, org, &admin, "admin:users admin:organization").await;
    let developer_key = api_key(&app, org, &developer, "mcp:read admin:users admin:organization").await;

    // Settings: what is sent changes, the rest stays; bad values change nothing.
    let change =
        json!({ "name": "Acme Robotics", "retention": { "requestLogs": 30, "usage": 400, "audit": 500 } });
    let (status, changed) =
        send(&app, Method::PATCH, "/api/v1/organizations/me", Some(&admin_key), Some(&change)).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["data"]["name"], "Acme Robotics");
    assert_eq!(changed["data"]["retention"], json!({ "requestLogs": 30, "usage": 400, "audit": 500 }));
    assert_eq!(changed["data"]["defaultKeyExpiryDays"], 365);
    let bad = [
        (json!({ "defaultKeyExpiryDays": 12 }), "defaultKeyExpiryDays"),
        (json!({ "retention": { "requestLogs": 1, "usage": 400, "audit": 500 } }), "logRetentionDays"),
        (json!({ "name": "" }), "name"),
        (json!({ "contactEmail": "nobody" }), "contactEmail"),
        (json!({ "plan": "enterprise" }), "body"),
        (json!({ "defaultKeyExpiryDays": "thirty" }), "body"),
        (json!({ "retention": { "requestLogs": 30 } }), "body"),
    ];
    for (body, field) in bad {
        let (status, refused) =
            send(&app, Method::PATCH, "/api/v1/organizations/me", Some(&admin_key), Some(&body)).await;
        assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"), "{body} → {refused}");
        assert_eq!(refused["error"]["details"]["field"], field, "{body} → {refused}");
    }
    let (_, now) = get(&app, "/api/v1/organizations/me", Some(&admin_key)).await;
    assert_eq!(now["data"], changed["data"], "refused changes changed nothing");
    let (status, refused) =
        send(&app, Method::PATCH, "/api/v1/organizations/me", Some(&developer_key), Some(&change)).await;
    assert_eq!(
        (status, code(&refused)),
        (403, "AUTH_INSUFFICIENT_SCOPE"),
        "a developer's key holds no admin scope"
    );

    // Invitations.
    let invite = json!({ "email": "newcomer@example.com", "role": "developer" });
    let (status, invited) =
        send(&app, Method::POST, "/api/v1/organizations/me/invitations", Some(&admin_key), Some(&invite))
            .await;
    assert_eq!(status, 201, "{invited}");
    assert!(invited["data"]["url"].as_str().unwrap().contains("/invitations/"), "{invited}");
    crate::helpers::used_secret(invited["data"]["url"].as_str().unwrap().rsplit('/').next().unwrap());
    for (body, field) in [
        (invite.clone(), "email"),
        (json!({ "email": admin.email, "role": "viewer" }), "email"),
        (json!({ "email": "x@example.com", "role": "owner" }), "role"),
        (json!({ "email": "not an address", "role": "viewer" }), "email"),
    ] {
        let (status, refused) =
            send(&app, Method::POST, "/api/v1/organizations/me/invitations", Some(&admin_key), Some(&body))
                .await;
        assert_eq!(
            (status, refused["error"]["details"]["field"].as_str()),
            (400, Some(field)),
            "{body} → {refused}"
        );
    }
    assert_eq!(app.count("invitations").await, 1);

    // Roles: a viewer's keys go; the last admin stays an admin.
    let path = format!("/api/v1/organizations/me/users/{}", developer.id);
    let (status, refused) =
        send(&app, Method::PATCH, &path, Some(&admin_key), Some(&json!({ "role": "owner" }))).await;
    assert_eq!((status, code(&refused)), (400, "VALIDATION_ERROR"));
    let (status, member) =
        send(&app, Method::PATCH, &path, Some(&admin_key), Some(&json!({ "role": "viewer" }))).await;
    assert_eq!((status, member["data"]["role"].as_str()), (200, Some("viewer")), "{member}");
    let (status, _) = get(&app, "/api/v1/users/me", Some(&developer_key)).await;
    assert_eq!(status, 401, "a viewer holds no keys");
    let own = format!("/api/v1/organizations/me/users/{}", admin.id);
    let (status, refused) =
        send(&app, Method::PATCH, &own, Some(&admin_key), Some(&json!({ "role": "developer" }))).await;
    assert_eq!((status, code(&refused)), (409, "CONFLICT"), "{refused}");
    let other = app.create_organization("Globex").await;
    let stranger = app.create_user(other, Role::Developer).await;
    let (status, refused) = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/organizations/me/users/{}", stranger.id),
        Some(&admin_key),
        Some(&json!({ "role": "viewer" })),
    )
    .await;
    assert_eq!((status, code(&refused)), (404, "RESOURCE_NOT_FOUND"));

    // Each change is in the audit trail, as the admin's.
    let audit = app.audit_rows().await;
    for action in ["organization.updated", "invitation.created", "member.role_changed"] {
        let by_admin = audit
            .iter()
            .filter(|(a, ok, row)| a == action && *ok && row.starts_with(admin.email.as_str()))
            .count();
        assert_eq!(by_admin, 1, "{action}: {audit:?}");
    }
}
