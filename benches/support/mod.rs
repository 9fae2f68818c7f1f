//! What the HTTP benchmarks share: driving N requests at concurrency C over loopback, and
//! reporting throughput and latency percentiles.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate::config::{Config, DatabaseUrl};
use tollgate::secret::encode_base64;

/// A configuration as production reads it, with dummy keys, on `database_url`, plus `extra`
/// settings (typically limits lifted so the benchmark measures work, not refusals) and
/// `SQLITE_SYNCHRONOUS`, `ENTITLEMENTS_CACHE_MS` and `SERVICE_TOKEN_CACHE_MS` from the
/// environment when they are set.
pub fn config(database_url: DatabaseUrl, extra: &[(&'static str, &str)]) -> Config {
    let key = |byte: u8, len: usize| encode_base64(&vec![byte; len]);
    let mut vars = std::collections::HashMap::from([
        ("BIND", "127.0.0.1:0".to_owned()),
        ("SECRET_KEY", key(1, 64)),
        ("ENCRYPTION_KEY", key(2, 32)),
        ("TOKEN_PEPPER", key(3, 32)),
        ("SESSION_COOKIE_SECURE", "false".to_owned()),
    ]);
    vars.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    // `SQLITE_SYNCHRONOUS=full cargo bench …` measures what power-loss durability costs, the
    // caches' lifetimes what freshness costs, and the pool's size (which sets PostgreSQL's
    // group-commit writers) what batch sizes cost.
    for name in [
        "SQLITE_SYNCHRONOUS",
        "DATABASE_POOL_SIZE",
        "ENTITLEMENTS_CACHE_MS",
        "SERVICE_TOKEN_CACHE_MS",
    ] {
        if let Ok(value) = std::env::var(name) {
            vars.insert(name, value);
        }
    }
    let mut config =
        Config::from_vars(&|name: &str| vars.get(name).cloned()).expect("a valid configuration");
    config.database_url = database_url;
    config
}

/// The database a benchmark runs on, and its backend's name: `BENCH_DATABASE_URL` (a
/// PostgreSQL database, empty) when it is set, else a fresh SQLite file in `dir`.
pub fn database(dir: &std::path::Path) -> (DatabaseUrl, &'static str) {
    match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => (
            DatabaseUrl::parse(&url).expect("BENCH_DATABASE_URL"),
            "PostgreSQL",
        ),
        Err(_) => (DatabaseUrl::Sqlite(dir.join("bench.db")), "SQLite"),
    }
}

/// A limit no benchmark reaches.
pub const UNLIMITED: &str = "1000000000";

/// `N CONCURRENCY` (requests or seconds) from the command line (after cargo's `--bench`), with defaults.
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; not all of them take N CONCURRENCY"
)]
pub fn args(default_requests: usize, default_concurrency: usize) -> (usize, usize) {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let requests = args.next().and_then(|n| n.parse().ok());
    let concurrency = args.next().and_then(|n| n.parse().ok());
    (
        requests.unwrap_or(default_requests),
        concurrency.unwrap_or(default_concurrency),
    )
}

/// The outcome of a run.
pub struct Run {
    pub requests: usize,
    pub failures: usize,
    elapsed: Duration,
    p50: Duration,
    pub p99: Duration,
    max: Duration,
}

impl Run {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// `N req/s   p50 …   p99 …   max …   failures F`.
    pub fn summary(&self, unit: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{:.0} {unit}/s   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   failures {}",
            self.rate(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.failures
        )
    }
}

/// Sends requests 0..`requests` from `concurrency` tasks; `send(i)` makes request i and says
/// whether it succeeded.
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; not all of them drive requests in-process"
)]
pub async fn drive<F, Fut>(requests: usize, concurrency: usize, send: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = bool> + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, send) = (Arc::clone(&next), send.clone());
            actix_web::rt::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let sent = Instant::now();
                    let ok = send(i).await;
                    latencies.push(sent.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::with_capacity(requests), 0);
    for task in tasks {
        let (l, f) = task.await.expect("a benchmark task panicked");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        let last = latencies.len().saturating_sub(1);
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(last))
            .copied()
            .unwrap_or_default()
    };
    Run {
        requests,
        failures,
        elapsed,
        p50: percentile(0.50),
        p99: percentile(0.99),
        max: percentile(1.0),
    }
}

/// Runs `wrk` (2 threads, `concurrency` connections) against `url` for `seconds` with a Lua
/// `script` that counts each response it does not accept in a per-thread global `failures`.
/// wrk is a separate process written in C, as `../shared/PERFORMANCE.md` measures: the client
/// takes less CPU from the server than an in-process one. `scripts/bench-*` install it when
/// missing.
///
/// The script sees its thread's number (0 or 1) as `wrk.thread:get("thread_id")`; this adds
/// the `setup` and `done` functions that collect the figures.
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; not all of them drive wrk"
)]
pub fn wrk(url: &str, seconds: u64, concurrency: usize, script: &str) -> Run {
    const THREADS: usize = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.lua");
    let lua = format!(
        r#"local threads = {{}}
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
failures = 0
{script}
function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + t:get("failures") end
  local e = summary.errors
  failed = failed + e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, failed))
end
"#,
    );
    std::fs::write(&path, lua).expect("write the wrk script");
    let output = std::process::Command::new("wrk")
        .args([
            "-t",
            &THREADS.to_string(),
            "-c",
            &concurrency.max(THREADS).to_string(),
        ])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
        .arg(&path)
        .arg(url)
        .output()
        .expect("wrk is installed (scripts/bench-internal installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let numbers: Vec<u64> = result
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    let [requests, duration, p50, p99, max, failures] = numbers[..] else {
        panic!("wrk's result has six numbers: {result}");
    };
    let us = Duration::from_micros;
    Run {
        requests: requests as usize,
        failures: failures as usize,
        elapsed: us(duration),
        p50: us(p50),
        p99: us(p99),
        max: us(max),
    }
}

/// N distinct `invoice.paid` events (a real-shaped fixture, ~3 KB), ids `evt_1{run}…`, each
/// with its `Stripe-Signature` under `secret`, ready before the clock starts.
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; not all of them post webhooks"
)]
pub fn signed_events(secret: &str, run: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    const FIXTURE: &str = include_str!("../../tests/fixtures/webhooks/invoice.paid.json");
    let template: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
    let now = chrono::Utc::now().timestamp();
    (0..count)
        .map(|i| {
            let mut event = template.clone();
            event["id"] = serde_json::json!(format!("evt_1{run}{i:010}"));
            event["created"] = serde_json::json!(now);
            let body = serde_json::to_vec(&event).expect("json");
            let header = format!("t={now},v1={}", stripe_signature(secret, now, &body));
            (header, body)
        })
        .collect()
}

/// Stripe's v1 signature of `body` sent at `timestamp`: hex HMAC-SHA256 of
/// `"{timestamp}.{body}"` under the endpoint `secret`.
#[allow(
    dead_code,
    reason = "each benchmark compiles this module; not all of them post webhooks"
)]
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac as _};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
