//! The hosted pages a checkout or portal session's `url` opens: pay with a test card, or
//! cancel, resume and switch a subscription, then go back to the merchant.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::controls::{self, CheckoutOutcome};
use super::state::{SessionStatus, SubscriptionStatus};
use super::{Sim, objects};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/checkout/{id}", web::get().to(checkout_page))
        .route("/checkout/{id}", web::post().to(pay))
        .route("/checkout/{id}/cancel", web::get().to(cancel_checkout))
        .route("/portal/{id}", web::get().to(portal_page))
        .route(
            "/portal/{id}/subscriptions/{sub}/{action}",
            web::post().to(portal_action),
        );
}

fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type(ContentType::html())
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
#[template(path = "stripe_sim/message.html")]
struct Message<'a> {
    title: &'a str,
    message: &'a str,
}

fn message(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    html(status, &Message { title, message })
}

#[derive(Template)]
#[template(path = "stripe_sim/checkout.html")]
struct CheckoutPage {
    id: String,
    product: String,
    amount: String,
    interval: &'static str,
    trial_days: Option<u32>,
    email: String,
    error: Option<&'static str>,
    can_cancel: bool,
}

fn checkout_view(sim: &Sim, id: &str, error: Option<&'static str>) -> Option<CheckoutPage> {
    let state = sim.state();
    let session = state.checkout_sessions.get(id)?;
    let price = state.prices.get(&session.price)?;
    let product = state
        .products
        .get(&price.product)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let email = session
        .customer
        .as_ref()
        .and_then(|c| state.customers.get(c))
        .and_then(|c| c.email.clone())
        .or_else(|| session.customer_email.clone())
        .unwrap_or_default();
    Some(CheckoutPage {
        id: id.to_owned(),
        product,
        amount: objects::money(price.unit_amount * session.quantity as i64, &price.currency),
        interval: price.interval.as_str(),
        trial_days: session.trial_period_days,
        email,
        error,
        can_cancel: session.cancel_url.is_some(),
    })
}

async fn checkout_page(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let status = sim
        .state()
        .checkout_sessions
        .get(id.as_str())
        .map(|s| s.status);
    match (status, checkout_view(&sim, &id, None)) {
        (Some(SessionStatus::Open), Some(page)) => html(StatusCode::OK, &page),
        (Some(_), _) => message(
            StatusCode::OK,
            "Already paid",
            "This checkout session is complete.",
        ),
        (None, _) => message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such checkout session.",
        ),
    }
}

#[derive(Deserialize)]
struct PayForm {
    card_number: String,
    email: Option<String>,
}

async fn pay(sim: web::Data<Sim>, id: web::Path<String>, form: web::Form<PayForm>) -> HttpResponse {
    let email = form.email.clone().filter(|e| !e.trim().is_empty());
    let outcome = controls::complete_checkout(&mut sim.state(), &id, &form.card_number, email);
    match outcome {
        CheckoutOutcome::Paid {
            redirect: to,
            events,
        } => {
            Arc::clone(&sim).deliver(events);
            redirect(&to)
        }
        CheckoutOutcome::Declined(reason) => match checkout_view(&sim, &id, Some(reason)) {
            Some(page) => html(StatusCode::PAYMENT_REQUIRED, &page),
            None => message(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such checkout session.",
            ),
        },
        CheckoutOutcome::NotOpen => message(
            StatusCode::CONFLICT,
            "Not open",
            "This checkout session can no longer be paid.",
        ),
    }
}

async fn cancel_checkout(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let cancel_url = sim
        .state()
        .checkout_sessions
        .get(id.as_str())
        .and_then(|s| s.cancel_url.clone());
    match cancel_url {
        Some(url) => redirect(&url),
        None => message(
            StatusCode::NOT_FOUND,
            "Not found",
            "This checkout session has no cancel URL.",
        ),
    }
}

struct PortalSubscription {
    id: String,
    product: String,
    amount: String,
    interval: &'static str,
    status: &'static str,
    renews: String,
    cancel_at_period_end: bool,
    price: String,
}

struct PlanChoice {
    price: String,
    label: String,
}

#[derive(Template)]
#[template(path = "stripe_sim/portal.html")]
struct PortalPage {
    id: String,
    email: String,
    subscriptions: Vec<PortalSubscription>,
    plans: Vec<PlanChoice>,
    return_url: Option<String>,
}

async fn portal_page(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let state = sim.state();
    let Some(session) = state.portal_sessions.get(id.as_str()) else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such portal session.",
        );
    };
    let email = state
        .customers
        .get(&session.customer)
        .and_then(|c| c.email.clone())
        .unwrap_or_default();
    let product_name = |price_id: &str| {
        state
            .prices
            .get(price_id)
            .and_then(|p| state.products.get(&p.product))
            .map(|p| p.name.clone())
            .unwrap_or_default()
    };
    let mut subscriptions: Vec<PortalSubscription> = state
        .subscriptions
        .values()
        .filter(|s| s.customer == session.customer && s.status != SubscriptionStatus::Canceled)
        .filter_map(|s| {
            let price = state.prices.get(&s.price)?;
            Some(PortalSubscription {
                id: s.id.clone(),
                product: product_name(&s.price),
                amount: objects::money(price.unit_amount * s.quantity as i64, &price.currency),
                interval: price.interval.as_str(),
                status: s.status.as_str(),
                renews: objects::date(s.current_period_end),
                cancel_at_period_end: s.cancel_at_period_end,
                price: s.price.clone(),
            })
        })
        .collect();
    subscriptions.sort_by(|a, b| a.id.cmp(&b.id));
    let mut plans: Vec<PlanChoice> = state
        .prices
        .values()
        .filter(|p| {
            p.active
                && state
                    .products
                    .get(&p.product)
                    .is_some_and(|prod| prod.active)
        })
        .map(|p| PlanChoice {
            price: p.id.clone(),
            label: format!(
                "{} — {} / {}",
                product_name(&p.id),
                objects::money(p.unit_amount, &p.currency),
                p.interval.as_str()
            ),
        })
        .collect();
    plans.sort_by(|a, b| a.label.cmp(&b.label));
    let page = PortalPage {
        id: id.to_string(),
        email,
        subscriptions,
        plans,
        return_url: session.return_url.clone(),
    };
    drop(state);
    html(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct SwitchForm {
    price: Option<String>,
}

async fn portal_action(
    sim: web::Data<Sim>,
    path: web::Path<(String, String, String)>,
    form: web::Form<SwitchForm>,
) -> HttpResponse {
    let (session_id, sub_id, action) = path.into_inner();
    let mut state = sim.state();
    let Some(session) = state.portal_sessions.get(&session_id).cloned() else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such portal session.",
        );
    };
    let Some(before) = state
        .subscriptions
        .get(&sub_id)
        .cloned()
        .filter(|s| s.customer == session.customer)
    else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "That subscription does not belong to this customer.",
        );
    };
    let mut after = before.clone();
    match action.as_str() {
        "cancel" => {
            after.cancel_at_period_end = true;
            after.canceled_at = Some(super::state::unix_now());
        }
        "resume" => {
            after.cancel_at_period_end = false;
            after.canceled_at = None;
        }
        "switch" => match form
            .price
            .as_ref()
            .and_then(|p| state.prices.get(p))
            .filter(|p| p.active)
        {
            Some(price) => after.price = price.id.clone(),
            None => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Choose a plan",
                    "Pick one of the listed plans.",
                );
            }
        },
        _ => return message(StatusCode::NOT_FOUND, "Not found", "Unknown action."),
    }
    let (_, event) = controls::replace_subscription(&mut state, &before, after, None);
    drop(state);
    Arc::clone(&sim).deliver(vec![event]);
    redirect(
        session
            .return_url
            .as_deref()
            .unwrap_or(&format!("/portal/{session_id}")),
    )
}
