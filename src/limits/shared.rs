//! Limits every instance shares, kept in Redis when `REDIS_URL` is set: N instances behind a
//! load balancer then allow each budget once in total, not N times.
//!
//! Each check is one Lua script, atomic in Redis, on Redis's own clock (instances with skewed
//! clocks agree): a token bucket in GCRA form for rate limits (the same semantics as the
//! in-memory `governor` buckets: a burst, then one request per interval), and a counter with a
//! window for failure limits. Keys are HMACs of what is counted (an address, an account, a
//! token id) under `TOKEN_PEPPER`: Redis never learns who is being limited.
//!
//! When Redis cannot be reached (a refused connection, or no answer within `REDIS_TIMEOUT_MS`)
//! the limiter says so and its caller follows `REDIS_FAIL`: `open` counts in the instance's
//! memory (which has been counting this instance's own requests all along, so it does not start
//! from a full budget), `closed` refuses with 503. One warning is logged when Redis goes away
//! and one line when it is back; meanwhile Redis is tried again once per [`RETRY_INTERVAL`],
//! not on every request. A Redis that answers but refuses the scripts (a wrong password, an
//! ACL without `EVAL`) stops the start-up instead: that is a mistake, not an outage.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret as _;

use crate::config::{RedisFail, RedisSettings};
use crate::crypto::{Domain, TokenHasher};
use crate::db::models::user::UserId;

/// While Redis is unreachable, how often a request tries it again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// GCRA: `ARGV[1]` the interval between requests and `ARGV[2]` the burst, in microseconds and
/// requests. Answers `{1, remaining}` or `{0, microseconds to wait}`.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat + interval - tolerance
if now < allowed_at then
  return {0, allowed_at - now}
end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1)
return {1, math.floor((tolerance - (tat - now)) / interval)}
";

/// A failure charged against `ARGV[1]` allowed within `ARGV[2]` milliseconds from the first.
/// Answers `{1, 0}` (charged) or `{0, milliseconds until the window closes}` (locked).
const CHARGE: &str = r"
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures >= tonumber(ARGV[1]) then
  return {0, math.max(redis.call('PTTL', KEYS[1]), 0)}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
";

/// Takes back one charged failure (its window keeps running).
const REFUND: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
";

/// Adds `ARGV[2 + 2i]` requests and `ARGV[3 + 2i]` errors to the window's bucket `KEYS[i]`
/// (each kept `ARGV[1]` seconds), then answers the window's totals `{requests, errors}`.
const RESPONSES: &str = r"
local requests, errors = 0, 0
for i, key in ipairs(KEYS) do
  local r, e = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if r > 0 or e > 0 then
    redis.call('HINCRBY', key, 'r', r)
    redis.call('HINCRBY', key, 'e', e)
    redis.call('EXPIRE', key, ARGV[1])
  end
  local counts = redis.call('HMGET', key, 'r', 'e')
  requests = requests + tonumber(counts[1] or '0')
  errors = errors + tonumber(counts[2] or '0')
end
return {requests, errors}
";

/// What a limiter counts, as bytes that are the same in every instance and every version.
pub trait SharedKey {
    fn key_bytes(&self) -> Vec<u8>;
}

impl SharedKey for IpAddr {
    fn key_bytes(&self) -> Vec<u8> {
        match self {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }
}

impl SharedKey for i64 {
    fn key_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
}

impl SharedKey for UserId {
    fn key_bytes(&self) -> Vec<u8> {
        self.get().to_be_bytes().to_vec()
    }
}

/// A rate limit's answer from Redis: what is left, or how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Allowed { remaining: u32 },
    Wait(Duration),
}

/// A failure limit's answer from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Charged,
    Locked(Duration),
}

/// Redis could not be reached (or answered nonsense): the caller follows [`RedisFail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

/// The connection to Redis every shared limiter of an application uses.
pub struct SharedLimits {
    redis: ConnectionManager,
    timeout: Duration,
    prefix: String,
    fail: RedisFail,
    hasher: TokenHasher,
    gcra: Script,
    charge: Script,
    refund: Script,
    responses: Script,
    /// Set while Redis is unreachable: when it went away and when to try it next.
    down: Mutex<Option<Down>>,
    /// Told when an outage begins (a permit waits if no one is listening yet).
    outages: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    retry_at: Instant,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .field("fail", &self.fail)
            .field("reachable", &self.reachable())
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Checks that Redis accepts the scripts (when it can be reached at all: an instance starts
    /// while Redis is down, and shares its limits once Redis is up), then prepares the
    /// connection, made on first use and remade after a failure. Must run inside the async
    /// runtime; blocks for at most the timeout, once.
    pub fn connect(
        settings: &RedisSettings,
        hasher: TokenHasher,
    ) -> Result<Self, redis::RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the shared limits are set up inside the async runtime",
            )));
        }
        let client = redis::Client::open(settings.url.expose_secret())?;
        let scripts = [GCRA, CHARGE, REFUND, RESPONSES];
        let probe = client
            .get_connection_with_timeout(settings.timeout)
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(settings.timeout))?;
                scripts.iter().try_for_each(|script| {
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(*script)
                        .query::<String>(&mut conn)
                        .map(drop)
                })
            });
        match probe {
            Ok(()) => {}
            Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_refusal() => {
                tracing::warn!(
                    reason = %err,
                    prefix = %settings.prefix,
                    "Redis cannot be reached at start-up: limits follow REDIS_FAIL until it can"
                );
            }
            Err(err) => return Err(err),
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1);
        Ok(Self {
            redis: ConnectionManager::new_lazy_with_config(client, config)?,
            timeout: settings.timeout,
            prefix: settings.prefix.clone(),
            fail: settings.fail,
            hasher,
            gcra: Script::new(GCRA),
            charge: Script::new(CHARGE),
            refund: Script::new(REFUND),
            responses: Script::new(RESPONSES),
            down: Mutex::new(None),
            outages: tokio::sync::Notify::new(),
        })
    }

    /// What limiters do while Redis is unreachable.
    pub fn fail(&self) -> RedisFail {
        self.fail
    }

    /// Returns when the next outage begins (at once if one began since the last call): what
    /// the `redis_unavailable` alert waits for.
    pub async fn outage_begun(&self) {
        self.outages.notified().await;
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        self.down.lock().is_none()
    }

    fn key(&self, kind: &str, limiter: &str, key: &impl SharedKey) -> String {
        let digest = self.hasher.digest(Domain::LimitKey, &key.key_bytes());
        format!("{}:{kind}:{limiter}:{digest}", self.prefix)
    }

    /// Counts one request against `key`'s bucket of `burst` requests refilled one per
    /// `interval`.
    pub async fn take(
        &self,
        limiter: &str,
        key: &impl SharedKey,
        interval: Duration,
        burst: u32,
    ) -> Result<Bucket, Unreachable> {
        let mut invocation = self.gcra.key(self.key("rl", limiter, key));
        invocation
            .arg(u64::try_from(interval.as_micros()).unwrap_or(u64::MAX))
            .arg(burst);
        let (allowed, value): (i64, i64) = self
            .call(invocation.invoke_async(&mut self.redis.clone()))
            .await?;
        let value = u64::try_from(value).unwrap_or_default();
        Ok(if allowed == 1 {
            Bucket::Allowed {
                remaining: u32::try_from(value).unwrap_or(u32::MAX),
            }
        } else {
            Bucket::Wait(Duration::from_micros(value))
        })
    }

    /// Charges one failure against `key`: at most `limit` within `window` of the first.
    pub async fn charge(
        &self,
        limiter: &str,
        key: &impl SharedKey,
        limit: u32,
        window: Duration,
    ) -> Result<Charge, Unreachable> {
        let mut invocation = self.charge.key(self.key("fail", limiter, key));
        invocation
            .arg(limit)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1));
        let (charged, wait): (i64, i64) = self
            .call(invocation.invoke_async(&mut self.redis.clone()))
            .await?;
        Ok(if charged == 1 {
            Charge::Charged
        } else {
            Charge::Locked(Duration::from_millis(
                u64::try_from(wait).unwrap_or_default(),
            ))
        })
    }

    /// Takes back one failure charged against `key`.
    pub async fn refund(&self, limiter: &str, key: &impl SharedKey) -> Result<(), Unreachable> {
        let invocation = self.refund.key(self.key("fail", limiter, key));
        self.call(invocation.invoke_async::<i64>(&mut self.redis.clone()))
            .await
            .map(drop)
    }

    /// Forgets the failures charged against `key`.
    pub async fn forgive(&self, limiter: &str, key: &impl SharedKey) -> Result<(), Unreachable> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("fail", limiter, key));
        self.call(cmd.query_async::<i64>(&mut self.redis.clone()))
            .await
            .map(drop)
    }

    /// Whether this is the first time within `window` that any instance asks about `key`
    /// under `name` (one `SET NX` with an expiry): a latch shared by every instance.
    pub async fn first_within(
        &self,
        name: &str,
        key: &impl SharedKey,
        window: Duration,
    ) -> Result<bool, Unreachable> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("once", name, key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1));
        let set: Option<String> = self.call(cmd.query_async(&mut self.redis.clone())).await?;
        Ok(set.is_some())
    }

    /// Adds `counts` (per time bucket: its number, requests, errors) to the responses every
    /// instance counted, and answers the totals of the window's `buckets` up to `newest`
    /// (`bucket_secs` each): what the server-error alert rule compares with its threshold.
    pub async fn count_responses(
        &self,
        counts: &[(u64, u64, u64)],
        newest: u64,
        buckets: u64,
        bucket_secs: u64,
    ) -> Result<(u64, u64), Unreachable> {
        let oldest = newest.saturating_sub(buckets.saturating_sub(1));
        let mut invocation = self.responses.prepare_invoke();
        invocation.arg(buckets * bucket_secs + bucket_secs);
        for slot in oldest..=newest {
            invocation.key(format!("{}:5xx:{bucket_secs}:{slot}", self.prefix));
            let (requests, errors) = counts
                .iter()
                .filter(|(s, ..)| *s == slot)
                .fold((0, 0), |(r, e), (_, br, be)| (r + br, e + be));
            invocation.arg(requests).arg(errors);
        }
        let (requests, errors): (i64, i64) = self
            .call(invocation.invoke_async(&mut self.redis.clone()))
            .await?;
        Ok((
            u64::try_from(requests).unwrap_or_default(),
            u64::try_from(errors).unwrap_or_default(),
        ))
    }

    /// Whether Redis answers now (for `/readyz`); while it is known to be down, no more often
    /// than once per [`RETRY_INTERVAL`].
    pub async fn ping(&self) -> bool {
        let cmd = redis::cmd("PING");
        self.call(cmd.query_async::<String>(&mut self.redis.clone()))
            .await
            .is_ok()
    }

    /// Runs one call unless Redis is known to be down, within the timeout, and keeps track of
    /// whether Redis is reachable.
    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let now = Instant::now();
        if self.down.lock().is_some_and(|down| now < down.retry_at) {
            return Err(Unreachable);
        }
        match actix_web::rt::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                let mut down = self.down.lock();
                // Only a call that started after the outage began says it is over (an answer
                // to an earlier one may still be on its way).
                if let Some(down) = down.take_if(|down| down.since <= now) {
                    tracing::info!(
                        after_secs = down.since.elapsed().as_secs(),
                        prefix = %self.prefix,
                        "Redis is reachable again: limits are shared by every instance again"
                    );
                }
                Ok(value)
            }
            Ok(Err(err)) => {
                self.went_down(now, &err.to_string());
                Err(Unreachable)
            }
            Err(_) => {
                self.went_down(now, "no answer in time");
                Err(Unreachable)
            }
        }
    }

    fn went_down(&self, started: Instant, reason: &str) {
        let mut down = self.down.lock();
        let now = Instant::now();
        let retry_at = now + RETRY_INTERVAL;
        match down.as_mut() {
            Some(down) => down.retry_at = retry_at,
            None => {
                *down = Some(Down {
                    since: started,
                    retry_at,
                });
                self.outages.notify_one();
                // Redis's errors name the server, never the password.
                tracing::warn!(
                    reason,
                    prefix = %self.prefix,
                    fail = ?self.fail,
                    "Redis is unreachable: {}",
                    match self.fail {
                        RedisFail::Open =>
                            "each instance limits on its own, in memory, until it is back",
                        RedisFail::Closed => "limited requests are refused (503) until it is back",
                    }
                );
            }
        }
    }
}
