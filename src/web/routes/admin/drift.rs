//! Reconciliation in the console: `/admin/drift` lists the customers whose local state differs
//! from Stripe's (computed on request, [`DRIFT_PAGE`] customers a page, so a page view never
//! walks every customer at Stripe), and `/admin/customers/{id}/resync` repairs one customer
//! from Stripe (audited `stripe_sync_run`, as the admin's). Both only read Stripe: no write is
//! sent, so no idempotency key; each call counts against the gateway's throttle under the
//! system's own key (never a customer's budget) and the console's own rate limit. A customer
//! that cannot be read now is listed as not checked; the rest of the page still shows.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts::UserId;
use crate::audit::Actor;
use crate::billing::GatewayError;
use crate::error::AppError;
use crate::reconcile::{Scope, SyncError};
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::pages::{PageContext, render, see_other};
use crate::web::routes::webhooks::reconciler;
use crate::web::session::{AdminUser, FlashKind, TypedSession};

/// Customers compared per page of the drift view.
pub const DRIFT_PAGE: i64 = 10;

struct DriftRow {
    user_id: i64,
    customer: String,
    object: String,
    field: &'static str,
    local: String,
    stripe: String,
}

#[derive(Template)]
#[template(path = "admin/drift.html")]
struct DriftPageView {
    ctx: PageContext,
    rows: Vec<DriftRow>,
    checked: usize,
    /// Accounts whose state could not be read from Stripe now.
    unchecked: Vec<i64>,
    after: i64,
    next_after: Option<i64>,
}

#[derive(Deserialize)]
pub struct DriftQuery {
    after: Option<i64>,
}

fn billing_error(err: SyncError) -> AppError {
    match err {
        SyncError::Gateway(GatewayError::NotConfigured) => AppError::BillingOff,
        other => AppError::internal(other),
    }
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    actor: Actor,
    query: web::Query<DriftQuery>,
) -> Result<HttpResponse, AppError> {
    let after = query.after.unwrap_or(0).max(0);
    let page = reconciler(&state, false)
        .drift_page(after, DRIFT_PAGE, &actor)
        .await
        .map_err(billing_error)?;
    let rows = page
        .differences
        .into_iter()
        .map(|d| DriftRow {
            user_id: d.user_id.get(),
            customer: d.customer,
            object: d.object,
            field: d.field,
            local: d.local,
            stripe: d.stripe,
        })
        .collect();
    render(&DriftPageView {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        rows,
        checked: page.checked,
        unchecked: page.unchecked.iter().map(|u| u.get()).collect(),
        after,
        next_after: page.next_after,
    })
}

pub async fn resync(
    state: web::Data<AppState>,
    session: TypedSession,
    _admin: AdminUser,
    actor: Actor,
    id: web::Path<i64>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let user_id = UserId::from(id.into_inner());
    let outcome = reconciler(&state, false)
        .run(Scope::Account(user_id), false, &actor)
        .await;
    match outcome {
        Ok(report) => {
            let repaired = report.differences.iter().filter(|d| d.repaired).count();
            let message = match (report.differences.len(), repaired) {
                (0, _) => "Resynced from Stripe: the local state already matched.".to_owned(),
                (found, repaired) => format!(
                    "Resynced from Stripe: {found} difference(s) found, {repaired} repaired."
                ),
            };
            session.flash(FlashKind::Success, message)?;
        }
        Err(SyncError::NoCustomer(_)) => session.flash(
            FlashKind::Info,
            "This account has no Stripe customer: nothing to resync.",
        )?,
        Err(SyncError::Gateway(GatewayError::Throttled { retry_after, .. })) => session.flash(
            FlashKind::Error,
            format!("Too many calls to Stripe for this customer; try again in {retry_after}s."),
        )?,
        Err(err) => return Err(billing_error(err)),
    }
    Ok(see_other("/admin/customers"))
}
