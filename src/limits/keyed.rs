//! `KeyedLimiter`: a token bucket per key (a service token, a user, a client address) for limits
//! whose refusals the caller answers itself.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_governor::governor::clock::{Clock, DefaultClock};
use actix_governor::governor::middleware::StateInformationMiddleware;
use actix_governor::governor::state::keyed::DashMapStateStore;
use actix_governor::governor::{Quota, RateLimiter};

use super::Sweep;
use crate::config::RateLimit;

type Buckets<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// An in-process token bucket per key: a service token, a user, or a client address when the
/// caller rather than a middleware answers the refusal (see `web::middleware::form_budget`).
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    buckets: Buckets<K, C>,
    per_request: Duration,
    burst: NonZeroU32,
}

/// What a key has left after a request its limiter allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The burst: how many requests a fresh key may make at once.
    pub limit: u32,
    pub remaining: u32,
}

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
        Self {
            buckets: RateLimiter::dashmap_with_clock(quota.allow_burst(burst), clock)
                .with_middleware::<StateInformationMiddleware>(),
            per_request,
            burst,
        }
    }

    /// Counts one request for `key`; when over the limit, how many seconds until it may retry.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_allowance(key).map(|_| ())
    }

    /// As [`Self::check`], saying what the key has left when the request is allowed.
    pub fn check_allowance(&self, key: &K) -> Result<Allowance, u64> {
        match self.buckets.check_key(key) {
            Ok(snapshot) => Ok(Allowance {
                limit: snapshot.quota().burst_size().get(),
                remaining: snapshot.remaining_burst_capacity(),
            }),
            Err(negative) => {
                let wait = negative.wait_time_from(self.buckets.clock().now());
                // Round up: "retry after 0 seconds" would invite an immediate, refused retry.
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
        }
    }

    /// How long one spent request takes to be replenished.
    pub fn per_request(&self) -> Duration {
        self.per_request
    }

    /// How many requests a fresh key may make at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }
}

impl<K, C> Sweep for KeyedLimiter<K, C>
where
    K: Hash + Eq + Clone,
    C: Clock,
    Buckets<K, C>: Send + Sync,
{
    fn sweep(&self) {
        self.buckets.sweep();
    }

    fn tracked_keys(&self) -> usize {
        self.buckets.tracked_keys()
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
        assert_eq!(
            limiter.check_allowance(&1),
            Ok(Allowance {
                limit: 2,
                remaining: 0
            })
        );
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
