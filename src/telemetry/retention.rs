//! Retention: each organization's request logs, roll-ups and audit trail are deleted once older
//! than its settings say, in small batches, each its own short transaction, so the gateway's
//! writer never waits long; on PostgreSQL a monthly `request_logs` partition that every
//! organization's retention has passed is dropped whole. And erasure: one member's request
//! logs, on an admin's request, with the roll-ups keeping the counts without the member.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use crate::db::organizations::Settings;
use crate::db::{self, Db};
use crate::ids::{LogId, OrgId, UserId};

/// Rows deleted per statement.
pub const BATCH: i64 = 2_000;

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub logs: u64,
    pub rollups: u64,
    pub audit: u64,
    /// PostgreSQL partitions dropped whole.
    pub partitions: Vec<String>,
}

/// Deletes what every organization keeps no longer, as of `now`.
pub async fn enforce(db: &Db, now: DateTime<Utc>, batch: i64) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let organizations = {
        let mut conn = db.acquire().await?;
        db::organizations::retention_settings(conn.conn()).await?
    };
    for (organization_id, settings) in &organizations {
        removed.logs += logs_before(db, *organization_id, log_cutoff(settings, now), batch).await?;
        let mut conn = db.acquire().await?;
        removed.rollups += db::usage::delete_rollups_before(
            conn.conn(),
            *organization_id,
            log_cutoff(settings, now),
            rollup_cutoff(settings, now),
        )
        .await?;
        removed.audit += db::audit::delete_before(
            conn.conn(),
            *organization_id,
            now - days(settings.audit_retention_days),
        )
        .await?;
        db::usage::delete_daily_requests_before(
            conn.conn(),
            *organization_id,
            (now - Duration::days(7)).date_naive(),
        )
        .await?;
    }
    // A partition can go once no organization keeps anything in it.
    let oldest_kept = organizations.iter().map(|(_, s)| log_cutoff(s, now)).min().unwrap_or(now);
    removed.partitions = db.drop_log_partitions_before(oldest_kept.date_naive()).await?;
    Ok(removed)
}

fn days(n: u16) -> Duration {
    Duration::days(i64::from(n))
}

fn log_cutoff(settings: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
    now - days(settings.log_retention_days)
}

fn rollup_cutoff(settings: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
    now - days(settings.rollup_retention_days)
}

/// Deletes the organization's calls that arrived before `cutoff`, a batch at a time.
async fn logs_before(
    db: &Db,
    organization_id: OrgId,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> anyhow::Result<u64> {
    let below = LogId::floor(cutoff);
    let mut total = 0;
    loop {
        let deleted = {
            let mut conn = db.acquire().await?;
            db::request_logs::delete_batch(conn.conn(), organization_id, None, Some(below), batch).await?
        };
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
        // Let the gateway's writer in between batches.
        tokio::task::yield_now().await;
    }
}

/// Erases one member's request logs: the rows go, a batch at a time; the roll-ups keep their
/// counts, no longer split by the member or their keys. Returns the rows deleted.
pub async fn erase_member(
    db: &Db,
    organization_id: OrgId,
    member: UserId,
    batch: i64,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = {
            let mut conn = db.acquire().await?;
            db::request_logs::delete_batch(conn.conn(), organization_id, Some(member), None, batch).await?
        };
        total += deleted;
        if deleted < batch as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut tx = db.begin().await?;
    db::usage::forget_member(tx.conn(), organization_id, member).await?;
    tx.commit().await?;
    Ok(total)
}

/// The first day of the month after `day`'s: where a monthly partition starting at `day` ends.
pub fn month_after(day: NaiveDate) -> Option<NaiveDate> {
    let first = day.with_day(1)?;
    first.checked_add_months(chrono::Months::new(1))
}
