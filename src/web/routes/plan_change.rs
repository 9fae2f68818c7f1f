//! `/billing/change`: the customer changes plan, billing interval or seats from the account
//! page — a preview from Stripe's invoice preview, then a confirm button (CSRF, operation id);
//! and calls off a change scheduled for the end of the period.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::billing::{billing_failure, claim_operation_for};
use crate::audit::Actor;
use crate::billing::plan_changes::{self, ChangeError, Confirmed, Preview, Previewed, Timing};
use crate::billing::plans::format_amount;
use crate::error::AppError;
use crate::web::AppState;
use crate::web::csrf::{CsrfForm, OperationForm, SubmittedOperation};
use crate::web::pages::{PageContext, datetime, render, see_other};
use crate::web::session::{CurrentUser, FlashKind, TypedSession};

/// Longest quantity text worth parsing.
const MAX_QUANTITY_CHARS: usize = 12;
/// Longest Stripe price id (or timing) worth comparing.
const MAX_PRICE_ID_CHARS: usize = 255;

fn date(unix: i64) -> String {
    crate::billing::subscriptions::timestamp(unix)
        .as_ref()
        .map_or_else(String::new, datetime)
}

/// What a plan change error means to the customer: a bad form is a bad request, a plan not on
/// offer is not found, the rest lead back to the account page with a word of why.
async fn refusal(
    (state, req, session): (&AppState, &HttpRequest, &TypedSession),
    actor: &Actor,
    err: ChangeError,
) -> Result<HttpResponse, AppError> {
    let message = match err {
        ChangeError::NotOffered => return Err(AppError::NotFound),
        ChangeError::BadInterval => {
            return Err(AppError::BadRequest("Choose monthly or yearly billing."));
        }
        ChangeError::BadQuantity(..) => {
            return Err(AppError::BadRequest(
                "Choose a number of seats the plan allows.",
            ));
        }
        ChangeError::Billing(err) => return Err(billing_failure(state, req, actor, err).await),
        ChangeError::NoSubscription => "You have no active subscription to change.",
        ChangeError::Ending => {
            "Your subscription ends at the close of this period. Resume it to change plan."
        }
        ChangeError::AlreadyScheduled => {
            "A change is already scheduled. Cancel it first to choose another."
        }
        ChangeError::Unchanged => "That is already your plan.",
        ChangeError::Stale => "Prices changed since the preview. Please review it again.",
        ChangeError::PastDue => "Please pay your open invoice first, then change your plan.",
        ChangeError::KeepsTrialOrDiscount => {
            "This change would end your trial or discount early. Please contact us to make it."
        }
        ChangeError::Metered => {
            "Plans billed by usage can't be switched here yet. Please contact us to change plan."
        }
    };
    session.flash(FlashKind::Info, message)?;
    Ok(see_other("/account"))
}

#[derive(Deserialize)]
pub struct ChangeQuery {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    interval: String,
    quantity: Option<String>,
}

fn quantity_text(raw: Option<&str>) -> Result<Option<&str>, AppError> {
    match raw {
        Some(q) if q.len() > MAX_QUANTITY_CHARS => Err(AppError::BadRequest(
            "Choose a number of seats the plan allows.",
        )),
        other => Ok(other),
    }
}

#[derive(Template)]
#[template(path = "billing/change.html")]
struct ChangePage {
    ctx: PageContext,
    from_plan: String,
    to_plan: String,
    slug: String,
    interval: &'static str,
    price: String,
    quantity: u64,
    per_seat: bool,
    /// `Some(date)`: the change waits for the end of the period.
    at_period_end: Option<String>,
    due_now: String,
    credit: bool,
    next_amount: String,
    next_date: String,
    proration_date: i64,
    /// The Stripe price and the timing previewed (the confirm refuses anything else).
    price_id: String,
    timing: &'static str,
    operation_id: String,
}

impl ChangePage {
    fn new(ctx: PageContext, preview: Preview, operation_id: String) -> Self {
        let money = |amount: i64| format_amount(amount.abs(), &preview.currency);
        let target = &preview.target;
        Self {
            ctx,
            from_plan: preview
                .from_plan
                .clone()
                .unwrap_or_else(|| "your plan".into()),
            to_plan: target.plan.name.clone(),
            slug: target.plan.slug.clone(),
            interval: target.price.interval.as_str(),
            price: target.price.label(),
            quantity: target.quantity,
            per_seat: target.seats.1 > 1,
            at_period_end: match preview.timing {
                Timing::Now => None,
                Timing::PeriodEnd(at) => Some(date(at)),
            },
            due_now: money(preview.due_now),
            credit: preview.due_now < 0,
            next_amount: money(preview.next_amount),
            next_date: date(preview.next_date),
            proration_date: preview.proration_date,
            price_id: target.price.stripe_price_id.clone().unwrap_or_default(),
            timing: preview.timing.as_str(),
            operation_id,
        }
    }
}

/// `GET /billing/change`: what the change costs, before it is made.
pub async fn preview(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    CurrentUser(user): CurrentUser,
    actor: Actor,
    query: web::Query<ChangeQuery>,
) -> Result<HttpResponse, AppError> {
    let billing = state.billing();
    let quantity = quantity_text(query.quantity.as_deref())?;
    let downgrades = state.config.stripe.plan_change_downgrade;
    let previewed =
        match plan_changes::target(billing, &query.plan, &query.interval, quantity).await {
            Ok(target) => plan_changes::preview(billing, user.id, target, downgrades).await,
            Err(err) => Err(err),
        };
    match previewed {
        Ok(preview) => {
            let ctx = PageContext::with_form(&session, Some(&user))?;
            let operation_id = crate::billing::new_operation_id().map_err(AppError::internal)?;
            render(&ChangePage::new(ctx, preview, operation_id))
        }
        Err(err) => refusal((&state, &req, &session), &actor, err).await,
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    interval: String,
    quantity: Option<String>,
    #[serde(default)]
    proration_date: String,
    #[serde(default)]
    price_id: String,
    #[serde(default)]
    timing: String,
    #[serde(default)]
    operation_id: SubmittedOperation,
}

/// `POST /billing/change`: makes the previewed change.
pub async fn confirm(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<ChangeForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.0;
    let quantity = quantity_text(form.quantity.as_deref())?;
    let (Ok(proration_date), false) = (
        form.proration_date.trim().parse::<i64>(),
        form.price_id.len() > MAX_PRICE_ID_CHARS || form.timing.len() > MAX_PRICE_ID_CHARS,
    ) else {
        return Err(AppError::BadRequest(
            "The preview is incomplete. Please review it again.",
        ));
    };
    let previewed = Previewed {
        price_id: form.price_id,
        timing: form.timing,
        proration_date,
    };
    let operation_id = form.operation_id.parse()?;
    let billing = state.billing();
    let downgrades = state.config.stripe.plan_change_downgrade;
    let target = match plan_changes::target(billing, &form.plan, &form.interval, quantity).await {
        Ok(target) => target,
        Err(err) => return refusal((&state, &req, &session), &actor, err).await,
    };
    let operation = claim_operation_for(&state, &req, &actor, "plan.change", &operation_id).await?;
    let name = target.plan.name.clone();
    let owner = (user.id, &operation);
    match plan_changes::confirm(billing, &actor, owner, target, &previewed, downgrades).await {
        Ok(Confirmed::Applied) => {
            session.flash(
                FlashKind::Success,
                format!("You are now on the {name} plan."),
            )?;
            Ok(see_other("/account"))
        }
        Ok(Confirmed::Scheduled(at)) => {
            let message = format!("Your plan changes to {name} on {}.", date(at));
            session.flash(FlashKind::Success, message)?;
            Ok(see_other("/account"))
        }
        Err(err) => refusal((&state, &req, &session), &actor, err).await,
    }
}

/// `POST /billing/change/cancel`: calls off the change scheduled for the end of the period.
pub async fn cancel(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let operation_id = form.0.operation_id.parse()?;
    let operation =
        claim_operation_for(&state, &req, &actor, "plan.change.cancel", &operation_id).await?;
    let owner = (user.id, &operation);
    let message = match plan_changes::cancel_scheduled(state.billing(), &actor, owner).await {
        Ok(true) => "The scheduled change is canceled. Your plan stays as it is.",
        Ok(false) => "You have no scheduled change.",
        Err(err) => return refusal((&state, &req, &session), &actor, err).await,
    };
    session.flash(FlashKind::Success, message)?;
    Ok(see_other("/account"))
}
