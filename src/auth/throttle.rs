//! Sign-in throttling. Per account (by email, whether or not it exists), from failures kept in
//! the database so every instance agrees: after 5 failures in 15 minutes each further attempt
//! waits 1, 2, 4 ... up to 300 seconds after the last failure, and no more than 100 failures are
//! allowed in an hour. Per client IP, a token bucket in memory (per instance).

use std::net::IpAddr;
use std::num::NonZeroU32;

use chrono::{DateTime, Duration, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub const FREE_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
pub const HOURLY_CAP: usize = 100;
pub const MAX_DELAY_SECS: i64 = 300;

/// How long an account must wait before its next attempt, given its failures of the last hour
/// (oldest first); `None` when it may try now.
pub fn account_wait(failures: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<Duration> {
    let hour_ago = now - Duration::hours(1);
    let in_hour: Vec<_> = failures.iter().copied().filter(|t| *t > hour_ago).collect();
    if in_hour.len() >= HOURLY_CAP {
        let frees_up = in_hour[in_hour.len() - HOURLY_CAP] + Duration::hours(1);
        return Some(frees_up - now);
    }
    let window_start = now - FAILURE_WINDOW;
    let recent = in_hour.iter().filter(|t| **t > window_start).count();
    if recent < FREE_FAILURES {
        return None;
    }
    let exponent = (recent - FREE_FAILURES).min(16) as u32;
    let delay = Duration::seconds((1i64 << exponent).min(MAX_DELAY_SECS));
    let last = *in_hour.last()?;
    let until = last + delay;
    (until > now).then(|| until - now)
}

pub struct IpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl IpLimiter {
    pub fn per_minute(limit: u32) -> IpLimiter {
        let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
        IpLimiter { limiter: RateLimiter::keyed(Quota::per_minute(limit)) }
    }

    /// Takes one attempt from the IP's bucket; the error is the wait in seconds.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()).as_secs().max(1))
    }

    /// Forgets IPs whose buckets are full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures_at(now: DateTime<Utc>, seconds_ago: &[i64]) -> Vec<DateTime<Utc>> {
        let mut v: Vec<_> = seconds_ago.iter().map(|s| now - Duration::seconds(*s)).collect();
        v.sort();
        v
    }

    #[test]
    fn five_failures_are_free_then_the_wait_grows() {
        let now = Utc::now();
        assert_eq!(account_wait(&failures_at(now, &[50, 40, 30, 20]), now), None);
        let five = failures_at(now, &[50, 40, 30, 20, 0]);
        assert_eq!(account_wait(&five, now), Some(Duration::seconds(1)));
        let eight = failures_at(now, &[80, 70, 60, 50, 40, 30, 20, 0]);
        assert_eq!(account_wait(&eight, now), Some(Duration::seconds(8)));
        assert_eq!(account_wait(&eight, now + Duration::seconds(8)), None);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let now = Utc::now();
        let old = failures_at(now, &[1000, 990, 980, 970, 960]);
        assert_eq!(account_wait(&old, now), None);
    }

    #[test]
    fn the_wait_is_capped_and_so_is_the_hour() {
        let now = Utc::now();
        let many: Vec<i64> = (0..40).map(|i| i * 10).collect();
        let wait = account_wait(&failures_at(now, &many), now).unwrap();
        assert_eq!(wait, Duration::seconds(MAX_DELAY_SECS));
        let hundred: Vec<i64> = (0..100).map(|i| 3000 - i * 30).collect();
        let failures = failures_at(now, &hundred);
        let wait = account_wait(&failures, now + Duration::seconds(MAX_DELAY_SECS)).unwrap();
        assert!(wait > Duration::zero(), "the 101st failure in an hour must wait");
    }

    #[test]
    fn ip_limiter_refuses_past_its_quota() {
        let limiter = IpLimiter::per_minute(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
        }
        assert!(limiter.check(ip).is_err());
        assert!(limiter.check("192.0.2.2".parse().unwrap()).is_ok(), "other IPs are unaffected");
    }
}
