//! Tollgate at scale: every admin page, the customer's pages, entitlements, webhook ingest and
//! `rotate-key` against a database seeded with USERS customers, EVENTS webhook events and
//! AUDIT audit rows (`tollgate bench seed`'s code), on the real application (release build)
//! over loopback.
//!
//! 1. Webhook ingest on the empty database (INGEST signed events at concurrency 16).
//! 2. The seed: rows per second of each kind, and the database's size per customer; then what
//!    an operator does after a bulk load (PostgreSQL: VACUUM ANALYZE; SQLite: a checkpoint).
//! 3. Each page for SECONDS at concurrency 4 after a 1-s warm-up (wrk, signed in as an admin
//!    or as a seeded customer), reporting req/s and p99: the target is p99 < 100 ms on every
//!    page.
//! 4. Webhook ingest again, on the full database: the target is within 20 % of step 1.
//! 5. `tollgate rotate-key` to a new encryption key: values re-sealed per second (target
//!    ≥ 20,000/s).
//!
//!     cargo bench --bench scale [-- USERS EVENTS AUDIT [SECONDS]]   # default 1000000 10000000 10000000 5
//!
//! SQLite (a fresh file) by default; `BENCH_DATABASE_URL=postgres://…/db` (an empty database)
//! for PostgreSQL. `scripts/bench-scale` runs both. Exits 1 if a request failed or a target was
//! missed.

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use secrecy::{ExposeSecret as _, SecretString};
use tollgate::commands::bench::{self, SeedCounts};
use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::Db;
use tollgate::service_tokens::Scope;
use tollgate::startup::Application;

const SECRET: &str = "whsec_DUMMYbenchendpointsecret";
/// Events each ingest run posts.
const INGEST: usize = 10_000;
const INGEST_CONCURRENCY: usize = 16;
/// Concurrent page loads (a console has a handful of people on it).
const PAGE_CONCURRENCY: usize = 4;
const P99_TARGET_MS: f64 = 100.0;
const RESEAL_TARGET: f64 = 20_000.0;
/// The password the benchmark gives the two seeded accounts it signs in as.
const PASSWORD: &str = "correct-horse-battery-staple-bench";
/// The dummy keys of support::config, and the one rotate-key moves to.
const OLD_KEY: u8 = 2;
const NEW_KEY: u8 = 4;

fn bench_config(database_url: DatabaseUrl) -> Config {
    use support::UNLIMITED;
    support::config(
        database_url,
        &[
            ("HSTS_MAX_AGE", "0"),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RATE_LIMIT_WEBHOOK_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_WEBHOOK_BURST", UNLIMITED),
            ("RATE_LIMIT_DEFAULT_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_DEFAULT_BURST", UNLIMITED),
            ("RATE_LIMIT_INTERNAL_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_INTERNAL_BURST", UNLIMITED),
        ],
    )
}

/// Posts `INGEST` fresh events (ids `evt_1{run}…`) and returns the run.
async fn ingest(base: &str, run: &str) -> support::Run {
    let bodies = Arc::new(support::signed_events(SECRET, run, INGEST));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(INGEST_CONCURRENCY)
        .build()
        .expect("client");
    let endpoint = Arc::new(format!("{base}/webhooks/stripe"));
    support::drive(INGEST, INGEST_CONCURRENCY, move |i| {
        let (header, body) = &bodies[i];
        let request = client
            .post(endpoint.as_str())
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body.clone());
        async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
    })
    .await
}

/// Signs in as `email` and returns the `Cookie` header that carries the session.
async fn sign_in(base: &str, email: &str) -> String {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("the sign-in page")
        .text()
        .await
        .expect("its text");
    let token = form
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf_token on the sign-in page");
    let res = client
        .post(format!("{base}/login"))
        .form(&[
            ("csrf_token", token),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status(), 303, "signing in as {email}");
    use reqwest::cookie::CookieStore as _;
    jar.cookies(&base.parse().expect("url"))
        .expect("a session cookie")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Runs `path` with `headers` (a Lua table) for `seconds`: every answer must be a 200.
async fn page(base: &str, path: &str, headers: &str, seconds: u64) -> support::Run {
    let script = format!(
        r#"local headers = {headers}
function request() return wrk.format("GET", "{path}", headers) end
function response(status, headers, body)
  if status ~= 200 then failures = failures + 1 end
end
"#
    );
    let base = base.to_owned();
    actix_web::rt::task::spawn_blocking(move || {
        support::wrk(&base, seconds, PAGE_CONCURRENCY, &script)
    })
    .await
    .expect("wrk")
}

fn env_url(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres(_) => std::env::var("BENCH_DATABASE_URL").expect("PostgreSQL"),
    }
}

#[actix_web::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| {
            a.parse::<u64>()
                .expect("numbers: USERS EVENTS AUDIT [SECONDS]")
        });
    let counts = SeedCounts {
        users: args.next().unwrap_or(1_000_000).max(2),
        events: args.next().unwrap_or(10_000_000),
        audit: args.next().unwrap_or(10_000_000),
    };
    let seconds = args.next().unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, backend) = support::database(dir.path());
    let config = bench_config(url.clone());
    let (keyring, hasher) = (config.keyring(), config.token_hasher());
    let app = Application::build(config).expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let db: Db = app.db();
    actix_web::rt::spawn(app.run_until_stopped());
    let mut failed = Vec::new();
    println!(
        "{backend}: {} customers, {} webhook events, {} audit rows",
        counts.users, counts.events, counts.audit
    );

    // 1. Ingest on the empty database.
    let empty = ingest(&base, "Empty").await;
    println!(
        "  webhook ingest, empty database:  {}",
        empty.summary("events")
    );

    // 2. The seed.
    let mut last = Instant::now();
    let report = bench::seed(&db, &keyring, &hasher, counts, |stage, done, total| {
        if done == total || last.elapsed().as_secs() >= 10 {
            last = Instant::now();
            eprintln!("  seeding {stage}: {done} of {total}");
        }
    })
    .expect("seed");
    for line in report.lines() {
        println!("  seeded {line}");
    }
    // As an operator does after a bulk load: statistics for the planner and the written pages
    // flushed (PostgreSQL: VACUUM ANALYZE, CHECKPOINT; SQLite: the WAL folded into the file).
    // Without it the pages are measured against autovacuum reading the ten million new rows.
    let started = Instant::now();
    db.run_blocking(|conn| {
        use diesel::RunQueryDsl as _;
        let settle = |sql| diesel::sql_query(sql);
        match conn {
            tollgate::db::DbConnection::Postgresql(pg) => {
                settle("VACUUM ANALYZE").execute(pg)?;
                settle("CHECKPOINT").execute(pg)?;
            }
            tollgate::db::DbConnection::Sqlite(sqlite) => {
                settle("PRAGMA wal_checkpoint(TRUNCATE)").execute(sqlite)?;
            }
        }
        Ok::<_, tollgate::db::DbError>(())
    })
    .expect("settle");
    println!(
        "  settled (PostgreSQL: VACUUM ANALYZE, CHECKPOINT; SQLite: WAL checkpoint) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let size = db.run_blocking(tollgate::db::size_bytes).expect("size");
    println!(
        "  database size {:.0} MiB: {:.2} KiB per customer (with {:.0} events and {:.0} audit \
         rows each)",
        size as f64 / 1048576.0,
        size as f64 / 1024.0 / counts.users as f64,
        counts.events as f64 / counts.users as f64,
        counts.audit as f64 / counts.users as f64,
    );

    // 3. The pages. Two seeded accounts get a known password: the first, a customer with a
    // subscription; the second, an admin.
    let password = tollgate::accounts::password::NewPassword::parse(SecretString::from(PASSWORD))
        .expect("policy")
        .hash()
        .expect("hash");
    let (customer, admin) = (bench::seed_email(1), bench::seed_email(2));
    let (customer_id, token) = {
        let (customer, admin) = (customer.clone(), admin.clone());
        db.run_blocking(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::users;
            let mut update = |email: &str, role: &str| {
                diesel::update(users::table.filter(users::email.eq(email)))
                    .set((
                        users::password_hash.eq(&password),
                        users::role.eq(role.to_owned()),
                    ))
                    .execute(conn)
            };
            update(&admin, "admin")?;
            update(&customer, "customer")?;
            let id: i64 = users::table
                .filter(users::email.eq(&customer))
                .select(users::id)
                .first(conn)?;
            let token = tollgate::service_tokens::create(
                conn,
                &hasher,
                "bench",
                &[Scope::EntitlementsRead],
            )
            .expect("token");
            Ok::<_, tollgate::db::DbError>((id, token.expose_secret().to_owned()))
        })
        .expect("bench accounts")
    };
    let admin_cookie = sign_in(&base, &admin).await;
    let customer_cookie = sign_in(&base, &customer).await;
    let as_admin = format!(r#"{{["Cookie"] = "{admin_cookie}"}}"#);
    let as_customer = format!(r#"{{["Cookie"] = "{customer_cookie}"}}"#);
    let as_service = format!(r#"{{["Authorization"] = "Bearer {token}"}}"#);
    // Deep pages: half-way through each list.
    let (mid_user, mid_event, mid_audit) = (
        counts.users / 2,
        counts.events / 2 + INGEST as u64,
        counts.audit / 2,
    );
    let pages: Vec<(String, &str)> = vec![
        ("/admin".into(), &as_admin),
        ("/admin/customers".into(), &as_admin),
        (format!("/admin/customers?before={mid_user}"), &as_admin),
        ("/admin/customers?q=seed-00012".into(), &as_admin),
        ("/admin/customers?q=nobody".into(), &as_admin),
        (format!("/admin/customers/{customer_id}/usage"), &as_admin),
        ("/admin/webhooks".into(), &as_admin),
        (format!("/admin/webhooks?before={mid_event}"), &as_admin),
        ("/admin/webhooks?status=failed".into(), &as_admin),
        ("/admin/security".into(), &as_admin),
        (format!("/admin/security?before={mid_audit}"), &as_admin),
        ("/admin/security?kind=login_failed".into(), &as_admin),
        ("/admin/security?actor=user%3A12345".into(), &as_admin),
        ("/admin/security/overview".into(), &as_admin),
        ("/admin/notifications".into(), &as_admin),
        ("/admin/cancellations".into(), &as_admin),
        ("/admin/plans".into(), &as_admin),
        ("/admin/coupons".into(), &as_admin),
        ("/admin/endpoints".into(), &as_admin),
        ("/admin/tokens".into(), &as_admin),
        ("/account".into(), &as_customer),
        ("/account/invoices".into(), &as_customer),
        ("/account/usage".into(), &as_customer),
        ("/account/keys".into(), &as_customer),
        ("/pricing".into(), "{}"),
        (
            format!("/internal/v1/entitlements/{customer_id}"),
            &as_service,
        ),
    ];
    println!("  pages, {seconds} s each at concurrency {PAGE_CONCURRENCY} (wrk):");
    for (path, headers) in &pages {
        // A second unmeasured first: the connections open, the page's rows come into the
        // cache (the first page would otherwise also measure the seed's last checkpoint).
        page(&base, path, headers, 1).await;
        let run = page(&base, path, headers, seconds).await;
        let p99 = run.p99.as_secs_f64() * 1e3;
        let verdict = if run.failures > 0 || run.requests == 0 {
            failed.push(format!(
                "{path}: {} failed of {} requests",
                run.failures, run.requests
            ));
            "FAILED"
        } else if p99 >= P99_TARGET_MS {
            failed.push(format!("{path}: p99 {p99:.1} ms"));
            "SLOW"
        } else {
            "ok"
        };
        println!("    {path:<45} {}   {verdict}", run.summary("req"));
    }

    // 4. Ingest on the full database.
    let full = ingest(&base, "Full").await;
    let ratio = full.rate() / empty.rate();
    println!(
        "  webhook ingest, full database:   {}   ({:.0} % of empty)",
        full.summary("events"),
        ratio * 100.0
    );
    if empty.failures + full.failures > 0 {
        failed.push("webhook ingest: failed deliveries".into());
    }
    if ratio < 0.8 {
        failed.push(format!(
            "ingest at {:.0} % of the empty figure",
            ratio * 100.0
        ));
    }

    // 5. rotate-key to a new key, by the real command.
    let key = |byte: u8| tollgate::secret::encode_base64(&[byte; 32]);
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "--env-file",
            "/nonexistent/.env",
            "rotate-key",
            "--batch-size",
            "1000",
        ])
        .env("DATABASE_URL", env_url(&url))
        .env("SECRET_KEY", tollgate::secret::encode_base64(&[1; 64]))
        .env("ENCRYPTION_KEY", key(NEW_KEY))
        .env("ENCRYPTION_KEYS_OLD", key(OLD_KEY))
        .env("TOKEN_PEPPER", key(3))
        .env("RUST_LOG", "warn")
        .output()
        .expect("rotate-key runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `done: re-sealed N value(s); …`
    let resealed: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("done: re-sealed "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_default();
    let rate = resealed as f64 / elapsed.as_secs_f64();
    println!(
        "  rotate-key: {resealed} values re-sealed in {:.1} s ({rate:.0}/s)",
        elapsed.as_secs_f64()
    );
    if !output.status.success() || resealed == 0 {
        failed.push(format!(
            "rotate-key failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    } else if rate < RESEAL_TARGET {
        failed.push(format!("rotate-key at {rate:.0} values/s"));
    }

    if !failed.is_empty() {
        eprintln!("FAILED:\n  {}", failed.join("\n  "));
        std::process::exit(1);
    }
}
