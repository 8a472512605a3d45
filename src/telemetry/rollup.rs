//! Usage roll-ups: what the charts read instead of the request logs. Each batch of log rows
//! adds to hourly, daily and monthly counts at three levels of detail (per service, per service
//! x tool, per service x key x member), so a chart reads few rows: requests by outcome, total
//! duration, and durations in fixed logarithmic buckets, so that the p50 and p95 of any range
//! come from summed buckets.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Months, TimeZone, Timelike, Utc};

use crate::db::request_logs::{NewRequestLog, Outcome};
use crate::ids::{KeyId, OrgId, ServiceId, UserId};

/// Duration buckets: 0 under 1 ms, N from 2^(N-1) ms to under 2^N ms, the last from 65536 ms.
pub const BUCKETS: usize = 18;

/// Tool names longer than this are cut in the roll-ups (they come from clients).
const TOOL_NAME_LIMIT: usize = 100;

pub fn bucket(duration_ms: i64) -> usize {
    if duration_ms < 1 { 0 } else { (64 - duration_ms.leading_zeros() as usize).min(BUCKETS - 1) }
}

/// The durations a bucket holds, in ms: from `lower` to under `upper` (none for the last).
pub fn bucket_range(bucket: usize) -> (f64, Option<f64>) {
    match bucket {
        0 => (0.0, Some(1.0)),
        b if b >= BUCKETS - 1 => ((1u64 << (BUCKETS - 2)) as f64, None),
        b => ((1u64 << (b - 1)) as f64, Some((1u64 << b) as f64)),
    }
}

/// The periods counts are rolled up by, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    Hour,
    Day,
    Month,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Hour, Grain::Day, Grain::Month];

    /// As the `grain` column stores it.
    pub fn code(self) -> i16 {
        match self {
            Grain::Hour => 0,
            Grain::Day => 1,
            Grain::Month => 2,
        }
    }

    /// The start of the period `at` falls in.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let start = match self {
            Grain::Hour => day.and_hms_opt(at.hour(), 0, 0),
            Grain::Day => day.and_hms_opt(0, 0, 0),
            Grain::Month => day.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        };
        start.map_or(at, |s| Utc.from_utc_datetime(&s))
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Grain::Hour => start + chrono::Duration::hours(1),
            Grain::Day => start + chrono::Duration::days(1),
            Grain::Month => start.checked_add_months(Months::new(1)).unwrap_or(start),
        }
    }
}

/// How much detail a roll-up row keeps besides its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Service,
    Tool,
    Caller,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Service, Level::Tool, Level::Caller];

    /// As the `level` column stores it.
    pub fn code(self) -> i16 {
        match self {
            Level::Service => 0,
            Level::Tool => 1,
            Level::Caller => 2,
        }
    }
}

/// Counts of calls: by outcome, total duration and duration buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: i64,
    pub tool_errors: i64,
    pub failures: i64,
    pub duration_ms: i64,
    pub last_success_at: Option<DateTime<Utc>>,
    pub buckets: [i64; BUCKETS],
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            requests: 0,
            tool_errors: 0,
            failures: 0,
            duration_ms: 0,
            last_success_at: None,
            buckets: [0; BUCKETS],
        }
    }
}

impl Counts {
    pub fn add_call(&mut self, outcome: Outcome, duration_ms: i64, at: DateTime<Utc>) {
        self.requests += 1;
        match outcome {
            Outcome::Success => self.last_success_at = self.last_success_at.max(Some(at)),
            Outcome::ToolError => self.tool_errors += 1,
            Outcome::Failure => self.failures += 1,
        }
        self.duration_ms += duration_ms.max(0);
        self.buckets[bucket(duration_ms)] += 1;
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.tool_errors += other.tool_errors;
        self.failures += other.failures;
        self.duration_ms += other.duration_ms;
        self.last_success_at = self.last_success_at.max(other.last_success_at);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }

    /// All of them added up.
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Counts>) -> Counts {
        let mut total = Counts::default();
        all.into_iter().for_each(|c| total.merge(c));
        total
    }

    pub fn successes(&self) -> i64 {
        self.requests - self.tool_errors - self.failures
    }

    /// The mean duration in ms; `None` without requests.
    pub fn average(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.duration_ms as f64 / self.requests as f64)
    }

    /// Tool errors and failures as a share of all requests; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.tool_errors + self.failures) as f64 / self.requests as f64)
    }

    /// The duration (ms) under which a share `p` of the calls finished, estimated from the
    /// buckets by interpolating inside the bucket that holds that rank; `None` without calls.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total: i64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (p.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut below = 0.0;
        for (b, &count) in self.buckets.iter().enumerate() {
            let count = count as f64;
            if count > 0.0 && below + count >= rank {
                let (lower, upper) = bucket_range(b);
                return Some(match upper {
                    Some(upper) => lower + (upper - lower) * (rank - below) / count,
                    None => lower,
                });
            }
            below += count;
        }
        None
    }
}

/// What one roll-up row counts: a period and the dimensions of the calls in it. `None`
/// dimensions are stored as the nil UUID (no service, no key, no member) and '' (no tool), as
/// are the dimensions a level does not keep.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub organization_id: OrgId,
    pub level: Level,
    pub grain: Grain,
    pub period_start: DateTime<Utc>,
    pub service: Option<ServiceId>,
    pub tool: String,
    pub key: Option<KeyId>,
    pub user: Option<UserId>,
}

/// The roll-up increments of a batch of log rows, one entry per row to change.
pub fn rollups_of(rows: &[NewRequestLog]) -> BTreeMap<RollupKey, Counts> {
    // Counted first per hour and caller, borrowing the tool name, then spread over the levels
    // and grains: a batch has far fewer of those than rows.
    type Finest<'a> = (OrgId, DateTime<Utc>, Option<ServiceId>, &'a str, Option<KeyId>, Option<UserId>);
    let mut finest: HashMap<Finest<'_>, Counts> = HashMap::new();
    for row in rows {
        let tool = row.tool_name.as_deref().unwrap_or_default();
        let tool = tool.char_indices().nth(TOOL_NAME_LIMIT).map_or(tool, |(end, _)| &tool[..end]);
        let hour = Grain::Hour.start(row.created_at);
        finest
            .entry((row.organization_id, hour, row.mcp_service_id, tool, row.api_key_id, row.user_id))
            .or_default()
            .add_call(row.outcome, row.duration_ms, row.created_at);
    }
    let mut rollups: BTreeMap<RollupKey, Counts> = BTreeMap::new();
    for ((organization_id, hour, service, tool, key, user), counts) in finest {
        for level in Level::ALL {
            let (tool, key, user) = match level {
                Level::Service => ("", None, None),
                Level::Tool => (tool, None, None),
                Level::Caller => ("", key, user),
            };
            for grain in Grain::ALL {
                let key = RollupKey {
                    organization_id,
                    level,
                    grain,
                    period_start: grain.start(hour),
                    service,
                    tool: tool.to_owned(),
                    key,
                    user,
                };
                rollups.entry(key).or_default().merge(&counts);
            }
        }
    }
    rollups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_in_width() {
        assert_eq!(
            [0, 1, 2, 3, 4, 7, 8, 1000, 65535, 65536, i64::MAX].map(bucket),
            [0, 1, 2, 2, 3, 3, 4, 10, 16, 17, 17]
        );
        assert_eq!(bucket(-5), 0, "a clock that went back counts as instant");
        for d in [0i64, 1, 3, 500, 40_000] {
            let (lower, upper) = bucket_range(bucket(d));
            assert!(lower <= d as f64 && upper.is_none_or(|u| (d as f64) < u), "{d} in {lower}..{upper:?}");
        }
    }

    #[test]
    fn periods_start_on_utc_boundaries() {
        let at: DateTime<Utc> = "2026-03-31T23:59:59.5Z".parse().unwrap();
        assert_eq!(Grain::Hour.start(at).to_rfc3339(), "2026-03-31T23:00:00+00:00");
        assert_eq!(Grain::Day.start(at).to_rfc3339(), "2026-03-31T00:00:00+00:00");
        assert_eq!(Grain::Month.start(at).to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(Grain::Month.next(Grain::Month.start(at)).to_rfc3339(), "2026-04-01T00:00:00+00:00");
        assert_eq!(Grain::Day.next(Grain::Day.start(at)).to_rfc3339(), "2026-04-01T00:00:00+00:00");
    }

    /// The exact percentile by nearest rank.
    fn exact(sorted: &[i64], p: f64) -> i64 {
        let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_from_buckets_are_within_one_bucket_of_the_exact_value() {
        // A spread of durations from a small deterministic generator: fast calls, a slow tail.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..50 {
            let mut counts = Counts::default();
            let mut durations = Vec::new();
            for _ in 0..(1 + round * 37) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let d = match seed % 10 {
                    0 => (seed >> 8) as i64 % 70_000,
                    1..=3 => (seed >> 8) as i64 % 400,
                    _ => (seed >> 8) as i64 % 12,
                };
                durations.push(d);
                counts.add_call(Outcome::Success, d, Utc::now());
            }
            durations.sort();
            for p in [0.5, 0.95, 0.99] {
                let estimate = counts.percentile(p).unwrap();
                let truth = exact(&durations, p);
                let (b_est, b_true) = (bucket(estimate as i64), bucket(truth));
                assert!(
                    b_est.abs_diff(b_true) <= 1,
                    "p{p}: estimated {estimate} (bucket {b_est}), exact {truth} (bucket {b_true})"
                );
            }
        }
        assert_eq!(Counts::default().percentile(0.5), None);
    }

    #[test]
    fn counts_merge_and_split_by_outcome() {
        let at: DateTime<Utc> = "2026-03-10T12:00:00Z".parse().unwrap();
        let mut a = Counts::default();
        a.add_call(Outcome::Success, 3, at);
        a.add_call(Outcome::ToolError, 5, at);
        let mut b = Counts::default();
        b.add_call(Outcome::Failure, 100_000, at);
        b.add_call(Outcome::Success, 0, at + chrono::Duration::hours(1));
        a.merge(&b);
        assert_eq!((a.requests, a.successes(), a.tool_errors, a.failures), (4, 2, 1, 1));
        assert_eq!(a.duration_ms, 100_008);
        assert_eq!(a.last_success_at, Some(at + chrono::Duration::hours(1)));
        assert_eq!(a.error_rate(), Some(0.5));
        assert_eq!(a.buckets[17], 1);
    }
}
