//! The hosted Billing Portal: the customer's plans, the card on file and the invoice history,
//! with a page per invoice. A change (switch plan, cancel at period end, renew) is posted
//! first without `confirm=yes`, which shows what it will do; only the confirmed post applies
//! it, then the portal shows the result.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{html, message, not_found, redirect};
use crate::card::Brand;
use crate::controls;
use crate::state::{
    InvoiceStatus, PortalSession, SimState, Subscription, SubscriptionStatus, unix_now,
};
use crate::{Sim, objects};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/{id}", web::get().to(portal_page))
        .route(
            "/portal/{id}/invoices/{invoice}",
            web::get().to(invoice_page),
        )
        // The hosted invoice page (`hosted_invoice_url`): reached by its link alone.
        .route("/i/{invoice}", web::get().to(hosted_invoice_page))
        .route("/i/{invoice}", web::post().to(pay_invoice))
        .route("/i/{invoice}/pdf", web::get().to(invoice_pdf))
        .route(
            "/portal/{id}/subscriptions/{sub}/{action}",
            web::post().to(portal_action),
        );
}

/// How many invoices the history lists, newest first.
const INVOICE_HISTORY: usize = 24;

struct PortalSubscription {
    id: String,
    product: String,
    amount: String,
    interval: &'static str,
    status: &'static str,
    status_class: &'static str,
    /// "Renews on …", "Trial ends on …", "Cancels on …".
    next: String,
    cancel_at_period_end: bool,
    price: String,
}

struct PlanChoice {
    price: String,
    label: String,
}

struct CardView {
    brand: &'static str,
    last4: String,
    expires: String,
}

struct InvoiceRow {
    id: String,
    date: String,
    amount: String,
    status: &'static str,
    product: String,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    id: String,
    merchant: String,
    email: String,
    name: Option<String>,
    subscriptions: Vec<PortalSubscription>,
    plans: Vec<PlanChoice>,
    card: Option<CardView>,
    invoices: Vec<InvoiceRow>,
    notice: Option<&'static str>,
    return_url: Option<String>,
}

fn product_name(state: &SimState, price_id: &str) -> String {
    state
        .prices
        .get(price_id)
        .and_then(|p| state.products.get(&p.product))
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// "Pro — $29.00 / month".
fn plan_label(state: &SimState, price_id: &str) -> String {
    match state.prices.get(price_id) {
        Some(p) => format!(
            "{} — {} / {}",
            product_name(state, price_id),
            objects::money(p.unit_amount, &p.currency),
            p.interval.as_str()
        ),
        None => String::new(),
    }
}

fn subscription_view(state: &SimState, s: &Subscription) -> Option<PortalSubscription> {
    let price = state.prices.get(&s.price)?;
    let (status, status_class, next) = match (s.status, s.cancel_at_period_end) {
        (_, true) => ("Cancels", "cancels", "Your plan will be canceled on"),
        (SubscriptionStatus::Trialing, false) => ("Trial", "trial", "Your trial ends on"),
        (SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid, false) => {
            ("Past due", "past-due", "Your next payment is due on")
        }
        _ => ("Active", "active", "Your plan renews on"),
    };
    Some(PortalSubscription {
        id: s.id.clone(),
        product: product_name(state, &s.price),
        amount: objects::money(price.unit_amount * s.quantity as i64, &price.currency),
        interval: price.interval.as_str(),
        status,
        status_class,
        next: format!("{next} {}.", objects::date(s.current_period_end)),
        cancel_at_period_end: s.cancel_at_period_end,
        price: s.price.clone(),
    })
}

fn portal_view(state: &SimState, id: &str, session: &PortalSession) -> PortalPage {
    let customer = state.customers.get(&session.customer);
    let mut subscriptions: Vec<PortalSubscription> = state
        .subscriptions
        .values()
        .filter(|s| s.customer == session.customer && s.status != SubscriptionStatus::Canceled)
        .filter_map(|s| subscription_view(state, s))
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
            label: plan_label(state, &p.id),
        })
        .collect();
    plans.sort_by(|a, b| a.label.cmp(&b.label));
    let mut invoices: Vec<_> = state
        .invoices
        .values()
        .filter(|i| i.customer == session.customer)
        .collect();
    invoices.sort_by(|a, b| (b.created, &b.number).cmp(&(a.created, &a.number)));
    let invoices = invoices
        .into_iter()
        .take(INVOICE_HISTORY)
        .map(|i| InvoiceRow {
            id: i.id.clone(),
            date: objects::date(i.created),
            amount: objects::money(i.amount_due, &i.currency),
            status: invoice_status(i.status),
            product: product_name(state, &i.price),
        })
        .collect();
    PortalPage {
        id: id.to_owned(),
        merchant: state.business_name.clone(),
        email: customer.and_then(|c| c.email.clone()).unwrap_or_default(),
        name: customer.and_then(|c| c.name.clone()),
        subscriptions,
        plans,
        card: state
            .cards_on_file
            .get(&session.customer)
            .map(|c| CardView {
                brand: Brand::label(c.brand),
                last4: c.last4.clone(),
                expires: format!("{:02}/{}", c.exp_month, c.exp_year),
            }),
        invoices,
        notice: None,
        return_url: session.return_url.clone(),
    }
}

fn invoice_status(status: InvoiceStatus) -> &'static str {
    match status {
        InvoiceStatus::Paid => "Paid",
        InvoiceStatus::Open => "Open",
        InvoiceStatus::Void => "Void",
    }
}

#[derive(Deserialize)]
struct PortalQuery {
    /// The change just applied, to say so.
    done: Option<String>,
}

async fn portal_page(
    sim: web::Data<Sim>,
    id: web::Path<String>,
    query: web::Query<PortalQuery>,
) -> HttpResponse {
    let state = sim.state();
    let Some(session) = state.portal_sessions.get(id.as_str()) else {
        return not_found("There is no such portal session.");
    };
    let mut page = portal_view(&state, &id, session);
    drop(state);
    page.notice = match query.done.as_deref() {
        Some("cancel") => Some(
            "Your plan has been canceled. It stays available until the end of the billing period.",
        ),
        Some("resume") => Some("Your plan has been renewed."),
        Some("switch") => Some("Your plan has been updated."),
        _ => None,
    };
    html(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "invoice.html")]
struct InvoicePage {
    id: String,
    /// The portal session the page was opened from (a back link), if any.
    portal: Option<String>,
    /// Open and reached by its own link: the page takes a card.
    payable: bool,
    card_errors: Vec<&'static str>,
    declined: Option<&'static str>,
    merchant: String,
    number: String,
    status: &'static str,
    date: String,
    amount: String,
    product: String,
    period: String,
    email: String,
}

async fn invoice_page(sim: web::Data<Sim>, path: web::Path<(String, String)>) -> HttpResponse {
    let (portal, invoice_id) = path.into_inner();
    let state = sim.state();
    let invoice = state.portal_sessions.get(&portal).and_then(|session| {
        state
            .invoices
            .get(&invoice_id)
            .filter(|i| i.customer == session.customer)
    });
    let Some(invoice) = invoice else {
        return not_found("There is no such invoice for this customer.");
    };
    let page = invoice_view(&state, invoice, Some(portal));
    drop(state);
    html(StatusCode::OK, &page)
}

async fn hosted_invoice_page(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let state = sim.state();
    let Some(invoice) = state.invoices.get(id.as_str()) else {
        return not_found("There is no such invoice.");
    };
    let page = invoice_view(&state, invoice, None);
    drop(state);
    html(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct PayInvoiceForm {
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    card_expiry: String,
    #[serde(default)]
    card_cvc: String,
    #[serde(default)]
    cardholder_name: String,
}

/// The hosted invoice page's card form: an open invoice is paid with a test card (a past-due
/// subscription becomes active again); the page again with what went wrong otherwise (422 for
/// fields to fix, 402 for a declined card, 409 for an invoice no longer open).
async fn pay_invoice(
    sim: web::Data<Sim>,
    id: web::Path<String>,
    form: web::Form<PayInvoiceForm>,
) -> HttpResponse {
    use chrono::Datelike as _;
    let today = chrono::Utc::now();
    let checked = crate::card::check(
        &crate::card::CardForm {
            number: &form.card_number,
            expiry: &form.card_expiry,
            cvc: &form.card_cvc,
            name: &form.cardholder_name,
        },
        (today.year(), today.month()),
    );
    let (status, card_errors, declined) = match checked {
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            [errors.number, errors.expiry, errors.cvc, errors.name]
                .into_iter()
                .flatten()
                .collect(),
            None,
        ),
        Ok(card) => {
            let outcome = controls::collect_invoice(&mut sim.state(), &id, Some(&card), false);
            match outcome {
                controls::InvoicePayment::Paid(events) => {
                    Arc::clone(&sim).deliver(events);
                    return redirect(&format!("/i/{id}"));
                }
                controls::InvoicePayment::Declined(message, events) => {
                    Arc::clone(&sim).deliver(events);
                    (StatusCode::PAYMENT_REQUIRED, Vec::new(), Some(message))
                }
                controls::InvoicePayment::NotOpen => {
                    return message(
                        StatusCode::CONFLICT,
                        "Not open",
                        "This invoice can no longer be paid.",
                    );
                }
                controls::InvoicePayment::Missing => {
                    return not_found("There is no such invoice.");
                }
            }
        }
    };
    let state = sim.state();
    let Some(invoice) = state.invoices.get(id.as_str()) else {
        return not_found("There is no such invoice.");
    };
    let mut page = invoice_view(&state, invoice, None);
    drop(state);
    page.card_errors = card_errors;
    page.declined = declined;
    html(status, &page)
}

/// The invoice as a PDF (`invoice_pdf`): a one-page document with its number and amount.
async fn invoice_pdf(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let state = sim.state();
    let Some(invoice) = state.invoices.get(id.as_str()) else {
        return not_found("There is no such invoice.");
    };
    let line = format!(
        "{} - Invoice {} - {} - {}",
        state.business_name,
        invoice.number,
        objects::money(invoice.amount_due, &invoice.currency),
        invoice_status(invoice.status)
    );
    drop(state);
    HttpResponse::Ok()
        .content_type("application/pdf")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(crate::pdf::one_line(&line))
}

fn invoice_view(
    state: &SimState,
    invoice: &crate::state::Invoice,
    portal: Option<String>,
) -> InvoicePage {
    InvoicePage {
        id: invoice.id.clone(),
        payable: portal.is_none() && invoice.status == InvoiceStatus::Open,
        card_errors: Vec::new(),
        declined: None,
        merchant: state.business_name.clone(),
        number: invoice.number.clone(),
        status: invoice_status(invoice.status),
        date: objects::date(invoice.created),
        amount: objects::money(invoice.amount_due, &invoice.currency),
        product: product_name(state, &invoice.price),
        period: format!(
            "{} – {}",
            objects::date(invoice.period_start),
            objects::date(invoice.period_end)
        ),
        email: state
            .customers
            .get(&invoice.customer)
            .and_then(|c| c.email.clone())
            .unwrap_or_default(),
        portal,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Cancel,
    Resume,
    Switch,
}

impl Change {
    fn parse(action: &str) -> Option<Self> {
        match action {
            "cancel" => Some(Self::Cancel),
            "resume" => Some(Self::Resume),
            "switch" => Some(Self::Switch),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Resume => "resume",
            Self::Switch => "switch",
        }
    }
}

/// The review of a change, with the button that confirms it.
#[derive(Template)]
#[template(path = "portal_confirm.html")]
struct ConfirmPage {
    portal: String,
    merchant: String,
    subscription: String,
    action: &'static str,
    title: &'static str,
    current: String,
    /// The plan after a switch.
    new_plan: Option<String>,
    price: Option<String>,
    explanation: String,
    button: &'static str,
    destructive: bool,
}

#[derive(Deserialize)]
struct ChangeForm {
    price: Option<String>,
    /// `yes` on the review page's form: only then is the change applied.
    confirm: Option<String>,
}

/// Why a change cannot be made: (status, title, message).
type Refusal = (StatusCode, &'static str, &'static str);

/// The subscription after `change`, checked against what the customer may do.
fn changed(
    state: &SimState,
    before: &Subscription,
    change: Change,
    price: Option<&str>,
) -> Result<Subscription, Refusal> {
    if before.status == SubscriptionStatus::Canceled {
        return Err((
            StatusCode::CONFLICT,
            "Plan ended",
            "This plan has already ended.",
        ));
    }
    let mut after = before.clone();
    match change {
        Change::Cancel => {
            after.cancel_at_period_end = true;
            after.canceled_at = Some(unix_now());
        }
        Change::Resume => {
            after.cancel_at_period_end = false;
            after.canceled_at = None;
        }
        Change::Switch => {
            let choose = (
                StatusCode::BAD_REQUEST,
                "Choose a plan",
                "Pick one of the listed plans.",
            );
            let price = price
                .and_then(|p| state.prices.get(p))
                .filter(|p| p.active)
                .ok_or(choose)?;
            if price.id == before.price {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "Choose a plan",
                    "That is already your plan: pick another one.",
                ));
            }
            after.price = price.id.clone();
        }
    }
    Ok(after)
}

fn confirm_view(
    state: &SimState,
    portal: &str,
    before: &Subscription,
    after: &Subscription,
    change: Change,
) -> ConfirmPage {
    let product = product_name(state, &before.price);
    let period_end = objects::date(before.current_period_end);
    let (title, explanation, button) = match change {
        Change::Cancel => (
            "Cancel your plan",
            format!(
                "Your {product} plan will be canceled, but it stays available until the end of your billing period on {period_end}. You can renew it until then."
            ),
            "Cancel plan",
        ),
        Change::Resume => (
            "Renew your plan",
            format!("Your {product} plan will no longer be canceled: it renews on {period_end}."),
            "Renew plan",
        ),
        Change::Switch => (
            "Confirm your updates",
            format!("The new price applies from your next invoice, on {period_end}."),
            "Confirm",
        ),
    };
    ConfirmPage {
        portal: portal.to_owned(),
        merchant: state.business_name.clone(),
        subscription: before.id.clone(),
        action: change.as_str(),
        title,
        current: plan_label(state, &before.price),
        new_plan: (change == Change::Switch).then(|| plan_label(state, &after.price)),
        price: (change == Change::Switch).then(|| after.price.clone()),
        explanation,
        button,
        destructive: change == Change::Cancel,
    }
}

async fn portal_action(
    sim: web::Data<Sim>,
    path: web::Path<(String, String, String)>,
    form: web::Form<ChangeForm>,
) -> HttpResponse {
    let (portal, sub_id, action) = path.into_inner();
    let Some(change) = Change::parse(&action) else {
        return not_found("Unknown action.");
    };
    let mut state = sim.state();
    let Some(session) = state.portal_sessions.get(&portal).cloned() else {
        return not_found("There is no such portal session.");
    };
    let Some(before) = state
        .subscriptions
        .get(&sub_id)
        .filter(|s| s.customer == session.customer)
        .cloned()
    else {
        return not_found("That subscription does not belong to this customer.");
    };
    let after = match changed(&state, &before, change, form.price.as_deref()) {
        Ok(after) => after,
        Err((status, title, text)) => return message(status, title, text),
    };
    if form.confirm.as_deref() != Some("yes") {
        let page = confirm_view(&state, &portal, &before, &after, change);
        drop(state);
        return html(StatusCode::OK, &page);
    }
    let (_, event) = controls::replace_subscription(&mut state, &before, after, None);
    drop(state);
    Arc::clone(&sim).deliver(vec![event]);
    redirect(&format!("/portal/{portal}?done={}", change.as_str()))
}
