//! The customer's side of billing: the pricing page, Checkout, the success and cancel pages,
//! the Billing Portal, and cancel/resume on the account page.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    RetrieveCheckoutSession,
};

use crate::accounts::User;
use crate::audit::{self, Kind, SecurityEvent};
use crate::billing::plans::{self, Interval, Plan, PlanPrice};
use crate::billing::{
    self, BillingError, GatewayError, Operation, OperationClass, customers, operations,
    subscriptions,
};
use crate::error::AppError;
use crate::stripe_id::CustomerId;
use crate::web::csrf::CsrfForm;
use crate::web::pages::{ConfirmPage, PageContext, datetime, render};
use crate::web::session::{CurrentUser, FlashKind, MaybeUser, TypedSession};
use crate::web::{AppState, client_ip};

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, location))
        .finish()
}

/// Maps a billing failure to the user's error, auditing throttled calls and operation ids
/// submitted by an account other than their owner.
pub async fn billing_failure(
    state: &AppState,
    req: &HttpRequest,
    user: i64,
    err: BillingError,
) -> AppError {
    let event = match &err {
        BillingError::Gateway(GatewayError::Throttled { class, .. }) => {
            SecurityEvent::new(Kind::StripeRateLimited)
                .details(serde_json::json!({ "operation": class, "path": req.path() }))
                .aggregate(state.config.audit.aggregate_window, *class)
        }
        BillingError::OperationTaken => SecurityEvent::new(Kind::OperationIdReused)
            .details(serde_json::json!({ "path": req.path() }))
            .aggregate(state.config.audit.aggregate_window, req.path()),
        _ => return err.into(),
    };
    let event = event.actor(format!("user:{user}")).ip(client_ip::of(req));
    let kind = event.kind.as_str();
    if let Err(audit_err) = audit::record(&state.db, event).await {
        tracing::error!(error = %audit_err, kind, "could not record an audit event");
    }
    err.into()
}

/// Claims the form's operation id for `user`, or says why not (audited when it is another
/// account's).
async fn claim_operation(
    state: &AppState,
    req: &HttpRequest,
    user: i64,
    kind: &'static str,
    id: &str,
) -> Result<Operation, AppError> {
    if !billing::valid_operation_id(id) {
        return Err(AppError::BadRequest(
            "The form was incomplete. Reload the page and try again.",
        ));
    }
    match operations::claim(&state.db, Some(user), kind, id).await {
        Ok(operation) => Ok(operation),
        Err(err) => Err(billing_failure(state, req, user, err).await),
    }
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
    let cards: Vec<PlanCard> = plans
        .iter()
        .map(|plan| PlanCard::new(plan, Some(plan.id) == current_plan))
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
    #[serde(default)]
    operation_id: String,
}

async fn portal_url(
    state: &AppState,
    user: &User,
    operation: &Operation,
    customer: &str,
) -> Result<String, BillingError> {
    let return_url = format!("{}/account", state.public_url);
    let key = operation.idempotency_key("portal");
    let session = state
        .gateway
        .call(OperationClass::Default, user.id, Some(&key), || {
            CreateBillingPortalSession::new()
                .customer(customer)
                .return_url(return_url.clone())
        })
        .await?;
    Ok(session.url)
}

/// Where choosing a plan leads.
enum Started {
    /// Stripe's page: Checkout, or the portal for someone who has a subscription.
    Stripe(String),
    /// A free plan, started at once.
    Free,
}

/// Starts the chosen plan: a free one at once (no Checkout, no card), a paid one at Stripe
/// Checkout; someone with a live subscription goes to the portal instead, where plans change.
async fn start_checkout(
    state: &AppState,
    req: &HttpRequest,
    user: &User,
    (plan, price): (&Plan, &PlanPrice),
    operation: &Operation,
) -> Result<Started, BillingError> {
    let customer = customers::ensure_customer(
        &state.db,
        &state.keyring,
        &state.token_hasher,
        &state.gateway,
        user,
    )
    .await?;
    let subscribed = if price.is_free() {
        let audit = SecurityEvent::new(Kind::FreeSubscriptionStarted)
            .actor(format!("user:{}", user.id))
            .ip(client_ip::of(req));
        let gateway = &state.gateway;
        let offer = (plan, price);
        match subscriptions::start_free(&state.db, gateway, user.id, &customer, offer, audit)
            .await?
        {
            subscriptions::FreeStart::Started => return Ok(Started::Free),
            subscriptions::FreeStart::AlreadySubscribed => true,
        }
    } else {
        subscriptions::current(&state.db, user.id)
            .await?
            .is_some_and(|s| s.is_live())
    };
    let url = if subscribed {
        // One live subscription per customer: changes go through the portal.
        portal_url(state, user, operation, customer.expose()).await?
    } else {
        checkout_session(state, user, (plan, price), operation, customer.expose()).await?
    };
    Ok(Started::Stripe(url))
}

/// A Stripe Checkout Session for `price` (with the plan's trial), returning its page.
async fn checkout_session(
    state: &AppState,
    user: &User,
    (plan, price): (&Plan, &PlanPrice),
    operation: &Operation,
    customer: &str,
) -> Result<String, BillingError> {
    let price_id = price
        .stripe_price_id
        .clone()
        .ok_or_else(|| BillingError::Unexpected("plan has no Stripe price".into()))?;
    let success = format!(
        "{}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
        state.public_url
    );
    let cancel = format!("{}/billing/cancel", state.public_url);
    let trial = u32::try_from(plan.trial_days).ok().filter(|d| *d > 0);
    let key = operation.idempotency_key("checkout");
    let session = state
        .gateway
        .call(OperationClass::Default, user.id, Some(&key), || {
            let mut request = CreateCheckoutSession::new()
                .mode(stripe_checkout::CheckoutSessionMode::Subscription)
                .customer(customer)
                .client_reference_id(user.id.to_string())
                .line_items(vec![CreateCheckoutSessionLineItems {
                    price: Some(price_id.clone()),
                    quantity: Some(1),
                    ..Default::default()
                }])
                .success_url(success.clone())
                .cancel_url(cancel.clone());
            if let Some(days) = trial {
                request = request.subscription_data(CreateCheckoutSessionSubscriptionData {
                    trial_period_days: Some(days),
                    ..Default::default()
                });
            }
            request
        })
        .await?;
    session
        .url
        .ok_or_else(|| BillingError::Unexpected("checkout session without url".into()))
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
    user: CurrentUser,
    form: CsrfForm<CheckoutForm>,
) -> Result<HttpResponse, AppError> {
    let CheckoutForm {
        plan,
        interval,
        operation_id,
    } = form.0;
    let (plan, price) = offer_of_form(&state, plan, &interval).await?;
    let operation = claim_operation(&state, &req, user.0.id, "checkout", &operation_id).await?;
    match start_checkout(&state, &req, &user.0, (&plan, &price), &operation).await {
        Ok(Started::Stripe(url)) => Ok(see_other(&url)),
        Ok(Started::Free) => {
            session.flash(
                FlashKind::Success,
                format!("You are on the {} plan. No card needed.", plan.name),
            )?;
            Ok(see_other("/account"))
        }
        Err(err) => Err(billing_failure(&state, &req, user.0.id, err).await),
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
    render(&PlanConfirmPage {
        ctx: PageContext::with_form(&session, Some(&user.0))?,
        interval: price.interval.as_str(),
        price: price.label(),
        free: price.is_free(),
        subscribed_to: current.map(|s| s.plan.map_or_else(|| "a plan".into(), |p| p.name)),
        operation_id: operation_id()?,
        plan,
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
    user: CurrentUser,
    query: web::Query<SuccessQuery>,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let id = query.session_id.clone();
    if !id.starts_with("cs_") || id.len() > 255 {
        return Err(AppError::NotFound);
    }
    let checkout = state
        .gateway
        .call(OperationClass::Default, user.id, None, || {
            RetrieveCheckoutSession::new(id.as_str())
        })
        .await;
    let checkout = match checkout {
        Ok(checkout) => checkout,
        Err(GatewayError::Refused { status: 404, .. }) => return Err(AppError::NotFound),
        Err(err) => return Err(billing_failure(&state, &req, user.id, err.into()).await),
    };
    // Show nothing unless this session is this user's, by reference and by customer.
    let own_customer = customers::customer_id(&state.db, &state.keyring, user.id)
        .await
        .map_err(AppError::from)?;
    let checkout_customer = checkout
        .customer
        .as_ref()
        .map(|c| CustomerId::new(c.id().as_str()));
    if checkout.client_reference_id.as_deref() != Some(user.id.to_string().as_str())
        || checkout_customer != own_customer
    {
        return Err(AppError::NotFound);
    }
    if let Some(sub) = &checkout.subscription
        && let Err(err) =
            subscriptions::refresh(&state.db, &state.gateway, user.id, sub.id().as_str()).await
    {
        return Err(billing_failure(&state, &req, user.id, err).await);
    }
    let current = subscriptions::current(&state.db, user.id).await?;
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

#[derive(Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    operation_id: String,
}

pub async fn portal(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let operation = claim_operation(&state, &req, user.0.id, "portal", &form.operation_id).await?;
    let customer = customers::customer_id(&state.db, &state.keyring, user.0.id)
        .await
        .map_err(AppError::from)?;
    let Some(customer) = customer else {
        session.flash(
            FlashKind::Info,
            "You have no billing account yet. Choose a plan to get started.",
        )?;
        return Ok(see_other("/pricing"));
    };
    match portal_url(&state, &user.0, &operation, customer.expose()).await {
        Ok(url) => Ok(see_other(&url)),
        Err(err) => Err(billing_failure(&state, &req, user.0.id, err).await),
    }
}

async fn set_cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    operation: String,
    cancel: bool,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let kind = if cancel {
        "subscription.cancel"
    } else {
        "subscription.resume"
    };
    let operation = claim_operation(&state, &req, user.id, kind, &operation).await?;
    let current = subscriptions::current(&state.db, user.id)
        .await?
        .filter(|s| s.is_live());
    let Some(current) = current else {
        session.flash(FlashKind::Info, "You have no active subscription.")?;
        return Ok(see_other("/account"));
    };
    if let Err(err) = subscriptions::set_cancel_at_period_end(
        &state.db,
        &state.gateway,
        user.id,
        &operation,
        &current.stripe_id,
        cancel,
    )
    .await
    {
        return Err(billing_failure(&state, &req, user.id, err).await);
    }
    let kind = if cancel {
        Kind::SubscriptionCancelRequested
    } else {
        Kind::SubscriptionResumed
    };
    let event = SecurityEvent::new(kind)
        .actor(format!("user:{}", user.id))
        .ip(client_ip::of(&req))
        .details(serde_json::json!({ "subscription": current.stripe_id.to_string() }));
    audit::record(&state.db, event).await?;
    let message = if cancel {
        "Your subscription will end at the close of the current period. You can resume it until then."
    } else {
        "Your subscription will renew as usual."
    };
    session.flash(FlashKind::Success, message)?;
    Ok(see_other("/account"))
}

/// `GET /billing/subscription/cancel`: what canceling means, before it happens.
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
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&user))?,
        title: "Cancel your subscription?".into(),
        consequences: vec![
            format!(
                "Access continues until {until}. After that your subscription to {plan} ends and you will not be charged again."
            ),
            "Until then you can resume it from your account page.".into(),
        ],
        action: "/billing/subscription/cancel".into(),
        operation_id: Some(operation_id()?),
        confirm: "Cancel subscription",
        keep: "Keep my subscription",
        keep_href: "/account",
        admin: false,
    })
}

pub async fn cancel_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    set_cancel(req, state, session, user, form.0.operation_id, true).await
}

pub async fn resume_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    set_cancel(req, state, session, user, form.0.operation_id, false).await
}
