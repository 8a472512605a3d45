//! Usage insight: the roll-ups the charts read, and the pages that show them.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use mcp_platform::db::{CompactTime, Db};
use mcp_platform::domain::Role;
use uuid::Uuid;

use crate::helpers::gateway::*;
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    rollups_equal_a_recount_of_the_rows_after_a_mixed_run,
    logs_written_before_the_upgrade_are_kept_with_their_correlation_ids_and_rolled_up,
    dev_seed_fills_an_organization_with_rows_and_their_rollups,
    the_usage_page_shows_each_role_its_figures_from_the_rollups,
);

const ECHO: &str =
    r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const FAIL: &str =
    r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"fail","arguments":{}}}"#;
const MISSING: &str =
    r#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":14,"method":"tools/list"}"#;

/// One request-log row, as the recount needs it.
type LogRow = (Uuid, Option<Uuid>, Option<Uuid>, Option<Uuid>, Option<String>, i16, i64, CompactTime);

/// One roll-up row: its key (level, grain, period, service, tool, key, member) and counts
/// (requests, tool errors, failures, total duration, buckets).
type Key = (i16, i16, DateTime<Utc>, Uuid, String, Uuid, Uuid);
type Counts = (i64, i64, i64, i64, Vec<i64>);

async fn log_rows(db: &Db) -> Vec<LogRow> {
    let sql = "SELECT organization_id, user_id, api_key_id, mcp_service_id, tool_name, outcome, duration_ms, \
               created_at FROM request_logs";
    match db {
        Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn rollup_rows(db: &Db) -> BTreeMap<Key, Counts> {
    let buckets: String = (0..18).map(|b| format!(" || ',' || CAST(b{b} AS TEXT)")).collect();
    let sql = format!(
        "SELECT level, grain, period_start, mcp_service_id, tool_name, api_key_id, user_id, requests, tool_errors, \
         failures, duration_ms, ''{buckets} FROM usage_rollups"
    );
    type Raw = (i16, i16, CompactTime, Uuid, String, Uuid, Uuid, i64, i64, i64, i64, String);
    let raw: Vec<Raw> = match db {
        Db::Sqlite(pool) => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap(),
    };
    raw.into_iter()
        .map(
            |(
                level,
                grain,
                start,
                service,
                tool,
                key,
                user,
                requests,
                tool_errors,
                failures,
                duration,
                buckets,
            )| {
                let buckets = buckets.split(',').skip(1).map(|b| b.parse().unwrap()).collect();
                (
                    (level, grain, start.0, service, tool, key, user),
                    (requests, tool_errors, failures, duration, buckets),
                )
            },
        )
        .collect()
}

/// The roll-ups recounted from the log rows, without the platform's own roll-up code.
fn recount(rows: &[LogRow]) -> BTreeMap<Key, Counts> {
    let mut counts: BTreeMap<Key, Counts> = BTreeMap::new();
    for (_, user, key, service, tool, outcome, duration, at) in rows {
        let at = at.0;
        let hour = Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), at.hour(), 0, 0).unwrap();
        let day = Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), 0, 0, 0).unwrap();
        let month = Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).unwrap();
        // Bucket 0 below 1 ms; bucket n from 2^(n-1) up to 2^n ms; the last from 65536 ms.
        let mut bucket = 0;
        while bucket < 17 && *duration >= 1 << bucket {
            bucket += 1;
        }
        let nil = Uuid::nil();
        let (service, tool) = (service.unwrap_or(nil), tool.clone().unwrap_or_default());
        let (key, user) = (key.unwrap_or(nil), user.unwrap_or(nil));
        // Per service; per service and tool; per service, key and member.
        let levels = [(0, String::new(), nil, nil), (1, tool, nil, nil), (2, String::new(), key, user)];
        for (level, tool, key, user) in levels {
            for (grain, start) in [(0, hour), (1, day), (2, month)] {
                let dims = (level, grain, start, service, tool.clone(), key, user);
                let entry = counts.entry(dims).or_insert_with(|| (0, 0, 0, 0, vec![0; 18]));
                entry.0 += 1;
                entry.1 += i64::from(*outcome == 1);
                entry.2 += i64::from(*outcome == 2);
                entry.3 += duration;
                entry.4[bucket] += 1;
            }
        }
    }
    counts
}

async fn settled(app: &TestApp, rows: i64) {
    for _ in 0..100 {
        if app.count("request_logs").await >= rows {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the request log did not reach {rows} rows");
}

async fn rollups_equal_a_recount_of_the_rows_after_a_mixed_run(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    http_service(&app, org, "tools", &upstream.url).await;
    for user in [&developer, &admin] {
        let browser = app.signed_in(user).await;
        let saved = app
            .post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)])
            .await;
        assert_eq!(saved.status(), 200);
    }
    let writer_key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let reader_key = api_key(&app, org, &developer, "mcp:read").await;
    let admin_key = api_key(&app, org, &admin, "mcp:read mcp:write").await;

    let mut messages = 0;
    // Three periods: now, an hour later, a day and an hour later.
    for step in 0..3 {
        for key in [&writer_key, &admin_key] {
            let session = open_session(&app, "/mcp/tools", key).await;
            for body in [ECHO, FAIL, MISSING, LIST] {
                assert_eq!(post_in(&app, "/mcp/tools", key, &session, body).await.status(), 200);
            }
            messages += 6;
        }
        // Refusals: a read-only key calling a tool (403) and a service that does not exist (404).
        assert_eq!(post(&app, "/mcp/tools", Some(&reader_key), ECHO).await.status(), 403);
        assert_eq!(post(&app, "/mcp/nowhere", Some(&reader_key), LIST).await.status(), 404);
        messages += 2;
        settled(&app, messages).await;
        app.clock.advance(chrono::Duration::hours(if step == 0 { 1 } else { 25 }));
    }

    let rows = log_rows(&app.db).await;
    assert_eq!(rows.len() as i64, messages);
    let outcomes = |code: i16| rows.iter().filter(|r| r.5 == code).count();
    // Per period: echo, initialize, initialized and list succeed for two keys (8); fail is a tool
    // error for each (2); the unknown tool and the two refusals fail (4).
    assert_eq!((outcomes(0), outcomes(1), outcomes(2)), (24, 6, 12));
    let expected = recount(&rows);
    let stored = rollup_rows(&app.db).await;
    assert_eq!(stored.len(), expected.len(), "one roll-up row per period and dimensions");
    for (dims, counts) in &expected {
        assert_eq!(stored.get(dims), Some(counts), "roll-up {dims:?}");
    }
    // Every level and grain counts every message once.
    for (level, grain) in (0..3).flat_map(|l| (0..3).map(move |g| (l, g))) {
        let total: i64 = stored.iter().filter(|(k, _)| (k.0, k.1) == (level, grain)).map(|(_, c)| c.0).sum();
        assert_eq!(total, messages, "level {level}, grain {grain}");
    }
}

/// Applies the migrations up to `last` from a copy of the migrations folder, as an older
/// release would have.
async fn migrate_up_to(db: &Db, backend_dir: &str, last: i64, scratch: &std::path::Path) {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend_dir);
    let older = scratch.join(format!("migrations-{backend_dir}"));
    std::fs::create_dir_all(&older).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name[..4].parse::<i64>().unwrap() <= last {
            std::fs::copy(&path, older.join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(older.as_path()).await.unwrap();
    match db {
        Db::Sqlite(pool) => migrator.run(pool).await.unwrap(),
        Db::Postgres(pool) => migrator.run(pool).await.unwrap(),
    }
}

async fn logs_written_before_the_upgrade_are_kept_with_their_correlation_ids_and_rolled_up(backend: Backend) {
    let scratch = std::env::temp_dir().join(format!("mcp-platform-test-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (url, _cleanup) = crate::helpers::empty_database(backend.clone(), &scratch).await;
    let db = Db::connect(&mcp_platform::config::DatabaseUrl::parse(&url).unwrap()).await.unwrap();
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    migrate_up_to(&db, dir, 5, &scratch).await;

    // Two rows as the release before wrote them: text status, a correlation id of their own.
    let org = Uuid::now_v7();
    let correlation = Uuid::now_v7();
    let at: DateTime<Utc> = "2026-03-10T12:34:56.789Z".parse().unwrap();
    let insert = "INSERT INTO request_logs (id, organization_id, service_name, method, tool_name, correlation_id, \
                  status, http_status, duration_ms, created_at) VALUES ($1, $2, 'tools', 'tools/call', 'echo', $3, $4, \
                  200, $5, $6)";
    for (correlation, status, duration) in
        [(correlation.to_string(), "success", 3i64), (Uuid::now_v7().to_string(), "error", 70_000)]
    {
        let id = Uuid::now_v7();
        match &db {
            Db::Sqlite(pool) => sqlx::query(insert)
                .bind(id)
                .bind(org)
                .bind(correlation)
                .bind(status)
                .bind(duration)
                .bind(at)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Db::Postgres(pool) => sqlx::query(insert)
                .bind(id)
                .bind(org)
                .bind(correlation)
                .bind(status)
                .bind(duration)
                .bind(at)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        };
    }
    db.migrate().await.unwrap();

    let rows = log_rows(&db).await;
    assert_eq!(rows.len(), 2);
    let ids: Vec<Uuid> = {
        let sql = "SELECT id FROM request_logs ORDER BY outcome";
        match &db {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        }
    };
    assert_eq!(ids[0], correlation, "a row's id is now the correlation id its client received");
    assert!(
        rows.iter().all(|r| r.7.0 == at),
        "times are kept to the millisecond: {:?}",
        rows.iter().map(|r| r.7).collect::<Vec<_>>()
    );
    assert_eq!(rows.iter().map(|r| r.5).collect::<std::collections::BTreeSet<_>>(), [0, 2].into());
    assert_eq!(rollup_rows(&db).await, recount(&rows), "the old rows are rolled up");
    db.close().await;
    let _ = std::fs::remove_dir_all(&scratch);
}

async fn dev_seed_fills_an_organization_with_rows_and_their_rollups(backend: Backend) {
    let app = spawn_app(backend).await;
    let env = [("DATABASE_URL", app.database_url.as_str())];
    let seed = |requests: &str, force: bool| {
        let mut args = vec!["dev", "seed", "--org", "Seeded Corp", "--requests", requests, "--days", "3"];
        if force {
            args.push("--force");
        }
        crate::cli::run_binary(&env, &args)
    };
    let output = seed("3000", false);
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{said}");
    assert!(said.contains("writing 3000 request-log rows over 3 days to \"Seeded Corp\""), "{said}");
    assert!(said.contains("wrote 3000 rows"), "{said}");

    let rows = log_rows(&app.db).await;
    assert_eq!(rows.len(), 3000);
    let distinct = |f: fn(&LogRow) -> Option<Uuid>| {
        rows.iter().filter_map(f).collect::<std::collections::BTreeSet<_>>().len()
    };
    assert!(distinct(|r| r.1) >= 4 && distinct(|r| r.2) >= 4, "several members with their keys");
    assert!(distinct(|r| r.3) >= 3, "several services");
    let share = |code: i16| rows.iter().filter(|r| r.5 == code).count() as f64 / 3000.0;
    assert!(share(0) > 0.85 && (0.01..0.08).contains(&share(1)) && (0.01..0.06).contains(&share(2)));
    let days: std::collections::BTreeSet<_> = rows.iter().map(|r| r.7.0.date_naive()).collect();
    assert!(days.len() >= 3, "spread over the days: {days:?}");
    assert_eq!(rollup_rows(&app.db).await, recount(&rows), "the roll-ups match the rows");

    // An organization with logs is refused without --force, and nothing is written.
    let again = seed("10", false);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("add --force"));
    assert_eq!(log_rows(&app.db).await.len(), 3000);
    let forced = seed("500", true);
    assert!(forced.status.success());
    let rows = log_rows(&app.db).await;
    assert_eq!(rows.len(), 3500);
    assert_eq!(rollup_rows(&app.db).await, recount(&rows));
}

/// The display form of a raw key, as pages show it.
fn shown(raw: &str) -> String {
    mcp_platform::crypto::api_key::ApiKey::parse(raw).unwrap().display()
}

async fn the_usage_page_shows_each_role_its_figures_from_the_rollups(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let viewer = app.create_user(org, Role::Viewer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    http_service(&app, org, "quiet", &upstream.url).await;
    for user in [&developer, &admin] {
        let browser = app.signed_in(user).await;
        app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    }
    let developer_key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let admin_key = api_key(&app, org, &admin, "mcp:read mcp:write").await;
    // Another organization's traffic counts nowhere here.
    let other = app.create_organization("Globex").await;
    let stranger = app.create_user(other, Role::Developer).await;
    http_service(&app, other, "tools", &upstream.url).await;
    let stranger_key = api_key(&app, other, &stranger, "mcp:read mcp:write").await;
    let browser = app.signed_in(&stranger).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;

    // The developer: initialize, initialized, 3 echo, a tool error, an unknown tool (a failure).
    let session = open_session(&app, "/mcp/tools", &developer_key).await;
    for body in [ECHO, ECHO, ECHO, FAIL, MISSING] {
        assert_eq!(post_in(&app, "/mcp/tools", &developer_key, &session, body).await.status(), 200);
    }
    // The admin: initialize, initialized and one echo.
    let session = open_session(&app, "/mcp/tools", &admin_key).await;
    post_in(&app, "/mcp/tools", &admin_key, &session, ECHO).await;
    let session = open_session(&app, "/mcp/tools", &stranger_key).await;
    post_in(&app, "/mcp/tools", &stranger_key, &session, ECHO).await;
    settled(&app, 7 + 3 + 3).await;

    let page = |user| {
        let app = &app;
        async move {
            let browser = app.signed_in(user).await;
            let response = app.get(&browser, "/usage?range=24h").await;
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let seen = page(&viewer).await;
    // 10 requests: 1 tool error and 1 failure, an error rate of 20%.
    assert!(seen.contains(r#"<p class="figure">10</p>"#), "{seen}");
    assert!(seen.contains(r#"<p class="figure">20.0%</p>"#));
    assert!(seen.contains("<svg") && seen.contains("10 requests, 8 successes, 1 tool errors, 1 failures"));
    assert!(seen.contains("Latency, p50 and p95") && seen.contains("<circle"));
    assert!(seen.contains("By service") && seen.contains("By tool"));
    assert!(seen.contains("<th scope=\"row\">echo</th><td>tools</td>\n        <td>4</td>"), "{seen}");
    assert!(
        seen.contains("<th scope=\"row\">fail</th><td>tools</td>\n        <td>1</td><td>1</td><td>0</td>")
    );
    assert!(seen.contains(
        "<th scope=\"row\">no_such_tool</th><td>tools</td>\n        <td>1</td><td>0</td><td>1</td>"
    ));
    assert!(
        !seen.contains("By API key") && !seen.contains("By your API keys") && !seen.contains("By member")
    );
    assert!(!seen.contains(&shown(&developer_key)) && !seen.contains(&developer.email));
    assert!(
        seen.contains(r#"href="/usage">Usage</a>"#) || seen.contains(r#"href="/usage""#),
        "in the navigation"
    );

    let seen = page(&developer).await;
    assert!(seen.contains("By your API keys") && seen.contains(&shown(&developer_key)));
    assert!(!seen.contains(&shown(&admin_key)), "a developer sees only their own keys");
    assert!(!seen.contains("By member"));
    let seen = page(&admin).await;
    assert!(
        seen.contains("By API key")
            && seen.contains(&shown(&developer_key))
            && seen.contains(&shown(&admin_key))
    );
    assert!(seen.contains("By member") && seen.contains(&developer.email) && seen.contains(&admin.email));
    assert!(!seen.contains(&shown(&stranger_key)) && !seen.contains(&stranger.email));

    // Service health, from the roll-ups, for every role; the last error for admins only.
    let browser = app.signed_in(&viewer).await;
    let catalog = app.get(&browser, "/services").await.text().await.unwrap();
    let tools_row = catalog.split("<tr>").find(|row| row.contains("<code>tools</code>")).unwrap();
    assert!(tools_row.contains("<td>10</td>") && tools_row.contains("<td>20.0%</td>"), "{tools_row}");
    assert!(!tools_row.contains("never"), "the last successful call is shown");
    let quiet_row = catalog.split("<tr>").find(|row| row.contains("<code>quiet</code>")).unwrap();
    assert!(quiet_row.contains("<td>0</td>") && quiet_row.contains("never"), "{quiet_row}");
    let detail = app.get(&browser, "/services/tools").await.text().await.unwrap();
    assert!(detail.contains("Health, last 24 hours") && detail.contains("1 tool errors, 1 failures"));
    assert!(!detail.contains("Last error"), "viewers read no logs");
    let admin_browser = app.signed_in(&admin).await;
    let detail = app.get(&admin_browser, "/services/tools").await.text().await.unwrap();
    assert!(detail.contains("Last error") && detail.contains("Failure"), "{detail}");
    let developer_browser = app.signed_in(&developer).await;
    assert!(
        !app.get(&developer_browser, "/services/tools").await.text().await.unwrap().contains("Last error")
    );

    // The home page: today and the last 7 days, the busiest services, the latest failed calls.
    let home = app.get(&browser, "/").await.text().await.unwrap();
    assert!(home.contains("Today") && home.contains(r#"<p class="figure">10</p>"#), "{home}");
    assert!(home.contains(r#"<a href="/services/tools">tools</a>"#));
    assert!(!home.contains("failed calls"), "viewers read no logs");
    let home = app.get(&developer_browser, "/").await.text().await.unwrap();
    assert!(home.contains("Your latest failed calls"));
    assert_eq!(home.matches("<td><a href=\"/logs/").count(), 2, "the tool error and the failure");
    let home = app.get(&admin_browser, "/").await.text().await.unwrap();
    assert!(home.contains("Latest failed calls") && !home.contains("Create an API key"));
    // With nothing yet, the home page says what to do next.
    let initech = app.create_organization("Initech").await;
    let new_admin = app.create_user(initech, Role::Admin).await;
    let home = app.get(&app.signed_in(&new_admin).await, "/").await.text().await.unwrap();
    assert!(home.contains("Add a service") && home.contains("Create an API key"), "{home}");
    assert!(
        home.contains("No calls in the last 7 days.") && home.contains("No failed calls in the last 7 days.")
    );
    http_service(&app, initech, "tools", &upstream.url).await;
    let home = app.get(&app.signed_in(&new_admin).await, "/").await.text().await.unwrap();
    assert!(
        !home.contains("Add a service")
            && home.contains("Store a token")
            && home.contains("Connect a client")
    );

    // A service filter, kept in the range links; htmx gets the body alone.
    let browser = app.signed_in(&viewer).await;
    let quiet = app.get(&browser, "/usage?range=7d&service=quiet").await.text().await.unwrap();
    assert!(quiet.contains(r#"<p class="figure">0</p>"#) && quiet.contains("No calls in this range."));
    assert!(quiet.contains(r#"href="/usage?range=24h&#38;service=quiet""#), "{quiet}");
    let fragment = browser
        .get(app.url("/usage?range=7d&service=tools"))
        .header("HX-Request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(fragment.headers()["vary"], "HX-Request");
    let fragment = fragment.text().await.unwrap();
    assert!(fragment.starts_with("<div id=\"usage\">") && !fragment.contains("<html"));
    assert!(fragment.contains(r#"<p class="figure">10</p>"#));

    // Bad input gets a message and a sane default.
    let odd = app.get(&browser, "/usage?range=forever&service=nope").await;
    assert_eq!(odd.status(), 200);
    let odd = odd.text().await.unwrap();
    assert!(odd.contains("There is no range &#34;forever&#34;; showing the last 30 days."), "{odd}");
    assert!(odd.contains("There is no service &#34;nope&#34;; showing all services."));
    assert!(odd.contains(r#"<p class="figure">10</p>"#));

    // A day later: one call, compared with the 10 of the day before.
    app.clock.advance(chrono::Duration::hours(24));
    let session = open_session(&app, "/mcp/tools", &admin_key).await;
    post_in(&app, "/mcp/tools", &admin_key, &session, ECHO).await;
    settled(&app, 13 + 3).await;
    let seen = page(&viewer).await;
    assert!(seen.contains(r#"<p class="figure">3</p>"#), "{seen}");
    assert!(seen.contains("down 70.0% from 10 in the 24 hours before"));
    // (The earlier sign-in has expired meanwhile.)
    let browser = app.signed_in(&viewer).await;
    let month = app.get(&browser, "/usage?range=30d").await.text().await.unwrap();
    assert!(month.contains(r#"<p class="figure">13</p>"#), "{month}");
}
