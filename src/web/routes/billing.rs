//! The customer's side of billing: the pricing page, Checkout, the success and cancel pages,
//! the Billing Portal, and cancel/resume on the account page.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::{self, Actor, Kind};
use crate::billing::cancellations::{self, Reason, ReasonError};
use crate::billing::checkout::{self, ReturnError, Started};
use crate::billing::plans::{self, Interval, Plan, PlanPrice};
use crate::billing::subscriptions::{self, CancelChange};
use crate::billing::{
    self, BillingError, GatewayError, Operation, OperationId, operations, portal,
};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::csrf::{CsrfForm, OperationForm, SubmittedOperation};
use crate::web::pages::{PageContext, datetime, render, see_other};
use crate::web::session::{CurrentUser, FlashKind, MaybeUser, TypedSession};

/// Maps a billing failure to the user's error, auditing throttled calls and operation ids
/// submitted by an account other than their owner.
pub async fn billing_failure(
    state: &AppState,
    req: &HttpRequest,
    actor: &Actor,
    err: BillingError,
) -> AppError {
    let window = state.config.audit.aggregate_window;
    let event = match &err {
        BillingError::Gateway(GatewayError::Throttled { class, .. }) => actor
            .event(Kind::StripeRateLimited)
            .details(serde_json::json!({ "operation": class, "path": req.path() }))
            .aggregate(window, *class),
        BillingError::OperationTaken => actor
            .event(Kind::OperationIdReused)
            .details(serde_json::json!({ "path": req.path() }))
            .aggregate(window, req.path()),
        _ => return err.into(),
    };
    let kind = event.kind.as_str();
    let config = state.config.clone();
    let recorded = state
        .db
        .run(move |conn| match event.kind {
            Kind::StripeRateLimited => {
                audit::alerts::record_rate_limit_refusal(conn, &config.alerts, &event)
            }
            _ => audit::write(conn, &event),
        })
        .await;
    if let Err(audit_err) = recorded {
        tracing::error!(error = %audit_err, kind, "could not record an audit event");
    }
    err.into()
}

/// Claims the form's operation id for the acting account, or says why not (audited when it is
/// another account's).
async fn claim_operation(
    state: &AppState,
    req: &HttpRequest,
    actor: &Actor,
    kind: &'static str,
    id: &OperationId,
) -> Result<Operation, AppError> {
    match operations::claim(&state.db, actor.account(), kind, id).await {
        Ok(operation) => Ok(operation),
        Err(err) => Err(billing_failure(state, req, actor, err).await),
    }
}

/// [`claim_operation`], for the billing routes in other files.
pub(super) async fn claim_operation_for(
    state: &AppState,
    req: &HttpRequest,
    actor: &Actor,
    kind: &'static str,
    id: &OperationId,
) -> Result<Operation, AppError> {
    claim_operation(state, req, actor, kind, id).await
}

fn operation_id() -> Result<String, AppError> {
    billing::new_operation_id().map_err(AppError::internal)
}

/// One way to buy a plan, as a card shows it.
struct PriceOption {
    interval: &'static str,
    label: String,
    free: bool,
    savings_percent: Option<i64>,
    /// `period-month`/`period-year` when the card offers both (the toggle shows one), else empty.
    period_class: &'static str,
}

struct PlanCard {
    plan: Plan,
    options: Vec<PriceOption>,
    current: bool,
    /// Its metered components as customers read them.
    usage: Vec<crate::usage::describe::UsageLine>,
}

impl PlanCard {
    fn new(plan: &Plan, current: bool) -> Self {
        let both = plan.offers_both_intervals();
        let options = plan
            .prices()
            .iter()
            .map(|price| PriceOption {
                interval: price.interval.as_str(),
                label: price.label(),
                free: price.is_free(),
                savings_percent: match price.interval {
                    Interval::Year if both => plan.yearly_savings_percent(),
                    _ => None,
                },
                period_class: match (both, price.interval) {
                    (false, _) => "",
                    (true, Interval::Month) => "period-month",
                    (true, Interval::Year) => "period-year",
                },
            })
            .collect();
        Self {
            plan: plan.clone(),
            options,
            current,
            usage: Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "billing/pricing.html")]
struct PricingPage {
    ctx: PageContext,
    plans: Vec<PlanCard>,
    operation_id: String,
    signed_in: bool,
    has_subscription: bool,
    /// Some plan is sold monthly and yearly: the page shows the Monthly/Yearly switch.
    period_switch: bool,
    yearly_first: bool,
}

#[derive(Deserialize)]
pub struct PricingQuery {
    interval: Option<String>,
}

pub async fn pricing(
    state: web::Data<AppState>,
    session: TypedSession,
    user: MaybeUser,
    query: web::Query<PricingQuery>,
) -> Result<HttpResponse, AppError> {
    let plans = state.active_plans.get(&state.db).await?;
    let current = match &user.0 {
        Some(user) => subscriptions::current(&state.db, user.id)
            .await?
            .filter(|s| s.is_live()),
        None => None,
    };
    let current_plan = current.as_ref().and_then(|s| s.plan.as_ref()).map(|p| p.id);
    let ctx = match &user.0 {
        Some(user) => PageContext::with_form(&session, Some(user))?,
        None => PageContext::new(&session, None)?,
    };
    let mut usage = crate::usage::describe::for_plans(&state.db, &plans).await?;
    let cards: Vec<PlanCard> = plans
        .iter()
        .map(|plan| PlanCard {
            usage: usage.remove(&plan.id).unwrap_or_default(),
            ..PlanCard::new(plan, Some(plan.id) == current_plan)
        })
        .collect();
    render(&PricingPage {
        period_switch: plans.iter().any(Plan::offers_both_intervals),
        yearly_first: query.interval.as_deref() == Some("year"),
        ctx,
        plans: cards,
        operation_id: operation_id()?,
        signed_in: user.0.is_some(),
        has_subscription: current.is_some(),
    })
}

/// A plan someone picked (on the pricing page, carried through sign-up or sign-in), checked
/// against the active plans: what the forms carry on and where it leads.
pub struct ChosenPlan {
    pub slug: String,
    pub interval: &'static str,
    pub name: String,
    pub price: String,
}

impl ChosenPlan {
    /// The confirmation page for this plan (a local path built from a checked slug).
    pub fn checkout_path(&self) -> String {
        format!(
            "/billing/checkout?plan={}&interval={}",
            self.slug, self.interval
        )
    }

    /// `plan=…&interval=…`, to carry the choice on a link.
    pub fn query(&self) -> String {
        format!("plan={}&interval={}", self.slug, self.interval)
    }
}

/// Longest slug a plan can have: anything longer is not worth looking up.
const MAX_SLUG: usize = 40;

/// The active plan and price named by `slug` and `interval` (as submitted), if there is one.
async fn find_offer(
    state: &AppState,
    slug: &str,
    interval: &str,
) -> Result<Result<(Plan, PlanPrice), plans::OfferError>, AppError> {
    if slug.len() > MAX_SLUG {
        return Ok(Err(plans::OfferError::NotOffered));
    }
    let active = state.active_plans.get(&state.db).await?;
    Ok(plans::offer(&active, slug, interval))
}

/// The plan carried by a sign-up or sign-in form; anything that is not an active plan's slug
/// and interval is ignored (the person signs in as usual).
pub async fn chosen_plan(
    state: &AppState,
    slug: Option<&str>,
    interval: Option<&str>,
) -> Result<Option<ChosenPlan>, AppError> {
    let Some(slug) = slug.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    Ok(find_offer(state, slug, interval.unwrap_or_default())
        .await?
        .ok()
        .map(|(plan, price)| ChosenPlan {
            slug: plan.slug,
            interval: price.interval.as_str(),
            name: plan.name,
            price: price.label(),
        }))
}

#[derive(Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    interval: String,
    /// Seats, for a per-seat plan (none: the fewest it allows).
    quantity: Option<String>,
    #[serde(default)]
    operation_id: SubmittedOperation,
}

/// Longest quantity text worth parsing.
const MAX_QUANTITY_CHARS: usize = 12;

/// The seats a checkout form asks for, within the plan's range (400 otherwise).
async fn checkout_quantity(
    state: &AppState,
    plan: &Plan,
    raw: Option<&str>,
) -> Result<u64, AppError> {
    let refused = AppError::BadRequest("Choose a number of seats the plan allows.");
    if raw.is_some_and(|q| q.len() > MAX_QUANTITY_CHARS) {
        return Err(refused);
    }
    let seats = crate::billing::plan_changes::seats(state.billing(), plan.id).await?;
    crate::billing::plan_changes::quantity_within(seats, raw).map_err(|_| refused)
}

/// The form's plan and interval, read from the database (not the pricing page's cache: an
/// archived plan is never sold), or why they cannot be bought: a forged interval is a bad
/// request, a plan that is not on offer (archived, unknown) is not found.
async fn offer_of_form(
    state: &AppState,
    slug: String,
    interval: &str,
) -> Result<(Plan, PlanPrice), AppError> {
    let plan = match slug.len() {
        0..=MAX_SLUG => plans::find_by_slug(&state.db, slug.clone()).await?,
        _ => None,
    };
    match plans::offer(plan.as_slice(), &slug, interval) {
        Ok(offer) => Ok(offer),
        Err(plans::OfferError::UnknownInterval) => {
            Err(AppError::BadRequest("Choose monthly or yearly billing."))
        }
        Err(plans::OfferError::NotOffered) => Err(AppError::NotFound),
    }
}

pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<CheckoutForm>,
) -> Result<HttpResponse, AppError> {
    let CheckoutForm {
        plan,
        interval,
        quantity,
        operation_id,
    } = form.0;
    let (plan, price) = offer_of_form(&state, plan, &interval).await?;
    let quantity = checkout_quantity(&state, &plan, quantity.as_deref()).await?;
    let operation_id = operation_id.parse()?;
    let operation = claim_operation(&state, &req, &actor, "checkout", &operation_id).await?;
    let offer = (&plan, &price);
    match checkout::start(state.billing(), &actor, &user, offer, &operation, quantity).await {
        Ok(Started::Stripe(url)) => Ok(see_other(&url)),
        Ok(Started::Free) => {
            let message = format!("You are on the {} plan. No card needed.", plan.name);
            session.flash(FlashKind::Success, message)?;
            Ok(see_other("/account"))
        }
        Err(err) => Err(billing_failure(&state, &req, &actor, err).await),
    }
}

#[derive(Template)]
#[template(path = "billing/confirm.html")]
struct PlanConfirmPage {
    ctx: PageContext,
    plan: Plan,
    interval: &'static str,
    price: String,
    free: bool,
    /// The live subscription's plan, if the user has one (changes go through the portal).
    subscribed_to: Option<String>,
    operation_id: String,
    /// A per-seat plan's range of seats.
    seats: Option<(u64, u64)>,
    /// Whether the plan's trial is offered (a first subscription only).
    trial_offered: bool,
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    interval: String,
}

/// The checkout confirmation page: the chosen plan, its price and trial, and the button that
/// goes on to payment (where a plan carried through sign-up lands).
pub async fn confirm(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    query: web::Query<ConfirmQuery>,
) -> Result<HttpResponse, AppError> {
    let Ok((plan, price)) = find_offer(&state, &query.plan, &query.interval).await? else {
        session.flash(
            FlashKind::Info,
            "That plan is not on offer. Please choose one below.",
        )?;
        return Ok(see_other("/pricing"));
    };
    let current = subscriptions::current(&state.db, user.0.id)
        .await?
        .filter(|s| s.is_live());
    let seats = crate::billing::plan_changes::seats(state.billing(), plan.id).await?;
    render(&PlanConfirmPage {
        seats: (seats.1 > 1).then_some(seats),
        ctx: PageContext::with_form(&session, Some(&user.0))?,
        interval: price.interval.as_str(),
        price: price.label(),
        free: price.is_free(),
        subscribed_to: current.map(|s| s.plan.map_or_else(|| "a plan".into(), |p| p.name)),
        operation_id: operation_id()?,
        plan,
        trial_offered: checkout::trial_offered(&state.db, user.0.id).await?,
    })
}

#[derive(Template)]
#[template(path = "billing/success.html")]
struct SuccessPage {
    ctx: PageContext,
    plan: Option<String>,
    status: String,
    renews: Option<String>,
}

#[derive(Deserialize)]
pub struct SuccessQuery {
    session_id: String,
}

pub async fn success(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    query: web::Query<SuccessQuery>,
) -> Result<HttpResponse, AppError> {
    let returned = checkout::returned(state.billing(), user.id, &query.session_id).await;
    // Coming back from Checkout may have stored the new subscription: entitlements afresh.
    state.entitlements.forget(&user.id);
    let current = match returned {
        Ok(current) => current,
        Err(ReturnError::NotYours) => return Err(AppError::NotFound),
        Err(ReturnError::Billing(err)) => {
            return Err(billing_failure(&state, &req, &actor, err).await);
        }
    };
    render(&SuccessPage {
        ctx: PageContext::new(&session, Some(&user))?,
        plan: current
            .as_ref()
            .and_then(|s| s.plan.as_ref().map(|p| p.name.clone())),
        status: current
            .as_ref()
            .map(|s| s.status.to_string())
            .unwrap_or_else(|| "processing".into()),
        renews: current
            .as_ref()
            .and_then(|s| s.current_period_end.as_ref().map(datetime)),
    })
}

pub async fn cancel(session: TypedSession) -> Result<HttpResponse, AppError> {
    session.flash(
        FlashKind::Info,
        "Checkout was canceled. You have not been charged.",
    )?;
    Ok(see_other("/pricing"))
}

pub async fn portal(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let operation_id = form.0.operation_id.parse()?;
    let operation = claim_operation(&state, &req, &actor, "portal", &operation_id).await?;
    match portal::open(state.billing(), user.id, &operation).await {
        Ok(Some(url)) => Ok(see_other(&url)),
        Ok(None) => {
            session.flash(
                FlashKind::Info,
                "You have no billing account yet. Choose a plan to get started.",
            )?;
            Ok(see_other("/pricing"))
        }
        Err(err) => Err(billing_failure(&state, &req, &actor, err).await),
    }
}

/// Cancels (with the customer's reason) or resumes (`None`) the user's subscription at the
/// end of its period.
async fn set_cancel(
    (req, state, session): (HttpRequest, web::Data<AppState>, TypedSession),
    CurrentUser(user): CurrentUser,
    actor: Actor,
    operation: SubmittedOperation,
    cancel: Option<Reason>,
) -> Result<HttpResponse, AppError> {
    let kind = match cancel {
        Some(_) => "subscription.cancel",
        None => "subscription.resume",
    };
    let operation = claim_operation(&state, &req, &actor, kind, &operation.parse()?).await?;
    let (db, gateway) = (&state.db, &state.gateway);
    let changed = subscriptions::set_cancel_at_period_end(
        db,
        gateway,
        &actor,
        user.id,
        &operation,
        cancel.as_ref(),
    )
    .await;
    let message = match changed {
        Ok(CancelChange::NoSubscription) => {
            session.flash(FlashKind::Info, "You have no active subscription.")?;
            return Ok(see_other("/account"));
        }
        Ok(CancelChange::Done) if cancel.is_some() => {
            "Your subscription will end at the close of the current period. You can resume it until then."
        }
        Ok(CancelChange::Done) => "Your subscription will renew as usual.",
        Ok(CancelChange::Ended) => {
            "Your subscription has ended. The unpaid invoice will not be charged."
        }
        Err(err) => return Err(billing_failure(&state, &req, &actor, err).await),
    };
    session.flash(FlashKind::Success, message)?;
    Ok(see_other("/account"))
}

#[derive(Template)]
#[template(path = "billing/cancel.html")]
struct CancelPage {
    ctx: PageContext,
    /// What cancelling means for this subscription (at once when past due).
    consequences: Vec<String>,
    operation_id: String,
    reasons: &'static [(&'static str, &'static str)],
    max_comment: usize,
}

/// `GET /billing/subscription/cancel`: what canceling means, and why the customer leaves
/// (optional), before it happens.
pub async fn confirm_cancel(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let current = subscriptions::current(&state.db, user.id)
        .await?
        .filter(|s| s.is_live() && !s.cancel_at_period_end);
    let Some(current) = current else {
        session.flash(FlashKind::Info, "You have no subscription to cancel.")?;
        return Ok(see_other("/account"));
    };
    let plan = current
        .plan
        .as_ref()
        .map_or("your plan", |p| p.name.as_str());
    let until = current
        .current_period_end
        .as_ref()
        .map_or_else(|| "the end of the current period".to_owned(), datetime);
    let consequences = if current.status == subscriptions::SubscriptionStatus::PastDue {
        vec![
            format!("Your payment is past due: your subscription to {plan} ends now."),
            "The unpaid invoice is canceled and your card will not be charged again.".into(),
        ]
    } else {
        vec![
            format!(
                "Access continues until {until}. After that your subscription to {plan} ends and you will not be charged again."
            ),
            "Until then you can resume it from your account page.".into(),
        ]
    };
    render(&CancelPage {
        ctx: PageContext::with_form(&session, Some(&user))?,
        consequences,
        operation_id: operation_id()?,
        reasons: &cancellations::FEEDBACK,
        max_comment: cancellations::MAX_COMMENT_CHARS,
    })
}

/// The cancel form: its operation id and the optional reason.
#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    operation_id: SubmittedOperation,
    #[serde(default)]
    feedback: String,
    #[serde(default)]
    comment: String,
}

pub async fn cancel_subscription(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (user, actor): (CurrentUser, Actor),
    form: CsrfForm<CancelForm>,
) -> Result<HttpResponse, AppError> {
    let CancelForm {
        operation_id,
        feedback,
        comment,
    } = form.0;
    let reason = Reason::parse(&feedback, &comment).map_err(|err| match err {
        ReasonError::UnknownFeedback => AppError::BadRequest("Choose one of the listed reasons."),
        ReasonError::CommentTooLong => {
            AppError::BadRequest("Keep the comment to 500 characters or fewer.")
        }
    })?;
    set_cancel(
        (req, state, session),
        user,
        actor,
        operation_id,
        Some(reason),
    )
    .await
}

pub async fn resume_subscription(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (user, actor): (CurrentUser, Actor),
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let operation = form.0.operation_id;
    set_cancel((req, state, session), user, actor, operation, None).await
}

/// The billing routes, relative to `/billing` (`/pricing` is a public page).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/checkout")
            .route(web::get().to(confirm))
            .route(web::post().to(checkout)),
    )
    .service(web::resource("/success").route(web::get().to(success)))
    .service(web::resource("/cancel").route(web::get().to(cancel)))
    .service(web::resource("/portal").route(web::post().to(portal)))
    .service(
        web::resource("/subscription/cancel")
            .route(web::get().to(confirm_cancel))
            .route(web::post().to(cancel_subscription)),
    )
    .service(web::resource("/subscription/resume").route(web::post().to(resume_subscription)))
    .service(
        web::resource("/change")
            .route(web::get().to(super::plan_change::preview))
            .route(web::post().to(super::plan_change::confirm)),
    )
    .service(web::resource("/change/cancel").route(web::post().to(super::plan_change::cancel)));
}
