//! N instances as one, under load and failure (issue 17, point 7). Three `tollgate serve`
//! processes share one PostgreSQL database and one Redis behind a small round-robin proxy on
//! loopback. Customers sign up, sign in and pay on the simulator's Checkout; Stripe's
//! deliveries come in, a fifth of them duplicates, in shuffled order; and every few seconds one
//! instance is killed with SIGKILL and started again. Then every event the simulator sent is
//! delivered once more, shuffled (real events about real customers, as duplicates). Afterwards:
//! - every acknowledged event is stored once and finished (applied, or ignored as nothing to
//!   apply), with exactly one `webhook_validated` audit row; every event was acknowledged in
//!   the end (a delivery lost with a killed instance is sent again, as Stripe does), and so was
//!   every event the simulator sent;
//! - every subscription Tollgate holds matches the simulator's, and the other way round;
//! - no live instance answered a 5xx or dropped a connection, and none exited on its own (a
//!   request in flight on an instance as it is killed is lost with it, which the proxy tells
//!   apart; a customer whose request was lost that way starts over as a new customer);
//! - the audit chain verifies (`tollgate audit verify`), kills mid-transaction and all.
//!
//! It prints throughput and p99 per route. `scripts/test` runs it on its own after the rest of
//! the suite (it is `#[ignore]`d there: three server processes would load the machine under
//! the other tests' timings), small, with these defaults:
//! `CLUSTER_SECONDS` 12, `CLUSTER_WEBHOOKS` (deliveries) 1,500, `CLUSTER_KILL_EVERY_SECS` 4,
//! `CLUSTER_CUSTOMERS` (customers signing up side by side) 3; `CLUSTER_SEED` replays a
//! shuffle (each run prints its seed). `scripts/cluster-test` runs it in a release build with
//! 120 s, 20,000 deliveries, a kill every 20 s and 8 customers. PostgreSQL and Redis only:
//! SQLite is one machine's database.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::common::{
    Backend, PASSWORD, TestDatabase, WEBHOOK_SECRET, announced_address, card_form, csrf_token_in,
    hidden, location, postgres_available, redis_available, redis_url, secret_env, serve_command,
    stripe_event, stripe_signature_header, stripe_sim_get,
};

const INSTANCES: usize = 3;
/// What the proxy answers for a request lost with an instance killed while serving it.
const LOST: &str = "x-cluster-lost";

#[actix_web::test]
#[ignore = "three server processes load the machine: scripts/test runs it on its own, after \
            the suite (`cargo test --test api -- --ignored cluster::`)"]
async fn three_instances_lose_nothing_while_one_after_another_is_killed() {
    if !postgres_available() || !redis_available() {
        return;
    }
    let settings = Settings::from_env();
    println!(
        "cluster: {settings:?} (CLUSTER_SEED={} replays the shuffles)",
        settings.seed
    );
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let database = TestDatabase::migrated(Backend::Postgres);
    let (sim_base, sim) = stripe_sim();
    let proxy = Proxy::start();
    sim.set_webhook_target(Some(stripe_sim::webhooks::WebhookTarget {
        url: format!("{}/webhooks/stripe", proxy.base),
        secret: secrecy::SecretString::from(WEBHOOK_SECRET.to_owned()),
    }));
    let cluster = Arc::new(Cluster::new(&database, &sim_base, Arc::clone(&proxy)));
    for slot in 0..INSTANCES {
        cluster.start(slot);
    }
    let admin = Client::new(&proxy.base);
    admin.set_up_the_plan(&database).await;

    // The load, and the killer beside it.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (cluster, stop) = (Arc::clone(&cluster), Arc::clone(&stop));
        actix_web::rt::spawn(async move {
            let mut kills = 0;
            loop {
                actix_web::rt::time::sleep(settings.kill_every).await;
                if stop.load(Ordering::SeqCst) {
                    return kills;
                }
                let cluster = Arc::clone(&cluster);
                actix_web::rt::task::spawn_blocking(move || cluster.kill_and_restart(kills))
                    .await
                    .unwrap();
                kills += 1;
            }
        })
    };
    let journeys: Vec<_> = (0..settings.customers)
        .map(|customer| {
            let (base, sim_base) = (proxy.base.clone(), sim_base.clone());
            actix_web::rt::spawn(customer_journeys(customer, base, sim_base, deadline))
        })
        .collect();
    let deliveries = Deliveries::new(settings.webhooks, &mut rng);
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (deliveries, base) = (Arc::clone(&deliveries), proxy.base.clone());
            actix_web::rt::spawn(deliveries.send_all(base, started, settings.seconds))
        })
        .collect();
    let mut outcome = Journeys::default();
    for journey in journeys {
        outcome.add(journey.await.unwrap());
    }
    for sender in senders {
        sender.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    let elapsed = started.elapsed();

    // Every event the simulator sent, once more and shuffled: real events about real
    // customers, most of them duplicates by now.
    let (simulator_events, replay_failures) =
        replay_simulator_events(&sim_base, &proxy.base, &mut rng).await;

    // Stripe's own deliveries (retried by the simulator) settle once every instance is up.
    let db = database.db();
    let mut converged = false;
    for _ in 0..240 {
        let simulator = simulator_subscriptions(&sim);
        let tollgate = tollgate_subscriptions(&db);
        if !simulator.is_empty() && simulator == tollgate {
            converged = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let (simulator, tollgate) = (simulator_subscriptions(&sim), tollgate_subscriptions(&db));

    proxy.report(elapsed);
    println!(
        "cluster: {INSTANCES} instances, {kills} killed (SIGKILL) and restarted in {:.1} s; \
         {} customers subscribed, {} journeys cut short by a kill; {} deliveries of {} events \
         ({} lost with a killed instance and sent again)",
        elapsed.as_secs_f64(),
        outcome.completed,
        outcome.interrupted,
        settings.webhooks,
        deliveries.unique,
        deliveries.resent.load(Ordering::SeqCst),
    );

    assert!(kills >= 1, "no instance was killed: the run was too short");
    assert!(
        outcome.failures.is_empty(),
        "journeys failed: {:#?}",
        outcome.failures
    );
    assert!(outcome.completed > 0, "no customer got through a checkout");
    let live_5xx = proxy.live_failures();
    assert!(live_5xx.is_empty(), "live instances failed: {live_5xx:#?}");
    let exited = cluster.exited();
    assert!(
        exited.is_empty(),
        "instances exited on their own: {exited:?}"
    );
    let refused = deliveries.refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "deliveries refused: {refused:#?}");
    assert!(
        replay_failures.is_empty(),
        "the simulator's events, delivered again: {replay_failures:#?}"
    );
    assert!(
        converged,
        "subscriptions differ:\n simulator {simulator:?}\n tollgate  {tollgate:?}"
    );

    // Every event acknowledged, and stored once, finished, with one audit row: ours and the
    // simulator's, and nothing else.
    let acknowledged = deliveries.acknowledged.lock().unwrap().clone();
    assert_eq!(
        acknowledged.len(),
        deliveries.unique,
        "every event acknowledged"
    );
    let stored = stored_events(&db);
    let validated = validated_per_event(&db);
    for id in acknowledged.iter().chain(&simulator_events) {
        let status = stored.get(id).map(String::as_str);
        assert!(
            matches!(status, Some("applied" | "ignored")),
            "{id}: {status:?}"
        );
        assert_eq!(validated.get(id), Some(&1), "{id}: webhook_validated rows");
    }
    assert_eq!(
        stored.len(),
        acknowledged.len() + simulator_events.len(),
        "nothing else stored"
    );
    assert_eq!(validated.len(), stored.len(), "one audit row per event");

    // The audit chain holds, though instances died mid-transaction.
    let (code, out, err) =
        crate::common::run(crate::operations::tollgate(&database, &[]).args(["audit", "verify"]));
    assert_eq!(code, 0, "audit verify: {out}{err}");
}

/// The run's size, from the environment (see the module's documentation).
#[derive(Debug, Clone, Copy)]
struct Settings {
    seconds: u64,
    webhooks: usize,
    kill_every: Duration,
    customers: usize,
    /// The shuffles' seed.
    seed: u64,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name).map_or(default, |value| {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}"))
            })
        };
        Self {
            seconds: var("CLUSTER_SECONDS", 12).max(1),
            webhooks: var("CLUSTER_WEBHOOKS", 1_500).max(5) as usize,
            kill_every: Duration::from_secs(var("CLUSTER_KILL_EVERY_SECS", 4).max(1)),
            customers: var("CLUSTER_CUSTOMERS", 3).max(1) as usize,
            seed: var("CLUSTER_SEED", fastrand::u64(..)),
        }
    }
}

/// A simulator whose failed deliveries are retried 12 times, 100 ms first, each wait doubled.
fn stripe_sim() -> (String, Arc<stripe_sim::Sim>) {
    let mut config = stripe_sim::SimConfig::local(None);
    config.retry_base = Duration::from_millis(100);
    config.max_attempts = 12;
    let (server, base, sim) = stripe_sim::StripeSim::start(config)
        .expect("the simulator starts")
        .into_parts();
    actix_web::rt::spawn(server);
    (base, sim)
}

/// The proxy's view of one instance: where it listens while it is up.
#[derive(Default)]
struct Upstream {
    address: RwLock<Option<String>>,
    /// How many times it was killed: a request whose instance died under it is lost with it.
    deaths: AtomicU64,
}

/// One request through the proxy.
struct Record {
    route: String,
    status: u16,
    elapsed: Duration,
    /// The instance died while serving it (the proxy answered 502 itself).
    lost: bool,
    /// A live instance failed: it answered 5xx, or dropped the connection without being killed.
    live_failure: Option<String>,
}

/// A round-robin reverse proxy on loopback, as a load balancer in front of the instances: a
/// connection refused (an instance just killed) goes to the next one; a request lost in
/// flight with a killed instance is answered 502 with [`LOST`].
struct Proxy {
    base: String,
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    client: reqwest::Client,
    records: Mutex<Vec<Record>>,
}

impl Proxy {
    fn start() -> Arc<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let proxy = Arc::new(Self {
            base,
            upstreams: (0..INSTANCES).map(|_| Upstream::default()).collect(),
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            records: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(Arc::clone(&proxy));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                .default_service(web::to(forward))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        proxy
    }

    fn record(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    fn live_failures(&self) -> Vec<String> {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .filter_map(|r| r.live_failure.clone())
            .collect()
    }

    /// Requests, throughput and latency per route.
    fn report(&self, elapsed: Duration) {
        let records = self.records.lock().unwrap();
        let mut routes: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for record in records.iter() {
            routes.entry(&record.route).or_default().push(record);
        }
        println!(
            "{:<28} {:>8} {:>9} {:>6} {:>9} {:>9}",
            "route", "requests", "req/s", "lost", "p50 ms", "p99 ms"
        );
        for (route, records) in routes {
            let mut answered: Vec<Duration> = records
                .iter()
                .filter(|r| !r.lost)
                .map(|r| r.elapsed)
                .collect();
            answered.sort();
            let quantile = |q: f64| {
                answered
                    .get(((answered.len() as f64 * q).ceil() as usize).saturating_sub(1))
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            let statuses: BTreeSet<u16> = records.iter().map(|r| r.status).collect();
            println!(
                "{route:<28} {:>8} {:>9.1} {:>6} {:>9.1} {:>9.1}   statuses {statuses:?}",
                records.len(),
                records.len() as f64 / elapsed.as_secs_f64(),
                records.iter().filter(|r| r.lost).count(),
                quantile(0.5),
                quantile(0.99),
            );
        }
    }

    /// The connection to instance `slot` broke mid-request: lost with it if it was killed
    /// meanwhile, else a live instance's failure.
    fn lost(&self, route: String, started: Instant, slot: usize, killed: bool) -> HttpResponse {
        self.record(Record {
            live_failure: (!killed).then(|| format!("{route} -> instance {slot}: connection lost")),
            route,
            status: 502,
            elapsed: started.elapsed(),
            lost: killed,
        });
        HttpResponse::BadGateway()
            .insert_header((LOST, if killed { "killed" } else { "live" }))
            .finish()
    }
}

/// `GET /signup` and `POST /billing/checkout`: the method and the path, the query left out.
fn route(req: &HttpRequest) -> String {
    format!("{} {}", req.method(), req.path())
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

async fn forward(req: HttpRequest, body: web::Bytes, proxy: web::Data<Proxy>) -> HttpResponse {
    let route = route(&req);
    let started = Instant::now();
    let first = proxy.next.fetch_add(1, Ordering::Relaxed);
    for attempt in 0..INSTANCES * 4 {
        let slot = (first + attempt) % INSTANCES;
        let upstream = &proxy.upstreams[slot];
        // Deaths first: the killer takes the address away before it counts a death, so a
        // request that still got the address is sure to see the death if it is cut off.
        let deaths = upstream.deaths.load(Ordering::SeqCst);
        let Some(address) = upstream.address.read().unwrap().clone() else {
            continue;
        };
        // actix-web and reqwest name methods, statuses and headers with different versions
        // of the `http` crate: they cross as text and bytes.
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut request = proxy.client.request(method, format!("{address}{path}"));
        for (name, value) in req.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        match request.body(body.clone()).send().await {
            Ok(answer) => {
                let status = answer.status();
                let mut response = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(status.as_u16()).unwrap(),
                );
                for (name, value) in answer.headers() {
                    if !HOP_BY_HOP.contains(&name.as_str()) {
                        response.append_header((
                            name.as_str(),
                            actix_web::http::header::HeaderValue::from_bytes(value.as_bytes())
                                .unwrap(),
                        ));
                    }
                }
                let bytes = answer.bytes().await;
                let killed = upstream.deaths.load(Ordering::SeqCst) != deaths;
                let Ok(bytes) = bytes else {
                    return proxy.lost(route, started, slot, killed);
                };
                proxy.record(Record {
                    live_failure: status.is_server_error().then(|| {
                        format!(
                            "{route} -> instance {slot}: {status} {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                        )
                    }),
                    route,
                    status: status.as_u16(),
                    elapsed: started.elapsed(),
                    lost: false,
                });
                return response.body(bytes);
            }
            // Refused: it was killed a moment ago, and the next instance takes the request. If
            // it was not killed, it died on its own: a failure (the request still goes on).
            Err(err) if err.is_connect() => {
                if upstream.deaths.load(Ordering::SeqCst) == deaths {
                    proxy.record(Record {
                        live_failure: Some(format!(
                            "{route} -> instance {slot}: connection refused, not killed"
                        )),
                        route: route.clone(),
                        status: 502,
                        elapsed: started.elapsed(),
                        lost: false,
                    });
                }
                continue;
            }
            Err(_) => {
                let killed = upstream.deaths.load(Ordering::SeqCst) != deaths;
                return proxy.lost(route, started, slot, killed);
            }
        }
    }
    proxy.record(Record {
        live_failure: Some(format!("{route}: no instance up")),
        route,
        status: 503,
        elapsed: started.elapsed(),
        lost: false,
    });
    HttpResponse::ServiceUnavailable().finish()
}

/// The three `tollgate serve` processes.
struct Cluster {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    proxy: Arc<Proxy>,
    children: Mutex<Vec<Option<Child>>>,
    /// Instances found exited when nobody had killed them.
    exited: Mutex<Vec<String>>,
}

/// A limit no run reaches: the load is one address, and limits are not what is measured here.
const UNLIMITED: &str = "1000000000";

impl Cluster {
    fn new(database: &TestDatabase, sim_base: &str, proxy: Arc<Proxy>) -> Self {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).unwrap();
        let mut env: Vec<(String, String)> = secret_env()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        env.extend(
            [
                ("DATABASE_URL", database.url_string.clone()),
                ("DATABASE_POOL_SIZE", "4".to_owned()),
                ("WORKERS", "2".to_owned()),
                ("REDIS_URL", redis_url()),
                (
                    "REDIS_KEY_PREFIX",
                    format!("tollgate-cluster-{}", hex::encode(prefix)),
                ),
                ("REDIS_TIMEOUT_MS", "5000".to_owned()),
                ("PUBLIC_URL", proxy.base.clone()),
                ("SESSION_COOKIE_SECURE", "false".to_owned()),
                ("STRIPE_API_BASE", sim_base.to_owned()),
                ("STRIPE_SECRET_KEY", "sk_test_DUMMYtollgate".to_owned()),
                ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
                // A loaded CI machine may queue password hashing for a while: a 503 for that
                // is not what this test is about.
                ("ARGON2_MAX_WAIT_MS", "60000".to_owned()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        for limit in ["AUTH", "DEFAULT", "SIGN_IN", "SIGN_UP", "WEBHOOK"] {
            for measure in ["PER_MINUTE", "BURST"] {
                env.push((
                    format!("RATE_LIMIT_{limit}_{measure}"),
                    UNLIMITED.to_owned(),
                ));
            }
        }
        Self {
            env,
            dir: tempfile::tempdir().unwrap(),
            proxy,
            children: Mutex::new((0..INSTANCES).map(|_| None).collect()),
            exited: Mutex::new(Vec::new()),
        }
    }

    /// The instances that exited on their own, now included.
    fn exited(&self) -> Vec<String> {
        let mut children = self.children.lock().unwrap();
        let mut exited = self.exited.lock().unwrap().clone();
        for (slot, child) in children.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                exited.push(format!("instance {slot}: {status}"));
            }
        }
        exited
    }

    /// Starts instance `slot` and puts it behind the proxy once it listens.
    fn start(&self, slot: usize) {
        let mut child = serve_command(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap();
        let announced = announced_address(&mut child, "listening on ");
        // Kept before waiting, so that a failure to start still stops the process (on drop).
        self.children.lock().unwrap()[slot] = Some(child);
        let address = announced
            .recv_timeout(Duration::from_secs(60))
            .expect("the instance starts");
        *self.proxy.upstreams[slot].address.write().unwrap() = Some(address);
    }

    /// Kills instance `n % 3` with SIGKILL (out of the proxy first, so that only requests
    /// already on it are lost), then starts it again.
    fn kill_and_restart(&self, n: usize) {
        let slot = n % INSTANCES;
        let upstream = &self.proxy.upstreams[slot];
        *upstream.address.write().unwrap() = None;
        upstream.deaths.fetch_add(1, Ordering::SeqCst);
        if let Some(mut child) = self.children.lock().unwrap()[slot].take() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited
                    .lock()
                    .unwrap()
                    .push(format!("instance {slot}: {status}"));
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        self.start(slot);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for mut child in children.iter_mut().filter_map(Option::take) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Why a journey stopped before its end.
enum Stop {
    /// A request was lost with a killed instance: the customer gives up on this one.
    Lost,
    /// Anything else: a failure.
    Failed(String),
}

/// A customer's browser, through the proxy.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .pool_idle_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    /// Sends `request`, expecting `status`: the response, or why not.
    async fn expect(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        status: u16,
    ) -> Result<reqwest::Response, Stop> {
        let response = request
            .send()
            .await
            .map_err(|err| Stop::Failed(format!("{what}: the proxy: {err}")))?;
        if response.headers().get(LOST).is_some_and(|v| v == "killed") {
            return Err(Stop::Lost);
        }
        if response.status().as_u16() != status {
            let got = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(Stop::Failed(format!(
                "{what}: {got}, expected {status}: {}",
                &body[..body.len().min(300)]
            )));
        }
        Ok(response)
    }

    /// A page (retried when lost with a killed instance: a GET can be sent again).
    async fn page(&self, path: &str) -> Result<String, Stop> {
        for _ in 0..5 {
            match self
                .expect(&format!("GET {path}"), self.http.get(self.url(path)), 200)
                .await
            {
                Ok(page) => return page.text().await.map_err(|e| Stop::Failed(e.to_string())),
                Err(Stop::Lost) => continue,
                Err(failed) => return Err(failed),
            }
        }
        Err(Stop::Lost)
    }

    /// Posts `fields` with the CSRF token (and the operation id, if it has one) of `page`;
    /// expects a redirect and returns where to.
    async fn submit(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, Stop> {
        let html = self.page(page).await?;
        let token =
            csrf_token_in(&html).ok_or_else(|| Stop::Failed(format!("no CSRF token on {page}")))?;
        let mut form: Vec<(&str, String)> = fields
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        form.push(("csrf_token", token));
        if html.contains(r#"name="operation_id""#) {
            form.push(("operation_id", hidden(&html, "operation_id")));
        }
        let response = self
            .expect(
                &format!("POST {action}"),
                self.http.post(self.url(action)).form(&form),
                303,
            )
            .await?;
        Ok(location(&response))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin signs up, is promoted, and creates the Pro plan (synced to the simulator).
    async fn set_up_the_plan(&self, database: &TestDatabase) {
        let email = "cluster-admin@example.com";
        let signup = [
            ("email", email),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
        ];
        let ok = |result: Result<String, Stop>| match result {
            Ok(to) => to,
            Err(Stop::Lost) => panic!("lost before any kill"),
            Err(Stop::Failed(why)) => panic!("{why}"),
        };
        ok(self.submit("/signup", "/signup", &signup).await);
        database
            .db()
            .run_blocking(|conn| {
                use diesel::prelude::*;
                use tollgate::db::schema::users;
                diesel::update(users::table.filter(users::email.eq(email)))
                    .set(users::role.eq("admin"))
                    .execute(conn)
                    .map_err(tollgate::db::DbError::from)
            })
            .unwrap();
        let fields = crate::common::plan_fields("Pro", "pro", "2500");
        ok(self
            .submit("/admin/plans/new", "/admin/plans", &fields)
            .await);
    }
}

/// What the customers' journeys came to.
#[derive(Default)]
struct Journeys {
    completed: usize,
    interrupted: usize,
    failures: Vec<String>,
}

impl Journeys {
    fn add(&mut self, other: Journeys) {
        self.completed += other.completed;
        self.interrupted += other.interrupted;
        self.failures.extend(other.failures);
    }
}

/// Customer after customer until `deadline`: each signs up, chooses Pro, pays on the
/// simulator's Checkout, comes back to the success page and the account, signs out and in.
async fn customer_journeys(
    customer: usize,
    base: String,
    sim_base: String,
    deadline: Instant,
) -> Journeys {
    let mut outcome = Journeys::default();
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let email = format!("cluster-{customer}-{n}@example.com");
        match journey(&Client::new(&base), &email, &sim_base).await {
            Ok(()) => outcome.completed += 1,
            Err(Stop::Lost) => outcome.interrupted += 1,
            Err(Stop::Failed(why)) => outcome.failures.push(format!("{email}: {why}")),
        }
    }
    outcome
}

async fn journey(client: &Client, email: &str, sim_base: &str) -> Result<(), Stop> {
    let signup = [
        ("email", email),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
    ];
    client.submit("/signup", "/signup", &signup).await?;
    let checkout = client
        .submit("/pricing", "/billing/checkout", &[("plan", "pro")])
        .await?;
    if !checkout.starts_with(sim_base) {
        return Err(Stop::Failed(format!("Checkout at {checkout}")));
    }
    // Stripe's page: straight to the simulator, as the customer's browser goes.
    let stripe = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let paid = client
        .expect(
            "POST checkout (simulator)",
            stripe
                .post(&checkout)
                .form(&card_form("4242 4242 4242 4242")),
            303,
        )
        .await?;
    let success = location(&paid);
    let Some(path) = success.strip_prefix(&client.base) else {
        return Err(Stop::Failed(format!("Checkout returned to {success}")));
    };
    client.page(path).await?;
    client.page("/account").await?;
    client.submit("/account", "/logout", &[]).await?;
    let login = [("email", email), ("password", PASSWORD)];
    client.submit("/login", "/login", &login).await?;
    client.page("/account").await?;
    Ok(())
}

/// Stripe's deliveries: `webhooks` of them, a fifth duplicates of the others, shuffled, paced
/// over the run; one lost with a killed instance goes to the back of the queue.
struct Deliveries {
    queue: Mutex<VecDeque<(String, Vec<u8>)>>,
    unique: usize,
    total: usize,
    sent: AtomicUsize,
    resent: AtomicUsize,
    acknowledged: Mutex<BTreeSet<String>>,
    refused: Mutex<Vec<String>>,
}

impl Deliveries {
    fn new(total: usize, rng: &mut fastrand::Rng) -> Arc<Self> {
        let unique = total - total / 5;
        let events: Vec<(String, Vec<u8>)> = (0..unique)
            .map(|i| {
                let id = format!("evt_1Cluster{i:08}");
                let body = serde_json::to_vec(&stripe_event("invoice.paid", &id)).unwrap();
                (id, body)
            })
            .collect();
        let mut queue: Vec<(String, Vec<u8>)> = events.clone();
        queue.extend((0..total - unique).map(|_| events[rng.usize(..unique)].clone()));
        rng.shuffle(&mut queue);
        Arc::new(Self {
            queue: Mutex::new(queue.into()),
            unique,
            total,
            sent: AtomicUsize::new(0),
            resent: AtomicUsize::new(0),
            acknowledged: Mutex::new(BTreeSet::new()),
            refused: Mutex::new(Vec::new()),
        })
    }

    /// One sender: takes deliveries until none is left, the n-th not before `n / total` of
    /// the run.
    async fn send_all(self: Arc<Self>, base: String, started: Instant, seconds: u64) {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("{base}/webhooks/stripe");
        loop {
            let Some((id, body)) = self.queue.lock().unwrap().pop_front() else {
                return;
            };
            let n = self.sent.fetch_add(1, Ordering::SeqCst).min(self.total);
            let due = started + Duration::from_secs(seconds).mul_f64(n as f64 / self.total as f64);
            actix_web::rt::time::sleep_until(due.into()).await;
            let signature =
                stripe_signature_header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            if response.headers().get(LOST).is_some_and(|v| v == "killed") {
                self.resent.fetch_add(1, Ordering::SeqCst);
                self.queue.lock().unwrap().push_back((id, body));
            } else if response.status() == 200 {
                self.acknowledged.lock().unwrap().insert(id);
            } else {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                self.refused
                    .lock()
                    .unwrap()
                    .push(format!("{id}: {status} {text}"));
            }
        }
    }
}

/// Every event the simulator recorded (`GET /v1/events`, page by page), delivered once more in
/// shuffled order, signed now, through the proxy: their ids, and every delivery not answered
/// 200.
async fn replay_simulator_events(
    sim_base: &str,
    proxy_base: &str,
    rng: &mut fastrand::Rng,
) -> (Vec<String>, Vec<String>) {
    let client = reqwest::Client::new();
    let mut events: Vec<serde_json::Value> = Vec::new();
    loop {
        let mut path = "/v1/events?limit=100".to_owned();
        if let Some(last) = events.last() {
            path.push_str(&format!("&starting_after={}", last["id"].as_str().unwrap()));
        }
        let page = stripe_sim_get(sim_base, &path).await;
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["has_more"] != true {
            break;
        }
    }
    rng.shuffle(&mut events);
    let mut failures = Vec::new();
    for event in &events {
        let body = serde_json::to_vec(event).unwrap();
        let signature =
            stripe_signature_header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
        let response = client
            .post(format!("{proxy_base}/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            failures.push(format!("{}: {}", event["id"], response.status()));
        }
    }
    let ids = events
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, failures)
}

/// The simulator's subscriptions: id → status.
fn simulator_subscriptions(sim: &stripe_sim::Sim) -> HashMap<String, String> {
    sim.with_state(|state| {
        state
            .subscriptions
            .values()
            .map(|s| (s.id.clone(), s.status.as_str().to_owned()))
            .collect()
    })
}

/// Tollgate's subscriptions: Stripe id → status.
fn tollgate_subscriptions(db: &tollgate::db::Db) -> HashMap<String, String> {
    use diesel::QueryDsl as _;
    use tollgate::db::schema::subscriptions::dsl::*;
    load_pairs(db, subscriptions.select((stripe_subscription_id, status)))
}

/// Every stored event: event id → status.
fn stored_events(db: &tollgate::db::Db) -> BTreeMap<String, String> {
    use diesel::QueryDsl as _;
    use tollgate::db::schema::webhook_events::dsl::*;
    load_pairs(db, webhook_events.select((stripe_event_id, status)))
}

/// The rows of a two-column text query, collected into a map.
fn load_pairs<Q, M>(db: &tollgate::db::Db, query: Q) -> M
where
    Q: diesel::query_dsl::LoadQuery<'static, tollgate::db::DbConnection, (String, String)>,
    M: FromIterator<(String, String)>,
{
    db.run_blocking(|conn| query.load(conn).map_err(tollgate::db::DbError::from))
        .unwrap()
        .into_iter()
        .collect()
}

/// How many times each event was recorded as validated (`webhook_validated` audit rows,
/// repeats included): event id → occurrences.
fn validated_per_event(db: &tollgate::db::Db) -> BTreeMap<String, i64> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Validated {
        #[diesel(sql_type = diesel::sql_types::Text)]
        event: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        occurrences: i64,
    }
    db.run_blocking(|conn| {
        diesel::sql_query(
            "SELECT details::jsonb->>'event' AS event, SUM(count)::bigint AS occurrences \
             FROM security_events WHERE kind = 'webhook_validated' GROUP BY 1",
        )
        .load::<Validated>(conn)
        .map_err(tollgate::db::DbError::from)
    })
    .unwrap()
    .into_iter()
    .map(|row| (row.event, row.occurrences))
    .collect()
}
