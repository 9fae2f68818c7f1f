//! The hosted Checkout page: the order summary (merchant, plan, price, trial, total due today)
//! beside the card form; the fields are checked with Stripe's messages, then the test card
//! decides whether the payment goes through.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Datelike as _;
use serde::Deserialize;

use super::{html, interval_adverb, message, not_found, redirect};
use crate::card::{self, Card, CardErrors, CardForm};
use crate::controls::{self, CheckoutOutcome};
use crate::state::{SessionStatus, SimState, unix_now};
use crate::{Sim, objects, promotions};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/checkout/{id}", web::get().to(checkout_page))
        .route("/checkout/{id}", web::post().to(pay))
        .route("/checkout/{id}/cancel", web::get().to(cancel_checkout));
}

/// The countries the optional "Country or region" list offers (ISO code, name).
const COUNTRIES: &[(&str, &str)] = &[
    ("AU", "Australia"),
    ("AT", "Austria"),
    ("BE", "Belgium"),
    ("CA", "Canada"),
    ("DK", "Denmark"),
    ("FI", "Finland"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("IE", "Ireland"),
    ("IT", "Italy"),
    ("JP", "Japan"),
    ("NL", "Netherlands"),
    ("NZ", "New Zealand"),
    ("NO", "Norway"),
    ("ES", "Spain"),
    ("SE", "Sweden"),
    ("CH", "Switzerland"),
    ("GB", "United Kingdom"),
    ("US", "United States"),
];

const EMAIL_INCOMPLETE: &str = "Your email address is incomplete.";
const EMAIL_INVALID: &str = "Your email address is invalid.";
const COUNTRY_UNKNOWN: &str = "Choose a country or region from the list.";

/// A free trial: how long, and when the first charge comes.
struct Trial {
    days: u32,
    first_charge: String,
}

/// What was typed, to show again after an error (never the card number or security code).
#[derive(Default)]
struct Typed {
    email: String,
    expiry: String,
    name: String,
    country: String,
    promotion_code: String,
}

#[derive(Default)]
struct FieldErrors {
    email: Option<&'static str>,
    card: CardErrors,
    country: Option<&'static str>,
    promotion_code: Option<&'static str>,
}

impl FieldErrors {
    /// The card group's messages, in the order of its inputs.
    fn card_messages(&self) -> Vec<&'static str> {
        [self.card.number, self.card.expiry, self.card.cvc]
            .into_iter()
            .flatten()
            .collect()
    }
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    id: String,
    merchant: String,
    product: String,
    description: Option<String>,
    /// For the whole quantity, per interval.
    price: String,
    interval: &'static str,
    billed: &'static str,
    quantity: u64,
    trial: Option<Trial>,
    due_today: String,
    /// The customer's email, when the merchant already knows it (then it cannot be changed).
    known_email: Option<String>,
    typed: Typed,
    errors: FieldErrors,
    declined: Option<&'static str>,
    can_cancel: bool,
    countries: &'static [(&'static str, &'static str)],
    /// A trial that may start without a card (`payment_method_collection=if_required`).
    card_optional: bool,
    /// The session allows promotion codes: the page has a field for one.
    allow_promotion_codes: bool,
}

fn known_email(state: &SimState, id: &str) -> Option<String> {
    let session = state.checkout_sessions.get(id)?;
    session
        .customer
        .as_ref()
        .and_then(|c| state.customers.get(c))
        .and_then(|c| c.email.clone())
        .or_else(|| session.customer_email.clone())
}

fn checkout_view(sim: &Sim, id: &str, typed: Typed, errors: FieldErrors) -> Option<CheckoutPage> {
    let state = sim.state();
    let session = state.checkout_sessions.get(id)?;
    let price = state.prices.get(&session.price)?;
    let product = state.products.get(&price.product);
    let amount = price.unit_amount * session.quantity as i64;
    let trial = session.trial_period_days.map(|days| Trial {
        days,
        first_charge: objects::date(unix_now() + i64::from(days) * 86_400),
    });
    Some(CheckoutPage {
        id: id.to_owned(),
        merchant: state.business_name.clone(),
        product: product.map(|p| p.name.clone()).unwrap_or_default(),
        description: product.and_then(|p| p.description.clone()),
        price: objects::money(amount, &price.currency),
        interval: price.interval.as_str(),
        billed: interval_adverb(price.interval.as_str()),
        quantity: session.quantity,
        due_today: objects::money(if trial.is_some() { 0 } else { amount }, &price.currency),
        trial,
        known_email: known_email(&state, id),
        typed,
        errors,
        declined: None,
        can_cancel: session.cancel_url.is_some(),
        countries: COUNTRIES,
        card_optional: controls::card_optional(session),
        allow_promotion_codes: session.allow_promotion_codes,
    })
}

async fn checkout_page(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let status = sim
        .state()
        .checkout_sessions
        .get(id.as_str())
        .map(|s| s.status);
    let page = checkout_view(&sim, &id, Typed::default(), FieldErrors::default());
    match (status, page) {
        (Some(SessionStatus::Open), Some(page)) => html(StatusCode::OK, &page),
        (Some(_), _) => message(
            StatusCode::OK,
            "Already paid",
            "This checkout session is complete.",
        ),
        (None, _) => not_found("There is no such checkout session."),
    }
}

#[derive(Deserialize)]
struct PayForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    card_expiry: String,
    #[serde(default)]
    card_cvc: String,
    #[serde(default)]
    cardholder_name: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    promotion_code: String,
}

/// A plausible address: something@domain.tld, no spaces, not too long.
fn check_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim();
    let (local, domain) = email.split_once('@').ok_or(if email.is_empty() {
        EMAIL_INCOMPLETE
    } else {
        EMAIL_INVALID
    })?;
    if domain.is_empty() || !domain.contains('.') {
        return Err(EMAIL_INCOMPLETE);
    }
    if local.is_empty() || email.len() > 254 || email.contains(char::is_whitespace) {
        return Err(EMAIL_INVALID);
    }
    Ok(email.to_owned())
}

impl From<&PayForm> for Typed {
    fn from(form: &PayForm) -> Self {
        Self {
            email: form.email.chars().take(254).collect(),
            expiry: form.card_expiry.chars().take(9).collect(),
            name: form.cardholder_name.chars().take(100).collect(),
            country: form.country.chars().take(2).collect(),
            promotion_code: form.promotion_code.chars().take(40).collect(),
        }
    }
}

/// The email to give a new customer (none when the merchant already knows it) and the card.
fn check_form(form: &PayForm, email_known: bool) -> Result<(Option<String>, Card), FieldErrors> {
    let email = if email_known {
        Ok(None)
    } else {
        check_email(&form.email).map(Some)
    };
    let country_ok = form.country.is_empty() || COUNTRIES.iter().any(|(c, _)| *c == form.country);
    let today = chrono::Utc::now();
    let card = card::check(
        &CardForm {
            number: &form.card_number,
            expiry: &form.card_expiry,
            cvc: &form.card_cvc,
            name: &form.cardholder_name,
        },
        (today.year(), today.month()),
    );
    match (email, card, country_ok) {
        (Ok(email), Ok(card), true) => Ok((email, card)),
        (email, card, country_ok) => Err(FieldErrors {
            email: email.err(),
            card: card.err().unwrap_or_default(),
            country: (!country_ok).then_some(COUNTRY_UNKNOWN),
            promotion_code: None,
        }),
    }
}

impl PayForm {
    fn card_left_empty(&self) -> bool {
        [
            &self.card_number,
            &self.card_expiry,
            &self.card_cvc,
            &self.cardholder_name,
        ]
        .iter()
        .all(|field| field.trim().is_empty())
    }
}

async fn pay(sim: web::Data<Sim>, id: web::Path<String>, form: web::Form<PayForm>) -> HttpResponse {
    let (email_known, card_optional) = {
        let state = sim.state();
        let optional = state
            .checkout_sessions
            .get(id.as_str())
            .is_some_and(controls::card_optional);
        (known_email(&state, &id).is_some(), optional)
    };
    let (email, card) = if card_optional && form.card_left_empty() {
        let email = if email_known {
            Ok(None)
        } else {
            check_email(&form.email).map(Some)
        };
        match email {
            Ok(email) => (email, None),
            Err(message) => {
                let errors = FieldErrors {
                    email: Some(message),
                    ..FieldErrors::default()
                };
                return retry(&sim, &id, Typed::from(&*form), errors, None);
            }
        }
    } else {
        match check_form(&form, email_known) {
            Ok((email, card)) => (email, Some(card)),
            Err(errors) => return retry(&sim, &id, Typed::from(&*form), errors, None),
        }
    };
    // The state's lock is released before the page is rendered again.
    let chosen = choose_promotion_code(&mut sim.state(), &id, &form.promotion_code);
    if let Err(message) = chosen {
        let errors = FieldErrors {
            promotion_code: Some(message),
            ..FieldErrors::default()
        };
        return retry(&sim, &id, Typed::from(&*form), errors, None);
    }
    let outcome = controls::complete_checkout(&mut sim.state(), &id, card.as_ref(), email);
    match outcome {
        CheckoutOutcome::Paid {
            redirect: to,
            events,
        } => {
            Arc::clone(&sim).deliver(events);
            redirect(&to)
        }
        CheckoutOutcome::Declined(reason) => retry(
            &sim,
            &id,
            Typed::from(&*form),
            FieldErrors::default(),
            Some(reason),
        ),
        CheckoutOutcome::NotOpen => message(
            StatusCode::CONFLICT,
            "Not open",
            "This checkout session can no longer be paid.",
        ),
    }
}

/// Records the promotion code typed on the page for the session (none when the field is
/// empty), or the message saying why it cannot be applied.
fn choose_promotion_code(state: &mut SimState, id: &str, typed: &str) -> Result<(), &'static str> {
    let Some(session) = state.checkout_sessions.get(id) else {
        return Ok(());
    };
    let chosen = if typed.trim().is_empty() {
        None
    } else if !session.allow_promotion_codes || typed.len() > 500 {
        return Err(promotions::CODE_INVALID);
    } else {
        let currency = state
            .prices
            .get(&session.price)
            .map(|p| p.currency.clone())
            .unwrap_or_default();
        Some(promotions::redeemable(state, typed, &currency)?)
    };
    if let Some(session) = state.checkout_sessions.get_mut(id) {
        session.promotion_code = chosen;
    }
    Ok(())
}

/// The form again, with what went wrong: 422 for fields to fix, 402 for a declined card.
fn retry(
    sim: &Sim,
    id: &str,
    typed: Typed,
    errors: FieldErrors,
    declined: Option<&'static str>,
) -> HttpResponse {
    match checkout_view(sim, id, typed, errors) {
        Some(mut page) => {
            page.declined = declined;
            let status = if declined.is_some() {
                StatusCode::PAYMENT_REQUIRED
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            html(status, &page)
        }
        None => not_found("There is no such checkout session."),
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
        None => not_found("This checkout session has no cancel URL."),
    }
}
