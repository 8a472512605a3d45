//! The request-log explorer, a call's page and the exports.

use chrono::Duration;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::domain::Role;
use mcp_platform::telemetry::writer::write_batch;

use crate::helpers::gateway::*;
use crate::helpers::logs::{call_row, caller};
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, spawn_app};

use crate::on_both_backends;

on_both_backends!(
    the_explorer_filters_and_finds_a_call_by_its_correlation_id,
    a_cursor_walk_sees_every_row_once_while_new_rows_arrive,
    a_rare_match_beyond_the_scan_budget_is_found_by_searching_further,
    exports_stream_the_filtered_calls_with_cells_neutralised,
);

const ECHO: &str =
    r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const FAIL: &str =
    r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"fail","arguments":{}}}"#;

/// Row links (`/logs/{id}`) on a page, in order.
fn row_ids(page: &str) -> Vec<String> {
    page.split("<a href=\"/logs/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .map(str::to_owned)
        .collect()
}

fn next_link(page: &str) -> Option<String> {
    let start = page.find("rel=\"next\"")?;
    let before = &page[..start];
    let href = before.rsplit("href=\"").next()?;
    Some(href.split('"').next()?.replace("&#38;", "&"))
}

async fn the_explorer_filters_and_finds_a_call_by_its_correlation_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    let other_developer = app.create_user(org, Role::Developer).await;
    let admin = app.create_user(org, Role::Admin).await;
    let viewer = app.create_user(org, Role::Viewer).await;
    http_service(&app, org, "tools", &upstream.url).await;
    for user in [&developer, &other_developer] {
        let browser = app.signed_in(user).await;
        app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    }
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let other_key = api_key(&app, org, &other_developer, "mcp:read mcp:write").await;
    let session = open_session(&app, "/mcp/tools", &key).await;
    post_in(&app, "/mcp/tools", &key, &session, ECHO).await;
    let failed = post_in(&app, "/mcp/tools", &key, &session, FAIL).await;
    let correlation = failed.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    let session = open_session(&app, "/mcp/tools", &other_key).await;
    let theirs = post_in(&app, "/mcp/tools", &other_key, &session, ECHO).await;
    let theirs = theirs.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    // Another organization's call, looked up by its correlation id, is not found.
    let globex = app.create_organization("Globex").await;
    let stranger = app.create_user(globex, Role::Developer).await;
    http_service(&app, globex, "tools", &upstream.url).await;
    let browser = app.signed_in(&stranger).await;
    app.post_form(&browser, "/tokens", "/tokens", &[("service_name", "github"), ("token", TOKEN)]).await;
    let stranger_key = api_key(&app, globex, &stranger, "mcp:read mcp:write").await;
    let session = open_session(&app, "/mcp/tools", &stranger_key).await;
    let foreign = post_in(&app, "/mcp/tools", &stranger_key, &session, ECHO).await;
    let foreign = foreign.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    // Each session: initialize, initialized, then its calls.
    let rows = settled_rows(&app, 4 + 3 + 3).await;
    assert_eq!(rows.len(), 10);

    let admin_browser = app.signed_in(&admin).await;
    let all = app.get(&admin_browser, "/logs").await.text().await.unwrap();
    assert_eq!(row_ids(&all).len(), 7, "the organization's 7 calls, not Globex's");
    assert!(all.contains(&developer.email) && all.contains(&other_developer.email));
    let search = |query: &'static str| {
        let (app, browser) = (&app, &admin_browser);
        async move { row_ids(&app.get(browser, &format!("/logs?{query}")).await.text().await.unwrap()).len() }
    };
    assert_eq!(search("tool=echo").await, 2);
    assert_eq!(search("method=initialize").await, 2);
    assert_eq!(search("outcome=tool_error").await, 1);
    let failures = app.get(&admin_browser, "/logs?outcome=failure").await.text().await.unwrap();
    assert_eq!(row_ids(&failures).len(), 0, "{failures}");
    assert_eq!(search("service=tools&tool=fail&outcome=tool_error").await, 1);
    let member = format!("member={}", developer.id);
    assert_eq!(
        row_ids(&app.get(&admin_browser, &format!("/logs?{member}")).await.text().await.unwrap()).len(),
        4
    );
    let by_key = format!("key={}", key_id(&app, &other_key).await);
    assert_eq!(
        row_ids(&app.get(&admin_browser, &format!("/logs?{by_key}")).await.text().await.unwrap()).len(),
        3
    );
    let now = app.clock_now();
    let later = (now + Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    let earlier = (now - Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    assert_eq!(
        row_ids(
            &app.get(&admin_browser, &format!("/logs?from={earlier}&to={later}")).await.text().await.unwrap()
        )
        .len(),
        7
    );
    let none = app.get(&admin_browser, &format!("/logs?from={later}")).await.text().await.unwrap();
    assert_eq!(row_ids(&none).len(), 0, "{now} {later} {none}");

    // The correlation id a client got finds its call, and the call's page shows it whole.
    let found =
        app.get(&admin_browser, &format!("/logs?correlation={correlation}")).await.text().await.unwrap();
    assert_eq!(row_ids(&found), std::slice::from_ref(&correlation));
    let call = app.get(&admin_browser, &format!("/logs/{correlation}")).await;
    assert_eq!(call.status(), 200);
    let call = call.text().await.unwrap();
    assert!(
        call.contains(&correlation)
            && call.contains("Tool error")
            && call.contains("&#34;isError&#34;: true"),
        "{call}"
    );
    assert!(call.contains("Messages of the same session") && call.contains("(this call)"));
    assert!(
        call.contains("<title>tools/call fail to tools · Calls · MCP Platform</title>"),
        "the title names the call"
    );
    assert!(
        call.matches("<a href=\"/logs/").count() >= 3,
        "initialize, initialized and echo of the same session"
    );
    let missing = app.get(&admin_browser, &format!("/logs?correlation={foreign}")).await;
    assert_eq!(missing.status(), 422);
    assert!(missing.text().await.unwrap().contains("No call with this correlation id in your organization."));
    assert_eq!(app.get(&admin_browser, &format!("/logs/{foreign}")).await.status(), 404);

    // A developer reads their own calls only.
    let mine = app.signed_in(&developer).await;
    let page = app.get(&mine, "/logs").await.text().await.unwrap();
    assert_eq!(row_ids(&page).len(), 4);
    assert!(!page.contains(&other_developer.email));
    assert_eq!(app.get(&mine, &format!("/logs/{theirs}")).await.status(), 404);
    let lookup = app.get(&mine, &format!("/logs?correlation={theirs}")).await.text().await.unwrap();
    assert!(lookup.contains("No call with this correlation id among your calls."));
    assert_eq!(
        row_ids(&app.get(&mine, &format!("/logs?member={}", other_developer.id)).await.text().await.unwrap())
            .len(),
        0
    );

    // A viewer reads no logs.
    let viewer_browser = app.signed_in(&viewer).await;
    for path in ["/logs".to_owned(), format!("/logs/{correlation}"), "/logs/export.csv".to_owned()] {
        assert_eq!(app.get(&viewer_browser, &path).await.status(), 403, "{path}");
    }

    // Bad input: a message at the field or a sane default, never a 500.
    for (query, message) in [
        ("outcome=maybe", "Choose an outcome from the list."),
        ("from=2026-11-29T10:00&to=2026-11-28T10:00", "To must come after From."),
        ("from=yesterday", "Enter a date as YYYY-MM-DD"),
        ("correlation=not-an-id", "Paste the X-Correlation-Id value"),
        ("service=nowhere", "There is no service named &#34;nowhere&#34;."),
        ("member=nobody", "Choose a member from the list."),
    ] {
        let answer = app.get(&admin_browser, &format!("/logs?{query}")).await;
        assert_eq!(answer.status(), 422, "{query}");
        let page = answer.text().await.unwrap();
        assert!(page.contains(message), "{query}: {page}");
    }
    let tampered = app.get(&admin_browser, "/logs?before=xyz").await;
    assert_eq!(tampered.status(), 200);
    let tampered = tampered.text().await.unwrap();
    assert!(tampered.contains("That page link is not valid; showing the newest calls."));
    assert_eq!(row_ids(&tampered).len(), 7);
    // A cursor from another organization only bounds the search in this one.
    let foreign_cursor = app.get(&admin_browser, &format!("/logs?before={foreign}")).await;
    assert_eq!(foreign_cursor.status(), 200);
    assert!(row_ids(&foreign_cursor.text().await.unwrap()).len() <= 7);
    assert_eq!(app.get(&admin_browser, "/logs/not-a-uuid").await.status(), 404);
}

async fn a_cursor_walk_sees_every_row_once_while_new_rows_arrive(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
    let caller = caller(&app, org, &admin).await;
    let start = app.clock_now() - Duration::hours(3);
    let rows: Vec<_> = (0..137)
        .map(|i| call_row(caller, "echo", Outcome::Success, start + Duration::seconds(i * 30)))
        .collect();
    write_batch(&app.db, app.clock_now(), &rows).await.unwrap();

    let browser = app.signed_in(&admin).await;
    let mut seen = Vec::new();
    let mut path = "/logs".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&browser, &path).await.text().await.unwrap();
        seen.extend(row_ids(&page));
        pages += 1;
        // New calls arrive between pages.
        let newer: Vec<_> = (0..5)
            .map(|i| {
                call_row(
                    caller,
                    "echo",
                    Outcome::Success,
                    app.clock_now() + Duration::seconds(pages * 10 + i),
                )
            })
            .collect();
        write_batch(&app.db, app.clock_now(), &newer).await.unwrap();
        match next_link(&page) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(pages, 3, "50 + 50 + 37");
    let mut expected: Vec<String> = rows.iter().rev().map(|r| r.id.to_string()).collect();
    assert_eq!(seen, expected, "newest first, no gaps, no repeats");
    expected.sort();
    expected.dedup();
    assert_eq!(expected.len(), 137);
}

async fn a_rare_match_beyond_the_scan_budget_is_found_by_searching_further(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
    let caller = caller(&app, org, &admin).await;
    // 7,000 calls within one hour, the rare one among the oldest; then 2 hours without calls.
    let start = mcp_platform::telemetry::rollup::Grain::Hour.start(app.clock_now() - Duration::hours(3))
        + Duration::minutes(1);
    let mut rows: Vec<_> = (0..7_000)
        .map(|i| call_row(caller, "echo", Outcome::Success, start + Duration::milliseconds(i * 400)))
        .collect();
    rows[10] = call_row(caller, "rare", Outcome::Failure, rows[10].created_at);
    let rare = rows[10].id.to_string();
    write_batch(&app.db, app.clock_now(), &rows).await.unwrap();

    let browser = app.signed_in(&admin).await;
    let first = app.get(&browser, "/logs?tool=rare").await.text().await.unwrap();
    assert!(row_ids(&first).is_empty(), "the newest 5,000 calls hold no match");
    assert!(first.contains("Searched the calls back to") && first.contains("Search further back"), "{first}");
    let further = next_link(&first).unwrap();
    assert!(further.starts_with("/logs?tool=rare&before="), "{further}");
    let second = app.get(&browser, &further).await.text().await.unwrap();
    assert_eq!(row_ids(&second), std::slice::from_ref(&rare), "{second}");
    assert!(next_link(&second).is_none(), "the search reached the oldest call");
    // A filter on an unsuccessful outcome finds it at once, and so does one no hour matches.
    assert_eq!(row_ids(&app.get(&browser, "/logs?outcome=failure").await.text().await.unwrap()), [rare]);
    let none = app.get(&browser, "/logs?tool=never").await.text().await.unwrap();
    assert!(
        row_ids(&none).is_empty()
            && !none.contains("Search further back")
            && none.contains("No calls match.")
    );
}

async fn exports_stream_the_filtered_calls_with_cells_neutralised(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
    let mine = caller(&app, org, &admin).await;
    let theirs = caller(&app, org, &developer).await;
    let now = app.clock_now();
    let mut rows: Vec<_> = (0..2_500)
        .map(|i| {
            call_row(mine, "echo", Outcome::Success, now - Duration::minutes(60) + Duration::milliseconds(i))
        })
        .collect();
    rows.push(call_row(
        theirs,
        "=HYPERLINK(\"http://evil.test\")",
        Outcome::ToolError,
        now - Duration::minutes(10),
    ));
    rows.push(call_row(theirs, "old", Outcome::Success, now - Duration::days(40)));
    rows.sort_by_key(|r| r.id);
    app.db.ensure_log_partitions_since(now - Duration::days(40), now).await.unwrap();
    write_batch(&app.db, now, &rows).await.unwrap();

    let browser = app.signed_in(&admin).await;
    let csv = app.get(&browser, "/logs/export.csv").await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"request-log-")
    );
    let csv = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(reader.headers().unwrap().get(0), Some("correlation_id"));
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2_501, "the last 30 days by default, over several pages");
    let risky = records.iter().find(|r| r[7] == *"tool_error").unwrap();
    assert_eq!(&risky[6], "'=HYPERLINK(\"http://evil.test\")");
    assert_eq!(&risky[2], developer.email.as_str());
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| r[0].to_owned()).collect();
    assert_eq!(ids.len(), 2_501, "no row twice across pages");

    let jsonl = app.get(&browser, "/logs/export.jsonl?outcome=tool_error").await;
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let jsonl = jsonl.text().await.unwrap();
    let lines: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tool_name"], "=HYPERLINK(\"http://evil.test\")", "JSON keeps the value as it is");
    assert_eq!(lines[0]["outcome"], "tool_error");
    let from = (now - Duration::days(60)).format("%Y-%m-%d").to_string();
    let old =
        app.get(&browser, &format!("/logs/export.jsonl?tool=old&from={from}")).await.text().await.unwrap();
    assert_eq!(old.lines().count(), 1, "a From date reaches further back");

    // A developer exports their own calls only; a bad filter is refused with a message.
    let developer_browser = app.signed_in(&developer).await;
    let own = app.get(&developer_browser, "/logs/export.jsonl").await.text().await.unwrap();
    assert_eq!(own.lines().count(), 1);
    let refused = app.get(&browser, "/logs/export.csv?outcome=sometimes").await;
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("outcome: Choose an outcome from the list."));
}
