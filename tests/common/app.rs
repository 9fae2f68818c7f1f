//! The application under test: `TestApp::spawn` starts the real application on a random port
//! with a fresh database and a Stripe simulator of its own, queries that database, and makes
//! the requests tests repeat: signed-in customers and admins, webhooks as Stripe delivers them
//! (`post_webhook`), a service's calls to `/internal/v1` with its token.

use std::time::Duration;

use diesel::prelude::*;
use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::{Db, DbConnection, DbError};
use tollgate::secret::encode_base64;
use tollgate::startup::Application;

use super::browser::Browser;
use super::db::{Backend, TestDatabase};
use super::logs::capture_logs;
use super::stripe::stripe_signature_header;

/// Generous limits so ordinary tests never trip them; rate-limit tests tighten them. Built
/// from variables like production's, so every setting has its real default.
pub(super) fn test_config(database_url: DatabaseUrl) -> Config {
    let mut vars: std::collections::HashMap<&str, String> = secret_env().into_iter().collect();
    for (name, value) in [
        ("BIND", "127.0.0.1:0"),
        ("DATABASE_POOL_SIZE", "4"),
        ("WORKERS", "1"),
        ("SESSION_COOKIE_SECURE", "false"),
        ("RATE_LIMIT_SIGN_IN_PER_MINUTE", "10000"),
        ("RATE_LIMIT_SIGN_IN_BURST", "1000"),
        ("RATE_LIMIT_SIGN_UP_PER_MINUTE", "10000"),
        ("RATE_LIMIT_SIGN_UP_BURST", "1000"),
        ("RATE_LIMIT_DEFAULT_PER_MINUTE", "60000"),
        ("RATE_LIMIT_DEFAULT_BURST", "10000"),
        ("RATE_LIMIT_LEASE_PER_MINUTE", "60000"),
        ("RATE_LIMIT_LEASE_BURST", "10000"),
        ("RATE_LIMIT_INTERNAL_PER_MINUTE", "600000"),
        ("RATE_LIMIT_INTERNAL_BURST", "100000"),
        ("RATE_LIMIT_WEBHOOK_PER_MINUTE", "600000"),
        ("RATE_LIMIT_WEBHOOK_BURST", "100000"),
        ("RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", "1000"),
        // One aggregation slot for the whole run (a century): which rows repeats share must
        // not depend on whether a test happens to cross a minute.
        ("AUDIT_AGGREGATE_WINDOW_SECS", "3153600000"),
        ("STRIPE_RATE_LIMIT_CUSTOMER", "1000"),
        ("STRIPE_RATE_LIMIT_SUBSCRIPTION", "1000"),
        ("STRIPE_RATE_LIMIT_PAYMENT_INTENT", "1000"),
        ("STRIPE_RATE_LIMIT_DEFAULT", "1000"),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        // A reserve a loaded machine is slow to decide is not "undecided": the tests that
        // want the deadline to pass set their own.
        ("RESERVE_DEADLINE_MS", "10000"),
    ] {
        vars.insert(name, value.to_owned());
    }
    let mut config = Config::from_vars(&|name: &str| vars.get(name).cloned())
        .expect("the test configuration is valid");
    config.database_url = database_url;
    // The outbox's worker polls and retries fast (tests wait on its deliveries).
    config.notify.poll_interval = Duration::from_millis(50);
    config.notify.retry_base = Duration::from_millis(100);
    config
}

/// The endpoint secret tests sign webhooks with (and the simulator signs its deliveries with).
pub const WEBHOOK_SECRET: &str = "whsec_DUMMYtestendpointsecret";

/// Starts a Stripe simulator for one app; its deliveries go to the app once it is listening.
fn spawn_stripe_sim() -> (String, std::sync::Arc<stripe_sim::Sim>) {
    let mut config = stripe_sim::SimConfig::local(None);
    config.retry_base = Duration::from_millis(50);
    let (server, base_url, sim) = stripe_sim::StripeSim::start(config)
        .expect("stripe simulator starts")
        .into_parts();
    actix_web::rt::spawn(server);
    (base_url, sim)
}

/// The dummy secrets as environment variables, for running the CLI against a test's database.
pub fn secret_env() -> Vec<(&'static str, String)> {
    vec![
        ("SECRET_KEY", encode_base64(&[0x11; 64])),
        ("ENCRYPTION_KEY", encode_base64(&[0x22; 32])),
        ("TOKEN_PEPPER", encode_base64(&[0x33; 32])),
    ]
}

pub struct TestApp {
    pub address: String,
    /// The token-free `/metrics` listener's address, when `METRICS_BIND` is configured.
    pub metrics_address: Option<String>,
    /// The Stripe simulator this app talks to.
    pub stripe: String,
    /// The simulator itself, for state no endpoint of this branch sets (meter events).
    pub sim: std::sync::Arc<stripe_sim::Sim>,
    pub backend: Backend,
    pub db: Db,
    /// The application's own pool (its connections as it set them up).
    pub app_db: Db,
    pub token_hasher: tollgate::crypto::TokenHasher,
    /// The app's in-memory limiters (to sweep them and count their keys).
    pub limiters: tollgate::limits::LimiterSweep,
    /// The app's cap on concurrent argon2 work (a test can take its slots).
    pub password_work: std::sync::Arc<tollgate::accounts::PasswordWork>,
    _database: TestDatabase,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a configuration adjusted by `adjust` (rate limits, timeouts, proxies…).
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(TestDatabase::new(backend), backend, adjust).await
    }

    /// Spawns on an existing database (e.g. one the CLI has just written to).
    pub async fn spawn_on(
        database: TestDatabase,
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        capture_logs();
        let (stripe, sim) = spawn_stripe_sim();
        let mut config = test_config(database.url.clone());
        config.stripe.api_base = stripe.clone();
        config.stripe.secret_key =
            Some(tollgate::config::StripeSecretKey::parse("sk_test_DUMMYtollgate").unwrap());
        adjust(&mut config);
        let token_hasher = config.token_hasher();
        let app = Application::build(config).expect("application builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
        let limiters = app.limiters();
        let password_work = app.password_work();
        let app_db = app.db();
        sim.set_webhook_target(Some(stripe_sim::webhooks::WebhookTarget {
            url: format!("{address}/webhooks/stripe"),
            secret: secrecy::SecretString::from(WEBHOOK_SECRET.to_owned()),
        }));
        actix_web::rt::spawn(app.run_until_stopped());
        let db = database.db();
        Self {
            address,
            metrics_address,
            stripe,
            sim,
            backend,
            db,
            app_db,
            token_hasher,
            limiters,
            password_work,
            _database: database,
        }
    }

    /// Creates a service token directly (as `tollgate service-token create` does).
    pub fn service_token(&self, name: &str, scopes: &[tollgate::service_tokens::Scope]) -> String {
        use tollgate::secret::ExposeSecret as _;
        let hasher = &self.token_hasher;
        let token = self
            .db
            .run_blocking(|conn| tollgate::service_tokens::create(conn, hasher, name, scopes))
            .unwrap();
        token.expose_secret().to_owned()
    }

    /// Another handle on this app's database (for the CLI, or a second app on the same data).
    pub fn database_handle(&self) -> TestDatabase {
        self._database.shared()
    }

    pub fn user_id(&self, email: &str) -> i64 {
        let email = email.to_owned();
        self.query(move |conn| {
            Ok(tollgate::db::models::user::find_by_email(conn, &email)?
                .unwrap()
                .id
                .get())
        })
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// A browser already signed in to a new customer account.
    pub async fn signed_in_customer(&self, email: &str) -> Browser {
        let browser = self.browser();
        let res = browser.signup(email, PASSWORD).await;
        assert_eq!(res.status(), 303, "signup of {email} failed");
        browser
    }

    /// A browser signed in to a new account that has then been made an admin.
    pub async fn signed_in_admin(&self, email: &str) -> Browser {
        let browser = self.signed_in_customer(email).await;
        self.promote_to_admin(email);
        browser
    }

    /// Delivers `event` to `/webhooks/stripe` as Stripe does: signed with the endpoint secret,
    /// now.
    pub async fn post_webhook(&self, event: &serde_json::Value) -> reqwest::Response {
        let body = serde_json::to_vec(event).unwrap();
        let now = chrono::Utc::now().timestamp();
        let signature = stripe_signature_header(WEBHOOK_SECRET, now, &body);
        self.post_webhook_body(&body, Some(&signature)).await
    }

    /// Delivers `event` and asserts that it is acknowledged as a first delivery.
    pub async fn assert_webhook_accepted(&self, event: &serde_json::Value) {
        let res = self.post_webhook(event).await;
        assert_eq!(res.status(), 200, "{} refused", event["id"]);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "received": true, "duplicate": false })
        );
    }

    /// POSTs `body` to `/webhooks/stripe` with `signature` as its `Stripe-Signature` header
    /// (none when `None`).
    pub async fn post_webhook_body(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> reqwest::Response {
        self.post_webhook_from(body, signature, None).await
    }

    /// The same from a client that says, in `X-Forwarded-For`, whom it forwards.
    pub async fn post_webhook_from(
        &self,
        body: &[u8],
        signature: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}/webhooks/stripe", self.address))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        if let Some(xff) = forwarded_for {
            request = request.header("x-forwarded-for", xff);
        }
        request.send().await.unwrap()
    }

    /// A service's `GET /internal/v1/{path}` with its bearer `token`.
    pub async fn internal_get(&self, path: &str, token: &str) -> reqwest::Response {
        let browser = self.browser();
        browser
            .client
            .get(browser.url(&format!("/internal/v1/{path}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// A service's `POST /internal/v1/{path}` of `body` as JSON, with its bearer `token` (none
    /// when `None`).
    pub async fn internal_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let browser = self.browser();
        let mut request = browser
            .client
            .post(browser.url(&format!("/internal/v1/{path}")))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Runs a query against the app's database.
    pub fn query<T>(&self, work: impl FnOnce(&mut DbConnection) -> Result<T, DbError>) -> T {
        self.db.run_blocking(work).unwrap()
    }

    /// Stores and applies `events` in one transaction, as the webhook writer does with the
    /// deliveries of one batch (over HTTP, which deliveries share a batch is up to timing).
    /// With the keys and peppers of the test configuration: not for an app spawned with others.
    pub fn ingest_together(
        &self,
        events: &[serde_json::Value],
    ) -> Vec<tollgate::webhooks::Ingested> {
        use tollgate::webhooks::{Context, Delivery, StripeEvent};
        let config = test_config(self._database.url.clone());
        let (keyring, hasher) = (config.keyring(), config.token_hasher());
        let ties = tollgate::reconcile::refetch::Ties::default();
        let cx = Context::new(&config, &keyring, &hasher, &ties);
        let raws: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap())
            .collect();
        let parsed: Vec<StripeEvent> = raws
            .iter()
            .map(|raw| StripeEvent::parse(raw, false).unwrap())
            .collect();
        let deliveries: Vec<Delivery<'_>> = parsed
            .iter()
            .zip(&raws)
            .map(|(event, raw)| Delivery {
                event,
                raw,
                ip: "127.0.0.1",
                signature_digest: "",
                request_id: None,
            })
            .collect();
        let mut conn = self.db.connection().unwrap();
        tollgate::db::write_transaction(&mut conn, |conn| {
            tollgate::webhooks::store_and_apply(conn, cx, &deliveries)
        })
        .unwrap()
    }

    /// The outbox's rows on `channel`, oldest first.
    pub fn notifications(
        &self,
        channel: &str,
    ) -> Vec<tollgate::db::models::notification::NotificationRow> {
        let rows = self.query(tollgate::db::models::notification::all);
        rows.into_iter()
            .filter(|row| row.channel == channel)
            .collect()
    }

    /// The sum of this instance's `/metrics` series named `name` whose labels include every
    /// `label="value"` of `labels`, read with `token` (scope `metrics:read`).
    pub async fn metric_total(&self, token: &str, name: &str, labels: &[&str]) -> f64 {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn count_events(&self, kind: &'static str) -> i64 {
        self.query(|conn| tollgate::db::models::security_event::count_of_kind(conn, kind))
    }

    pub fn events(
        &self,
        kind: &'static str,
    ) -> Vec<tollgate::db::models::security_event::SecurityEventRow> {
        self.query(|conn| tollgate::db::models::security_event::recent(conn, 1000))
            .into_iter()
            .filter(|row| row.kind == kind)
            .collect()
    }

    /// How many accounts are stored (counted, not the count the database keeps).
    pub fn user_count(&self) -> i64 {
        use tollgate::db::schema::users;
        self.query(|conn| Ok(users::table.count().get_result(conn)?))
    }

    pub fn session_count(&self) -> i64 {
        use tollgate::db::schema::sessions;
        self.query(|conn| Ok(sessions::table.count().get_result(conn)?))
    }

    /// The Stripe id of the subscription `user_id` holds.
    pub fn subscription_id(&self, user_id: i64) -> String {
        use tollgate::db::schema::subscriptions;
        self.query(move |conn| {
            Ok(subscriptions::table
                .filter(subscriptions::user_id.eq(user_id))
                .select(subscriptions::stripe_subscription_id)
                .first(conn)?)
        })
    }

    /// The status of the subscription `user_id` holds, as Tollgate recorded it.
    pub fn subscription_status(&self, user_id: i64) -> String {
        use tollgate::db::schema::subscriptions;
        self.query(move |conn| {
            Ok(subscriptions::table
                .filter(subscriptions::user_id.eq(user_id))
                .select(subscriptions::status)
                .first(conn)?)
        })
    }

    /// Makes an existing account an admin, as `create-admin` would.
    pub fn promote_to_admin(&self, email: &str) {
        let email = email.to_owned();
        self.query(move |conn| {
            let user = tollgate::db::models::user::find_by_email(conn, &email)?.unwrap();
            tollgate::db::models::user::set_role(conn, user.id, tollgate::accounts::Role::Admin)
        })
    }
}
