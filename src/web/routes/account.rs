//! `/account`: the signed-in customer's account page (profile and subscription); the area's
//! route table (its keys are [`super::byok`]'s).

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::billing::{self, plan_changes, subscriptions};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::pages::{PageContext, datetime, render};
use crate::web::session::{CurrentUser, TypedSession};

struct SubscriptionPanel {
    plan: String,
    status: String,
    live: bool,
    cancel_at_period_end: bool,
    period_end: Option<String>,
    trial_end: Option<String>,
}

/// The card on file as Stripe shows it: brand, last 4, expiry.
struct CardPanel {
    brand: String,
    last4: String,
    expiry: String,
}

/// A change waiting for the end of the period.
struct ScheduledChange {
    plan: String,
    on: String,
    quantity: i64,
}

#[derive(Template)]
#[template(path = "account/index.html")]
struct AccountPage {
    ctx: PageContext,
    email: String,
    role: &'static str,
    member_since: String,
    last_login: Option<String>,
    subscription: Option<SubscriptionPanel>,
    card: Option<CardPanel>,
    operation_id: String,
    /// Plans, intervals and seats the live subscription can change to.
    change_options: Vec<plan_changes::ChangeOption>,
    quantity: Option<i64>,
    scheduled_change: Option<ScheduledChange>,
    /// The discount on the subscription (a promotion code redeemed at Checkout).
    discount: Option<billing::promotions::DiscountSummary>,
}

/// One row of `/account/invoices`.
struct InvoiceLine {
    number: String,
    date: String,
    amount: String,
    status: String,
    hosted_invoice_url: Option<String>,
    invoice_pdf: Option<String>,
}

#[derive(Template)]
#[template(path = "account/invoices.html")]
struct InvoicesPage {
    ctx: PageContext,
    invoices: Vec<InvoiceLine>,
    page: i64,
    more: bool,
}

#[derive(serde::Deserialize)]
pub struct InvoicesQuery {
    page: Option<u16>,
}

/// `GET /account/invoices`: the signed-in customer's own invoices, newest first, a page at a
/// time (`?page=2`).
pub async fn invoices(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    query: web::Query<InvoicesQuery>,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let page = i64::from(query.page.unwrap_or(1).max(1));
    let (rows, more) = billing::invoices::page(&state.db, user.id, page).await?;
    let invoices = rows
        .into_iter()
        .map(|row| InvoiceLine {
            number: row.number.unwrap_or_else(|| "Draft".into()),
            date: row.stripe_created.format("%Y-%m-%d").to_string(),
            amount: billing::plans::format_amount(row.amount_due, &row.currency),
            status: row.status,
            hosted_invoice_url: row.hosted_invoice_url,
            invoice_pdf: row.invoice_pdf,
        })
        .collect();
    render(&InvoicesPage {
        ctx: PageContext::new(&session, Some(&user))?,
        invoices,
        page,
        more,
    })
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let current = subscriptions::current(&state.db, user.id).await?;
    let discount = match &current {
        Some(s) => {
            let id = s.stripe_id.expose().to_owned();
            billing::promotions::current_discount(&state.db, id).await?
        }
        None => None,
    };
    let subscription = current.map(|s| SubscriptionPanel {
        plan: s
            .plan
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "Unknown plan".into()),
        live: s.is_live(),
        cancel_at_period_end: s.cancel_at_period_end,
        period_end: s.current_period_end.as_ref().map(datetime),
        trial_end: s.trial_end.as_ref().map(datetime),
        status: s.status.to_string(),
    });
    let card = billing::cards::on_file(&state.db, &state.keyring, user.id)
        .await?
        .map(|card| CardPanel {
            brand: card.brand_name(),
            expiry: card.expiry(),
            last4: card.last4,
        });
    let (change_options, quantity) = plan_changes::options(state.billing(), user.id).await?;
    let scheduled_change = plan_changes::scheduled(state.billing(), user.id)
        .await?
        .map(|(change, plan)| ScheduledChange {
            plan: plan.map_or_else(|| "another plan".into(), |p| p.name),
            on: datetime(&change.effective_at),
            quantity: change.to_quantity,
        });
    render(&AccountPage {
        change_options,
        quantity,
        scheduled_change,
        ctx: PageContext::new(&session, Some(&user))?,
        role: user.role.as_str(),
        member_since: datetime(&user.created_at),
        last_login: user.last_login_at.as_ref().map(datetime),
        email: user.email,
        subscription,
        card,
        operation_id: billing::new_operation_id().map_err(AppError::internal)?,
        discount,
    })
}

/// The account's routes, relative to `/account` (the keys are [`super::byok`]'s).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::byok;
    cfg.service(web::resource("").route(web::get().to(show)))
        .service(web::resource("/invoices").route(web::get().to(invoices)))
        .service(web::resource("/usage").route(web::get().to(super::usage::show)))
        .service(web::resource("/usage.csv").route(web::get().to(super::usage::export)))
        .service(web::resource("/usage/limits").route(web::post().to(super::usage::save_limits)))
        .service(
            web::resource("/2fa")
                .route(web::get().to(super::two_factor::enrolment))
                .route(web::post().to(super::two_factor::confirm)),
        )
        .service(
            web::resource("/keys")
                .route(web::get().to(byok::list))
                .route(web::post().to(byok::save)),
        )
        .service(
            web::resource("/keys/{provider}/delete")
                .route(web::get().to(byok::confirm_delete))
                .route(web::post().to(byok::delete)),
        );
}
