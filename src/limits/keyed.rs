//! `KeyedLimiter`: a token bucket per key (a service token, a user) for limits that are not
//! about the client's address.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_governor::governor::clock::{Clock, DefaultClock};
use actix_governor::governor::middleware::NoOpMiddleware;
use actix_governor::governor::state::keyed::DashMapStateStore;
use actix_governor::governor::{Quota, RateLimiter};

use super::Sweep;
use crate::config::RateLimit;

type Buckets<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// An in-process limiter keyed by something other than the client IP (e.g. a service token).
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock>(Buckets<K, C>);

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    /// The same limiter on another clock (tests drive a fake one).
    pub fn with_clock(limit: RateLimit, clock: C) -> Self {
        let per_request = Duration::from_secs(60) / limit.per_minute.max(1);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(per_request).unwrap_or(Quota::per_minute(NonZeroU32::MIN));
        Self(RateLimiter::dashmap_with_clock(
            quota.allow_burst(burst),
            clock,
        ))
    }

    /// Counts one request for `key`; when over the limit, how many seconds until it may retry.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.0.check_key(key).map_err(|negative| {
            let wait = negative.wait_time_from(self.0.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

impl<K, C> Sweep for KeyedLimiter<K, C>
where
    K: Hash + Eq + Clone,
    C: Clock,
    Buckets<K, C>: Send + Sync,
{
    fn sweep(&self) {
        self.0.sweep();
    }

    fn tracked_keys(&self) -> usize {
        self.0.tracked_keys()
    }
}

#[cfg(test)]
mod tests {
    use actix_governor::governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn idle_keys_are_swept_and_limited_ones_kept() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::with_clock(
            RateLimit {
                per_minute: 60,
                burst: 2,
            },
            clock.clone(),
        );
        for user in 0..10_000i64 {
            assert!(limiter.check(&user).is_ok());
        }
        assert!(limiter.check(&1).is_ok());
        assert_eq!(limiter.check(&1), Err(1), "burst of 2 spent, one a second");
        limiter.sweep();
        assert_eq!(limiter.tracked_keys(), 10_000);

        clock.advance(Duration::from_millis(2_500));
        limiter.sweep();
        assert_eq!(
            limiter.tracked_keys(),
            1,
            "only user 1, still short of a full bucket, is remembered"
        );
        clock.advance(Duration::from_secs(3));
        limiter.sweep();
        assert_eq!(limiter.tracked_keys(), 0);
    }
}
