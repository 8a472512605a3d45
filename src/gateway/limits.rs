//! The organization's plan at the gateway: a daily quota of requests per organization and a
//! rate limit per API key. The daily count is the database's (`daily_requests`): on PostgreSQL,
//! where several instances may share it, each counted request takes one from it as it is
//! admitted, so the instances' counts add up exactly; on SQLite (one instance) it is kept in
//! memory, started from the database's count for the day (which the request-log writer adds to
//! with each batch), so it survives a restart. The per-key limit is a token bucket in memory,
//! per instance.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use chrono::{DateTime, NaiveDate, Utc};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::jsonrpc::Message;
use super::refusal::{RATE_LIMITED, Refusal};
use crate::auth::throttle::LimiterClock;
use crate::catalog::plans::Plan;
use crate::clock::SharedClock;
use crate::db::{self, Db};
use crate::ids::{KeyId, OrgId};

type Bucket = RateLimiter<NotKeyed, InMemoryState, LimiterClock, StateInformationMiddleware>;

/// Requests that open or probe a connection: never counted against the daily quota.
const UNCOUNTED: [&str; 3] = ["initialize", "ping", "server/discover"];

/// What is left of whichever limit is closer to running out, as the `X-RateLimit-*` headers
/// say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit is whole again.
    pub reset_seconds: u64,
}

impl Headroom {
    /// The closer of two limits: the one with fewer requests left.
    fn closer(a: Option<Headroom>, b: Option<Headroom>) -> Option<Headroom> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    pub fn apply(&self, headers: &mut actix_web::http::header::HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", self.reset_seconds),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// A request over a limit: the refusal to answer with and the headroom it leaves (none).
pub struct Limited {
    /// Which: `daily_quota` or `rate_limit`.
    pub limit: &'static str,
    /// (Boxed: refusals are rare, and every `take` returns room for one.)
    pub refusal: Box<Refusal>,
    pub headroom: Headroom,
}

/// What a message took from the limits.
pub struct Taken {
    pub headroom: Option<Headroom>,
    /// It counts against the daily quota.
    pub counted: bool,
}

pub struct Limits {
    clock: SharedClock,
    buckets: moka::sync::Cache<(KeyId, u32), Arc<Bucket>>,
    /// Each organization's requests of the day, as far as this instance knows.
    daily: Mutex<HashMap<OrgId, (NaiveDate, u64)>>,
}

/// Seconds from `now` to the next midnight UTC, when daily quotas start again.
fn until_midnight(now: DateTime<Utc>) -> u64 {
    let midnight = now.date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    // Rounded up: a client that waits this long finds the new day.
    midnight.map_or(0, |m| ((m - now).num_milliseconds().max(1) as u64).div_ceil(1000))
}

impl Limits {
    pub fn new(clock: SharedClock) -> Limits {
        Limits {
            clock,
            // Buckets of keys unused for ten minutes are full again: forgetting them changes nothing.
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            daily: Mutex::new(HashMap::new()),
        }
    }

    /// Takes what `message` needs from the key's rate limit (every request) and the
    /// organization's daily quota (requests other than `UNCOUNTED`); notifications and responses
    /// take nothing. Refused when either is used up.
    pub async fn take(
        &self,
        db: &Db,
        organization_id: OrgId,
        key: KeyId,
        plan: &Plan,
        key_rate: Option<u32>,
        message: &Message,
    ) -> Result<Taken, Limited> {
        let is_request = message.id().is_some() && message.method().is_some();
        let counted = is_request && !message.method().is_some_and(|m| UNCOUNTED.contains(&m));
        let rate = match (is_request, key_rate.or(plan.requests_per_minute)) {
            (true, Some(per_minute)) => Some(self.take_rate(key, per_minute)?),
            _ => None,
        };
        let quota = match plan.requests_per_day {
            Some(per_day) => Some(self.take_daily(db, organization_id, u64::from(per_day), counted).await?),
            None => None,
        };
        Ok(Taken {
            headroom: Headroom::closer(quota, rate),
            counted: counted && plan.requests_per_day.is_some(),
        })
    }

    fn take_rate(&self, key: KeyId, per_minute: u32) -> Result<Headroom, Limited> {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let clock = LimiterClock(self.clock.clone());
        let bucket = self.buckets.get_with((key, per_minute.get()), || {
            Arc::new(
                RateLimiter::direct_with_clock(Quota::per_minute(per_minute), clock.clone())
                    .with_middleware(),
            )
        });
        let limit = u64::from(per_minute.get());
        // One request's worth of the bucket comes back every `60 / limit` seconds.
        let refill = |missing: u64| (missing * 60).div_ceil(limit);
        match bucket.check() {
            Ok(state) => {
                let remaining = u64::from(state.remaining_burst_capacity());
                Ok(Headroom { limit, remaining, reset_seconds: refill(limit - remaining) })
            }
            Err(not_until) => {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(clock.now()).as_secs_f64().ceil().max(1.0) as u64;
                Err(Limited {
                    limit: "rate_limit",
                    refusal: Box::new(Refusal::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        RATE_LIMITED,
                        format!("Rate limit reached: this API key may make {limit} requests a minute; try again in {wait} s"),
                    )
                    .retry_after(wait)),
                    headroom: Headroom { limit, remaining: 0, reset_seconds: refill(limit) },
                })
            }
        }
    }

    async fn take_daily(
        &self,
        db: &Db,
        organization_id: OrgId,
        per_day: u64,
        counted: bool,
    ) -> Result<Headroom, Limited> {
        let now = self.clock.now();
        let today = now.date_naive();
        if counted && let Db::Postgres(_) = db {
            match self.take_shared(db, organization_id, today, per_day).await {
                Ok(used) => return headroom(per_day, used, now),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the request in the database; counting here")
                }
            }
        }
        let known = self.daily.lock().unwrap_or_else(|p| p.into_inner()).get(&organization_id).copied();
        if known.is_none_or(|(day, _)| day != today) {
            // First request of the day here: start from what the database counted (other
            // instances, or this one before a restart). Without it, from zero.
            let stored = async {
                let mut conn = db.acquire().await?;
                db::usage::daily_requests(conn.conn(), organization_id, today).await
            };
            let stored = stored.await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the day's request count; counting from zero");
                0
            });
            let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
            let entry = daily.entry(organization_id).or_insert((today, 0));
            if entry.0 != today {
                *entry = (today, 0);
            }
            entry.1 = entry.1.max(stored.max(0) as u64);
        }
        let used = {
            let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
            let used = &mut daily.entry(organization_id).or_insert((today, 0)).1;
            match counted {
                false => Some(*used),
                true if *used >= per_day => None,
                true => {
                    *used += 1;
                    Some(*used)
                }
            }
        };
        headroom(per_day, used, now)
    }

    /// Takes one from the organization's count for `today` in the database: the count after it,
    /// or `None` when the quota is used up. The count is also kept here, for the headroom of
    /// requests that are not counted.
    async fn take_shared(
        &self,
        db: &Db,
        organization_id: OrgId,
        today: NaiveDate,
        per_day: u64,
    ) -> sqlx::Result<Option<u64>> {
        let mut conn = db.acquire().await?;
        let used = db::usage::take_daily_request(conn.conn(), organization_id, today, per_day as i64).await?;
        let used = used.map(|used| used.max(0) as u64);
        let known = used.unwrap_or(per_day);
        let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        let entry = daily.entry(organization_id).or_insert((today, 0));
        *entry = if entry.0 == today { (today, entry.1.max(known)) } else { (today, known) };
        Ok(used)
    }
}

/// The headroom after a request that left `used` of the day's `per_day` taken, or the refusal
/// when `used` is `None` (the quota was used up).
fn headroom(per_day: u64, used: Option<u64>, now: DateTime<Utc>) -> Result<Headroom, Limited> {
    let reset_seconds = until_midnight(now);
    let Some(used) = used else {
        return Err(Limited {
            limit: "daily_quota",
            refusal: Box::new(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMITED,
                format!("Daily quota reached: the organization's plan allows {per_day} requests a day; it starts again at 00:00 UTC, in {reset_seconds} s"),
            )
            .retry_after(reset_seconds)),
            headroom: Headroom { limit: per_day, remaining: 0, reset_seconds },
        });
    };
    Ok(Headroom { limit: per_day, remaining: per_day.saturating_sub(used), reset_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_closer_limit_is_the_one_with_fewer_requests_left() {
        let quota = Headroom { limit: 1000, remaining: 10, reset_seconds: 3600 };
        let rate = Headroom { limit: 60, remaining: 59, reset_seconds: 1 };
        assert_eq!(Headroom::closer(Some(quota), Some(rate)), Some(quota));
        let rate = Headroom { remaining: 3, ..rate };
        assert_eq!(Headroom::closer(Some(quota), Some(rate)), Some(rate));
        assert_eq!(Headroom::closer(None, Some(rate)), Some(rate));
        assert_eq!(Headroom::closer(None, None), None);
    }

    #[test]
    fn quotas_start_again_at_midnight_utc() {
        let late = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 30).unwrap();
        assert_eq!(until_midnight(late), 30);
        assert_eq!(until_midnight(late + chrono::Duration::milliseconds(300)), 30, "rounded up");
        let early = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        assert_eq!(until_midnight(early), 86_400);
    }
}
