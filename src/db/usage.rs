//! Usage counts: `service_usage` (daily rows and monthly rows, `day` NULL) and the
//! `usage_rollups` the charts read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{CompactTime, Conn};
use crate::ids::{KeyId, OrgId, ServiceId, UserId};
use crate::on_conn;
use crate::telemetry::rollup::{BUCKETS, Counts, Grain, Level, RollupKey};

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
        for chunk in super::runs(&rollups, ROLLUPS_PER_STATEMENT) {
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
            insert.build().execute(&mut *c).await?;
        }
        Ok(())
    })
}

/// Whose calls a roll-up query counts: the organization's, or one member's (their keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Organization,
    Member(UserId),
}

/// A stretch of periods of one grain: `from` inclusive, `to` exclusive, both period starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub grain: Grain,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// What a breakdown groups roll-ups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakdown {
    Service,
    Tool,
    Key,
    Member,
}

/// One row of a breakdown: what it is (service, tool, key or member, named) and its counts
/// (duration buckets not summed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakdownRow {
    pub label: String,
    /// The service, for tools.
    pub service: Option<String>,
    pub counts: Counts,
}

/// Counts read from a row's columns from `first` on, in `SUMS` order, then the duration
/// buckets when `with_buckets`.
fn counts_at<R: Row>(row: &R, first: usize, with_buckets: bool) -> sqlx::Result<Counts>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut counts = Counts {
        requests: row.try_get(first)?,
        tool_errors: row.try_get(first + 1)?,
        failures: row.try_get(first + 2)?,
        duration_ms: row.try_get(first + 3)?,
        ..Counts::default()
    };
    if with_buckets {
        for (b, count) in counts.buckets.iter_mut().enumerate() {
            *count = row.try_get(first + 4 + b)?;
        }
    }
    Ok(counts)
}

const SUMS: &str = "CAST(SUM(requests) AS BIGINT), CAST(SUM(tool_errors) AS BIGINT), \
     CAST(SUM(failures) AS BIGINT), CAST(SUM(duration_ms) AS BIGINT)";

/// The counts per period of the window, with duration buckets, for one service or all; only
/// periods with calls are returned.
pub async fn series(
    conn: Conn<'_>,
    organization_id: OrgId,
    window: Window,
    service: Option<ServiceId>,
    whose: Whose,
) -> sqlx::Result<Vec<(DateTime<Utc>, Counts)>> {
    let buckets: String = (0..BUCKETS).map(|b| format!(", CAST(SUM(b{b}) AS BIGINT)")).collect();
    // A member's own calls are only in the caller level; the organization's are cheapest in the
    // service level.
    let (level, member) = match whose {
        Whose::Organization => (Level::Service, None),
        Whose::Member(user) => (Level::Caller, Some(user)),
    };
    let sql = format!(
        "SELECT period_start, {SUMS}{buckets} FROM usage_rollups \
         WHERE organization_id = $1 AND level = $2 AND grain = $3 AND period_start >= $4 AND period_start < $5 \
         AND ($6 IS NULL OR mcp_service_id = $6) AND ($7 IS NULL OR user_id = $7) \
         GROUP BY period_start ORDER BY period_start"
    );
    on_conn!(conn, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(organization_id)
            .bind(level.code())
            .bind(window.grain.code())
            .bind(CompactTime(window.from))
            .bind(CompactTime(window.to))
            .bind(service)
            .bind(member)
            .fetch_all(c)
            .await?;
        rows.iter()
            .map(|row| {
                let period: CompactTime = row.try_get(0)?;
                Ok((period.0, counts_at(row, 1, true)?))
            })
            .collect()
    })
}

/// The window's counts grouped by service, tool, key or member, most requests first, at most
/// `limit` rows. Keys and members of `Whose::Member` are that member's own.
pub async fn breakdown(
    conn: Conn<'_>,
    organization_id: OrgId,
    window: Window,
    service: Option<ServiceId>,
    whose: Whose,
    by: Breakdown,
    limit: i64,
) -> sqlx::Result<Vec<BreakdownRow>> {
    let member = match whose {
        Whose::Organization => None,
        Whose::Member(user) => Some(user),
    };
    // Each grouping reads the level that keeps its dimension (a member's own calls: the caller
    // level only), and names it with a join on the few grouped rows.
    let (level, group, label, service_label, join) = match (by, member) {
        (Breakdown::Service, None) => (
            Level::Service,
            "r.mcp_service_id",
            "s.name",
            "NULL",
            "LEFT JOIN mcp_services s ON s.id = g.mcp_service_id",
        ),
        (Breakdown::Service, Some(_)) => (
            Level::Caller,
            "r.mcp_service_id",
            "s.name",
            "NULL",
            "LEFT JOIN mcp_services s ON s.id = g.mcp_service_id",
        ),
        (Breakdown::Tool, _) => (
            Level::Tool,
            "r.mcp_service_id, r.tool_name",
            "g.tool_name",
            "s.name",
            "LEFT JOIN mcp_services s ON s.id = g.mcp_service_id",
        ),
        (Breakdown::Key, _) => (
            Level::Caller,
            "r.api_key_id",
            "k.name || ' (' || k.display_key || ')'",
            "NULL",
            "LEFT JOIN api_keys k ON k.id = g.api_key_id",
        ),
        (Breakdown::Member, _) => {
            (Level::Caller, "r.user_id", "u.email", "NULL", "LEFT JOIN users u ON u.id = g.user_id")
        }
    };
    let columns = group.replace("r.", "");
    let sql = format!(
        "SELECT {label}, {service_label}, g.requests, g.tool_errors, g.failures, g.duration_ms FROM ( \
         SELECT {group}, CAST(SUM(r.requests) AS BIGINT) AS requests, CAST(SUM(r.tool_errors) AS BIGINT) AS tool_errors, \
         CAST(SUM(r.failures) AS BIGINT) AS failures, CAST(SUM(r.duration_ms) AS BIGINT) AS duration_ms \
         FROM usage_rollups r WHERE r.organization_id = $1 AND r.level = $2 AND r.grain = $3 \
         AND r.period_start >= $4 AND r.period_start < $5 AND ($6 IS NULL OR r.mcp_service_id = $6) \
         AND ($7 IS NULL OR r.user_id = $7) GROUP BY {group} ORDER BY requests DESC, {columns} LIMIT $8) g {join} \
         ORDER BY g.requests DESC, {label}"
    );
    // Only the fixed fragments chosen above make up the statement.
    on_conn!(conn, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(organization_id)
            .bind(level.code())
            .bind(window.grain.code())
            .bind(CompactTime(window.from))
            .bind(CompactTime(window.to))
            .bind(service)
            .bind(member)
            .bind(limit)
            .fetch_all(c)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(BreakdownRow {
                    label: row.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                    service: row.try_get(1)?,
                    counts: counts_at(row, 2, false)?,
                })
            })
            .collect()
    })
}

/// The dimensions a request-log search filters on, as far as the roll-ups keep them.
#[derive(Debug, Clone, Default)]
pub struct Dimensions {
    pub service: Option<ServiceId>,
    pub tool: Option<String>,
    pub key: Option<KeyId>,
    pub user: Option<UserId>,
}

/// The start of the newest hour in `[from, below)` with calls that match the dimensions, from
/// the hourly roll-ups: a request-log search skips the hours after it. `None` when no hour has
/// any; a search without dimensions gets `below` back.
pub async fn newest_hour_with(
    conn: Conn<'_>,
    organization_id: OrgId,
    dims: &Dimensions,
    from: Option<DateTime<Utc>>,
    below: DateTime<Utc>,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    // The level that keeps every dimension asked for; the tool is left out when a key or
    // member is asked for too (no level keeps both), which only makes the skip shorter.
    let level = if dims.key.is_some() || dims.user.is_some() {
        Level::Caller
    } else if dims.tool.is_some() {
        Level::Tool
    } else if dims.service.is_some() {
        Level::Service
    } else {
        return Ok(Some(below));
    };
    let tool = if level == Level::Tool { dims.tool.clone() } else { None };
    on_conn!(conn, c => sqlx::query_scalar::<_, CompactTime>(
        "SELECT period_start FROM usage_rollups WHERE organization_id = $1 AND level = $2 AND grain = $3 \
         AND period_start < $4 AND period_start >= $5 AND ($6 IS NULL OR mcp_service_id = $6) \
         AND ($7 IS NULL OR tool_name = $7) AND ($8 IS NULL OR api_key_id = $8) AND ($9 IS NULL OR user_id = $9) \
         ORDER BY period_start DESC LIMIT 1",
    )
    .bind(organization_id)
    .bind(level.code())
    .bind(Grain::Hour.code())
    .bind(CompactTime(below))
    .bind(CompactTime(from.map_or(DateTime::UNIX_EPOCH, |f| Grain::Hour.start(f))))
    .bind(dims.service)
    .bind(tool)
    .bind(dims.key)
    .bind(dims.user)
    .fetch_optional(c)
    .await
    .map(|found| found.map(|t| t.0)))
}

/// Each service's calls since `since` (hourly roll-ups, with duration buckets) and its last
/// successful call ever (monthly roll-ups), for the organization's service health.
pub async fn service_health(
    conn: Conn<'_>,
    organization_id: OrgId,
    since: DateTime<Utc>,
) -> sqlx::Result<std::collections::HashMap<ServiceId, Counts>> {
    let buckets: String = (0..BUCKETS).map(|b| format!(", CAST(SUM(b{b}) AS BIGINT)")).collect();
    let recent = format!(
        "SELECT mcp_service_id, {SUMS}{buckets} FROM usage_rollups WHERE organization_id = $1 AND level = $2 \
         AND grain = $3 AND period_start >= $4 GROUP BY mcp_service_id"
    );
    let last = "SELECT mcp_service_id, MAX(last_success_at) FROM usage_rollups WHERE organization_id = $1 \
                AND level = $2 AND grain = $3 GROUP BY mcp_service_id";
    let mut health = std::collections::HashMap::new();
    on_conn!(conn, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(recent))
            .bind(organization_id)
            .bind(Level::Service.code())
            .bind(Grain::Hour.code())
            .bind(CompactTime(since))
            .fetch_all(&mut *c)
            .await?;
        for row in &rows {
            let service: ServiceId = row.try_get(0)?;
            health.insert(service, counts_at(row, 1, true)?);
        }
        let rows: Vec<(ServiceId, Option<CompactTime>)> = sqlx::query_as(last)
            .bind(organization_id)
            .bind(Level::Service.code())
            .bind(Grain::Month.code())
            .fetch_all(&mut *c)
            .await?;
        for (service, at) in rows {
            health.entry(service).or_insert_with(Counts::default).last_success_at = at.map(|t| t.0);
        }
        Ok(health)
    })
}

/// The organization's requests of `day` that count against its daily quota.
pub async fn daily_requests(
    conn: Conn<'_>,
    organization_id: OrgId,
    day: chrono::NaiveDate,
) -> sqlx::Result<i64> {
    on_conn!(conn, c => sqlx::query_scalar::<_, i64>(
        "SELECT requests FROM daily_requests WHERE organization_id = $1 AND day = $2",
    )
    .bind(organization_id)
    .bind(day)
    .fetch_optional(c)
    .await
    .map(Option::unwrap_or_default))
}

/// Takes one request from the organization's `day` (PostgreSQL: at admission, so instances
/// sharing the database count together): the count after it, or `None` when `per_day` were
/// taken already.
pub async fn take_daily_request(
    conn: Conn<'_>,
    organization_id: OrgId,
    day: chrono::NaiveDate,
    per_day: i64,
) -> sqlx::Result<Option<i64>> {
    on_conn!(conn, c => sqlx::query_scalar::<_, i64>(
        "INSERT INTO daily_requests (organization_id, day, requests) VALUES ($1, $2, 1) \
         ON CONFLICT (organization_id, day) DO UPDATE SET requests = daily_requests.requests + 1 \
         WHERE daily_requests.requests < $3 RETURNING requests",
    )
    .bind(organization_id)
    .bind(day)
    .bind(per_day)
    .fetch_optional(c)
    .await)
}

/// Adds counted requests to each organization's day (SQLite: as the request-log writer
/// records them).
pub async fn add_daily_requests(
    conn: Conn<'_>,
    counts: &BTreeMap<(OrgId, chrono::NaiveDate), i64>,
) -> sqlx::Result<()> {
    on_conn!(conn, c => {
        for ((organization_id, day), requests) in counts {
            sqlx::query(
                "INSERT INTO daily_requests (organization_id, day, requests) VALUES ($1, $2, $3) \
                 ON CONFLICT (organization_id, day) DO UPDATE SET requests = daily_requests.requests + excluded.requests",
            )
            .bind(organization_id)
            .bind(day)
            .bind(requests)
            .execute(&mut *c)
            .await?;
        }
        Ok(())
    })
}

/// Deletes the organization's roll-ups that retention has passed: hourly ones ending before
/// `hourly_cutoff` (kept as long as the logs), daily and monthly ones ending before `cutoff`.
pub async fn delete_rollups_before(
    conn: Conn<'_>,
    organization_id: OrgId,
    hourly_cutoff: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<u64> {
    on_conn!(conn, c => sqlx::query(
        "DELETE FROM usage_rollups WHERE organization_id = $1 AND ((grain = $2 AND period_start < $3) \
         OR (grain = $4 AND period_start < $5) OR (grain = $6 AND period_start < $7))",
    )
    .bind(organization_id)
    .bind(Grain::Hour.code())
    .bind(CompactTime(hourly_cutoff - chrono::Duration::hours(1)))
    .bind(Grain::Day.code())
    .bind(CompactTime(cutoff - chrono::Duration::days(1)))
    .bind(Grain::Month.code())
    .bind(CompactTime(cutoff - chrono::Duration::days(31)))
    .execute(c)
    .await
    .map(|done| done.rows_affected()))
}

/// Deletes the organization's daily request counts of days before `day`.
pub async fn delete_daily_requests_before(
    conn: Conn<'_>,
    organization_id: OrgId,
    day: chrono::NaiveDate,
) -> sqlx::Result<u64> {
    on_conn!(conn, c => sqlx::query("DELETE FROM daily_requests WHERE organization_id = $1 AND day < $2")
        .bind(organization_id)
        .bind(day)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))
}

/// Folds the member's roll-up rows (the caller level) into rows without member or key, so the
/// counts stay and the member is no longer in them.
pub async fn forget_member(conn: Conn<'_>, organization_id: OrgId, member: UserId) -> sqlx::Result<()> {
    let buckets: String = (0..BUCKETS).map(|b| format!(", b{b}")).collect();
    let sums: String = (0..BUCKETS).map(|b| format!(", SUM(b{b})")).collect();
    let added: String =
        (0..BUCKETS).map(|b| format!(", b{b} = usage_rollups.b{b} + excluded.b{b}")).collect();
    let fold = format!(
        "INSERT INTO usage_rollups (organization_id, level, grain, period_start, mcp_service_id, tool_name, api_key_id, \
         user_id, requests, tool_errors, failures, duration_ms, last_success_at{buckets}) \
         SELECT organization_id, level, grain, period_start, mcp_service_id, tool_name, $3, $3, SUM(requests), \
         SUM(tool_errors), SUM(failures), SUM(duration_ms), MAX(last_success_at){sums} FROM usage_rollups \
         WHERE organization_id = $1 AND user_id = $2 GROUP BY organization_id, level, grain, period_start, mcp_service_id, tool_name \
         ON CONFLICT (organization_id, level, grain, period_start, mcp_service_id, tool_name, api_key_id, user_id) \
         DO UPDATE SET requests = usage_rollups.requests + excluded.requests, \
         tool_errors = usage_rollups.tool_errors + excluded.tool_errors, failures = usage_rollups.failures + excluded.failures, \
         duration_ms = usage_rollups.duration_ms + excluded.duration_ms, \
         last_success_at = CASE WHEN usage_rollups.last_success_at IS NULL OR excluded.last_success_at > usage_rollups.last_success_at \
         THEN excluded.last_success_at ELSE usage_rollups.last_success_at END{added}"
    );
    on_conn!(conn, c => {
        sqlx::query(sqlx::AssertSqlSafe(fold))
            .bind(organization_id)
            .bind(member)
            .bind(Uuid::nil())
            .execute(&mut *c)
            .await?;
        sqlx::query("DELETE FROM usage_rollups WHERE organization_id = $1 AND user_id = $2")
            .bind(organization_id)
            .bind(member)
            .execute(&mut *c)
            .await?;
        Ok(())
    })
}
