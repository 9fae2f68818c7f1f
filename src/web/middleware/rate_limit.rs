//! Per-client-IP rate limits, with `X-RateLimit-*` headers on every limited response and an
//! audit record for every refusal. IPv6 clients are counted by their /64.
//!
//! A default limiter, one for the service API and one for Stripe's webhooks; each route scope
//! wraps the one it needs (`web::routes::configure`), so this module knows no paths. A request
//! that a dedicated budget already counted ([`super::form_budget`] marks it [`Budgeted`]) passes
//! the default limiter uncounted: each request is counted once, by the limiter that governs it,
//! and its headers describe that limiter. Each is a [`KeyedLimiter`]: a governor bucket per
//! address in this process, or one in Redis shared by every instance (`REDIS_URL`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_governor::governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use ipnet::IpNet;

use crate::audit::{self, Actor, Kind, Principal};
use crate::config::RateLimit;
use crate::error::AppError;
use crate::limits::{self, KeyedLimiter, Limited, SharedLimits, Sweep};
use crate::web::{AppState, client_ip};

pub(crate) const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub(crate) const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub(crate) const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Marks a 429 written by a limiter here or by a form's budget ([`super::form_budget`]);
/// handlers with limiters of their own audit those.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

/// Marks a request that a dedicated budget has counted (a sign-in or sign-up submission): the
/// default limiter of its scope leaves it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budgeted;

/// The replenish interval of the limiter that counted a request, for `X-RateLimit-Reset`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) per_request: Duration,
    pub(crate) limiter: &'static str,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// One per-address limiter; clones share its state (a client has one default budget across
/// every scope that wraps it).
#[derive(Clone)]
pub struct Limiter {
    buckets: Arc<KeyedLimiter<IpAddr>>,
    trusted: Arc<Vec<IpNet>>,
    window: Window,
}

fn config(
    limit: RateLimit,
    trusted: &Arc<Vec<IpNet>>,
    limiter: &'static str,
    shared: Option<&Arc<SharedLimits>>,
) -> Option<Limiter> {
    if limit.per_minute == 0 || limit.burst == 0 {
        return None;
    }
    let buckets = KeyedLimiter::new(limit).shared(shared, limiter);
    Some(Limiter {
        window: Window {
            per_request: buckets.per_request(),
            limiter,
        },
        buckets: Arc::new(buckets),
        trusted: Arc::clone(trusted),
    })
}

/// The default per-IP limiter, for every scope without a limiter of its own. Every scope that
/// wraps it shares its state: a client has one default budget across the whole site.
pub fn default_limiter(
    limit: RateLimit,
    trusted: &Arc<Vec<IpNet>>,
    shared: Option<&Arc<SharedLimits>>,
) -> Option<Limiter> {
    config(limit, trusted, "default", shared)
}

/// The per-address limiter of the service API (`/internal/v1`): services call it on every AI
/// request, far more often than people load pages; each token has its own budget as well.
pub fn internal_limiter(
    limit: RateLimit,
    trusted: &Arc<Vec<IpNet>>,
    shared: Option<&Arc<SharedLimits>>,
) -> Option<Limiter> {
    config(limit, trusted, "internal", shared)
}

/// The limiter of the health checks (`/healthz`, `/readyz`), with the default limits but
/// always in this process: whether an instance is alive must not depend on Redis.
pub fn health_limiter(limit: RateLimit, trusted: &Arc<Vec<IpNet>>) -> Option<Limiter> {
    config(limit, trusted, "health", None)
}

/// The limiter for Stripe's webhook deliveries.
pub fn webhook_limiter(
    limit: RateLimit,
    trusted: &Arc<Vec<IpNet>>,
    shared: Option<&Arc<SharedLimits>>,
) -> Option<Limiter> {
    config(limit, trusted, "webhook", shared)
}

/// Counts a request against its client's budget in `limiter`: within it, the request goes on
/// and its response says what is left (`X-RateLimit-Limit`, `X-RateLimit-Remaining`); over
/// it, 429 with `Retry-After` and `X-RateLimit-Reset`, marked [`Refused`] for the audit
/// ([`finish_rate_limit`]). A shared limit whose Redis cannot be reached with
/// `REDIS_FAIL=closed` answers 503.
pub async fn limit_clients<B: MessageBody + 'static>(
    limiter: Limiter,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if req.extensions().contains::<Budgeted>() {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    req.extensions_mut().insert(limiter.window);
    let peer = req.peer_addr().map(|addr| addr.ip());
    let client = limits::client_key(client_ip::resolve(peer, req.headers(), &limiter.trusted));
    match limiter.buckets.check_allowance(&client).await {
        Ok(allowance) => {
            let mut res = next.call(req).await?;
            let headers = res.headers_mut();
            headers.insert(LIMIT, HeaderValue::from(allowance.limit));
            headers.insert(REMAINING, HeaderValue::from(allowance.remaining));
            Ok(res.map_into_left_body())
        }
        Err(Limited::Wait(wait)) => {
            let mut refused = HttpResponse::TooManyRequests()
                .insert_header((RETRY_AFTER, wait))
                .insert_header((RESET, unix_now() + wait))
                .insert_header((LIMIT, limiter.buckets.burst()))
                .insert_header((REMAINING, 0))
                .finish();
            refused.extensions_mut().insert(Refused);
            Ok(req.into_response(refused).map_into_right_body())
        }
        Err(Limited::Unavailable) => Err(AppError::Unavailable.into()),
    }
}

/// Completes the headers (`X-RateLimit-Reset`) and audits refusals.
pub async fn finish_rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let window = res.request().extensions().get::<Window>().copied();
    let headers = res.headers_mut();
    if let (Some(window), false) = (window, headers.contains_key(RESET)) {
        let number = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        if let (Some(limit), Some(remaining)) = (number(&LIMIT), number(&REMAINING)) {
            // The bucket is full again once every used slot has been replenished.
            let refill = window.per_request * limit.saturating_sub(remaining);
            let reset = unix_now() + limits::keyed::round_up(refill);
            headers.insert(RESET, HeaderValue::from(reset));
        }
    }
    if res.response().extensions().contains::<Refused>() {
        audit_refusal(&res, window).await;
    }
    Ok(res)
}

/// Limits audit writes for refusals to one per client and limiter a minute, so that a flood of
/// refused requests cannot turn into a flood of database writes: across every instance when
/// they share Redis (`REDIS_URL`), else (or while Redis cannot be reached) per instance.
pub struct RefusalAuditThrottle {
    local: DefaultKeyedRateLimiter<(IpAddr, &'static str)>,
    shared: Option<Arc<SharedLimits>>,
}

/// How often one client's refusals by one limiter are audited (the in-memory quota says the
/// same: one a minute).
const REFUSAL_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl RefusalAuditThrottle {
    pub fn new(shared: Option<&Arc<SharedLimits>>) -> Self {
        Self {
            local: RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            shared: shared.cloned(),
        }
    }

    /// Whether this refusal of `client` by `limiter` is the first of its minute (to audit).
    /// This instance's own count answers first, so Redis is asked at most once a minute per
    /// client and limiter on each instance, not on every refusal of a flood.
    async fn first_this_minute(&self, client: IpAddr, limiter: &'static str) -> bool {
        if self.local.check_key(&(client, limiter)).is_err() {
            return false;
        }
        if let Some(shared) = &self.shared {
            let name = format!("refusal_audit:{limiter}");
            if let Ok(first) = shared
                .first_within(&name, &client, REFUSAL_AUDIT_EVERY)
                .await
            {
                return first;
            }
        }
        true
    }
}

impl Sweep for RefusalAuditThrottle {
    fn sweep(&self) {
        self.local.sweep();
    }

    fn tracked_keys(&self) -> usize {
        self.local.tracked_keys()
    }
}

async fn audit_refusal<B>(res: &ServiceResponse<B>, window: Option<Window>) {
    let req = res.request();
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    let ip = client_ip::of(req);
    let limiter = window.map(|w| w.limiter).unwrap_or("unknown");
    state.metrics.rate_limited(limiter);
    if limiter == "webhook" {
        let outcome = crate::metrics::WebhookOutcome::RateLimited;
        state.metrics.webhook(outcome, None);
    }
    let client = limits::client_key(ip);
    if !state.refusal_audit.first_this_minute(client, limiter).await {
        tracing::debug!(%ip, limiter, "rate limited (audit already recorded this minute)");
        return;
    }
    let kind = if limiter == "webhook" {
        Kind::WebhookRateLimitExceeded
    } else {
        Kind::RateLimited
    };
    // By nobody: the limiters run before anything looks at the session.
    let event = Actor::new(Principal::Anonymous, Some(ip))
        .in_request(crate::web::request_id::of(req))
        .event(kind)
        .details(serde_json::json!({
            "path": req.path(),
            "method": req.method().as_str(),
            "limiter": limiter,
        }))
        .aggregate(state.config.audit.aggregate_window, limiter);
    let config = state.config.clone();
    let recorded = state
        .db
        .run(move |conn| audit::alerts::record_rate_limit_refusal(conn, &config.alerts, &event))
        .await;
    if let Err(err) = recorded {
        tracing::error!(error = %err, "could not record rate_limited");
    }
}

/// The keyed state behind a middleware limiter, for the periodic sweep.
pub fn swept(limiter: &Limiter) -> Arc<dyn Sweep> {
    limiter.buckets.clone()
}
