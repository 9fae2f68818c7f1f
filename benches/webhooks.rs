//! Webhook ingest throughput: N distinct signed events (a real-shaped `invoice.paid`, ~3 KB)
//! posted at concurrency C over loopback to the real application, each verified, validated,
//! sealed, stored and applied before its 200. Prints req/s, latency percentiles, and the number
//! of stored events, which must equal N.
//!
//!     cargo bench --bench webhooks [-- EVENTS CONCURRENCY]
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
    let stored = Db::connect(url, 2)
        .expect("db")
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
}
