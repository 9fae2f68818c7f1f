//! `/admin/…`: the admin console, one module per page family. Every handler takes
//! [`AdminUser`](crate::web::session::AdminUser): customers get 403, anonymous visitors the
//! sign-in page.

pub mod audit_log;
pub mod customers;
pub mod overview;
pub mod plans;
pub mod security;
pub mod tokens;
pub mod webhooks;

use actix_web::web;

/// The console's routes, relative to `/admin`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("").route(web::get().to(security::dashboard)))
        .service(
            web::resource("/plans")
                .route(web::get().to(plans::list))
                .route(web::post().to(plans::create)),
        )
        .service(web::resource("/plans/new").route(web::get().to(plans::new_form)))
        .service(web::resource("/plans/{id}").route(web::post().to(plans::update)))
        .service(web::resource("/plans/{id}/edit").route(web::get().to(plans::edit_form)))
        .service(
            web::resource("/plans/{id}/archive")
                .route(web::get().to(plans::confirm_archive))
                .route(web::post().to(plans::archive)),
        )
        .service(web::resource("/customers").route(web::get().to(customers::list)))
        .service(web::resource("/security").route(web::get().to(audit_log::list)))
        .service(web::resource("/security/export").route(web::get().to(audit_log::export)))
        .service(web::resource("/security/overview").route(web::get().to(overview::show)))
        .service(web::resource("/tokens").route(web::get().to(tokens::list)))
        .service(
            web::resource("/tokens/{id}/revoke")
                .route(web::get().to(tokens::confirm_revoke))
                .route(web::post().to(tokens::revoke)),
        )
        .service(web::resource("/webhooks").route(web::get().to(webhooks::list)))
        .service(web::resource("/webhooks/{id}").route(web::get().to(webhooks::show)))
        .service(
            web::resource("/webhooks/{id}/reprocess").route(web::post().to(webhooks::reprocess)),
        );
}
