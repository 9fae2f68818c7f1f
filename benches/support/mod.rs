//! What the HTTP benchmarks share: driving N requests at concurrency C over loopback, and
//! reporting throughput and latency percentiles.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate::config::{Config, DatabaseUrl};
use tollgate::secret::encode_base64;

/// A configuration as production reads it, with dummy keys, on `database_url`, plus `extra`
/// settings (typically limits lifted so the benchmark measures work, not refusals).
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
    let mut config =
        Config::from_vars(&|name: &str| vars.get(name).cloned()).expect("a valid configuration");
    config.database_url = database_url;
    config
}

/// A limit no benchmark reaches.
pub const UNLIMITED: &str = "1000000000";

/// `EVENTS CONCURRENCY` from the command line (after cargo's `--bench`), with defaults.
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
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get(((self.latencies.len() as f64 * p) as usize).min(last))
            .copied()
            .unwrap_or_default()
    }

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
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0)),
            self.failures
        )
    }
}

/// Sends requests 0..`requests` from `concurrency` tasks; `send(i)` makes request i and says
/// whether it succeeded.
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
    Run {
        requests,
        failures,
        elapsed,
        latencies,
    }
}
