//! Retention removes exactly what each organization keeps no longer; erasure removes one
//! member's calls and keeps the counts.

use chrono::Duration;
use mcp_platform::db::audit::{Action, Entry};
use mcp_platform::db::organizations::Settings;
use mcp_platform::db::request_logs::Outcome;
use mcp_platform::db::{self, Db};
use mcp_platform::domain::Role;
use mcp_platform::ids::{LogId, OrgId};
use mcp_platform::telemetry::retention;
use mcp_platform::telemetry::writer::write_batch;
use uuid::Uuid;

use crate::helpers::gateway::add_service;
use crate::helpers::logs::{call_row, caller};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    retention_removes_exactly_what_each_organization_keeps_no_longer,
    erasing_a_members_logs_keeps_the_counts_without_them,
);

async fn ids_of(db: &Db, organization_id: OrgId) -> Vec<Uuid> {
    let sql = "SELECT id FROM request_logs WHERE organization_id = $1 ORDER BY id";
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).bind(organization_id).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).bind(organization_id).fetch_all(pool).await.unwrap(),
    }
}

/// (grain, requests) of the organization's roll-ups at the service level.
async fn rollup_grains(db: &Db, organization_id: OrgId) -> Vec<(i16, i64)> {
    let sql = "SELECT grain, CAST(SUM(requests) AS BIGINT) FROM usage_rollups WHERE organization_id = $1 AND level = 0 \
               GROUP BY grain ORDER BY grain";
    match db {
        Db::Sqlite(pool) => sqlx::query_as(sql).bind(organization_id).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sql).bind(organization_id).fetch_all(pool).await.unwrap(),
    }
}

async fn settle(app: &TestApp, organization_id: OrgId, settings: Settings) {
    let mut conn = app.db.acquire().await.unwrap();
    let org = db::organizations::find(conn.conn(), organization_id).await.unwrap().unwrap();
    let contact = org.contact_email.unwrap_or_default();
    db::organizations::update(conn.conn(), organization_id, &org.name, &contact, settings, app.clock_now())
        .await
        .unwrap();
}

async fn retention_removes_exactly_what_each_organization_keeps_no_longer(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = app.clock_now();
    let short = app.create_organization("Short").await;
    let long = app.create_organization("Long").await;
    let mut callers = Vec::new();
    for org in [short, long] {
        let admin = app.create_user(org, Role::Admin).await;
        add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
        callers.push(caller(&app, org, &admin).await);
    }
    settle(
        &app,
        short,
        Settings {
            log_retention_days: 7,
            rollup_retention_days: 30,
            audit_retention_days: 30,
            ..Settings::default()
        },
    )
    .await;

    // Short keeps 7 days of logs: 5 calls of 10 days ago go, 2 of yesterday stay. Long keeps
    // the default 90: its call of 10 days ago stays, its 3 of 100 days ago go.
    let at = |days: i64, n: i64| now - Duration::days(days) + Duration::seconds(n);
    let mut rows: Vec<_> =
        (0..5).map(|n| call_row(callers[0], "echo", Outcome::Success, at(10, n))).collect();
    rows.extend((0..2).map(|n| call_row(callers[0], "echo", Outcome::Success, at(1, n))));
    rows.push(call_row(callers[1], "echo", Outcome::Success, at(10, 0)));
    rows.extend((0..3).map(|n| call_row(callers[1], "echo", Outcome::ToolError, at(100, n))));
    // A partition of two years ago, which no organization keeps anything of any more.
    let ancient = now - Duration::days(730);
    app.db.ensure_log_partitions_since(ancient, now).await.unwrap();
    rows.sort_by_key(|r| r.id);
    write_batch(&app.db, now, &rows).await.unwrap();
    let kept_short: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.organization_id == short && r.created_at > at(2, 0))
        .map(|r| r.id.as_uuid())
        .collect();
    let kept_long: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.organization_id == long && r.created_at > at(11, 0))
        .map(|r| r.id.as_uuid())
        .collect();
    // Audit entries: one of 40 days ago (Short keeps 30) and one of yesterday, for each.
    {
        let mut conn = app.db.acquire().await.unwrap();
        for org in [short, long] {
            for days in [40, 1] {
                let mut entry = Entry::new(Action::OrganizationUpdated);
                entry.organization_id = Some(org);
                db::audit::record(conn.conn(), entry, now - Duration::days(days)).await.unwrap();
            }
        }
    }

    // In batches of 2, so that deleting takes several.
    let removed = retention::enforce(&app.db, now, 2).await.unwrap();
    assert_eq!(removed.logs, 5 + 3);
    assert_eq!(removed.audit, 1);
    assert_eq!(ids_of(&app.db, short).await, kept_short);
    assert_eq!(ids_of(&app.db, long).await, kept_long);
    // Short's hourly roll-ups go with its logs; its daily and monthly ones stay (30 days).
    assert_eq!(rollup_grains(&app.db, short).await, [(0, 2), (1, 7), (2, 7)]);
    // Long's roll-ups of 100 days ago stay (3 years), the hourly ones go with the logs.
    assert_eq!(rollup_grains(&app.db, long).await, [(0, 1), (1, 4), (2, 4)]);
    let audit: Vec<(OrgId, String)> = {
        let sql = "SELECT organization_id, action FROM audit_logs WHERE organization_id IS NOT NULL";
        match &app.db {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        }
    };
    assert_eq!(audit.iter().filter(|(o, _)| *o == short).count(), 1);
    assert_eq!(audit.iter().filter(|(o, _)| *o == long).count(), 2);
    if let Db::Postgres(_) = app.db {
        let name = format!("request_logs_y{}", ancient.format("%Ym%m"));
        assert!(removed.partitions.contains(&name), "{:?}", removed.partitions);
        assert!(!removed.partitions.iter().any(|p| p == &format!("request_logs_y{}", now.format("%Ym%m"))));
    } else {
        assert!(removed.partitions.is_empty());
    }

    // A second pass finds nothing to do.
    let again = retention::enforce(&app.db, now, 2).await.unwrap();
    assert_eq!((again.logs, again.rollups, again.audit, again.partitions.len()), (0, 0, 0, 0));
    assert!(LogId::floor(now) > LogId::floor(now - Duration::days(1)));
}

async fn erasing_a_members_logs_keeps_the_counts_without_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = app.clock_now();
    let org = app.create_organization("Acme").await;
    let admin = app.create_user(org, Role::Admin).await;
    let leaver = app.create_user(org, Role::Developer).await;
    let stayer = app.create_user(org, Role::Developer).await;
    add_service(&app, org, "tools", "https://tools.example/mcp", None, 10_000).await;
    let leaving = caller(&app, org, &leaver).await;
    let leaving_again = caller(&app, org, &leaver).await; // a second key
    let staying = caller(&app, org, &stayer).await;
    let mut rows: Vec<_> = (0..2_500)
        .map(|n| {
            let who = [leaving, leaving_again, staying][n % 3];
            call_row(
                who,
                "echo",
                if n % 7 == 0 { Outcome::ToolError } else { Outcome::Success },
                now - Duration::minutes(n as i64),
            )
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    write_batch(&app.db, now, &rows).await.unwrap();
    let before = rollup_grains(&app.db, org).await;
    let staying_rows = rows.iter().filter(|r| r.user_id == Some(stayer.id)).count();

    let browser = app.signed_in(&admin).await;
    let path = format!("/members/{}/erase-logs", leaver.id);
    let response = app.post_form(&browser, "/members", &path, &[]).await;
    assert_eq!(response.status(), 303);

    assert_eq!(ids_of(&app.db, org).await.len(), staying_rows, "only the other member's calls are left");
    assert_eq!(rollup_grains(&app.db, org).await, before, "the counts stay");
    let sql = "SELECT COUNT(*) FROM usage_rollups WHERE user_id = $1 OR api_key_id = $2 OR api_key_id = $3";
    let left: i64 = match &app.db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql)
            .bind(leaver.id)
            .bind(leaving.key)
            .bind(leaving_again.key)
            .fetch_one(pool)
            .await
            .unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(leaver.id)
            .bind(leaving.key)
            .bind(leaving_again.key)
            .fetch_one(pool)
            .await
            .unwrap(),
    };
    assert_eq!(left, 0, "no roll-up names the member or their keys");
    let by_caller: i64 = {
        let sql = "SELECT CAST(SUM(requests) AS BIGINT) FROM usage_rollups WHERE organization_id = $1 AND level = 2 AND grain = 2";
        match &app.db {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).bind(org).fetch_one(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sql).bind(org).fetch_one(pool).await.unwrap(),
        }
    };
    assert_eq!(by_caller, 2_500, "the caller level still counts every call");
    let audit = app.audit_rows().await;
    let (_, ok, text) = audit.iter().find(|(action, _, _)| action == "member.logs_erased").expect("audited");
    assert!(
        *ok && text.replace(": ", ":").contains(&format!("\"request_log_rows\":{}", 2_500 - staying_rows)),
        "{text}"
    );
    // The member's own page of calls is empty; the usage page still counts everything.
    let usage = app.get(&browser, "/usage?range=7d").await.text().await.unwrap();
    assert!(usage.contains("<p class=\"figure\">2,500</p>"), "{usage}");
}
