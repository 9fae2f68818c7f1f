//! `FailureLimiter`: at most N failures per key within a window (sign-in failures per account).
//!
//! Unlike a token bucket it is asked *before* the expensive work whether the key is locked, and
//! an attempt is charged up front (so concurrent attempts cannot overshoot the limit); a
//! success forgives the key, and an attempt that reached no verdict is refunded. The window
//! opens at a key's first failure: `limit` failures within it lock the key until it closes.
//!
//! Shared ([`FailureLimiter::shared`]), the tally lives in Redis and every instance counts
//! against it; while Redis is unreachable each instance counts in its own memory (a failure
//! limit only ever follows `REDIS_FAIL=open`: the route's rate limit, checked first, is where
//! `closed` refuses).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Sweep;
use super::keyed::round_up;
use super::shared::{Charge, SharedKey, SharedLimits};

/// A locked key: how long until it may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    since: Instant,
    failures: u32,
}

pub struct FailureLimiter<K> {
    limit: u32,
    window: Duration,
    tallies: Mutex<HashMap<K, Tally>>,
    shared: Option<(Arc<SharedLimits>, &'static str)>,
}

impl<K: Hash + Eq> FailureLimiter<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            tallies: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// The same limit kept in Redis under `name` (when `shared` is set).
    pub fn shared(mut self, shared: Option<&Arc<SharedLimits>>, name: &'static str) -> Self {
        self.shared = shared.map(|shared| (Arc::clone(shared), name));
        self
    }

    fn tallies(&self) -> MutexGuard<'_, HashMap<K, Tally>> {
        // A panic while holding the lock leaves whole counters behind: keep using them.
        self.tallies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a locked key; otherwise counts one failure against it, to be forgiven
    /// ([`Self::forgive`]) if the attempt succeeds.
    pub async fn charge(&self, key: K) -> Result<(), Locked>
    where
        K: SharedKey,
    {
        if let Some((shared, name)) = &self.shared {
            match shared.charge(name, &key, self.limit, self.window).await {
                Ok(Charge::Charged) => {
                    // Counted here too, for the time Redis cannot be reached.
                    let _ = self.charge_at(key, Instant::now());
                    return Ok(());
                }
                Ok(Charge::Locked(wait)) => {
                    return Err(Locked {
                        retry_after_secs: round_up(wait).max(1),
                    });
                }
                Err(_) => {}
            }
        }
        self.charge_at(key, Instant::now())
    }

    /// The attempt succeeded: the key starts afresh.
    pub async fn forgive(&self, key: &K)
    where
        K: SharedKey,
    {
        if let Some((shared, name)) = &self.shared {
            // Unreachable: the in-memory tally is forgiven below; Redis's expires on its own.
            let _ = shared.forgive(name, key).await;
        }
        self.forgive_local(key);
    }

    /// The attempt reached no verdict (the server was busy): it does not count.
    pub async fn refund(&self, key: &K)
    where
        K: SharedKey,
    {
        if let Some((shared, name)) = &self.shared {
            // Unreachable: Redis's tally keeps the failure until its window closes.
            let _ = shared.refund(name, key).await;
        }
        self.refund_local(key);
    }

    /// Charges in this process's memory, at `now`.
    pub fn charge_at(&self, key: K, now: Instant) -> Result<(), Locked> {
        let mut tallies = self.tallies();
        let tally = tallies.entry(key).or_insert(Tally {
            since: now,
            failures: 0,
        });
        let closes = tally.since + self.window;
        if now >= closes {
            *tally = Tally {
                since: now,
                failures: 0,
            };
        } else if tally.failures >= self.limit {
            let wait = closes - now;
            return Err(Locked {
                retry_after_secs: round_up(wait),
            });
        }
        tally.failures += 1;
        Ok(())
    }

    fn forgive_local(&self, key: &K) {
        self.tallies().remove(key);
    }

    fn refund_local(&self, key: &K) {
        if let Some(tally) = self.tallies().get_mut(key) {
            tally.failures = tally.failures.saturating_sub(1);
        }
    }

    /// Forgets keys whose window has closed.
    pub fn sweep_at(&self, now: Instant) {
        let mut tallies = self.tallies();
        tallies.retain(|_, tally| now < tally.since + self.window);
        tallies.shrink_to_fit();
    }
}

impl<K: Hash + Eq + Send> Sweep for FailureLimiter<K> {
    fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn tracked_keys(&self) -> usize {
        self.tallies().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(900);

    #[test]
    fn the_limit_locks_the_key_until_the_window_closes() {
        let limiter = FailureLimiter::new(3, WINDOW);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.charge_at("a", t0 + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(
            limiter.charge_at("a", t0 + Duration::from_secs(100)),
            Err(Locked {
                retry_after_secs: 800
            })
        );
        assert_eq!(limiter.charge_at("b", t0), Ok(()), "other keys are free");
        assert_eq!(
            limiter.charge_at("a", t0 + WINDOW),
            Ok(()),
            "a new window opens"
        );
    }

    #[test]
    fn success_forgives_and_a_refund_gives_the_attempt_back() {
        let limiter = FailureLimiter::new(2, WINDOW);
        let t0 = Instant::now();
        limiter.charge_at("a", t0).unwrap();
        limiter.charge_at("a", t0).unwrap();
        assert!(limiter.charge_at("a", t0).is_err());
        limiter.forgive_local(&"a");
        limiter.charge_at("a", t0).unwrap();
        limiter.refund_local(&"a");
        limiter.charge_at("a", t0).unwrap();
        limiter.charge_at("a", t0).unwrap();
        assert!(limiter.charge_at("a", t0).is_err());
    }

    #[test]
    fn sweeping_forgets_closed_windows() {
        let limiter = FailureLimiter::new(10, WINDOW);
        let t0 = Instant::now();
        for account in 0..100_000u32 {
            limiter.charge_at(account, t0).unwrap();
        }
        limiter.charge_at(7, t0 + WINDOW).unwrap();
        limiter.sweep_at(t0 + WINDOW - Duration::from_secs(1));
        assert_eq!(limiter.tracked_keys(), 100_000);
        limiter.sweep_at(t0 + WINDOW);
        assert_eq!(
            limiter.tracked_keys(),
            1,
            "only the key with an open window"
        );
    }
}
