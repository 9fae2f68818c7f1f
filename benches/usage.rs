//! The usage hot path: `POST /internal/v1/usage` (batches of records) and
//! `POST /internal/v1/entitlements/{user_id}/reserve`, each at concurrency C over loopback
//! against the real application (release build), reporting req/s, records/s and latency
//! percentiles.
//!
//!     cargo bench --bench usage [-- REQUESTS CONCURRENCY [usage|reserve]]
//!
//! SQLite (a fresh file) by default; `BENCH_DATABASE_URL=postgres://…/db` (an empty database)
//! for PostgreSQL. `scripts/bench-usage` runs both. A third argument runs one half alone;
//! `DATABASE_POOL_SIZE` sets the pool (default 8). The client runs in the same process and
//! takes CPU from the server: read the figures as a lower bound. Exits 1 if any request failed.

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;

use diesel::RunQueryDsl as _;
use secrecy::ExposeSecret as _;
use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::{Db, DbConnection, DbError};
use tollgate::service_tokens::Scope;
use tollgate::startup::Application;

/// Customers the requests are spread over (round robin).
const USERS: usize = 200;
/// Records per usage request.
const BATCH: usize = 100;

fn bench_config(database_url: DatabaseUrl) -> Config {
    use support::UNLIMITED;
    let pool = std::env::var("DATABASE_POOL_SIZE").unwrap_or_else(|_| "8".to_owned());
    support::config(
        database_url,
        &[
            ("HSTS_MAX_AGE", "0"),
            ("RATE_LIMIT_DEFAULT_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_DEFAULT_BURST", UNLIMITED),
            ("RATE_LIMIT_USAGE_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_USAGE_BURST", UNLIMITED),
            ("DATABASE_POOL_SIZE", &pool),
        ],
    )
}

fn execute(conn: &mut DbConnection, sql: &str) -> Result<(), DbError> {
    let query = diesel::sql_query(sql);
    match conn {
        DbConnection::Postgresql(c) => query.execute(c)?,
        DbConnection::Sqlite(c) => query.execute(c)?,
    };
    Ok(())
}

/// `USERS` customers on a plan metering `tokens` (10,000 included, then $2 per 1,000, a quota
/// no run reaches), each with a live subscription; and a `usage:write` service token. Seeded
/// straight into the database: the benchmark measures the API, not sign-up and Checkout.
fn seed(db: &Db, config: &Config) -> Result<(String, Vec<i64>), DbError> {
    let hasher = config.token_hasher();
    db.run_blocking(|conn| {
        let now = chrono::Utc::now().naive_utc();
        let at = now.format("%Y-%m-%d %H:%M:%S").to_string();
        let end = (now + chrono::Duration::days(30))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        execute(
            conn,
            &format!(
                "INSERT INTO plans (slug, name, description, amount, currency, billing_interval, \
                 trial_days, features, active, created_at, updated_at, feature_lines, highlighted) \
                 VALUES ('bench', 'Bench', '', 1000, 'usd', 'month', 0, 'api', TRUE, '{at}', \
                 '{at}', '', FALSE)"
            ),
        )?;
        execute(
            conn,
            &format!(
                "INSERT INTO usage_meters (feature, unit_name, event_name, created_at, updated_at) \
                 VALUES ('tokens', 'tokens', 'tollgate_tokens', '{at}', '{at}')"
            ),
        )?;
        execute(
            conn,
            &format!(
                "INSERT INTO plan_meters (plan_id, feature, included, package_size, \
                 package_amount, quota, fail_open, created_at, updated_at) \
                 SELECT id, 'tokens', 10000, 1000, 200, 1000000000000000, FALSE, '{at}', '{at}' \
                 FROM plans WHERE slug = 'bench'"
            ),
        )?;
        for n in 0..USERS {
            execute(
                conn,
                &format!(
                    "INSERT INTO users (email, password_hash, role, created_at, updated_at) \
                     VALUES ('bench-{n}@example.com', 'not-a-hash', 'customer', '{at}', '{at}')"
                ),
            )?;
            execute(
                conn,
                &format!(
                    "INSERT INTO subscriptions (user_id, stripe_subscription_id, plan_id, \
                     stripe_price_id, status, current_period_end, cancel_at_period_end, \
                     stripe_updated_at, created_at, updated_at) \
                     SELECT u.id, 'sub_bench{n}', p.id, 'price_bench', 'active', '{end}', FALSE, \
                     '{at}', '{at}', '{at}' FROM users u, plans p \
                     WHERE u.email = 'bench-{n}@example.com' AND p.slug = 'bench'"
                ),
            )?;
        }
        let ids = {
            use diesel::prelude::*;
            use tollgate::db::schema::users;
            let query = users::table.select(users::id).order(users::id);
            match conn {
                DbConnection::Postgresql(c) => query.load::<i64>(c)?,
                DbConnection::Sqlite(c) => query.load::<i64>(c)?,
            }
        };
        let token = tollgate::service_tokens::create(conn, &hasher, "bench", &[Scope::UsageWrite])
            .expect("token");
        Ok((token.expose_secret().to_owned(), ids))
    })
}

#[actix_web::main]
async fn main() {
    let (requests, concurrency) = support::args(20_000, 32);
    // A third argument runs one half alone: `usage` or `reserve`.
    let only = std::env::args()
        .skip(1)
        .find(|a| a == "usage" || a == "reserve");
    let runs = |half: &str| only.as_deref().is_none_or(|only| only == half);
    let mut failed = 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, backend) = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => (
            DatabaseUrl::parse(&url).expect("BENCH_DATABASE_URL"),
            "PostgreSQL",
        ),
        Err(_) => (DatabaseUrl::Sqlite(dir.path().join("bench.db")), "SQLite"),
    };
    let config = bench_config(url.clone());
    let db_url = url.clone();
    let pool_size = config.database_pool_size;
    let app = Application::build(config).expect("app");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let db = Db::connect(url, 2).expect("db");
    let (token, users) = seed(&db, &bench_config(db_url)).expect("seed");
    let token = Arc::new(token);
    let users = Arc::new(users);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let base = Arc::new(format!("http://127.0.0.1:{port}/internal/v1"));

    // Usage: a tenth as many requests, each a batch of BATCH records.
    let batches = (requests / 10).max(1);
    if runs("usage") {
        let run = {
            let (client, base, token, users) =
                (client.clone(), base.clone(), token.clone(), users.clone());
            let timestamp = chrono::Utc::now().timestamp();
            support::drive(batches, concurrency, move |i| {
                let records: Vec<_> = (0..BATCH)
                    .map(|j| {
                        serde_json::json!({
                            "user_id": users[(i * BATCH + j) % users.len()],
                            "feature": "tokens",
                            "quantity": 1 + j % 7,
                            "idempotency_key": format!("bench-{i}-{j}"),
                            "timestamp": timestamp,
                        })
                    })
                    .collect();
                let request = client
                    .post(format!("{base}/usage"))
                    .bearer_auth(&*token)
                    .json(&serde_json::json!({ "records": records }));
                async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
            })
            .await
        };
        println!(
            "usage API, {backend}, {batches} requests of {BATCH} records at concurrency \
         {concurrency} (pool {pool_size})"
        );
        println!("  {}", run.summary("req"));
        println!("  = {:.0} records/s", run.rate() * BATCH as f64);
        failed += run.failures;
    }

    if runs("reserve") {
        let run =
            {
                let (client, base, token, users) =
                    (client.clone(), base.clone(), token.clone(), users.clone());
                support::drive(requests, concurrency, move |i| {
                    let user = users[i % users.len()];
                    let request = client
                .post(format!("{base}/entitlements/{user}/reserve"))
                .bearer_auth(&*token)
                .json(&serde_json::json!({ "feature": "tokens", "quantity": 10, "ttl_secs": 60 }));
                    async move {
                        match request.send().await {
                            Ok(r) if r.status() == 200 => r
                                .json::<serde_json::Value>()
                                .await
                                .is_ok_and(|body| body["allowed"] == true),
                            _ => false,
                        }
                    }
                })
                .await
            };
        println!(
            "reserve API, {backend}, {requests} reserves over {} customers at concurrency \
         {concurrency}",
            users.len()
        );
        println!("  {}", run.summary("req"));
        failed += run.failures;
    }
    if failed > 0 {
        eprintln!("FAILED: {failed} requests failed");
        std::process::exit(1);
    }
}
