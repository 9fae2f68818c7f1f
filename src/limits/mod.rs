//! The limiters of the web layer and the domain, and their housekeeping: in memory, or shared
//! by every instance through Redis ([`shared`]) when `REDIS_URL` is set.
//!
//! Every limiter here is keyed by something a client chooses (an address, an email, a token),
//! so each one implements [`Sweep`]: a periodic task ([`LimiterSweep`], run from
//! `startup`) forgets keys whose state is back to "fresh" and frees the memory they held. A
//! million distinct source addresses then cost memory for as long as they are active, not for
//! the life of the process.

pub mod failures;
pub mod keyed;
pub mod shared;

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use actix_governor::governor::RateLimiter;
use actix_governor::governor::clock::Clock;
use actix_governor::governor::middleware::RateLimitingMiddleware;
use actix_governor::governor::state::keyed::ShrinkableKeyedStateStore;

pub use failures::{FailureLimiter, Locked};
pub use keyed::{KeyedLimiter, Limited};
pub use shared::{SharedKey, SharedLimits};

/// The address a client is counted by: an IPv4 address as it is, an IPv6 address by its /64
/// (one customer's allocation: rotating through it must not buy fresh quota). IPv4-mapped IPv6
/// addresses count as the IPv4 address they carry.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// A limiter whose memory can be reclaimed.
pub trait Sweep: Send + Sync {
    /// Forgets every key whose state is indistinguishable from a fresh one, then releases the
    /// capacity they occupied.
    fn sweep(&self);
    /// How many keys the limiter holds now.
    fn tracked_keys(&self) -> usize;
}

/// governor's keyed limiters (the per-address middleware limiters, and the ones below).
impl<K, S, C, MW> Sweep for RateLimiter<K, S, C, MW>
where
    K: Hash,
    S: ShrinkableKeyedStateStore<K>,
    C: Clock,
    MW: RateLimitingMiddleware<C::Instant>,
    Self: Send + Sync,
{
    fn sweep(&self) {
        self.retain_recent();
        self.shrink_to_fit();
    }

    fn tracked_keys(&self) -> usize {
        self.len()
    }
}

/// Every limiter of one application, swept together.
#[derive(Clone, Default)]
pub struct LimiterSweep {
    limiters: Vec<(&'static str, Arc<dyn Sweep>)>,
}

impl LimiterSweep {
    /// Adds a limiter under a name (for the log line and for tests).
    pub fn register(&mut self, name: &'static str, limiter: Arc<dyn Sweep>) {
        self.limiters.push((name, limiter));
    }

    /// The registered limiters' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.limiters.iter().map(|(name, _)| *name).collect()
    }
}

impl Sweep for LimiterSweep {
    fn sweep(&self) {
        for (name, limiter) in &self.limiters {
            let before = limiter.tracked_keys();
            limiter.sweep();
            let after = limiter.tracked_keys();
            if before != after {
                tracing::debug!(limiter = name, before, after, "swept idle limiter keys");
            }
        }
    }

    fn tracked_keys(&self) -> usize {
        self.limiters.iter().map(|(_, l)| l.tracked_keys()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use actix_governor::governor::Quota;
    use actix_governor::governor::clock::FakeRelativeClock;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_exactly() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(client_key(ip("203.0.113.7")), client_key(ip("203.0.113.8")));
        assert_eq!(client_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }

    #[test]
    fn sweeping_forgets_idle_keys_and_keeps_busy_ones() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::dashmap_with_clock(quota, clock.clone()));
        for client in 0..100_000u32 {
            assert!(limiter.check_key(&client).is_ok());
        }
        let mut sweep = LimiterSweep::default();
        sweep.register("test", limiter.clone());
        sweep.sweep();
        assert_eq!(sweep.tracked_keys(), 100_000, "every key is still limited");

        clock.advance(Duration::from_secs(3));
        assert!(limiter.check_key(&7).is_ok(), "one client is still active");
        sweep.sweep();
        assert_eq!(
            sweep.tracked_keys(),
            1,
            "idle keys are gone, the active one stays"
        );
        assert!(
            limiter.check_key(&7).is_err(),
            "the active client's state survived the sweep"
        );
    }
}
