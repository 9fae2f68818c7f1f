//! The test harness: `TestApp::spawn` starts the real application on a random port with a fresh
//! database (a SQLite file, or a PostgreSQL database cloned from a migrated template), and
//! `Browser` talks HTTP to it with its own cookie jar, like a person would.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use diesel::{PgConnection, RunQueryDsl};
use reqwest::redirect::Policy;
use tollgate::config::{Config, DatabaseUrl};
use tollgate::db::{Db, DbConnection, DbError};
use tollgate::secret::encode_base64;
use tollgate::startup::Application;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test on SQLite and on PostgreSQL: `on_both_backends!(name, …)` makes
/// `name::sqlite` and `name::postgres` from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }

            #[actix_web::test]
            async fn postgres() {
                if $crate::common::postgres_available() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// Generous limits so ordinary tests never trip them; rate-limit tests tighten them. Built
/// from variables like production's, so every setting has its real default.
fn test_config(database_url: DatabaseUrl) -> Config {
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
    ] {
        vars.insert(name, value.to_owned());
    }
    let mut config = Config::from_vars(&|name: &str| vars.get(name).cloned())
        .expect("the test configuration is valid");
    config.database_url = database_url;
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

// ---------------------------------------------------------------------------------------------
// Captured logs: everything the application logs (debug and up) during the test run, so tests
// can prove that a secret never reaches a log line.

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,h2=info,hyper=info,hyper_util=info,reqwest=info,actix_server=info",
            )
            .with_ansi(false)
            .with_writer(|| LogCapture)
            .try_init();
    });
}

/// Everything logged so far by every app in this test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a template database migrated once per test run, one clone per test.

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn postgres_url_for(database: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{database}")
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Drops databases left behind by test runs whose process is gone.
fn sweep_stale_databases(conn: &mut PgConnection) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'tollgate_tpl_%' OR datname LIKE 'tollgate_test_%'",
    )
    .load(conn)
    .unwrap_or_default();
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
            ))
            .execute(conn);
        }
    }
}

fn postgres_template() -> Option<&'static str> {
    static TEMPLATE: OnceLock<Option<String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let admin_url = postgres_admin_url();
            let mut admin = match PgConnection::establish(&admin_url) {
                Ok(conn) => conn,
                Err(err) => {
                    if std::env::var("REQUIRE_POSTGRES").as_deref() == Ok("1") {
                        panic!("REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {admin_url}: {err}");
                    }
                    eprintln!(
                        "\n!!!!! PostgreSQL is NOT reachable at {admin_url} ({err}).\n\
                         !!!!! SKIPPING every PostgreSQL variant of the tests. Set REQUIRE_POSTGRES=1 to fail instead.\n"
                    );
                    return None;
                }
            };
            sweep_stale_databases(&mut admin);
            let name = format!("tollgate_tpl_{}", std::process::id());
            diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).unwrap();
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).unwrap();
            let conn = PgConnection::establish(&postgres_url_for(&name)).unwrap();
            let mut conn = DbConnection::Postgresql(conn);
            tollgate::db::run_migrations(&mut conn).unwrap();
            Some(name)
        })
        .as_deref()
}

/// Is PostgreSQL there? (Says so loudly, once, when it is not; panics under REQUIRE_POSTGRES=1.)
pub fn postgres_available() -> bool {
    postgres_template().is_some()
}

/// Where a test's data lives; removed when the test ends.
enum Storage {
    Sqlite(tempfile::TempDir),
    Postgres(String),
    Borrowed,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres(name) = self
            && let Ok(mut admin) = PgConnection::establish(&postgres_admin_url())
        {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = diesel::sql_query(drop).execute(&mut admin);
        }
    }
}

fn fresh_database(backend: Backend) -> (DatabaseUrl, Storage) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tollgate.db");
            (DatabaseUrl::Sqlite(path), Storage::Sqlite(dir))
        }
        Backend::Postgres => {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let template = postgres_template().expect("PostgreSQL checked by on_both_backends!");
            let name = format!(
                "tollgate_test_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            let mut admin = PgConnection::establish(&postgres_admin_url()).unwrap();
            diesel::sql_query(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .execute(&mut admin)
            .unwrap();
            let url = DatabaseUrl::parse(&postgres_url_for(&name)).unwrap();
            (url, Storage::Postgres(name))
        }
    }
}

/// A database of the given backend without an app, for tests of the CLI and schema.
pub struct TestDatabase {
    pub url: DatabaseUrl,
    pub url_string: String,
    _storage: Storage,
}

impl TestDatabase {
    pub fn new(backend: Backend) -> Self {
        let (url, storage) = fresh_database(backend);
        let url_string = match (&url, &storage) {
            (DatabaseUrl::Sqlite(path), _) => format!("sqlite://{}", path.display()),
            (DatabaseUrl::Postgres(_), Storage::Postgres(name)) => postgres_url_for(name),
            _ => unreachable!(),
        };
        Self {
            url,
            url_string,
            _storage: storage,
        }
    }

    /// A fresh database that exists and is migrated (SQLite's file too), as after `migrate`.
    pub fn migrated(backend: Backend) -> Self {
        let database = Self::new(backend);
        database
            .db()
            .run_blocking(tollgate::db::run_migrations)
            .unwrap();
        database
    }

    pub fn db(&self) -> Db {
        Db::connect(self.url.clone(), 2).unwrap()
    }

    /// The same database, owned elsewhere: dropping this handle keeps the data.
    pub fn shared(&self) -> Self {
        Self {
            url: self.url.clone(),
            url_string: self.url_string.clone(),
            _storage: Storage::Borrowed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The application under test.

pub struct TestApp {
    pub address: String,
    /// The Stripe simulator this app talks to.
    pub stripe: String,
    pub backend: Backend,
    pub db: Db,
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
        let limiters = app.limiters();
        let password_work = app.password_work();
        sim.set_webhook_target(Some(stripe_sim::webhooks::WebhookTarget {
            url: format!("{address}/webhooks/stripe"),
            secret: secrecy::SecretString::from(WEBHOOK_SECRET.to_owned()),
        }));
        actix_web::rt::spawn(app.run_until_stopped());
        let db = database.db();
        Self {
            address,
            stripe,
            backend,
            db,
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
                .id)
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

    /// Runs a query against the app's database.
    pub fn query<T>(&self, work: impl FnOnce(&mut DbConnection) -> Result<T, DbError>) -> T {
        self.db.run_blocking(work).unwrap()
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

    pub fn user_count(&self) -> i64 {
        self.query(tollgate::db::models::user::count)
    }

    pub fn session_count(&self) -> i64 {
        use tollgate::db::schema::sessions;
        self.query(|conn| Ok(sessions::table.count().get_result(conn)?))
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

// ---------------------------------------------------------------------------------------------
// A browser: cookie jar, no automatic redirects (tests assert them), form helpers.

pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            client,
            base: base.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The CSRF token embedded in the page at `path`.
    pub async fn csrf_token(&self, path: &str) -> String {
        let html = self.get_text(path).await;
        csrf_token_in(&html).unwrap_or_else(|| panic!("no csrf_token on {path}"))
    }

    /// Submits a form the way a browser would: fetch the page, send its token with the fields.
    pub async fn submit(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let token = self.csrf_token(page).await;
        let mut form = vec![("csrf_token", token.as_str())];
        form.extend_from_slice(fields);
        self.post_form(action, &form).await
    }

    pub async fn signup(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit(
            "/signup",
            "/signup",
            &[
                ("email", email),
                ("password", password),
                ("password_confirm", password),
            ],
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit(
            "/login",
            "/login",
            &[("email", email), ("password", password)],
        )
        .await
    }

    pub async fn logout(&self) -> reqwest::Response {
        self.submit("/account", "/logout", &[]).await
    }
}

/// Runs `cmd` with `stdin` written to its standard input (a password, say) and returns what
/// it printed.
pub fn output_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The address a spawned `tollgate` process announces on stderr: the first word after
/// `marker` (e.g. "listening on "), read on a thread that keeps draining stderr afterwards.
pub fn announced_address(
    child: &mut std::process::Child,
    marker: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split(marker).nth(1) {
                let word = rest.split_whitespace().next().unwrap_or_default();
                let _ = found.send(word.trim_end_matches('/').to_owned());
            }
        }
    });
    address
}

pub fn csrf_token_in(html: &str) -> Option<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(r#"input[name="csrf_token"]"#).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|input| input.value().attr("value"))
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// The value of the hidden input `name` on a page (e.g. a form's operation id).
pub fn hidden(html: &str, name: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(&format!(r#"input[name="{name}"]"#)).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|i| i.value().attr("value"))
        .unwrap_or_else(|| panic!("no {name} input"))
        .to_owned()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The session cookie's `Set-Cookie` header, if the response set one.
pub fn session_set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("tollgate_session=") || v.starts_with("__Host-tollgate="))
}

/// The simulator's checkout form filled in as a person would: `number`, a future expiry, a
/// CVC and the name on the card.
pub fn card_form(number: &str) -> Vec<(&'static str, String)> {
    vec![
        ("card_number", number.to_owned()),
        ("card_expiry", "12 / 34".to_owned()),
        ("card_cvc", "123".to_owned()),
        ("cardholder_name", "Ada Lovelace".to_owned()),
    ]
}

/// The simulator's portal: posts a change, checks that the answer is a review whose form posts
/// it again with `confirm=yes`, then confirms it as that form does; the confirmation's response.
pub async fn confirm_portal_change(
    sim: &reqwest::Client,
    action_url: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let review = sim.post(action_url).form(form).send().await.unwrap();
    assert_eq!(review.status(), 200, "a change is reviewed first");
    let html = review.text().await.unwrap();
    assert_eq!(hidden(&html, "confirm"), "yes", "{html}");
    let document = scraper::Html::parse_document(&html);
    let selector = scraper::Selector::parse("form.confirm-form").unwrap();
    let action = document
        .select(&selector)
        .next()
        .and_then(|f| f.value().attr("action"))
        .unwrap_or_else(|| panic!("no confirmation form: {html}"));
    assert!(
        action_url.ends_with(action),
        "{action} confirms {action_url}"
    );
    let mut confirmed: Vec<(&str, &str)> = form.to_vec();
    confirmed.push(("confirm", "yes"));
    sim.post(action_url).form(&confirmed).send().await.unwrap()
}
