use std::time::Duration;

use chrono::{DateTime, Utc};
use mcp_platform::clock::SharedClock;
use mcp_platform::db::request_logs::{NewRequestLog, Outcome};
use mcp_platform::db::{self, Db};
use mcp_platform::ids::LogId;
use mcp_platform::telemetry::writer::{RequestLogWriter, WriterConfig};

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(counters_equal_log_rows_after_shutdown);

async fn scalar(app: &TestApp, sql: &'static str) -> i64 {
    match &app.db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn service(app: &TestApp, org: mcp_platform::ids::OrgId, name: &str) -> mcp_platform::ids::ServiceId {
    let id = mcp_platform::ids::ServiceId::new();
    let headers = Vec::new();
    let fields = db::services::ServiceFields {
        name,
        description: "",
        version: "",
        is_public: false,
        upstream_url: "http://127.0.0.1:9/mcp",
        headers: &headers,
        token_service_name: None,
        token_placement: None,
        timeout_ms: 60_000,
    };
    db::services::insert(app.db.acquire().await.unwrap().conn(), org, id, &fields, app.clock_now())
        .await
        .unwrap();
    id
}

fn row(
    org: mcp_platform::ids::OrgId,
    service: Option<mcp_platform::ids::ServiceId>,
    i: i64,
    at: DateTime<Utc>,
) -> NewRequestLog {
    NewRequestLog {
        id: LogId::at(at),
        organization_id: org,
        user_id: None,
        api_key_id: None,
        mcp_service_id: service,
        service_name: "svc".into(),
        method: Some("tools/call".into()),
        tool_name: Some("echo".into()),
        session_tag: None,
        request_body: Some("{}".into()),
        response_body: None,
        request_truncated: false,
        response_truncated: false,
        outcome: if i % 4 != 0 { Outcome::Success } else { Outcome::Failure },
        http_status: 200,
        error_code: (i % 4 == 0).then_some(-32000),
        error_message: None,
        duration_ms: i % 7,
        ip: None,
        user_agent: None,
        created_at: at,
        quota_counted: false,
        stateless: false,
    }
}

async fn counters_equal_log_rows_after_shutdown(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_organization("Acme").await;
    let services = [service(&app, org, "one").await, service(&app, org, "two").await];
    // Two days of this month (within every retention: the platform's upkeep runs meanwhile).
    let month = mcp_platform::telemetry::rollup::Grain::Month.start(app.clock_now());
    let days: [DateTime<Utc>; 2] =
        [month + chrono::Duration::hours(9 * 24 + 12), month + chrono::Duration::seconds(11 * 86_400 - 1)];

    // A small queue, so most writers wait for room: back-pressure, not drops.
    let config = WriterConfig {
        capacity: 8,
        batch_size: 50,
        max_delay: Duration::from_millis(20),
        spill_dir: app.data_dir.clone(),
    };
    let clock: SharedClock = app.clock.clone();
    let (writer, handle) = RequestLogWriter::start(app.db.clone(), clock, config, Default::default());
    let mut tasks = Vec::new();
    for t in 0..20i64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50i64 {
                let n = t * 50 + i;
                let service = (n % 10 != 9).then_some(services[(n % 2) as usize]);
                writer.record(row(org, service, n, days[(n % 3 == 0) as usize])).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let done = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!((done.written, done.rejected, done.spilled), (1000, 0, 0));
    assert!(writer.record(row(org, None, 0, days[0])).await.is_err(), "a stopped writer refuses rows");

    let with_service: i64 = (0..1000).filter(|n| n % 10 != 9).count() as i64;
    let successes: i64 = (0..1000).filter(|n| n % 10 != 9 && n % 4 != 0).count() as i64;
    let duration: i64 = (0..1000i64).filter(|n| n % 10 != 9).map(|n| n % 7).sum();
    assert_eq!(app.count("request_logs").await, 1000);
    assert_eq!(
        scalar(&app, "SELECT CAST(SUM(request_count) AS BIGINT) FROM service_usage WHERE day IS NOT NULL")
            .await,
        with_service
    );
    assert_eq!(
        scalar(&app, "SELECT CAST(SUM(request_count) AS BIGINT) FROM service_usage WHERE day IS NULL").await,
        with_service
    );
    assert_eq!(
        scalar(&app, "SELECT CAST(SUM(successful_requests) AS BIGINT) FROM service_usage WHERE day IS NULL")
            .await,
        successes
    );
    assert_eq!(
        scalar(&app, "SELECT CAST(SUM(failed_requests) AS BIGINT) FROM service_usage WHERE day IS NULL")
            .await,
        with_service - successes
    );
    assert_eq!(
        scalar(&app, "SELECT CAST(SUM(total_duration_ms) AS BIGINT) FROM service_usage WHERE day IS NULL")
            .await,
        duration
    );
    // Two services on two days, in one month: four daily rows and two monthly rows.
    assert_eq!(app.count("service_usage WHERE day IS NOT NULL").await, 4);
    assert_eq!(app.count("service_usage WHERE day IS NULL").await, 2);
    assert_eq!(
        scalar(&app, "SELECT CAST(COUNT(*) AS BIGINT) FROM request_logs WHERE mcp_service_id IS NOT NULL")
            .await,
        with_service,
        "counters equal the rows that name a service"
    );
}
