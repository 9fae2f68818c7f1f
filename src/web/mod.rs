//! The HTTP layer: middleware, extractors, pages and route tables. Thin by design: handlers
//! extract typed input, call the domain, and render.

pub mod charts;
pub mod client_ip;
pub mod console;
pub mod csrf;
pub mod forms;
pub mod middleware;
pub mod pages;
pub mod request_id;
pub mod routes;
pub mod session;

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::{Keyring, TokenHasher};
use crate::db::Db;

/// Shared, read-only state every handler can reach through `web::Data<AppState>`. The limiters
/// are shared with the periodic sweep (`startup`).
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub refusal_audit: Arc<middleware::rate_limit::RefusalAuditThrottle>,
    pub keyring: Keyring,
    pub token_hasher: TokenHasher,
    /// Service tokens that authenticated a moment ago (`SERVICE_TOKEN_CACHE_MS`).
    pub token_cache: crate::service_tokens::TokenCache,
    /// The Redis the limiters share (`REDIS_URL`), for `/readyz`.
    pub shared_limits: Option<Arc<crate::limits::SharedLimits>>,
    /// Customers' entitlements as `GET /internal/v1/entitlements/{id}` answers them (JSON),
    /// for `ENTITLEMENTS_CACHE_MS`; forgotten when this instance writes what they show.
    pub entitlements: crate::cache::TtlCache<crate::accounts::UserId, actix_web::web::Bytes>,
    /// Serves BYOK leases, each recorded (its audit row) before the key is handed out.
    pub lease_desk: crate::vault::LeaseDesk,
    /// BYOK leases per service token.
    pub lease_limiter: Arc<crate::limits::KeyedLimiter<i64>>,
    /// Usage reports and quota reservations per service token.
    pub usage_limiter: Arc<crate::limits::KeyedLimiter<i64>>,
    /// What undecidable reserves answer (fail open or closed), per user and feature.
    pub quota_policies: crate::usage::quota::Policies,
    /// Failed sign-ins per account.
    pub login_failures: Arc<crate::limits::FailureLimiter<crate::accounts::SignInKey>>,
    /// Failed second-factor codes per account (sign-in and enrolment).
    pub two_factor_failures: Arc<crate::limits::FailureLimiter<crate::accounts::UserId>>,
    /// The cap on concurrent argon2 work.
    pub password_work: Arc<crate::accounts::PasswordWork>,
    pub gateway: Arc<crate::billing::Gateway>,
    pub active_plans: crate::billing::plans::ActivePlans,
    /// Where people reach Tollgate, for Stripe's redirect URLs (no trailing slash).
    pub public_url: String,
    /// Stores and applies verified webhook events (group commit).
    pub webhook_writer: crate::webhooks::writer::WebhookWriter,
    /// This application's Prometheus metrics (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Responses and 5xx on this instance, for the server-error alert.
    pub server_errors: Arc<crate::audit::alerts::ServerErrorRate>,
    /// The single task that reads tied objects again from Stripe.
    pub refetching: Arc<crate::reconcile::refetch::Gate>,
}

impl AppState {
    /// What the billing domain needs of the application.
    pub fn billing(&self) -> crate::billing::Billing<'_> {
        crate::billing::Billing {
            db: &self.db,
            keyring: &self.keyring,
            hasher: &self.token_hasher,
            gateway: &self.gateway,
            public_url: &self.public_url,
        }
    }

    /// What applying a stored webhook event needs of the application, its ties marked on
    /// `ties`.
    pub fn webhooks<'a>(
        &'a self,
        ties: &'a crate::reconcile::refetch::Ties,
    ) -> crate::webhooks::Context<'a> {
        crate::webhooks::Context::new(&self.config, &self.keyring, &self.token_hasher, ties)
    }
}
