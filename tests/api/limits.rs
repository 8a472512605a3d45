//! Plans at the gateway and in the dashboard: the daily quota, per-key rate limits, their
//! headers and 429 answers, the member and service limits, and `org set-plan`.

use chrono::Duration;
use mcp_platform::config::Settings;
use mcp_platform::domain::Role;

use crate::helpers::gateway::*;
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    the_daily_quota_counts_relayed_requests_and_refuses_the_rest_until_midnight,
    a_keys_rate_limit_refuses_with_retry_after_and_refills,
    the_plan_limits_services_and_the_operator_sets_the_plan,
);

const ECHO: &str =
    r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":12,"method":"ping"}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":13,"method":"tools/list"}"#;

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn limits_of(response: &reqwest::Response) -> (String, String, u64) {
    (
        header(response, "x-ratelimit-limit").unwrap(),
        header(response, "x-ratelimit-remaining").unwrap(),
        header(response, "x-ratelimit-reset").unwrap().parse().unwrap(),
    )
}

/// An app whose operator's file adds a plan of 3 requests a day.
async fn app_with_tiny_plan(backend: Backend) -> TestApp {
    let file = std::env::temp_dir().join(format!("plans-{}.toml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&file, "[[plan]]\nname = \"tiny\"\nmembers = 5\nservices = 2\nrequests_per_day = 3\nrequests_per_minute = 100\n").unwrap();
    let app =
        spawn_app_with(backend, Settings { services_file: Some(file.clone()), ..Settings::default() }).await;
    std::fs::remove_file(file).unwrap();
    app
}

async fn the_daily_quota_counts_relayed_requests_and_refuses_the_rest_until_midnight(backend: Backend) {
    let app = app_with_tiny_plan(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    mcp_platform::db::organizations::set_plan(
        app.db.acquire().await.unwrap().conn(),
        org,
        "tiny",
        app.clock_now(),
    )
    .await
    .unwrap();
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    http_service(&app, org, "tools", &upstream.url).await;
    let browser = app.signed_in(&developer).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;

    // initialize and the initialized notification do not count.
    let session = open_session(&app, "/mcp/tools", &key).await;
    let first = post_in(&app, "/mcp/tools", &key, &session, LIST).await;
    assert_eq!(first.status(), 200);
    // The quota (3 a day) is closer than the key's rate limit (100 a minute).
    let (limit, remaining, reset) = limits_of(&first);
    assert_eq!((limit.as_str(), remaining.as_str()), ("3", "2"));
    assert!(reset > 0 && reset <= 86_400, "seconds until midnight UTC: {reset}");
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, ECHO).await.status(), 200);
    let ping = post_in(&app, "/mcp/tools", &key, &session, PING).await;
    assert_eq!(ping.status(), 200, "ping does not count");
    assert_eq!(limits_of(&ping).1, "1");
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, ECHO).await.status(), 200);

    let refused = post_in(&app, "/mcp/tools", &key, &session, ECHO).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert_eq!(limits_of(&refused), ("3".into(), "0".into(), retry));
    assert!(header(&refused, "x-correlation-id").is_some());
    let (status, code, message) = error_of(refused).await;
    assert_eq!((status, code), (429, -32029));
    assert!(
        message.contains("Daily quota reached: the organization's plan allows 3 requests a day"),
        "{message}"
    );
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, PING).await.status(), 200, "ping still answers");

    // The refusal is recorded and counted as a failure; the day's count is stored.
    let rows = settled_rows(&app, 8).await;
    let refusals: Vec<_> = rows.iter().filter(|r| r.error_code == Some(-32029)).collect();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].outcome, mcp_platform::db::request_logs::Outcome::Failure);
    let usage = app.get(&app.signed_in(&admin).await, "/usage?range=24h").await.text().await.unwrap();
    assert!(usage.contains("1 failures"), "{usage}");
    let organization = app.get(&app.signed_in(&admin).await, "/organization").await.text().await.unwrap();
    let today = organization.split("<tr>").find(|r| r.contains("Requests today")).unwrap();
    assert!(today.contains("<td>3</td><td>3</td>"), "{today}");

    // The count survives a restart, and a new day starts again.
    let mut app = app;
    app.restart().await;
    let session = open_session(&app, "/mcp/tools", &key).await;
    assert_eq!(
        post_in(&app, "/mcp/tools", &key, &session, ECHO).await.status(),
        429,
        "counted before the restart"
    );
    app.clock.advance(Duration::seconds(retry as i64));
    let next_day = post_in(&app, "/mcp/tools", &key, &session, ECHO).await;
    assert_eq!(next_day.status(), 200);
    assert_eq!(limits_of(&next_day).1, "2");
}

async fn a_keys_rate_limit_refuses_with_retry_after_and_refills(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    let browser = app.signed_in(&developer).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;

    // A key of its own limit, made on the keys page; a bad limit is refused at the field.
    let form = |limit: &'static str| {
        [
            ("name", "ci"),
            ("scope", "mcp:read"),
            ("scope", "mcp:write"),
            ("expiry", "30"),
            ("rate_limit", limit),
        ]
    };
    let refused = app.post_form(&browser, "/keys", "/keys", &form("0")).await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("Enter requests per minute from 1 to") && page.contains("value=\"0\""), "{page}");
    let made = app.post_form(&browser, "/keys", "/keys", &form("3")).await;
    let key = app.shown_key(&browser, made).await;

    let session = open_session(&app, "/mcp/tools", &key).await; // initialize: 1 of 3
    let first = post_in(&app, "/mcp/tools", &key, &session, ECHO).await;
    // The key's 3 a minute is closer than the free plan's 10,000 a day.
    assert_eq!(limits_of(&first).0, "3");
    assert_eq!(limits_of(&first).1, "1");
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, ECHO).await.status(), 200);
    let refused = post_in(&app, "/mcp/tools", &key, &session, ECHO).await;
    assert_eq!(refused.status(), 429);
    let retry: i64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one request's worth comes back in 20 s: {retry}");
    assert_eq!(limits_of(&refused).1, "0");
    let (_, code, message) = error_of(refused).await;
    assert_eq!(code, -32029);
    assert!(message.contains("Rate limit reached: this API key may make 3 requests a minute"));

    // Another key of the same member has its own bucket (the plan's).
    let other = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let response = post(&app, "/mcp/tools", Some(&other), PING).await;
    assert_eq!(limits_of(&response).0, "600", "the free plan's rate limit, closer than its daily quota");
    app.clock.advance(Duration::seconds(retry));
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, ECHO).await.status(), 200, "refilled");
}

async fn the_plan_limits_services_and_the_operator_sets_the_plan(backend: Backend) {
    let app = app_with_tiny_plan(backend).await;
    let env = [("DATABASE_URL", app.database_url.as_str())];
    let made = crate::cli::binary(
        &env,
        &["admin", "create", "--org", "Globex", "--email", "hank@globex.example"],
        "a long enough password\n",
    );
    assert!(made.status.success());
    let admin = crate::helpers::client();
    assert_eq!(app.login(&admin, "hank@globex.example", "a long enough password").await.status(), 303);

    // The free plan allows 3 services of the organization's own.
    for name in ["one", "two", "three", "four"] {
        let response = app
            .post_form(
                &admin,
                "/services/new",
                "/services",
                &[("name", name), ("upstream_url", "https://tools.example/mcp"), ("timeout_seconds", "30")],
            )
            .await;
        if name == "four" {
            assert_eq!(response.status(), 422);
            let page = response.text().await.unwrap();
            assert!(page.contains("The free plan allows 3 services, and the organization has 3."), "{page}");
            assert!(page.contains("value=\"four\""), "the form keeps what was typed");
        } else {
            assert_eq!(response.status(), 303, "{name}");
        }
    }

    // The operator's plans: a name the file does not have is refused with the list.
    let settings_env = |file: &str| {
        [("DATABASE_URL", app.database_url.clone()), ("MCP_PLATFORM_SERVICES_FILE", file.to_owned())]
    };
    let unknown = crate::cli::run_binary(&env, &["org", "set-plan", "--org", "Globex", "--plan", "tiny"]);
    assert_eq!(unknown.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("--plan: there is no plan \"tiny\"; the plans are free, standard, team, enterprise"),
        "{said}"
    );
    let nobody = crate::cli::run_binary(&env, &["org", "set-plan", "--org", "Nobody", "--plan", "team"]);
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("--org: there is no organization named \"Nobody\"")
    );
    let file = std::env::temp_dir().join(format!("plans-{}.toml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&file, "[[plan]]\nname = \"tiny\"\nservices = 2\n").unwrap();
    let env = settings_env(file.to_str().unwrap());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let set = crate::cli::run_binary(&env, &["org", "set-plan", "--org", "Globex", "--plan", "standard"]);
    std::fs::remove_file(&file).unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("\"Globex\" is now on the standard plan (was free)")
    );
    let page = app.get(&admin, "/organization").await.text().await.unwrap();
    assert!(page.contains("Plan: standard"));
    let services = page.split("<tr>").find(|r| r.contains("Services <small>")).unwrap();
    assert!(services.contains("<td>3</td><td>10</td>"), "{services}");
    let audit = app.audit_rows().await;
    assert!(audit.iter().any(|(action, ok, _)| action == "organization.plan_changed" && *ok), "{audit:?}");
    let response = app
        .post_form(
            &admin,
            "/services/new",
            "/services",
            &[("name", "four"), ("upstream_url", "https://tools.example/mcp"), ("timeout_seconds", "30")],
        )
        .await;
    assert_eq!(response.status(), 303, "standard allows 10");
}
