//! The internal API the product's services call on every AI request, each route in turn at
//! concurrency C over loopback against the real application (release build), driven by `wrk`
//! (a separate process, as `../shared/PERFORMANCE.md` measures), reporting req/s and latency
//! percentiles:
//!
//! - `entitlements`: `GET /internal/v1/entitlements/{user_id}`;
//! - `lease`: `POST /internal/v1/byok/lease` (each lease audited: afterwards the audit log
//!   must hold a `byok_leased` row for every answered lease);
//! - `reserve`: `POST /internal/v1/entitlements/{user_id}/reserve`;
//! - `usage`: `POST /internal/v1/usage`, batches of 100 records (also records/s).
//!
//! Afterwards the database must hold what the answered requests stored.
//!
//!     cargo bench --bench internal_api [-- SECONDS CONCURRENCY [entitlements|lease|reserve|usage]]
//!
//! SQLite (a fresh file) by default; `BENCH_DATABASE_URL=postgres://…/db` (an empty database)
//! for PostgreSQL. `scripts/bench-internal` runs both. A third argument runs one route alone;
//! `DATABASE_POOL_SIZE` sets the pool (default 8). wrk runs on the same two cores and takes CPU
//! from the server: read the figures as a lower bound. Exits 1 if any request failed.

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use diesel::RunQueryDsl as _;
use secrecy::{ExposeSecret as _, SecretString};
use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::{Db, DbConnection, DbError};
use tollgate::service_tokens::Scope;
use tollgate::startup::Application;
use tollgate::vault::{ApiKey, Provider};

/// Customers the requests are spread over (round robin).
const USERS: usize = 200;
/// Records per usage request.
const BATCH: usize = 100;
/// How long each route is warmed up before it is measured.
const WARM_UP_SECS: u64 = 2;
/// The audit rows of the run's leases (the seed's keys are audited as `byok_key_saved`).
const LEASED: &str = "security_events WHERE kind = 'byok_leased'";

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
            ("RATE_LIMIT_LEASE_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_LEASE_BURST", UNLIMITED),
            ("RATE_LIMIT_INTERNAL_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_INTERNAL_BURST", UNLIMITED),
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
/// no run reaches), each with a live subscription and an Anthropic key (a dummy); and a
/// service token with every scope these routes need. Seeded straight into the database: the
/// benchmark measures the API, not sign-up and Checkout.
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
        let keyring = tollgate::crypto::Keyring::new(&config.secrets.encryption_key, &[]);
        for id in &ids {
            let user = tollgate::accounts::UserId::from(*id);
            let key = ApiKey::parse(
                Provider::Anthropic,
                SecretString::from(format!("sk-ant-api03-DUMMY-bench-{id:024}")),
            )
            .expect("a dummy key");
            let actor = tollgate::audit::Actor::new(tollgate::audit::Principal::User(user), None);
            tollgate::vault::save_key(conn, &keyring, &actor, user, Provider::Anthropic, &key)
                .expect("save the key");
        }
        let scopes = [Scope::UsageWrite, Scope::EntitlementsRead, Scope::ByokLease];
        let token =
            tollgate::service_tokens::create(conn, &hasher, "bench", &scopes).expect("token");
        Ok((token.expose_secret().to_owned(), ids))
    })
}

/// The Lua every route's script shares: the customers, the token, and the thread's number.
fn lua_prelude(token: &str, users: &[i64]) -> String {
    let users = users
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"local users = {{{users}}}
local headers = {{["Authorization"] = "Bearer {token}", ["Content-Type"] = "application/json"}}
local id, sent = 0, 0
function init(args) id = wrk.thread:get("thread_id") end
local function answered(ok)
  if not ok then failures = failures + 1 end
end
"#
    )
}

/// Batches of `BATCH` records, each record for the next customer, with keys unique to the run
/// (named `run`): a response counts if every record was accepted as new.
fn usage_script(prelude: &str, run: &str) -> String {
    let timestamp = chrono::Utc::now().timestamp();
    format!(
        r#"{prelude}
function request()
  local records = {{}}
  for j = 0, {last} do
    local n = sent * {BATCH} + j
    records[j + 1] = string.format(
      '{{"user_id":%d,"feature":"tokens","quantity":%d,"idempotency_key":"bench-{run}-%d-%d","timestamp":{timestamp}}}',
      users[(n * 2 + id) % #users + 1], 1 + j % 7, id, n)
  end
  sent = sent + 1
  return wrk.format("POST", "/internal/v1/usage", headers,
    '{{"records":[' .. table.concat(records, ",") .. ']}}')
end
function response(status, headers, body)
  answered(status == 200 and string.find(body, '"duplicates":0', 1, true) ~= nil)
end
"#,
        last = BATCH - 1,
    )
}

/// One reserve of 10 tokens per request, round robin over the customers: a response counts if
/// it was allowed.
fn reserve_script(prelude: &str) -> String {
    format!(
        r#"{prelude}
local body = '{{"feature":"tokens","quantity":10,"ttl_secs":60}}'
function request()
  local user = users[(sent * 2 + id) % #users + 1]
  sent = sent + 1
  return wrk.format("POST", "/internal/v1/entitlements/" .. user .. "/reserve", headers, body)
end
function response(status, headers, body)
  answered(status == 200 and string.find(body, '"allowed":true', 1, true) ~= nil)
end
"#
    )
}

/// One entitlements read per request, round robin over the customers: a response counts if
/// the customer's plan is active.
fn entitlements_script(prelude: &str) -> String {
    format!(
        r#"{prelude}
function request()
  local user = users[(sent * 2 + id) % #users + 1]
  sent = sent + 1
  return wrk.format("GET", "/internal/v1/entitlements/" .. user, headers)
end
function response(status, headers, body)
  answered(status == 200 and string.find(body, '"active":true', 1, true) ~= nil)
end
"#
    )
}

/// One lease of the customer's Anthropic key per request, round robin over the customers: a
/// response counts if it holds a key.
fn lease_script(prelude: &str) -> String {
    format!(
        r#"{prelude}
function request()
  local user = users[(sent * 2 + id) % #users + 1]
  sent = sent + 1
  return wrk.format("POST", "/internal/v1/byok/lease", headers,
    '{{"user_id":' .. user .. ',"provider":"anthropic"}}')
end
function response(status, headers, body)
  answered(status == 200 and string.find(body, '"api_key":"sk-ant-', 1, true) ~= nil)
end
"#
    )
}

/// Rows of `table` (the records, reservations or audit rows the run stored).
fn count(db: &Db, table: &'static str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    db.run_blocking(move |conn| {
        let query = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"));
        Ok::<_, DbError>(match conn {
            DbConnection::Postgresql(c) => query.get_result::<Count>(c)?.n,
            DbConnection::Sqlite(c) => query.get_result::<Count>(c)?.n,
        })
    })
    .expect("count")
}

/// Whether the database holds what the answered requests stored: at least `per_request` rows
/// for each, and at most that for each request wrk had in flight when it stopped.
/// Whether `table` gained a row (`per_request` rows) for each request `run` answered since it
/// held `before` rows, give or take the `c` requests in flight when it ended.
fn stored(
    db: &Db,
    table: &'static str,
    before: i64,
    run: &support::Run,
    per_request: usize,
    c: usize,
) -> bool {
    let rows = (count(db, table) - before) as usize;
    let answered = (run.requests - run.failures) * per_request;
    let ok = (answered..=answered + c * per_request).contains(&rows);
    if !ok {
        eprintln!("{table}: {rows} rows for {answered} answered ({c} in flight at most)");
    }
    ok
}

#[actix_web::main]
async fn main() {
    let (seconds, concurrency) = support::args(10, 32);
    let seconds = seconds as u64;
    // A third argument runs one route alone.
    let only = std::env::args()
        .skip(1)
        .find(|a| ["entitlements", "lease", "reserve", "usage"].contains(&a.as_str()));
    let runs = |route: &str| only.as_deref().is_none_or(|only| only == route);
    let mut failed = 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, backend) = support::database(dir.path());
    let config = bench_config(url.clone());
    let db_url = url.clone();
    let pool_size = config.database_pool_size;
    let app = Application::build(config).expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let db = Db::connect(url, 2).expect("db");
    let (token, users) = seed(&db, &bench_config(db_url)).expect("seed");
    let prelude = lua_prelude(&token, &users);
    // wrk blocks: it runs on a blocking thread while the server serves on its workers.
    let wrk = |script: String, seconds: u64| {
        let base = base.clone();
        actix_web::rt::task::spawn_blocking(move || {
            support::wrk(&base, seconds, concurrency, &script)
        })
    };
    // Each route is warmed up first (connections opened, caches filled), unmeasured, as
    // scripts/bench-pricing does; then `table` (if any) is counted, for `stored` to compare.
    let warm_up = |script: String, table: Option<&'static str>| {
        let db = db.clone();
        let warm = wrk(script, WARM_UP_SECS);
        async move {
            warm.await.expect("wrk");
            // The requests cut off by wrk's end land meanwhile.
            actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
            table.map_or(0, |table| count(&db, table))
        }
    };

    let header = |route: &str, run: &support::Run| {
        println!(
            "{route}, {backend}, {} requests over {} customers in {seconds} s at concurrency \
             {concurrency} (pool {pool_size}, wrk)",
            run.requests,
            users.len()
        );
        println!("  {}", run.summary("req"));
    };
    if runs("entitlements") {
        warm_up(entitlements_script(&prelude), None).await;
        let run = wrk(entitlements_script(&prelude), seconds)
            .await
            .expect("wrk");
        header("entitlements API", &run);
        failed += run.failures;
    }
    if runs("lease") {
        let before = warm_up(lease_script(&prelude), Some(LEASED)).await;
        let run = wrk(lease_script(&prelude), seconds).await.expect("wrk");
        header("BYOK lease API", &run);
        failed += run.failures;
        if !stored(&db, LEASED, before, &run, 1, concurrency) {
            failed += 1;
        }
    }
    // Reserves before usage: measured on their own, not while PostgreSQL vacuums and
    // checkpoints the hundreds of thousands of rows the usage half writes.
    if runs("reserve") {
        let table = "usage_reservations";
        let before = warm_up(reserve_script(&prelude), Some(table)).await;
        let run = wrk(reserve_script(&prelude), seconds).await.expect("wrk");
        header("reserve API", &run);
        failed += run.failures;
        if !stored(&db, table, before, &run, 1, concurrency) {
            failed += 1;
        }
    }
    if runs("usage") {
        let before = warm_up(usage_script(&prelude, "warm"), Some("usage_records")).await;
        let run = wrk(usage_script(&prelude, "run"), seconds)
            .await
            .expect("wrk");
        header(&format!("usage API ({BATCH} records a request)"), &run);
        println!("  = {:.0} records/s", run.rate() * BATCH as f64);
        failed += run.failures;
        if !stored(&db, "usage_records", before, &run, BATCH, concurrency) {
            failed += 1;
        }
    }

    if failed > 0 {
        eprintln!("FAILED: {failed} requests failed or were not stored");
        std::process::exit(1);
    }
}
