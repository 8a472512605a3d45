//! Every accepted call is recorded, and nothing holds the record up: a service deleted during a
//! call keeps its history, a row the database refuses is set aside while the others are written,
//! a database that takes no writes makes the gateway refuse new calls instead of losing them, and
//! rows left at a stop are written at the next start.

use std::time::Duration;

use mcp_platform::config::Settings;
use mcp_platform::db::{Db, Tx};
use mcp_platform::domain::Role;
use serde_json::Value;

use crate::helpers::gateway::{
    add_service, api_key, error_of, open_session, post_in, settled_rows, usage_total,
};
use crate::helpers::upstream::HttpUpstream;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    a_service_deleted_during_a_call_keeps_its_history_and_frees_its_name,
    a_row_the_database_refuses_is_set_aside_and_other_organizations_are_still_recorded,
    a_database_that_takes_no_writes_stops_new_calls_and_a_stop_keeps_the_rest_for_the_next_start,
);

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn slow_call(ms: u32) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"slow","arguments":{{"ms":{ms}}}}}}}"#
    )
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match &app.db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn execute(app: &TestApp, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match &app.db {
        Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()).unwrap(),
        Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()).unwrap(),
    }
}

async fn service_id(
    app: &TestApp,
    org: mcp_platform::ids::OrgId,
    name: &str,
) -> mcp_platform::ids::ServiceId {
    let mut conn = app.db.acquire().await.unwrap();
    mcp_platform::db::services::find_own(conn.conn(), org, name).await.unwrap().unwrap().id
}

async fn a_service_deleted_during_a_call_keeps_its_history_and_frees_its_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let key = api_key(&app, org, &admin, "mcp:read mcp:write").await;
    let session = open_session(&app, "/mcp/tools", &key).await;
    let old_id = service_id(&app, org, "tools").await;

    let call = {
        let (url, key, session) = (app.url("/mcp/tools"), key.clone(), session.clone());
        tokio::spawn(async move {
            let response =
                crate::helpers::gateway::request(&url, &key, Some(&session), &slow_call(800)).send().await;
            response.unwrap().text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let browser = app.signed_in(&admin).await;
    let deleted = app.post_form(&browser, "/services/tools", "/services/tools/delete", &[]).await;
    assert_eq!(deleted.status(), 303);
    assert!(call.await.unwrap().contains("slept 800 ms"), "the call in flight finished");

    // Its history stays: every call, the one in flight included, is in the log and the usage.
    let rows = settled_rows(&app, 3).await;
    assert_eq!(rows.len(), 3, "initialize, initialized and the call in flight");
    assert_eq!(usage_total(&app).await, 3);
    let logged =
        format!("SELECT COUNT(*) FROM request_logs WHERE mcp_service_id = {}", uuid_literal(&app, old_id));
    assert_eq!(scalar(&app, &logged).await, 3);
    // It has left the catalog and the gateway, and its name is free for a new service.
    let catalog = app.get(&browser, "/services").await.text().await.unwrap();
    assert!(!catalog.contains("/services/tools\""), "{catalog}");
    let (status, code, _) =
        error_of(crate::helpers::gateway::post(&app, "/mcp/tools", Some(&key), LIST).await).await;
    assert_eq!((status, code), (404, -32004));
    let form = [("name", "tools"), ("upstream_url", upstream.url.as_str()), ("timeout_seconds", "10")];
    let created = app.post_form(&browser, "/services/new", "/services", &form).await;
    assert_eq!(created.status(), 303, "the name is free again");
    assert_ne!(service_id(&app, org, "tools").await, old_id);
    assert_eq!(usage_total(&app).await, 3, "the old service's usage stays");
}

/// How an id is written in SQL on each backend.
fn uuid_literal(app: &TestApp, id: mcp_platform::ids::ServiceId) -> String {
    let id = id.as_uuid();
    match app.db {
        Db::Sqlite(_) => format!("X'{}'", id.simple()),
        Db::Postgres(_) => format!("'{id}'"),
    }
}

async fn a_row_the_database_refuses_is_set_aside_and_other_organizations_are_still_recorded(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let upstream = HttpUpstream::start();
    let acme = app.create_organization("Acme").await;
    let globex = app.create_organization("Globex").await;
    let (ada, gus) =
        (app.create_user(acme, Role::Developer).await, app.create_user(globex, Role::Developer).await);
    add_service(&app, acme, "tools", &upstream.url, None, 10_000).await;
    add_service(&app, globex, "tools", &upstream.url, None, 10_000).await;
    let (acme_key, globex_key) = (
        api_key(&app, acme, &ada, "mcp:read mcp:write").await,
        api_key(&app, globex, &gus, "mcp:read mcp:write").await,
    );
    let acme_session = open_session(&app, "/mcp/tools", &acme_key).await;
    settled_rows(&app, 2).await;

    // The service row disappears under a call in flight (an operator's cleanup, a restore): the
    // call's usage row now breaks a foreign key.
    let call = {
        let (url, key) = (app.url("/mcp/tools"), acme_key.clone());
        tokio::spawn(async move {
            let response = crate::helpers::gateway::request(&url, &key, Some(&acme_session), &slow_call(600))
                .send()
                .await;
            response.unwrap().text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acme_service = service_id(&app, acme, "tools").await;
    execute(&app, &format!("DELETE FROM mcp_services WHERE id = {}", uuid_literal(&app, acme_service))).await;
    assert!(call.await.unwrap().contains("slept 600 ms"));

    // Another organization's calls after it are written all the same.
    open_session(&app, "/mcp/tools", &globex_key).await;
    let rows = settled_rows(&app, 4).await;
    assert_eq!(rows.len(), 4, "Acme's two, Globex's two: the refused row holds nothing up");
    assert_eq!(app.count("request_log_rejects").await, 1, "the refused row is kept aside");
    let kept: String = match &app.db {
        Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT row_json FROM request_log_rejects").fetch_one(pool).await.unwrap()
        }
        Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT row_json FROM request_log_rejects").fetch_one(pool).await.unwrap()
        }
    };
    let kept: Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(kept["tool_name"], "slow");
    assert!(!kept.to_string().contains(&acme_key), "the kept row is redacted like any other");
    let metrics = app.get(&crate::helpers::client(), "/metrics").await.text().await.unwrap();
    assert!(metrics.contains("mcp_platform_request_logs_rejected_total 1"), "{metrics}");
}

/// Holds the write lock (SQLite) or the request-log table (PostgreSQL) until rolled back, so
/// the writer cannot write: as for a database that is down or full.
async fn hold_writes(app: &TestApp) -> Tx {
    let mut tx = app.db.begin().await.unwrap();
    if let Tx::Postgres(tx) = &mut tx {
        sqlx::query("LOCK TABLE request_logs IN EXCLUSIVE MODE").execute(&mut **tx).await.unwrap();
    }
    tx
}

/// Sends calls in the session until the gateway refuses one; how many it accepted.
async fn calls_until_refused(app: &TestApp, key: &str, session: &str) -> i64 {
    for accepted in 0..200 {
        let response = post_in(app, "/mcp/tools", key, session, LIST).await;
        if response.status() == 503 {
            assert_eq!(response.headers().get("retry-after").unwrap(), "1");
            let (_, code, message) = error_of(response).await;
            assert_eq!(code, -32603);
            assert!(message.contains("cannot record calls"), "{message}");
            return accepted;
        }
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    panic!("200 calls accepted while the database took no writes: the queue is not bounded");
}

fn spill_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(&app.data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("request-logs-spill-"))
        .collect()
}

async fn a_database_that_takes_no_writes_stops_new_calls_and_a_stop_keeps_the_rest_for_the_next_start(
    backend: Backend,
) {
    let settings = Settings {
        log_queue: Some("3".into()),
        stop_timeout_seconds: Some("2".into()),
        ..Settings::default()
    };
    let mut app = spawn_app_with(backend, settings).await;
    let upstream = HttpUpstream::start();
    let org = app.create_organization("Acme").await;
    let developer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", &upstream.url, None, 10_000).await;
    let key = api_key(&app, org, &developer, "mcp:read mcp:write").await;
    let session = open_session(&app, "/mcp/tools", &key).await;
    settled_rows(&app, 2).await;

    // The writer cannot write: the queue fills up, then new calls are refused, not lost.
    let lock = hold_writes(&app).await;
    let accepted = calls_until_refused(&app, &key, &session).await;
    assert!(accepted >= 3, "the queue takes its 3 rows first ({accepted})");
    let metrics = app.get(&crate::helpers::client(), "/metrics").await.text().await.unwrap();
    assert!(metrics.contains("mcp_platform_gateway_calls_refused_unrecordable_total 1"), "{metrics}");
    // Writes come back: every accepted call is written, and calls are accepted again.
    drop(lock);
    let rows = settled_rows(&app, 2 + accepted as usize).await;
    assert_eq!(rows.len() as i64, 2 + accepted);
    assert_eq!(post_in(&app, "/mcp/tools", &key, &session, LIST).await.status(), 200);
    let before_stop = 3 + accepted;
    settled_rows(&app, before_stop as usize).await;

    // A stop while the database takes no writes ends at its deadline, and keeps the rows in a
    // file of the data directory.
    let lock = hold_writes(&app).await;
    let accepted = calls_until_refused(&app, &key, &session).await;
    let stopping = std::time::Instant::now();
    app.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(20), "the stop took {:?}", stopping.elapsed());
    drop(lock);
    let files = spill_files(&app);
    assert_eq!(files.len(), 1);
    let spilled = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(spilled.lines().count() as i64, accepted);
    assert!(!spilled.contains(&key), "the spilled rows are redacted");
    assert_eq!(app.count("request_logs").await, before_stop);

    // The next start writes them, and the file is gone.
    app.restart().await;
    let rows = settled_rows(&app, (before_stop + accepted) as usize).await;
    assert_eq!(rows.len() as i64, before_stop + accepted);
    assert_eq!(usage_total(&app).await, before_stop + accepted, "counters equal log rows");
    assert!(spill_files(&app).is_empty());
}
