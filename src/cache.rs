//! A small in-memory cache with a time to live, for answers the internal API gives on every
//! request of a busy service (a verified service token, a customer's entitlements): a lookup
//! per key per TTL is enough. Each value lives between half the TTL and all of it, so the
//! lookups of values remembered together spread out instead of coming back at once.
//!
//! Writes made on this instance forget what they change at once ([`TtlCache::forget`],
//! [`TtlCache::forget_all`]); writes made elsewhere (another instance, a CLI command) show
//! within the TTL. A lookup that began before a forget of its key (or of everything) is not
//! remembered after it, so a stale answer never outlives the write that changed it; lookups of
//! other keys are (one busy customer's writes do not empty everyone else's lookups).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: parking_lot::Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    /// Each value with when it expires.
    map: HashMap<K, (Instant, V)>,
    /// Ticks once per forget: a miss says when its lookup began.
    clock: u64,
    /// When each key was last forgotten (at most `capacity` keys; past that, everything is
    /// taken as forgotten then).
    forgotten: HashMap<K, u64>,
    /// When everything was last forgotten.
    all_forgotten: u64,
}

/// A miss: look the value up, then hand this to [`TtlCache::remember`] (it says when the
/// lookup began).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss(u64);

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// Remembers values for `ttl` (zero: never), at most `capacity` keys (past it the cache
    /// starts over: one lookup each).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: parking_lot::Mutex::new(Entries {
                map: HashMap::new(),
                clock: 0,
                forgotten: HashMap::new(),
                all_forgotten: 0,
            }),
        }
    }

    /// Whether the cache remembers anything at all (a TTL above zero).
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The value remembered under `key` within the TTL, or the miss to remember a lookup by.
    pub fn get<Q>(&self, key: &Q) -> Result<V, Miss>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.entries.lock();
        match entries.map.get(key) {
            Some((expires, value)) if Instant::now() < *expires => Ok(value.clone()),
            _ => Err(Miss(entries.clock)),
        }
    }

    /// Remembers `value`, looked up since `miss`, unless `key` (or everything) was forgotten
    /// meanwhile.
    pub fn remember(&self, key: K, value: V, miss: Miss) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock();
        let forgotten_since = entries.all_forgotten > miss.0
            || entries.forgotten.get(&key).is_some_and(|at| *at > miss.0);
        if forgotten_since {
            return;
        }
        if entries.map.len() >= self.capacity {
            entries.map.clear();
        }
        entries
            .map
            .insert(key, (Instant::now() + self.lifetime(), value));
    }

    /// A value's lifetime: from half the TTL to all of it, spread by the clock's nanoseconds,
    /// so that values remembered together (every customer after a start or a forget) are not
    /// all looked up again in the same instant.
    fn lifetime(&self) -> Duration {
        let spread = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos() % 1024);
        self.ttl / 2 + self.ttl / 2 * spread / 1024
    }

    /// Forgets `key` (its value changed here), and any lookup of it under way.
    pub fn forget(&self, key: &K) {
        let mut entries = self.entries.lock();
        entries.clock += 1;
        let at = entries.clock;
        entries.map.remove(key);
        if entries.forgotten.len() >= self.capacity {
            entries.forgotten.clear();
            entries.all_forgotten = at;
        } else {
            entries.forgotten.insert(key.clone(), at);
        }
    }

    /// Forgets everything, and any lookup under way.
    pub fn forget_all(&self) {
        let mut entries = self.entries.lock();
        entries.clock += 1;
        entries.all_forgotten = entries.clock;
        entries.map.clear();
        entries.forgotten.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_ttl_and_forgets_on_a_write() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let miss = cache.get(&1).unwrap_err();
        cache.remember(1, "a", miss);
        assert_eq!(cache.get(&1), Ok("a"));
        cache.forget(&1);
        assert!(cache.get(&1).is_err());
    }

    #[test]
    fn a_lookup_that_began_before_its_key_was_forgotten_is_not_remembered() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let miss = cache.get(&1).unwrap_err();
        cache.forget(&1);
        cache.remember(1, "stale", miss);
        assert!(cache.get(&1).is_err());
        let miss = cache.get(&1).unwrap_err();
        cache.forget_all();
        cache.remember(1, "stale", miss);
        assert!(cache.get(&1).is_err());
        // A lookup that began after the forget is remembered.
        let miss = cache.get(&1).unwrap_err();
        cache.remember(1, "fresh", miss);
        assert_eq!(cache.get(&1), Ok("fresh"));
    }

    #[test]
    fn forgetting_one_key_leaves_other_lookups_under_way() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let miss = cache.get(&1).unwrap_err();
        cache.forget(&2);
        cache.remember(1, "a", miss);
        assert_eq!(cache.get(&1), Ok("a"));
    }

    #[test]
    fn past_its_capacity_of_forgotten_keys_a_forget_stops_every_lookup_under_way() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        let miss = cache.get(&1).unwrap_err();
        for key in 2..5 {
            cache.forget(&key);
        }
        cache.remember(1, "maybe stale", miss);
        assert!(
            cache.get(&1).is_err(),
            "the record of forgotten keys started over"
        );
    }

    #[test]
    fn values_expire_and_a_zero_ttl_remembers_nothing() {
        let cache = TtlCache::new(Duration::from_millis(20), 10);
        let miss = cache.get(&1).unwrap_err();
        cache.remember(1, "a", miss);
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&1).is_err());
        let off = TtlCache::new(Duration::ZERO, 10);
        let miss = off.get(&1).unwrap_err();
        off.remember(1, "a", miss);
        assert!(off.get(&1).is_err());
    }

    #[test]
    fn past_its_capacity_it_starts_over() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        for key in 0..3 {
            let miss = cache.get(&key).unwrap_err();
            cache.remember(key, key, miss);
        }
        assert!(cache.get(&0).is_err() && cache.get(&1).is_err());
        assert_eq!(cache.get(&2), Ok(2));
    }
}
