//! The `service_usage` roll-ups: daily rows and monthly rows (`day` NULL).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{CompactTime, Conn};
use crate::ids::{KeyId, OrgId, ServiceId, UserId};
use crate::on_conn;
use crate::telemetry::rollup::{BUCKETS, Counts, RollupKey};

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

/// Roll-up rows per INSERT statement: 31 parameters each stays within both databases' limits.
const ROLLUPS_PER_STATEMENT: usize = 200;

/// Adds counts to the roll-up rows they belong to, creating the rows that do not exist yet.
pub async fn add_rollups(conn: Conn<'_>, rollups: &BTreeMap<RollupKey, Counts>) -> sqlx::Result<()> {
    let rollups: Vec<_> = rollups.iter().collect();
    let buckets: String = (0..BUCKETS).map(|b| format!(", b{b}")).collect();
    let added: String =
        (0..BUCKETS).map(|b| format!(", b{b} = usage_rollups.b{b} + excluded.b{b}")).collect();
    on_conn!(conn, c => {
        for chunk in rollups.chunks(ROLLUPS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO usage_rollups (organization_id, level, grain, period_start, mcp_service_id, tool_name, \
                 api_key_id, user_id, requests, tool_errors, failures, duration_ms, last_success_at{buckets}) "
            ));
            insert.push_values(chunk, |mut values, (key, counts)| {
                values
                    .push_bind(key.organization_id)
                    .push_bind(key.level.code())
                    .push_bind(key.grain.code())
                    .push_bind(CompactTime(key.period_start))
                    .push_bind(key.service.map_or(Uuid::nil(), ServiceId::as_uuid))
                    .push_bind(&key.tool)
                    .push_bind(key.key.map_or(Uuid::nil(), KeyId::as_uuid))
                    .push_bind(key.user.map_or(Uuid::nil(), UserId::as_uuid))
                    .push_bind(counts.requests)
                    .push_bind(counts.tool_errors)
                    .push_bind(counts.failures)
                    .push_bind(counts.duration_ms)
                    .push_bind(counts.last_success_at.map(CompactTime));
                for count in counts.buckets {
                    values.push_bind(count);
                }
            });
            insert.push(format!(
                " ON CONFLICT (organization_id, level, grain, period_start, mcp_service_id, tool_name, api_key_id, user_id) \
                 DO UPDATE SET requests = usage_rollups.requests + excluded.requests, \
                 tool_errors = usage_rollups.tool_errors + excluded.tool_errors, \
                 failures = usage_rollups.failures + excluded.failures, \
                 duration_ms = usage_rollups.duration_ms + excluded.duration_ms, \
                 last_success_at = CASE WHEN usage_rollups.last_success_at IS NULL \
                 OR excluded.last_success_at > usage_rollups.last_success_at \
                 THEN excluded.last_success_at ELSE usage_rollups.last_success_at END{added}"
            ));
            // Batches differ in size: their statements are not worth keeping prepared.
            insert.build().persistent(false).execute(&mut *c).await?;
        }
        Ok(())
    })
}
