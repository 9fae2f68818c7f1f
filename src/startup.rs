//! Builds the application: database, migrations, middleware (in order), routes, and the server,
//! and runs its housekeeping (retention, idle limiter keys, the audit file's reopening).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::accounts::PasswordWork;
use crate::audit::alerts::ServerErrorRate;
use crate::config::Config;
use crate::db::{self, Db, DbError};
use crate::limits::{FailureLimiter, KeyedLimiter, LimiterSweep, SharedLimits, Sweep as _};
use crate::metrics::Metrics;
use crate::notify::worker::Worker as NotifyWorker;
use crate::web::middleware::access_log;
use crate::web::middleware::error_pages::render_error_pages;
use crate::web::middleware::error_rate::count_server_errors;
use crate::web::middleware::form_budget::{FormBudget, FormBudgets};
use crate::web::middleware::fresh_entitlements;
use crate::web::middleware::head::head_as_get;
use crate::web::middleware::rate_limit;
use crate::web::middleware::request_span::RequestSpan;
use crate::web::middleware::security_headers::SecurityHeaders;
use crate::web::middleware::session_store::Sessions;
use crate::web::{AppState, request_id, routes};
use crate::webhooks::writer::WebhookWriter;

/// Largest request body outside routes that set their own limit.
const BODY_LIMIT: usize = 64 * 1024;
/// How often retention prunes old rows and expired sessions (plus up to a minute of jitter,
/// so instances sharing a database do not prune at the same moment).
const RETENTION_EVERY: Duration = Duration::from_secs(5 * 60);
/// How often idle keys are swept from the in-memory limiters.
const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("could not listen on the configured address: {0}")]
    Bind(#[from] std::io::Error),
    #[error("rate limit settings are out of range: {0}")]
    RateLimit(&'static str),
    #[error(transparent)]
    NotifyWorker(#[from] crate::notify::worker::WorkerError),
    #[error(transparent)]
    AuditFile(#[from] crate::audit::file_sink::FileSinkError),
    /// Redis answered but refused what the shared limits need (a password, an ACL, a script).
    #[error("the Redis at REDIS_URL cannot keep the shared limits: {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct Application {
    port: u16,
    /// The port of the token-free `/metrics` listener (`METRICS_BIND`), if configured.
    metrics_port: Option<u16>,
    db: Db,
    server: Server,
    metrics_server: Option<Server>,
    metrics: Metrics,
    limiters: LimiterSweep,
    password_work: Arc<PasswordWork>,
    /// Sends the outbox's notifications (e-mail, app webhooks, alert webhooks).
    notify_worker: NotifyWorker,
    /// Forwards stored usage to Stripe's meter events API.
    usage_sender: crate::usage::sender::Sender,
    retention: crate::audit::retention::Retention,
    audit_file: Option<crate::audit::file_sink::FileSink>,
    /// Expired reservations' holds are freed this often (`RESERVATION_SWEEP_INTERVAL_SECS`).
    reservation_sweep: Duration,
    quota_policies: crate::usage::quota::Policies,
    /// This instance's name when it takes a periodic job's lease.
    job_holder: String,
}

impl Application {
    /// Connects, migrates and binds. Port 0 picks a free port (tests).
    pub fn build(config: Config) -> Result<Self, StartupError> {
        let metrics = Metrics::new();
        let db = Db::connect_with(
            config.database_url.clone(),
            config.database_pool_size,
            config.sqlite_synchronous,
        )?
        .with_metrics(metrics.clone());
        let applied = db.run_blocking(db::run_migrations)?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        // Each configured key's age starts the first time Tollgate runs with it.
        let keyring = config.keyring();
        db.run_blocking(|conn| {
            crate::encryption_keys::record_configured(conn, &keyring, db::now())
        })?;
        crate::accounts::password::prepare();
        crate::audit::chain::use_instance_id(&config.audit_trail.instance_id);
        let retention = crate::audit::retention::Retention::new(&config.audit_trail);
        let audit_file = match &config.audit_trail.log_file {
            Some(path) => Some(crate::audit::file_sink::FileSink::start(
                db.clone(),
                path.clone(),
            )?),
            None => None,
        };
        let listener = TcpListener::bind(config.bind)?;
        let port = listener.local_addr()?.port();
        let metrics_listener = config.metrics.bind.map(TcpListener::bind).transpose()?;
        let metrics_port = match &metrics_listener {
            Some(listener) => Some(listener.local_addr()?.port()),
            None => None,
        };
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        let notify_worker = NotifyWorker::new(db.clone(), &config, &public_url, metrics.clone())?;
        let usage_sender = crate::usage::sender::Sender::new(db.clone(), &config, metrics.clone());
        let hashing = config.password_hashing;
        let reservation_sweep = config.quotas.sweep_interval;
        let job_holder = job_holder(&config);
        let quota_policies = crate::usage::quota::Policies::default();
        let password_work = Arc::new(PasswordWork::new(hashing.max_concurrent, hashing.max_wait));
        let (server, metrics_server, limiters) = run(
            Listeners {
                main: listener,
                metrics: metrics_listener,
            },
            db.clone(),
            Arc::new(config),
            public_url,
            Arc::clone(&password_work),
            metrics.clone(),
            quota_policies.clone(),
        )?;
        Ok(Self {
            port,
            metrics_port,
            db,
            server,
            metrics_server,
            metrics,
            limiters,
            password_work,
            notify_worker,
            usage_sender,
            retention,
            audit_file,
            reservation_sweep,
            quota_policies,
            job_holder,
        })
    }

    /// The port of the `METRICS_BIND` listener, if one is configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application's database handle (for start-up tasks such as seeding a demo).
    pub fn db(&self) -> Db {
        self.db.clone()
    }

    /// Every keyed in-memory limiter of the application (swept once a minute while serving).
    pub fn limiters(&self) -> LimiterSweep {
        self.limiters.clone()
    }

    /// The cap on concurrent argon2 work.
    pub fn password_work(&self) -> Arc<PasswordWork> {
        Arc::clone(&self.password_work)
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM), pruning old rows and expired
    /// sessions (retention) and sweeping idle limiter keys meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics;
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(METRICS_UPKEEP_EVERY);
            loop {
                every.tick().await;
                metrics.upkeep();
            }
        });
        let metrics_server = self.metrics_server.map(|server| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let limiters = self.limiters;
        actix_web::rt::spawn(async move {
            // Not at once: the limiters are empty at start.
            let first = actix_web::rt::time::Instant::now() + LIMITER_SWEEP_EVERY;
            let mut every = actix_web::rt::time::interval_at(first, LIMITER_SWEEP_EVERY);
            loop {
                every.tick().await;
                limiters.sweep();
            }
        });
        actix_web::rt::spawn(self.notify_worker.run());
        actix_web::rt::spawn(self.usage_sender.run());
        actix_web::rt::spawn(run_retention(
            self.db.clone(),
            self.retention,
            self.job_holder.clone(),
        ));
        actix_web::rt::spawn(sweep_reservations(
            self.db.clone(),
            self.quota_policies,
            self.reservation_sweep,
            self.job_holder,
        ));
        if let Some(sink) = self.audit_file {
            actix_web::rt::spawn(reopen_on_sighup(sink));
        }
        let served = self.server.await;
        if let Some(metrics_server) = metrics_server {
            metrics_server.stop(true).await;
        }
        served
    }
}

/// Where the application listens: its main address, and `METRICS_BIND` if set.
struct Listeners {
    main: TcpListener,
    metrics: Option<TcpListener>,
}

/// The server on `METRICS_BIND`: `GET /metrics` without a token, nothing else.
fn metrics_server(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(web::resource("/metrics").route(web::get().to(routes::metrics::serve_open)))
    })
    .workers(1)
    .listen(listener)?;
    Ok(server.run())
}

/// Whether this instance runs `job` this period: it takes the job's lease (`job_leases`) for
/// a little less than `period`, so that the holder's next tick finds it free again and no
/// period goes without a run; while the lease is out, every other instance skips the job.
async fn leased(db: &Db, job: &'static str, holder: &str, period: Duration) -> bool {
    let holder = holder.to_owned();
    let taken = db
        .run(move |conn| {
            let at = crate::db::now();
            let hold = chrono::Duration::from_std(period.mul_f64(0.9)).unwrap_or_default();
            crate::db::models::job_lease::take(conn, job, &holder, at, at + hold)
        })
        .await;
    taken.unwrap_or_else(|err| {
        tracing::warn!(job, error = %err, "could not take the job's lease: skipped this period");
        false
    })
}

/// This instance's name in `job_leases` (its host name and a random tag: several instances
/// may share a host).
fn job_holder(config: &Config) -> String {
    let tag = crate::secret::random_bytes::<4>()
        .map(|b| format!("{:08x}", u32::from_le_bytes(b)))
        .unwrap_or_default();
    format!("{}-{tag}", config.audit_trail.instance_id)
}

/// Prunes what retention says is old enough, every few minutes (jittered), batch by batch, on
/// one instance at a time.
async fn run_retention(db: Db, retention: crate::audit::retention::Retention, holder: String) {
    let jitter = crate::secret::random_bytes::<2>()
        .map(|b| u64::from(u16::from_le_bytes(b)) % 60_000)
        .unwrap_or_default();
    let period = RETENTION_EVERY + Duration::from_millis(jitter);
    let mut every = actix_web::rt::time::interval(period);
    loop {
        every.tick().await;
        if !leased(&db, "retention", &holder, RETENTION_EVERY).await {
            continue;
        }
        match crate::audit::retention::prune(&db, retention).await {
            Ok(pruned) if pruned.total() > 0 => {
                use crate::audit::retention::Table;
                tracing::info!(
                    security_events = pruned.of(Table::SecurityEvents),
                    webhook_events = pruned.of(Table::WebhookEvents),
                    notifications = pruned.of(Table::Notifications),
                    sessions = pruned.of(Table::Sessions),
                    stripe_operations = pruned.of(Table::StripeOperations),
                    "retention pruned old rows"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "retention could not prune"),
        }
    }
}

/// Frees the holds of expired reservations (on one instance at a time) and refreshes the
/// per-feature fail-open policies (on each), at start and then every `period`.
async fn sweep_reservations(
    db: Db,
    policies: crate::usage::quota::Policies,
    period: Duration,
    holder: String,
) {
    let mut every = actix_web::rt::time::interval(period);
    loop {
        every.tick().await;
        if let Err(err) = crate::usage::quota::refresh_policies(&db, &policies).await {
            tracing::warn!(error = %err, "could not refresh the fail-open policies");
        }
        if !leased(&db, "reservation_sweep", &holder, period).await {
            continue;
        }
        match crate::usage::quota::sweep_expired(&db).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired reservations freed their holds"),
            Err(err) => tracing::warn!(error = %err, "could not sweep expired reservations"),
        }
    }
}

/// Reopens `AUDIT_LOG_FILE` on each SIGHUP (logrotate renames it, then signals).
async fn reopen_on_sighup(sink: crate::audit::file_sink::FileSink) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; AUDIT_LOG_FILE is not reopened");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reopening AUDIT_LOG_FILE");
        sink.reopen();
    }
}

/// The limiters and session layer the route areas wrap (`routes::configure`).
fn route_layers(
    db: &Db,
    config: &Arc<Config>,
    shared: Option<&Arc<SharedLimits>>,
) -> Result<routes::Layers, StartupError> {
    let trusted = Arc::new(config.security.trusted_proxies.clone());
    let limits = &config.rate_limits;
    Ok(routes::Layers {
        default_limiter: rate_limit::default_limiter(limits.default, &trusted, shared)
            .ok_or(StartupError::RateLimit("RATE_LIMIT_DEFAULT_*"))?,
        webhook_limiter: rate_limit::webhook_limiter(limits.webhook, &trusted, shared)
            .ok_or(StartupError::RateLimit("RATE_LIMIT_WEBHOOK_*"))?,
        internal_limiter: rate_limit::internal_limiter(limits.internal, &trusted, shared)
            .ok_or(StartupError::RateLimit("RATE_LIMIT_INTERNAL_*"))?,
        health_limiter: rate_limit::health_limiter(limits.default, &trusted)
            .ok_or(StartupError::RateLimit("RATE_LIMIT_DEFAULT_*"))?,
        budgets: FormBudgets {
            sign_in: Arc::new(FormBudget::new("sign_in", limits.sign_in, &trusted, shared)),
            sign_up: Arc::new(FormBudget::new("sign_up", limits.sign_up, &trusted, shared)),
        },
        sessions: Sessions::new(db.clone(), Arc::clone(config)),
    })
}

/// Customers whose entitlements are remembered at most (the cache starts over past it).
const ENTITLEMENTS_CACHED: usize = 100_000;

/// How many threads serve leases: SQLite has one writer at a time; PostgreSQL overlaps one
/// batch's commit with the next batch's reads (leaving most of the pool to the other requests).
fn lease_desk_threads(config: &Config) -> usize {
    match config.database_url {
        crate::config::DatabaseUrl::Sqlite(_) => 1,
        crate::config::DatabaseUrl::Postgres(_) => {
            (config.database_pool_size / 4).clamp(1, 2) as usize
        }
    }
}

fn run(
    listeners: Listeners,
    db: Db,
    config: Arc<Config>,
    public_url: String,
    password_work: Arc<PasswordWork>,
    metrics: Metrics,
    quota_policies: crate::usage::quota::Policies,
) -> Result<(Server, Option<Server>, LimiterSweep), StartupError> {
    // Limits every instance shares, in Redis (REDIS_URL); otherwise each instance's own.
    let shared = match &config.redis {
        Some(settings) => Some(Arc::new(SharedLimits::connect(
            settings,
            config.token_hasher(),
        )?)),
        None => None,
    };
    if let Some(shared) = &shared {
        actix_web::rt::spawn(crate::audit::alerts::raise_on_redis_outages(
            Arc::clone(shared),
            db.clone(),
            Arc::new(config.alerts.clone()),
        ));
    }
    let shared = shared.as_ref();
    let layers = route_layers(&db, &config, shared)?;
    let refusal_audit = Arc::new(rate_limit::RefusalAuditThrottle::new(shared));
    let server_errors = Arc::new(ServerErrorRate::new(&config.alerts, shared));
    if shared.is_some() {
        actix_web::rt::spawn(
            Arc::clone(&server_errors).share(db.clone(), Arc::new(config.alerts.clone())),
        );
    }
    let lease_limiter =
        Arc::new(KeyedLimiter::new(config.rate_limits.lease).shared(shared, "lease"));
    let usage_limiter =
        Arc::new(KeyedLimiter::new(config.rate_limits.usage).shared(shared, "usage"));
    let failures = config.rate_limits.login_failures;
    let login_failures = Arc::new(
        FailureLimiter::new(failures.per_account, failures.window).shared(shared, "login_failures"),
    );
    let two_factor_failures = Arc::new(
        FailureLimiter::new(
            crate::web::routes::two_factor::FAILURES_PER_ACCOUNT,
            failures.window,
        )
        .shared(shared, "two_factor_failures"),
    );
    let gateway = Arc::new(
        crate::billing::Gateway::new(&config.stripe)
            .with_shared_throttle(shared)
            .with_metrics(metrics.clone()),
    );
    let mut limiters = LimiterSweep::default();
    limiters.register("default", rate_limit::swept(&layers.default_limiter));
    limiters.register("sign_in", layers.budgets.sign_in.swept());
    limiters.register("sign_up", layers.budgets.sign_up.swept());
    limiters.register("webhook", rate_limit::swept(&layers.webhook_limiter));
    limiters.register("internal", rate_limit::swept(&layers.internal_limiter));
    limiters.register("health", rate_limit::swept(&layers.health_limiter));
    limiters.register("refusal_audit", refusal_audit.clone());
    limiters.register("lease", lease_limiter.clone());
    limiters.register("usage", usage_limiter.clone());
    limiters.register("login_failures", login_failures.clone());
    limiters.register("two_factor_failures", two_factor_failures.clone());
    limiters.register("stripe_throttle", gateway.clone());
    let refetching: Arc<crate::reconcile::refetch::Gate> = Arc::default();
    let state = web::Data::new(AppState {
        db: db.clone(),
        config: Arc::clone(&config),
        refusal_audit,
        keyring: config.keyring(),
        token_hasher: config.token_hasher(),
        token_cache: crate::service_tokens::TokenCache::new(config.service_token_cache),
        shared_limits: shared.cloned(),
        lease_desk: crate::vault::LeaseDesk::start(
            db.clone(),
            config.keyring(),
            lease_desk_threads(&config),
        )?,
        entitlements: crate::cache::TtlCache::new(config.entitlements_cache, ENTITLEMENTS_CACHED),
        lease_limiter,
        usage_limiter,
        quota_policies,
        login_failures,
        two_factor_failures,
        password_work,
        gateway,
        // An admin's change on another instance shows here within a second.
        active_plans: crate::billing::plans::ActivePlans::new(Duration::from_secs(1)),
        public_url,
        webhook_writer: WebhookWriter::start(
            db.clone(),
            Arc::clone(&config),
            metrics.clone(),
            Arc::clone(&refetching),
        )?,
        metrics,
        server_errors: Arc::clone(&server_errors),
        refetching,
    });
    let metrics_server = listeners
        .metrics
        .map(|listener| metrics_server(listener, state.clone()))
        .transpose()?;
    let workers = config.workers;
    let stripe_origin = (config.stripe.api_base != crate::config::DEFAULT_STRIPE_API_BASE)
        .then(|| config.stripe.api_base.clone());
    let server = HttpServer::new(move || {
        let headers = SecurityHeaders::new(&config.security, stripe_origin.as_deref());
        // Listed innermost first: each `wrap` goes around everything before it. Each area
        // wraps its own limiter and sessions (`routes::configure`).
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .app_data(web::FormConfig::default().limit(BODY_LIMIT))
            .configure(|cfg| routes::configure(cfg, &layers))
            .wrap(from_fn(head_as_get))
            .wrap(from_fn(fresh_entitlements::forget_after_writes))
            .wrap(from_fn(rate_limit::finish_rate_limit))
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(count_server_errors))
            .wrap(from_fn(render_error_pages))
            .wrap(from_fn(move |req, next| headers.clone().handle(req, next)))
            .wrap(from_fn(access_log::observe))
            .wrap(from_fn(request_id::assign))
    })
    .listen(listeners.main)?;
    let server = match workers {
        Some(workers) => server.workers(workers),
        None => server,
    };
    Ok((server.run(), metrics_server, limiters))
}
