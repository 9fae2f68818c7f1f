//! Route tables, one module per resource.

pub mod account;
pub mod admin;
pub mod admin_billing;
pub mod admin_tokens;
pub mod admin_webhooks;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod byok;
pub mod health;
pub mod home;
pub mod internal;
pub mod webhooks;

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::web;

use crate::error::AppError;
use crate::web::middleware::form_budget::{self, FormBudgets};
use crate::web::middleware::rate_limit::{self, Limiter};

/// Registers every route. `budgets` guard the sign-in and sign-up submissions, one each.
pub fn configure(cfg: &mut web::ServiceConfig, budgets: &FormBudgets, webhook_limiter: &Limiter) {
    let (sign_in, sign_up) = (Arc::clone(&budgets.sign_in), Arc::clone(&budgets.sign_up));
    cfg.service(web::resource("/").route(web::get().to(home::index)))
        .service(web::resource("/healthz").route(web::get().to(health::alive)))
        .service(web::resource("/readyz").route(web::get().to(health::ready)))
        .service(web::resource("/static/app.css").route(web::get().to(assets::stylesheet)))
        .service(
            web::resource(["/favicon.svg", "/favicon.ico"]).route(web::get().to(assets::favicon)),
        )
        .service(
            web::resource("/signup")
                .wrap(from_fn(move |req, next| {
                    form_budget::enforce(Arc::clone(&sign_up), req, next)
                }))
                .route(web::get().to(auth::signup_form))
                .route(web::post().to(auth::signup)),
        )
        .service(
            web::resource("/login")
                .wrap(from_fn(move |req, next| {
                    form_budget::enforce(Arc::clone(&sign_in), req, next)
                }))
                .route(web::get().to(auth::login_form))
                .route(web::post().to(auth::login)),
        )
        .service(web::resource("/logout").route(web::post().to(auth::logout)))
        .service(web::resource("/account").route(web::get().to(account::show)))
        .service(
            web::resource("/account/keys")
                .route(web::get().to(byok::list))
                .route(web::post().to(byok::save)),
        )
        .service(
            web::resource("/account/keys/{provider}/delete")
                .route(web::get().to(byok::confirm_delete))
                .route(web::post().to(byok::delete)),
        )
        .service(web::resource("/admin").route(web::get().to(admin::dashboard)))
        .service(web::resource("/pricing").route(web::get().to(billing::pricing)))
        .service(
            web::resource("/billing/checkout")
                .route(web::get().to(billing::confirm))
                .route(web::post().to(billing::checkout)),
        )
        .service(web::resource("/billing/success").route(web::get().to(billing::success)))
        .service(web::resource("/billing/cancel").route(web::get().to(billing::cancel)))
        .service(web::resource("/billing/portal").route(web::post().to(billing::portal)))
        .service(
            web::resource("/billing/subscription/cancel")
                .route(web::get().to(billing::confirm_cancel))
                .route(web::post().to(billing::cancel_subscription)),
        )
        .service(
            web::resource("/billing/subscription/resume")
                .route(web::post().to(billing::resume_subscription)),
        )
        .service(
            web::resource("/admin/plans")
                .route(web::get().to(admin_billing::list))
                .route(web::post().to(admin_billing::create)),
        )
        .service(web::resource("/admin/plans/new").route(web::get().to(admin_billing::new_form)))
        .service(web::resource("/admin/plans/{id}").route(web::post().to(admin_billing::update)))
        .service(
            web::resource("/admin/plans/{id}/edit").route(web::get().to(admin_billing::edit_form)),
        )
        .service(
            web::resource("/admin/plans/{id}/archive")
                .route(web::get().to(admin_billing::confirm_archive))
                .route(web::post().to(admin_billing::archive)),
        )
        .service(web::resource("/admin/customers").route(web::get().to(admin_billing::customers)))
        .service(web::resource("/admin/tokens").route(web::get().to(admin_tokens::list)))
        .service(
            web::resource("/admin/tokens/{id}/revoke")
                .route(web::get().to(admin_tokens::confirm_revoke))
                .route(web::post().to(admin_tokens::revoke)),
        )
        .service(web::resource("/admin/webhooks").route(web::get().to(admin_webhooks::list)))
        .service(web::resource("/admin/webhooks/{id}").route(web::get().to(admin_webhooks::show)))
        .service(
            web::resource("/admin/webhooks/{id}/reprocess")
                .route(web::post().to(admin_webhooks::reprocess)),
        )
        .service(
            web::resource("/internal/v1/entitlements/{user_id}")
                .route(web::get().to(internal::entitlements)),
        )
        .service(web::resource("/internal/v1/byok/lease").route(web::post().to(internal::lease)))
        .service(
            web::resource(rate_limit::WEBHOOK_ROUTE)
                .app_data(web::PayloadConfig::new(webhooks::BODY_LIMIT))
                .wrap(rate_limit::governor(webhook_limiter))
                .route(web::post().to(webhooks::stripe)),
        )
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound)
}
