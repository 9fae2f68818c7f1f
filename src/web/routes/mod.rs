//! Route tables: one scope per area (`/admin`, `/billing`, `/account`, `/internal/v1`,
//! `/webhooks`, `/metrics`, the sign-in and sign-up forms, and the public pages), each built by its
//! module's `configure` and wrapping the limiter that governs it. Sessions sit inside the
//! limiter, so a refused request never touches the session store; the machine-facing areas
//! (`/internal/v1`, `/webhooks`) have no session at all.

pub mod account;
pub mod admin;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod byok;
pub mod health;
pub mod home;
pub mod internal;
pub mod internal_quota;
pub mod internal_usage;
pub mod metrics;
pub mod plan_change;
pub mod two_factor;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;

use actix_web::dev::HttpServiceFactory;
use actix_web::middleware::from_fn;
use actix_web::web;

use crate::error::AppError;
use crate::web::middleware::form_budget::{self, FormBudget, FormBudgets};
use crate::web::middleware::rate_limit::{self, Limiter};
use crate::web::middleware::session_store::Sessions;

/// The per-address middleware of `limiter` (a clone sharing its state).
macro_rules! per_client {
    ($limiter:expr) => {{
        let limiter = $limiter.clone();
        from_fn(move |req, next| rate_limit::limit_clients(limiter.clone(), req, next))
    }};
}

/// What the areas wrap: their limiters and the session layer.
#[derive(Clone)]
pub struct Layers {
    /// The per-client default limiter, shared by every area without one of its own.
    pub default_limiter: Limiter,
    pub webhook_limiter: Limiter,
    /// The service API's per-address limiter (`/internal/v1`).
    pub internal_limiter: Limiter,
    /// The health checks' limiter, never shared through Redis.
    pub health_limiter: Limiter,
    /// The sign-in and sign-up submissions' budgets.
    pub budgets: FormBudgets,
    pub sessions: Sessions,
}

/// Registers every area. Scopes with a path come first: the public pages' scope matches any
/// path and answers 404 for what nobody else routes.
pub fn configure(cfg: &mut web::ServiceConfig, layers: &Layers) {
    let default = &layers.default_limiter;
    cfg.service(
        web::scope("/webhooks")
            .app_data(web::PayloadConfig::new(webhooks::BODY_LIMIT))
            .wrap(per_client!(layers.webhook_limiter))
            .configure(webhooks::configure),
    )
    .service(
        web::scope("/internal/v1")
            .wrap(per_client!(layers.internal_limiter))
            .configure(internal::configure),
    )
    .service(
        web::resource("/metrics")
            .wrap(per_client!(default))
            .route(web::get().to(metrics::scrape)),
    )
    .service(with_sessions("/admin", default, layers, admin::configure))
    .service(with_sessions(
        "/account",
        default,
        layers,
        account::configure,
    ))
    .service(with_sessions(
        "/billing",
        default,
        layers,
        billing::configure,
    ))
    .service(budgeted_form(
        "/login",
        &layers.budgets.sign_in,
        layers,
        auth::sign_in,
    ))
    .service(budgeted_form(
        "/signup",
        &layers.budgets.sign_up,
        layers,
        auth::sign_up,
    ))
    .service(
        web::resource("/healthz")
            .wrap(per_client!(layers.health_limiter))
            .route(web::get().to(health::alive)),
    )
    .service(
        web::resource("/readyz")
            .wrap(per_client!(layers.health_limiter))
            .route(web::get().to(health::ready)),
    )
    .service(
        web::scope("").wrap(per_client!(default)).service(
            web::scope("")
                .wrap(layers.sessions.middleware())
                .configure(pages)
                .default_service(web::to(not_found)),
        ),
    );
}

/// An area for people: `limiter` outside, sessions inside.
fn with_sessions(
    path: &str,
    limiter: &Limiter,
    layers: &Layers,
    routes: fn(&mut web::ServiceConfig),
) -> impl HttpServiceFactory + use<> {
    web::scope(path).wrap(per_client!(limiter)).service(
        web::scope("")
            .wrap(layers.sessions.middleware())
            .configure(routes),
    )
}

/// A form with a budget of its own (sign-in, sign-up): the budget counts its submissions,
/// outside the default limiter, which counts everything else (showing the form).
fn budgeted_form(
    path: &str,
    budget: &Arc<FormBudget>,
    layers: &Layers,
    routes: fn(&mut web::ServiceConfig),
) -> impl HttpServiceFactory + use<> {
    let budget = Arc::clone(budget);
    web::scope(path)
        .wrap(per_client!(layers.default_limiter))
        .wrap(from_fn(move |req, next| {
            form_budget::enforce(Arc::clone(&budget), req, next)
        }))
        .service(
            web::scope("")
                .wrap(layers.sessions.middleware())
                .configure(routes),
        )
}

/// The public pages and everything outside an area.
fn pages(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(home::index)))
        .service(web::resource("/pricing").route(web::get().to(billing::pricing)))
        .service(web::resource("/logout").route(web::post().to(auth::logout)))
        .service(web::resource("/static/app.css").route(web::get().to(assets::stylesheet)))
        .service(
            web::resource(["/favicon.svg", "/favicon.ico"]).route(web::get().to(assets::favicon)),
        );
}

async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound)
}
