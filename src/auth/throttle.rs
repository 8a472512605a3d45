//! Sign-in throttling, from failures kept in the database so every instance agrees, per account
//! (by email, whether or not it exists):
//! - from a browser without a device cookie for the account: per account and client IP, after 5
//!   failures in 15 minutes each further attempt waits 1, 2, 4 ... up to 300 seconds after the
//!   last failure; and at most 100 such failures per account in an hour, from all IPs together;
//! - from a browser whose device cookie names the account (it signed in before): the same
//!   schedule on that browser's own failures only, so nobody else can lock the owner out of it.
//!
//! Per client IP, whatever the account, a token bucket in memory (per instance).

use std::net::IpAddr;
use std::num::NonZeroU32;

use chrono::{DateTime, Duration, Utc};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::SharedClock;

pub const FREE_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
pub const HOURLY_CAP: usize = 100;

/// One failed sign-in to an account.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
    /// The id of the device cookie it came with, when that named the account.
    pub device: Option<String>,
}

/// Who is trying to sign in: the client's IP and, when its device cookie names the account,
/// the cookie's device id.
pub struct Attempt<'a> {
    pub ip: Option<&'a str>,
    pub device: Option<&'a str>,
}

/// How long this attempt must wait, given the account's failures of the last hour (oldest
/// first); `None` when it may try now.
pub fn sign_in_wait(failures: &[Failure], attempt: &Attempt<'_>, now: DateTime<Utc>) -> Option<Duration> {
    let times = |keep: &dyn Fn(&Failure) -> bool| -> Vec<DateTime<Utc>> {
        failures.iter().filter(|f| keep(f)).map(|f| f.at).collect()
    };
    match attempt.device {
        Some(device) => account_wait(&times(&|f| f.device.as_deref() == Some(device)), now),
        None => {
            let pair = times(&|f| f.device.is_none() && f.ip.as_deref() == attempt.ip);
            let untrusted = times(&|f| f.device.is_none());
            account_wait(&pair, now).or_else(|| hourly_cap_wait(&untrusted, now))
        }
    }
}

/// The wait once `HOURLY_CAP` failures fall within the last hour.
fn hourly_cap_wait(failures: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<Duration> {
    let hour_ago = now - Duration::hours(1);
    let in_hour: Vec<_> = failures.iter().copied().filter(|t| *t > hour_ago).collect();
    (in_hour.len() >= HOURLY_CAP).then(|| in_hour[in_hour.len() - HOURLY_CAP] + Duration::hours(1) - now)
}
pub const MAX_DELAY_SECS: i64 = 300;

/// How long one series of failures (oldest first) must wait before its next attempt; `None`
/// when it may try now.
fn account_wait(failures: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<Duration> {
    if let Some(wait) = hourly_cap_wait(failures, now) {
        return Some(wait);
    }
    let hour_ago = now - Duration::hours(1);
    let in_hour: Vec<_> = failures.iter().copied().filter(|t| *t > hour_ago).collect();
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

/// The application's clock as governor reads it, so tests move time instead of sleeping.
#[derive(Clone)]
pub(crate) struct LimiterClock(pub(crate) SharedClock);

impl governor::clock::Clock for LimiterClock {
    /// Time since the Unix epoch.
    type Instant = std::time::Duration;

    fn now(&self) -> std::time::Duration {
        (self.0.now() - DateTime::UNIX_EPOCH).to_std().unwrap_or_default()
    }
}

pub struct IpLimiter {
    limiter:
        RateLimiter<IpAddr, HashMapStateStore<IpAddr>, LimiterClock, NoOpMiddleware<std::time::Duration>>,
    clock: LimiterClock,
}

impl IpLimiter {
    pub fn per_minute(limit: u32, clock: SharedClock) -> IpLimiter {
        let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
        let clock = LimiterClock(clock);
        let limiter = RateLimiter::new(Quota::per_minute(limit), HashMapStateStore::default(), clock.clone());
        IpLimiter { limiter, clock }
    }

    /// Takes one attempt from the IP's bucket; the error is the wait in seconds.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        use governor::clock::Clock as _;
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs().max(1))
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

    fn failure(at: DateTime<Utc>, ip: &str, device: Option<&str>) -> Failure {
        Failure { at, ip: Some(ip.to_owned()), device: device.map(str::to_owned) }
    }

    #[test]
    fn failures_count_per_address_and_per_known_browser() {
        let now = Utc::now();
        let attacker: Vec<Failure> =
            (0..6).rev().map(|i| failure(now - Duration::seconds(i), "198.51.100.7", None)).collect();
        let from = |ip, device| Attempt { ip: Some(ip), device };
        assert!(sign_in_wait(&attacker, &from("198.51.100.7", None), now).is_some(), "the guesser waits");
        assert_eq!(
            sign_in_wait(&attacker, &from("203.0.113.5", None), now),
            None,
            "another address does not"
        );
        assert_eq!(
            sign_in_wait(&attacker, &from("198.51.100.7", Some("d1")), now),
            None,
            "the owner's browser does not"
        );
        let own: Vec<Failure> =
            (0..5).rev().map(|i| failure(now - Duration::seconds(i), "203.0.113.5", Some("d1"))).collect();
        assert!(
            sign_in_wait(&own, &from("203.0.113.5", Some("d1")), now).is_some(),
            "a browser's own failures count"
        );
        assert_eq!(sign_in_wait(&own, &from("203.0.113.5", None), now), None, "for that browser only");
    }

    #[test]
    fn many_addresses_together_are_capped_per_account_but_not_the_owners_browser() {
        let now = Utc::now();
        let spread: Vec<Failure> = (0..100)
            .map(|i| failure(now - Duration::seconds(i * 30), &format!("198.51.100.{i}"), None))
            .collect();
        let fresh = Attempt { ip: Some("203.0.113.9"), device: None };
        assert!(sign_in_wait(&spread, &fresh, now).is_some(), "100 failures an hour from anywhere");
        let owner = Attempt { ip: Some("203.0.113.9"), device: Some("d1") };
        assert_eq!(sign_in_wait(&spread, &owner, now), None);
    }

    #[test]
    fn ip_limiter_refuses_past_its_quota() {
        let clock = std::sync::Arc::new(crate::clock::OffsetClock::default());
        let limiter = IpLimiter::per_minute(3, clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
        }
        assert!(limiter.check(ip).is_err());
        assert!(limiter.check("192.0.2.2".parse().unwrap()).is_ok(), "other IPs are unaffected");
        clock.advance(Duration::seconds(20));
        assert!(limiter.check(ip).is_ok(), "a third of a minute later, one attempt is back");
    }
}
