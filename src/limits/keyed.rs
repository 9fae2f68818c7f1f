//! `KeyedLimiter`: a token bucket per key (a service token, a user, a client address) for limits
//! whose refusals the caller answers itself: in this process, or shared by every instance in
//! Redis ([`KeyedLimiter::shared`]).

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_governor::governor::clock::{Clock, DefaultClock};
use actix_governor::governor::middleware::StateInformationMiddleware;
use actix_governor::governor::state::keyed::DashMapStateStore;
use actix_governor::governor::{Quota, RateLimiter};

use super::Sweep;
use super::shared::{Bucket, SharedKey, SharedLimits};
use crate::config::{RateLimit, RedisFail};

type Buckets<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// An in-process token bucket per key: a service token, a user, or a client address when the
/// caller rather than a middleware answers the refusal (see `web::middleware::form_budget`).
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    /// In this process: the limit itself, or the fallback while Redis is unreachable.
    buckets: Buckets<K, C>,
    per_request: Duration,
    burst: NonZeroU32,
    /// In Redis, under this limiter's name.
    shared: Option<(Arc<SharedLimits>, &'static str)>,
}

/// Why a request was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over the limit: seconds until one more request is allowed.
    Wait(u64),
    /// The limit lives in Redis, Redis cannot be reached and `REDIS_FAIL=closed`.
    Unavailable,
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
            shared: None,
        }
    }

    /// The same limit kept in Redis under `name` (when `shared` is set), so that every
    /// instance counts against one budget; the in-memory buckets, which count the requests
    /// this instance allowed, stand in while Redis cannot be reached and `REDIS_FAIL=open`.
    pub fn shared(mut self, shared: Option<&Arc<SharedLimits>>, name: &'static str) -> Self {
        self.shared = shared.map(|shared| (Arc::clone(shared), name));
        self
    }

    /// Counts one request for `key` in this process; when over the limit, how many seconds
    /// until it may retry.
    pub fn check_local(&self, key: &K) -> Result<Allowance, u64> {
        match self.buckets.check_key(key) {
            Ok(snapshot) => Ok(Allowance {
                limit: snapshot.quota().burst_size().get(),
                remaining: snapshot.remaining_burst_capacity(),
            }),
            Err(negative) => Err(round_up(
                negative.wait_time_from(self.buckets.clock().now()),
            )),
        }
    }

    /// Counts one request for `key` where the limit lives (Redis when shared); when over the
    /// limit, how many seconds until it may retry.
    pub async fn check(&self, key: &K) -> Result<(), Limited>
    where
        K: SharedKey,
    {
        self.check_allowance(key).await.map(|_| ())
    }

    /// As [`Self::check`], saying what the key has left when the request is allowed.
    pub async fn check_allowance(&self, key: &K) -> Result<Allowance, Limited>
    where
        K: SharedKey,
    {
        if let Some((shared, name)) = &self.shared {
            match shared
                .take(name, key, self.per_request, self.burst.get())
                .await
            {
                Ok(Bucket::Allowed { remaining }) => {
                    // Counted here too: should Redis go away, this instance's own budget has
                    // what its own requests left, not a fresh burst.
                    let _ = self.check_local(key);
                    return Ok(Allowance {
                        limit: self.burst.get(),
                        remaining,
                    });
                }
                Ok(Bucket::Wait(wait)) => return Err(Limited::Wait(round_up(wait))),
                Err(_) if shared.fail() == RedisFail::Closed => return Err(Limited::Unavailable),
                Err(_) => {}
            }
        }
        self.check_local(key).map_err(Limited::Wait)
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

/// Whole seconds, rounded up: "retry after 0 seconds" would invite an immediate, refused retry.
pub(crate) fn round_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
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
            assert!(limiter.check_local(&user).is_ok());
        }
        assert_eq!(
            limiter.check_local(&1),
            Ok(Allowance {
                limit: 2,
                remaining: 0
            })
        );
        assert_eq!(
            limiter.check_local(&1),
            Err(1),
            "burst of 2 spent, one a second"
        );
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
