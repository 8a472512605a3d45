//! The `service_usage` roll-ups: daily rows and monthly rows (`day` NULL).

use uuid::Uuid;

use super::Conn;
use crate::ids::{OrgId, ServiceId};
use crate::on_conn;

#[derive(Debug, Default, sqlx::FromRow)]
pub struct Totals {
    pub requests: i64,
    pub successes: i64,
    pub failures: i64,
}

/// The organization's totals for one month, summed over its services' monthly rows.
pub async fn month_totals(
    conn: Conn<'_>,
    organization_id: OrgId,
    year: i32,
    month: i32,
) -> sqlx::Result<Totals> {
    on_conn!(conn, c => sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(request_count), 0) AS BIGINT) AS requests, \
         CAST(COALESCE(SUM(successful_requests), 0) AS BIGINT) AS successes, \
         CAST(COALESCE(SUM(failed_requests), 0) AS BIGINT) AS failures \
         FROM service_usage WHERE organization_id = $1 AND year = $2 AND month = $3 AND day IS NULL",
    )
    .bind(organization_id)
    .bind(year)
    .bind(month)
    .fetch_one(c)
    .await)
}

/// Counts to add to one service's usage for one day (and its month).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    pub requests: i64,
    pub duration_ms: i64,
    pub successes: i64,
    pub failures: i64,
}

/// Adds `inc` to the daily row of `day` and to the monthly row of its month.
pub async fn add(
    conn: Conn<'_>,
    organization_id: OrgId,
    mcp_service_id: ServiceId,
    day: chrono::NaiveDate,
    inc: Increment,
    now: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<()> {
    use chrono::Datelike;
    let (year, month, day) = (day.year(), day.month() as i32, day.day() as i32);
    on_conn!(conn, c => {
        for (day, target) in [
            (Some(day), "(organization_id, mcp_service_id, year, month, day) WHERE day IS NOT NULL"),
            (None, "(organization_id, mcp_service_id, year, month) WHERE day IS NULL"),
        ] {
            let sql = format!(
                "INSERT INTO service_usage (id, organization_id, mcp_service_id, year, month, day, request_count, \
                 total_duration_ms, successful_requests, failed_requests, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT {target} DO UPDATE SET \
                 request_count = service_usage.request_count + excluded.request_count, \
                 total_duration_ms = service_usage.total_duration_ms + excluded.total_duration_ms, \
                 successful_requests = service_usage.successful_requests + excluded.successful_requests, \
                 failed_requests = service_usage.failed_requests + excluded.failed_requests, \
                 updated_at = excluded.updated_at"
            );
            // The statement differs only by a fixed conflict target chosen above.
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(Uuid::now_v7())
                .bind(organization_id)
                .bind(mcp_service_id)
                .bind(year)
                .bind(month)
                .bind(day)
                .bind(inc.requests)
                .bind(inc.duration_ms)
                .bind(inc.successes)
                .bind(inc.failures)
                .bind(now)
                .execute(&mut *c)
                .await?;
        }
        Ok::<_, sqlx::Error>(())
    })
}
