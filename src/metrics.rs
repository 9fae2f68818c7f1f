//! Prometheus metrics: every metric Tollgate exports, its name, its labels and the one typed
//! function that records it, in this module and nowhere else (docs/security.md lists them).
//!
//! Each application has a registry of its own ([`Metrics`], held in `AppState`), rendered by
//! `GET /metrics` in the text exposition format by `metrics-exporter-prometheus`: nothing is
//! installed globally, so several applications in one process (the tests) each count only their
//! own requests. Code that has no `AppState` at hand (the audit log's writes, which run inside
//! [`crate::db::Db::run`] or a webhook writer thread) reaches the registry of the application it
//! works for through [`Metrics::scope`].
//!
//! Labels only ever hold fixed vocabularies: route patterns (never a raw path), status codes,
//! outcome and kind names, Stripe's event types (sanitised, and capped in number), the names
//! of Stripe request types. Never an id, an email, an address or a secret.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ::metrics::{
    Counter, Histogram, Key, KeyName, Label, Metadata, Recorder as _, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::audit::SecurityEvent;

pub const HTTP_REQUESTS: &str = "tollgate_http_requests_total";
pub const HTTP_DURATION: &str = "tollgate_http_request_duration_seconds";
pub const WEBHOOKS: &str = "tollgate_webhooks_total";
pub const WEBHOOK_EVENT_TYPES: &str = "tollgate_webhook_event_types_total";
pub const INGEST_BATCH_SIZE: &str = "tollgate_webhook_ingest_batch_size";
pub const INGEST_COMMIT: &str = "tollgate_webhook_ingest_commit_seconds";
pub const WEBHOOK_EVENTS: &str = "tollgate_webhook_events_processed_total";
pub const STRIPE_REQUESTS: &str = "tollgate_stripe_requests_total";
pub const STRIPE_DURATION: &str = "tollgate_stripe_request_duration_seconds";
pub const STRIPE_THROTTLED: &str = "tollgate_stripe_throttled_total";
pub const RATE_LIMITED: &str = "tollgate_rate_limit_refusals_total";
pub const BYOK_LEASES: &str = "tollgate_byok_leases_total";
pub const AUDIT_EVENTS: &str = "tollgate_audit_events_total";
pub const NOTIFICATIONS: &str = "tollgate_notifications_total";
pub const USAGE_METER_EVENTS: &str = "tollgate_usage_meter_events_total";
pub const USAGE_OUTBOX: &str = "tollgate_usage_outbox_depth";
pub const DB_POOL: &str = "tollgate_db_pool_connections";
pub const BUILD_INFO: &str = "tollgate_build_info";

/// Every metric with its help text, for the `# HELP` lines.
const DESCRIPTIONS: [(&str, &str); 18] = [
    (
        HTTP_REQUESTS,
        "HTTP requests served, by method, route pattern and status.",
    ),
    (
        HTTP_DURATION,
        "Time to answer an HTTP request, by method, route pattern and status.",
    ),
    (
        WEBHOOKS,
        "Stripe webhook deliveries, by outcome (verified, duplicate, invalid_signature, invalid_payload, invalid_ip, rate_limited).",
    ),
    (
        WEBHOOK_EVENT_TYPES,
        "Verified Stripe webhook deliveries, by Stripe event type.",
    ),
    (
        INGEST_BATCH_SIZE,
        "Webhook events committed together by a writer thread.",
    ),
    (
        INGEST_COMMIT,
        "Time a webhook writer took to store, apply and commit one batch.",
    ),
    (
        WEBHOOK_EVENTS,
        "Webhook events stored for the first time, by result (applied, ignored, failed, error).",
    ),
    (
        STRIPE_REQUESTS,
        "Requests to the Stripe API, by operation and status (HTTP code, or unavailable).",
    ),
    (
        STRIPE_DURATION,
        "Time a request to the Stripe API took, by operation and status.",
    ),
    (
        STRIPE_THROTTLED,
        "Calls to Stripe refused by Tollgate's own per-user throttle, by operation class.",
    ),
    (
        RATE_LIMITED,
        "Requests refused by a rate limiter (429), by limiter.",
    ),
    (
        BYOK_LEASES,
        "BYOK key lease requests, by outcome (granted, refused) and reason.",
    ),
    (
        AUDIT_EVENTS,
        "Security events written to the audit log, by kind and severity.",
    ),
    (
        NOTIFICATIONS,
        "Notification delivery attempts that ended, by channel (email, app_webhook, alert_webhook) and result (sent, retried, dead, not_sent).",
    ),
    (
        USAGE_METER_EVENTS,
        "Usage records forwarded to Stripe's meter events API, by result (sent, failed).",
    ),
    (
        USAGE_OUTBOX,
        "Usage records waiting in the outbox to be forwarded to Stripe, as the usage sender last counted them.",
    ),
    (
        DB_POOL,
        "Database pool connections, by state (in_use, idle, max), sampled at scrape time.",
    ),
    (
        BUILD_INFO,
        "Always 1: the running version and the git commit it was built from.",
    ),
];

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the ingest batch size buckets (a batch holds at most 64 events).
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// How many distinct Stripe event types get a label of their own; later ones count as `other`.
const MAX_EVENT_TYPES: usize = 300;

/// The git commit Tollgate was built from (`TOLLGATE_GIT_SHA` at build time), if known.
pub const GIT_SHA: &str = match option_env!("TOLLGATE_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

/// What became of a Stripe webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified, stored and applied for the first time.
    Verified,
    /// Verified, but already stored: acknowledged, nothing changed.
    Duplicate,
    InvalidSignature,
    InvalidPayload,
    /// From an address outside `STRIPE_WEBHOOK_ALLOWED_IPS`.
    InvalidIp,
    /// Refused by the webhook rate limiter.
    RateLimited,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Duplicate => "duplicate",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidPayload => "invalid_payload",
            Self::InvalidIp => "invalid_ip",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// How a BYOK lease request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    Granted,
    /// Refused, with a reason from a fixed list (`unauthorized`, `forbidden`, `rate_limited`,
    /// `bad_request`, `no_key`, `disabled`, `error`).
    Refused(&'static str),
}

/// Connections of the database pool at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The Stripe event types labelled so far (at most [`MAX_EVENT_TYPES`]), each with its
    /// counter.
    event_types: Mutex<HashMap<String, Counter>>,
    /// Each (method, route, status) answered so far, with its counter and histogram: a request
    /// records its two samples without building their keys (label values copied, hashed and
    /// looked up in the recorder's registry). Bounded by the route table: `route` is a
    /// pattern, `method` one of ten labels, `status` a code.
    http: RwLock<HashMap<HttpLabels, (Counter, Histogram)>>,
}

#[derive(PartialEq, Eq, Hash)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// One application's metrics. Cheap to clone (a shared registry).
#[derive(Clone)]
pub struct Metrics(Arc<Registry>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

thread_local! {
    /// The metrics of the application the current thread is working for (see [`Metrics::scope`]).
    static CURRENT: RefCell<Option<Metrics>> = const { RefCell::new(None) };
}

/// Restores the thread's previous metrics when a scope ends (even by unwinding).
struct ScopeGuard(Option<Metrics>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// A metric's key, its label values copied.
fn key(name: &'static str, pairs: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = pairs
        .iter()
        .map(|(name, value)| Label::new(*name, (*value).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

/// A metric's key whose label values are constants: nothing is copied.
fn static_key(name: &'static str, pairs: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = pairs
        .iter()
        .map(|(name, value)| Label::from_static_parts(name, value))
        .collect();
    Key::from_parts(name, labels)
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    /// A fresh, empty registry (with the build info already set).
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(INGEST_BATCH_SIZE.into()), &BATCH_BUCKETS)
            })
            // Only an empty bucket list fails; these are constants.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        for (name, help) in DESCRIPTIONS {
            let (name, help) = (KeyName::from(name), SharedString::from(help));
            if name.as_str().ends_with("_seconds") {
                recorder.describe_histogram(name, Some(Unit::Seconds), help);
            } else {
                recorder.describe_counter(name, None, help);
            }
        }
        let handle = recorder.handle();
        let metrics = Self(Arc::new(Registry {
            recorder,
            handle,
            event_types: Mutex::new(HashMap::new()),
            http: RwLock::new(HashMap::new()),
        }));
        metrics.gauge(
            static_key(
                BUILD_INFO,
                &[("version", env!("CARGO_PKG_VERSION")), ("git_sha", GIT_SHA)],
            ),
            1.0,
        );
        metrics
    }

    fn counter(&self, key: &Key) -> Counter {
        self.0.recorder.register_counter(key, &METADATA)
    }

    fn histogram(&self, key: &Key) -> Histogram {
        self.0.recorder.register_histogram(key, &METADATA)
    }

    /// Adds one to the counter of constant labels `pairs`.
    fn count(&self, name: &'static str, pairs: &[(&'static str, &'static str)]) {
        self.counter(&static_key(name, pairs)).increment(1);
    }

    fn observe(&self, name: &'static str, value: f64) {
        self.histogram(&Key::from_static_name(name)).record(value);
    }

    fn gauge(&self, key: Key, value: f64) {
        self.0.recorder.register_gauge(&key, &METADATA).set(value);
    }

    /// The exposition text, with the pool's state sampled now.
    pub fn render(&self, pool: PoolState) -> String {
        for (state, value) in [
            ("in_use", pool.in_use),
            ("idle", pool.idle),
            ("max", pool.max),
        ] {
            self.gauge(static_key(DB_POOL, &[("state", state)]), f64::from(value));
        }
        self.0.handle.render()
    }

    /// Folds recorded histogram samples into their buckets (run periodically, so memory stays
    /// bounded when nobody scrapes).
    pub fn upkeep(&self) {
        self.0.handle.run_upkeep();
    }

    /// Runs `work` with these metrics as the current thread's (for [`audit_events`]).
    pub fn scope<T>(&self, work: impl FnOnce() -> T) -> T {
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = ScopeGuard(previous);
        work()
    }

    /// One answered HTTP request. `route` is the matched pattern (or `unmatched`).
    pub fn http_request(&self, method: &str, route: String, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method: http_method(method),
            route,
            status,
        };
        let (requests, duration) = match self.cached_http(&labels) {
            Some(handles) => handles,
            None => self.register_http(labels),
        };
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());
    }

    fn cached_http(&self, labels: &HttpLabels) -> Option<(Counter, Histogram)> {
        let http = self.0.http.read().unwrap_or_else(PoisonError::into_inner);
        http.get(labels).cloned()
    }

    fn register_http(&self, labels: HttpLabels) -> (Counter, Histogram) {
        let status = labels.status.to_string();
        let pairs = [
            ("method", labels.method),
            ("route", labels.route.as_str()),
            ("status", status.as_str()),
        ];
        let handles = (
            self.counter(&key(HTTP_REQUESTS, &pairs)),
            self.histogram(&key(HTTP_DURATION, &pairs)),
        );
        self.0
            .http
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(labels, handles.clone());
        handles
    }

    /// One webhook delivery's outcome; for a verified one (first or duplicate), its type too.
    pub fn webhook(&self, outcome: WebhookOutcome, event_type: Option<&str>) {
        self.count(WEBHOOKS, &[("outcome", outcome.as_str())]);
        if let Some(event_type) = event_type {
            self.event_type_counter(event_type).increment(1);
        }
    }

    /// The counter of Stripe's type `event_type`, labelled as is when it is well formed
    /// (`customer.subscription.updated`) while fewer than [`MAX_EVENT_TYPES`] have been seen;
    /// anything else counts as `other`.
    fn event_type_counter(&self, event_type: &str) -> Counter {
        let other = || self.counter(&static_key(WEBHOOK_EVENT_TYPES, &[("type", "other")]));
        if !is_event_type(event_type) {
            return other();
        }
        let mut seen = self
            .0
            .event_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = seen.get(event_type) {
            return counter.clone();
        }
        if seen.len() >= MAX_EVENT_TYPES {
            return other();
        }
        let counter = self.counter(&key(WEBHOOK_EVENT_TYPES, &[("type", event_type)]));
        seen.insert(event_type.to_owned(), counter.clone());
        counter
    }

    /// One batch a webhook writer committed: its size and how long it took.
    pub fn ingest_batch(&self, events: usize, elapsed: Duration) {
        self.observe(INGEST_BATCH_SIZE, events as f64);
        self.observe(INGEST_COMMIT, elapsed.as_secs_f64());
    }

    /// A newly stored webhook event's result: `applied`, `ignored`, `failed` (kept for
    /// reprocessing) or `error` (could not be stored).
    pub fn webhook_event(&self, result: &'static str) {
        self.count(WEBHOOK_EVENTS, &[("result", result)]);
    }

    /// One request to Stripe's API: `operation` is the request type's name (`create_customer`),
    /// `status` its HTTP status or `unavailable`.
    pub fn stripe_request(&self, operation: &str, status: &str, elapsed: Duration) {
        let pairs = [("operation", operation), ("status", status)];
        self.counter(&key(STRIPE_REQUESTS, &pairs)).increment(1);
        self.histogram(&key(STRIPE_DURATION, &pairs))
            .record(elapsed.as_secs_f64());
    }

    /// A call to Stripe refused by Tollgate's per-user throttle.
    pub fn stripe_throttled(&self, class: &'static str) {
        self.count(STRIPE_THROTTLED, &[("class", class)]);
    }

    /// A request refused by the rate limiter `limiter`.
    pub fn rate_limited(&self, limiter: &'static str) {
        self.count(RATE_LIMITED, &[("limiter", limiter)]);
    }

    pub fn byok_lease(&self, outcome: LeaseOutcome) {
        let (outcome, reason) = match outcome {
            LeaseOutcome::Granted => ("granted", "none"),
            LeaseOutcome::Refused(reason) => ("refused", reason),
        };
        self.count(BYOK_LEASES, &[("outcome", outcome), ("reason", reason)]);
    }

    /// A notification attempt ended: `result` is `sent`, `retried`, `dead` or `not_sent`.
    pub fn notification(&self, channel: &'static str, result: &'static str) {
        self.count(NOTIFICATIONS, &[("channel", channel), ("result", result)]);
    }

    /// A usage record's meter event: `result` is `sent` or `failed` (retried later).
    pub fn usage_meter_event(&self, result: &'static str) {
        self.count(USAGE_METER_EVENTS, &[("result", result)]);
    }

    /// How many usage records wait in the outbox.
    pub fn usage_outbox(&self, due: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.gauge(Key::from_static_name(USAGE_OUTBOX), due as f64);
    }

    fn audit_event(&self, kind: &'static str, severity: &'static str) {
        self.count(AUDIT_EVENTS, &[("kind", kind), ("severity", severity)]);
    }
}

/// Counts written audit events, by kind and severity, in the metrics of the application the
/// thread works for (none for the CLI).
pub fn audit_events(events: &[SecurityEvent]) {
    CURRENT.with(|current| {
        if let Some(metrics) = current.borrow().as_ref() {
            for event in events {
                metrics.audit_event(event.kind.as_str(), event.severity.as_str());
            }
        }
    });
}

/// The method as a label: the standard ones as is, anything else `OTHER`.
fn http_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("OTHER")
}

/// Whether `kind` has the shape of Stripe's event types: two to six dot-separated words of
/// lowercase letters and underscores (`invoice.payment_failed`), at most 100 characters. No
/// digits or capitals: nothing shaped like an id passes.
fn is_event_type(kind: &str) -> bool {
    let words: Vec<&str> = kind.split('.').collect();
    kind.len() <= 100
        && (2..=6).contains(&words.len())
        && words.iter().all(|word| {
            !word.is_empty()
                && word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
}

/// A Stripe request type's name as an operation label: `stripe_core::customer::requests::
/// CreateCustomer` → `create_customer`.
pub fn stripe_operation(type_name: &str) -> String {
    let base = type_name.split('<').next().unwrap_or_default();
    let last = base.rsplit("::").next().unwrap_or_default();
    let mut label = String::with_capacity(last.len() + 4);
    for (i, c) in last.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            label.push(c);
        }
    }
    label.truncate(64);
    if label.is_empty() {
        "unknown".to_owned()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_pass_and_ids_do_not() {
        for good in [
            "invoice.payment_failed",
            "customer.subscription.updated",
            "checkout.session.completed",
        ] {
            assert!(is_event_type(good), "{good}");
        }
        for bad in [
            "evt_1NfA2b",
            "cus_ABC.sub_123",
            "invoice.Payment",
            "a@example.com",
            "127.0.0.1",
            "invoice",
            "",
            "invoice..paid",
        ] {
            assert!(!is_event_type(bad), "{bad}");
        }
    }

    fn rendered(metrics: &Metrics) -> String {
        metrics.render(PoolState {
            in_use: 0,
            idle: 0,
            max: 0,
        })
    }

    #[test]
    fn event_type_labels_are_capped() {
        let metrics = Metrics::new();
        let verified = |kind: &str| metrics.webhook(WebhookOutcome::Verified, Some(kind));
        for n in 0..MAX_EVENT_TYPES {
            let word: String = format!("{n:04}")
                .chars()
                .map(|d| char::from(b'a' + (d as u8 - b'0')))
                .collect();
            verified(&format!("test.{word}"));
        }
        verified("test.one_more");
        verified("test.aaaa");
        verified("evt_1NfA2b");
        let text = rendered(&metrics);
        let line = |label: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{WEBHOOK_EVENT_TYPES}{{type=\"{label}\"}}")))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(line("test.aaaa").as_deref(), Some("2"), "seen before");
        assert_eq!(line("test.aaab").as_deref(), Some("1"));
        assert_eq!(line("test.one_more"), None, "past the cap");
        assert_eq!(
            line("other").as_deref(),
            Some("2"),
            "past the cap, or not a type"
        );
        let labelled = text
            .lines()
            .filter(|l| l.starts_with(WEBHOOK_EVENT_TYPES))
            .count();
        assert_eq!(labelled, MAX_EVENT_TYPES + 1);
    }

    #[test]
    fn http_requests_count_by_method_route_and_status() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(3);
        for _ in 0..2 {
            metrics.http_request("GET", "/pricing".to_owned(), 200, ms);
        }
        metrics.http_request("GET", "/pricing".to_owned(), 304, ms);
        metrics.http_request("PROPFIND", "/pricing".to_owned(), 200, ms);
        metrics.http_request("POST", "/webhooks/stripe".to_owned(), 200, ms);
        let text = rendered(&metrics);
        for (labels, n) in [
            (r#"method="GET",route="/pricing",status="200""#, 2),
            (r#"method="GET",route="/pricing",status="304""#, 1),
            (r#"method="OTHER",route="/pricing",status="200""#, 1),
            (r#"method="POST",route="/webhooks/stripe",status="200""#, 1),
        ] {
            assert!(
                text.contains(&format!("{HTTP_REQUESTS}{{{labels}}} {n}\n")),
                "{labels}: {text}"
            );
            assert!(
                text.contains(&format!("{HTTP_DURATION}_count{{{labels}}} {n}\n")),
                "{labels}: {text}"
            );
        }
    }

    #[test]
    fn operations_are_named_after_request_types() {
        assert_eq!(
            stripe_operation("stripe_core::customer::requests::CreateCustomer"),
            "create_customer"
        );
        assert_eq!(
            stripe_operation("stripe_product::price::requests::CreatePrice<'_>"),
            "create_price"
        );
        assert_eq!(stripe_operation(""), "unknown");
    }

    #[test]
    fn audit_events_count_only_inside_a_scope_and_each_app_apart() {
        let (one, two) = (Metrics::new(), Metrics::new());
        let events = [SecurityEvent::new(crate::audit::Kind::LoginFailed)];
        audit_events(&events);
        one.scope(|| audit_events(&events));
        two.scope(|| {
            audit_events(&events);
            audit_events(&events);
        });
        audit_events(&events);
        let line = |m: &Metrics| {
            rendered(m)
                .lines()
                .find(|l| l.starts_with(AUDIT_EVENTS))
                .map(str::to_owned)
        };
        let expected = |n: u32| {
            Some(format!(
                "{AUDIT_EVENTS}{{kind=\"login_failed\",severity=\"MEDIUM\"}} {n}"
            ))
        };
        assert_eq!(line(&one), expected(1));
        assert_eq!(line(&two), expected(2));
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(http_method("GET"), "GET");
        assert_eq!(http_method("PROPFIND"), "OTHER");
    }
}
