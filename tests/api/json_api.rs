//! The JSON API under `/api/v1`: API keys and their scopes, the envelope and its error codes,
//! pages by cursor, another organization's service answering 404, and the OpenAPI document.

use mcp_platform::domain::Role;
use serde_json::Value;

use crate::helpers::gateway::{TOKEN, add_service, api_key, http_service};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(the_api_answers_keys_in_its_envelope_and_pages_services);

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> (u16, Value) {
    let request = reqwest::Client::new().get(app.url(path));
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let correlation = response.headers().get("x-correlation-id").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    if status == 200 {
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
    let key =
        api_key(&app, org, &developer, "mcp:read mcp:write logs:read admin:users admin:organization").await;
    let schema = app.url("/api/v1/openapi.json");
    let authorization = format!("Authorization: Bearer {key}");
    let output = tokio::process::Command::new(st)
        .args(["run", &schema, "--url", &app.address, "-H", &authorization, "--checks", "all"])
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
