use crate::helpers::gateway::{add_service, api_key, modern};
use crate::helpers::{Backend, TestApp, client, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    health_and_readiness,
    metrics_count_refusals_and_failures_and_want_the_token_when_one_is_set
);

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    let browser = client();
    let health = app.get(&browser, "/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let ready = app.get(&browser, "/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "ready");

    // A signed-in browser (it sends its session cookie with everything).
    let org = app.create_organization("Acme").await;
    let signed_in = app.signed_in(&app.create_user(org, mcp_platform::domain::Role::Viewer).await).await;

    // Take the database away from the server: not ready, but still alive.
    app.server_db.close().await;
    // Assets, health and metrics load no session, so they answer without a database.
    for path in ["/static/style.css", "/static/htmx.min.js", "/healthz", "/metrics"] {
        assert_eq!(app.get(&signed_in, path).await.status(), 200, "{path}");
    }
    let ready = app.get(&browser, "/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "unavailable");
    assert_eq!(app.get(&browser, "/healthz").await.status(), 200);
}

/// The value of one series on a metrics page (0 when it is not there yet).
fn series(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("mcp_platform_{name} ")))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn metrics_count_refusals_and_failures_and_want_the_token_when_one_is_set(backend: Backend) {
    let plans = std::env::temp_dir().join(format!("plans-{}.toml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&plans, "[[plan]]\nname = \"tiny\"\nrequests_per_minute = 2\n").unwrap();
    let token = "metrics-scrape-token-0001";
    crate::helpers::used_secret(token);
    let settings = mcp_platform::config::Settings {
        services_file: Some(plans.clone()),
        metrics_token: Some(token.to_owned().into()),
        ..Default::default()
    };
    let app = crate::helpers::spawn_app_with(backend, settings).await;
    std::fs::remove_file(plans).unwrap();
    let scrape = |bearer: Option<&str>| {
        let request = client().get(app.url("/metrics"));
        let request = match bearer {
            Some(bearer) => request.bearer_auth(bearer),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    assert_eq!(scrape(None).await.status(), 401);
    assert_eq!(scrape(Some("metrics-scrape-token-0002")).await.status(), 401);
    assert_eq!(scrape(Some(token)).await.status(), 200);

    let org = app.create_organization("Acme").await;
    let conn = &mut app.db.acquire().await.unwrap();
    mcp_platform::db::organizations::set_plan(conn.conn(), org, "tiny", app.clock_now()).await.unwrap();
    let developer = app.create_user(org, mcp_platform::domain::Role::Developer).await;
    let upstream = crate::helpers::upstream::HttpUpstream::start();
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    add_service(&app, org, "nowhere", "http://127.0.0.1:9/mcp", None, 1_000).await;

    // A sign-in that fails, a key past its rate limit (2 a minute), an upstream that is not there.
    let failed = app.login(&client(), &developer.email, "not the password").await;
    assert_eq!(failed.status(), 422, "the form again, with the error");
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let echo = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(modern_status(&app, "/mcp/tools", &key, echo).await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let other = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    assert_eq!(modern_status(&app, "/mcp/nowhere", &other, echo).await, 502);

    let page = scrape(Some(token)).await.text().await.unwrap();
    assert_eq!(series(&page, "sign_in_failures_total"), 1.0, "{page}");
    assert_eq!(series(&page, r#"gateway_limited_total{limit="rate_limit"}"#), 1.0, "{page}");
    assert_eq!(series(&page, r#"upstream_errors_total{kind="http",error="unreachable"}"#), 1.0, "{page}");
    let tool_calls =
        r#"gateway_messages_total{kind="http",method="tools/call",outcome="success",status="2xx"}"#;
    assert_eq!(series(&page, tool_calls), 2.0, "{page}");
    let refused = r#"gateway_messages_total{kind="http",method="tools/call",outcome="failure",status="4xx"}"#;
    assert_eq!(series(&page, refused), 1.0, "{page}");
    // The two calls, and the gateway's own `server/discover` that asked what the upstream speaks.
    assert_eq!(series(&page, r#"upstream_duration_seconds_count{kind="http"}"#), 3.0, "{page}");
    // Gauges read at the scrape: the pool has a connection open.
    let connections = series(&page, r#"database_connections{state="in_use"}"#)
        + series(&page, r#"database_connections{state="idle"}"#);
    assert!(connections >= 1.0, "{page}");
    assert!(page.contains(r#"mcp_platform_gateway_sessions{kind="bridged"} 0"#), "{page}");

    // The operators' Grafana dashboard charts only what the page serves.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");
    for expr in exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("mcp_platform_"))
        {
            let served = page.lines().any(|line| {
                line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            });
            assert!(served, "the dashboard's {name} is not on /metrics: {page}");
        }
    }
}

/// A 2026-07-28 request's HTTP status.
async fn modern_status(app: &TestApp, path: &str, key: &str, body: &str) -> u16 {
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    let response = modern(&app.url(path), key, 1, "tools/call", body["params"].clone()).send().await.unwrap();
    response.status().as_u16()
}
