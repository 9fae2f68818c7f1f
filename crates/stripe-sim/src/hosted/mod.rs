//! The hosted pages a checkout or portal session's `url` opens, laid out like Stripe's:
//! Checkout (an order summary beside a card form) and the Billing Portal (plan, payment method,
//! invoice history; every change reviewed and confirmed before it is applied). No script; every
//! page carries a strict CSP and takes its styles from the stylesheet served here.

mod checkout;
mod portal;

use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ContentType, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use actix_web::{HttpResponse, web};
use askama::Template;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(STYLESHEET_PATH, web::get().to(stylesheet));
    checkout::configure(cfg);
    portal::configure(cfg);
}

const STYLESHEET_PATH: &str = "/static/hosted.css";
const STYLESHEET: &str = include_str!("../../static/hosted.css");

/// Nothing but the page and its stylesheet: no scripts, no inline styles, no framing. Forms are
/// left free to redirect to the merchant's success and return URLs, which can be anywhere.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
base-uri 'none'; frame-ancestors 'none'";

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .insert_header((CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE))
            .insert_header((X_FRAME_OPTIONS, "DENY"))
            .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((REFERRER_POLICY, "same-origin"))
            // Pages show a customer's email, card and invoices.
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    title: &'a str,
    message: &'a str,
}

fn message(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    html(status, &Message { title, message })
}

fn not_found(message: &str) -> HttpResponse {
    self::message(StatusCode::NOT_FOUND, "Not found", message)
}

/// "month" → "monthly", as Stripe writes "Billed monthly".
fn interval_adverb(interval: &str) -> &'static str {
    match interval {
        "year" => "yearly",
        _ => "monthly",
    }
}
