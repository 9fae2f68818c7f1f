//! Webhook ingest throughput: N distinct signed events (a real-shaped `invoice.paid`, ~3 KB)
//! posted at concurrency C over loopback to the real application, each verified, validated,
//! sealed, stored and applied before its 200. Prints req/s, latency percentiles, and the number
//! of stored events, which must equal N.
//!
//! Then the server's CPU per event, as the side-by-side figures of issue 17 were measured: wrk (a process
//! of its own, so the client's CPU is not counted) replays distinct pre-signed events for
//! `SECONDS` (default 8) at concurrency 16, and the CPU time this process (the server) and,
//! on PostgreSQL, every `postgres` process spent is divided by the events stored meanwhile.
//! Targets (issue 17): 0.07 ms on SQLite, 0.15 ms on PostgreSQL (Tollgate and PostgreSQL).
//!
//!     cargo bench --bench webhooks [-- EVENTS CONCURRENCY [SECONDS]]
//!
//! SQLite (a fresh file) by default; `BENCH_DATABASE_URL=postgres://…/db` (an empty database)
//! for PostgreSQL. `scripts/bench-webhooks` runs both.

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;

use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::Db;
use tollgate::startup::Application;

const SECRET: &str = "whsec_DUMMYbenchendpointsecret";

fn bench_config(database_url: DatabaseUrl) -> Config {
    use support::UNLIMITED;
    support::config(
        database_url,
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RATE_LIMIT_WEBHOOK_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_WEBHOOK_BURST", UNLIMITED),
        ],
    )
}

#[actix_web::main]
async fn main() {
    let (events, concurrency) = support::args(20_000, 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, backend) = support::database(dir.path());
    let config = bench_config(url.clone());
    let workers = config
        .workers
        .map_or_else(|| "one per core".to_owned(), |n| n.to_string());
    let pool_size = config.database_pool_size;
    let app = Application::build(config).expect("app");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());

    let bodies = Arc::new(support::signed_events(SECRET, "Bench", events));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let endpoint = Arc::new(format!("http://127.0.0.1:{port}/webhooks/stripe"));
    let run = support::drive(events, concurrency, move |i| {
        let (header, body) = &bodies[i];
        let request = client
            .post(endpoint.as_str())
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body.clone());
        async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    let db = Db::connect(url, 2).expect("db");
    let stored = db
        .run_blocking(tollgate::db::models::webhook_event::count)
        .expect("count");
    println!(
        "webhook ingest, {backend}, {events} events at concurrency {concurrency} \
         ({workers} workers, pool {pool_size})"
    );
    println!("  {}   stored {stored}", run.summary("events"));
    if stored as usize != events || run.failures > 0 {
        eprintln!(
            "FAILED: stored {stored} of {events} events, {} failed deliveries",
            run.failures
        );
        std::process::exit(1);
    }

    let seconds = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .nth(2)
        .map_or(8, |s| s.parse().expect("SECONDS"));
    let cpu = cpu_per_event(&db, port, seconds, backend == "PostgreSQL").await;
    let target = if backend == "SQLite" { 0.07 } else { 0.15 };
    let total = cpu.server_ms + cpu.database_ms;
    println!(
        "  server CPU per event (wrk, {seconds} s, concurrency {WRK_CONCURRENCY}): {:.3} ms \
         ({:.3} ms Tollgate + {:.3} ms {backend}) over {} events at {:.0} events/s; \
         target {target} ms: {}",
        total,
        cpu.server_ms,
        cpu.database_ms,
        cpu.events,
        cpu.rate,
        if total <= target { "met" } else { "NOT met" }
    );
}

const WRK_CONCURRENCY: usize = 16;

struct CpuPerEvent {
    events: i64,
    rate: f64,
    server_ms: f64,
    database_ms: f64,
}

/// wrk replays distinct pre-signed events for `seconds`; the CPU this process and the
/// `postgres` processes spent meanwhile, per event stored.
async fn cpu_per_event(db: &Db, port: u16, seconds: u64, postgres: bool) -> CpuPerEvent {
    // More events than wrk can send (the in-process run above never passed 12,000 a second):
    // each request is a new one.
    let count = 50_000 * seconds as usize;
    const PLACEHOLDER: &str = "evt_PLACEHOLDER";
    let fixture = include_str!("../tests/fixtures/webhooks/invoice.paid.json");
    let mut event: serde_json::Value = serde_json::from_str(fixture).expect("fixture");
    let now = chrono::Utc::now().timestamp();
    event["id"] = serde_json::json!(PLACEHOLDER);
    event["created"] = serde_json::json!(now);
    let template = serde_json::to_string(&event).expect("json");
    let (prefix, suffix) = template
        .split_once(PLACEHOLDER)
        .expect("the id is in the body");
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("events.txt");
    let lines: String = (0..count)
        .map(|i| {
            let id = format!("evt_1Cpu{i:012}");
            let body = format!("{prefix}{id}{suffix}");
            let signature = support::stripe_signature(SECRET, now, body.as_bytes());
            format!("{id} t={now},v1={signature}\n")
        })
        .collect();
    std::fs::write(&list, lines).expect("write the events");
    let script = format!(
        r#"local ids, signatures, next = {{}}, {{}}, 0
function init(args)
  local thread, n = wrk.thread:get("thread_id"), 0
  for line in io.lines("{list}") do
    if n % 2 == thread then
      local id, signature = line:match("^(%S+) (%S+)$")
      table.insert(ids, id)
      table.insert(signatures, signature)
    end
    n = n + 1
  end
end
local prefix, suffix = [==[{prefix}]==], [==[{suffix}]==]
function request()
  next = next + 1
  return wrk.format("POST", "/webhooks/stripe",
    {{["Content-Type"] = "application/json", ["Stripe-Signature"] = signatures[next]}},
    prefix .. ids[next] .. suffix)
end
function response(status, headers, body)
  if status ~= 200 then failures = failures + 1 end
end
"#,
        list = list.display(),
    );
    let stored = |db: &Db| {
        db.run_blocking(tollgate::db::models::webhook_event::count)
            .expect("count")
    };
    let database = || {
        if postgres {
            postgres_cpu_seconds()
        } else {
            0.0
        }
    };
    let before = (
        stored(db),
        cpu_seconds(std::process::id(), false),
        database(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let run = actix_web::rt::task::spawn_blocking(move || {
        support::wrk(&url, seconds, WRK_CONCURRENCY, &script)
    })
    .await
    .expect("wrk");
    // The CPU first: the count's own query is not part of the window.
    let after = (cpu_seconds(std::process::id(), false), database());
    let after = (stored(db), after.0, after.1);
    let events = after.0 - before.0;
    if run.failures > 0 || events == 0 {
        eprintln!(
            "FAILED: {} failed deliveries, {events} stored",
            run.failures
        );
        std::process::exit(1);
    }
    let per_event = |seconds: f64| seconds * 1e3 / events as f64;
    CpuPerEvent {
        events,
        rate: run.rate(),
        server_ms: per_event(after.1 - before.1),
        database_ms: per_event(after.2 - before.2),
    }
}

/// CPU time (user and system) process `pid` has used, in seconds (`/proc/PID/stat`); with
/// `children`, also what its children that exited used (PostgreSQL's backends, under the
/// postmaster). Not for this process: wrk is one of its children.
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command name (which may hold spaces) in parentheses; utime,
            // stime, cutime and cstime are the 14th to 17th, in ticks (100 a second).
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = fields
                .get(11..if children { 15 } else { 13 })?
                .iter()
                .map(|n| n.parse::<f64>().ok())
                .sum::<Option<f64>>()?;
            Some(ticks / 100.0)
        })
        .unwrap_or_default()
}

/// CPU time every running `postgres` process and its exited backends have used, in seconds (0 without PostgreSQL on
/// this machine, or without the right to read its processes).
fn postgres_cpu_seconds() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_seconds(pid, true))
        .sum()
}
