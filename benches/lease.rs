//! Lease API throughput on SQLite: N requests at concurrency C over loopback, against the real
//! application (release build), reporting req/s and latency percentiles.
//!
//!     cargo bench --bench lease [-- REQUESTS CONCURRENCY]

// A benchmark is a tool run by hand: failing loudly on a broken setup is right here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use tollgate::config::{Config, DatabaseUrl};
use tollgate::crypto::Keyring;
use tollgate::db::{Db, DbError};
use tollgate::service_tokens::Scope;
use tollgate::startup::Application;
use tollgate::vault::{ApiKey, Provider};

fn bench_config(path: std::path::PathBuf) -> Config {
    use support::UNLIMITED;
    support::config(
        DatabaseUrl::Sqlite(path),
        &[
            ("HSTS_MAX_AGE", "0"),
            ("RATE_LIMIT_DEFAULT_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_DEFAULT_BURST", UNLIMITED),
            ("RATE_LIMIT_LEASE_PER_MINUTE", UNLIMITED),
            ("RATE_LIMIT_LEASE_BURST", UNLIMITED),
        ],
    )
}

fn seed(db: &Db, config: &Config) -> Result<(String, tollgate::accounts::UserId), DbError> {
    let keyring = Keyring::new(&config.secrets.encryption_key, &[]);
    let hasher = config.token_hasher();
    db.run_blocking(|conn| {
        let email = tollgate::accounts::Email::parse("bench@example.com").expect("email");
        let password = tollgate::accounts::NewPassword::parse(SecretString::from(
            "benchmark password".to_owned(),
        ))
        .expect("password");
        let (user, _) = tollgate::accounts::create_admin(
            conn,
            &email,
            &password,
            tollgate::accounts::ExistingAccount::Refuse,
            "bench",
        )
        .expect("user");
        let key = ApiKey::parse(
            Provider::Anthropic,
            SecretString::from("sk-ant-api03-DUMMY-bench-000000000000000000000000".to_owned()),
        )
        .expect("key");
        let actor = tollgate::audit::Actor::new(tollgate::audit::Principal::User(user.id), None);
        tollgate::vault::save_key(conn, &keyring, &actor, user.id, Provider::Anthropic, &key)
            .expect("save");
        let token = tollgate::service_tokens::create(conn, &hasher, "bench", &[Scope::ByokLease])
            .expect("token");
        Ok((token.expose_secret().to_owned(), user.id))
    })
}

#[actix_web::main]
async fn main() {
    let (requests, concurrency) = support::args(20_000, 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = bench_config(dir.path().join("bench.db"));
    let app = Application::build(config).expect("app");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let config = bench_config(dir.path().join("bench.db"));
    let db = Db::connect(config.database_url.clone(), 2).expect("db");
    let (token, user_id) = seed(&db, &config).expect("seed");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let url = Arc::new(format!("http://127.0.0.1:{port}/internal/v1/byok/lease"));
    let body = Arc::new(serde_json::json!({ "user_id": user_id, "provider": "anthropic" }));
    let token = Arc::new(token);
    let run = support::drive(requests, concurrency, move |_| {
        let request = client.post(url.as_str()).bearer_auth(&token).json(&*body);
        async move { matches!(request.send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    println!("lease API, SQLite, {requests} requests at concurrency {concurrency}");
    println!("  {}", run.summary("req"));
}
