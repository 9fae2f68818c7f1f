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
use crate::billing::plans::{self, Plan};
use crate::billing::{
    self, BillingError, GatewayError, Operation, OperationClass, customers, operations,
    subscriptions,
};
use crate::error::AppError;
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

struct PlanCard {
    plan: Plan,
    price: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "billing/pricing.html")]
struct PricingPage {
    ctx: PageContext,
    plans: Vec<PlanCard>,
    operation_id: String,
    signed_in: bool,
    has_subscription: bool,
}

pub async fn pricing(
    state: web::Data<AppState>,
    session: TypedSession,
    user: MaybeUser,
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
    let cards = plans
        .iter()
        .map(|plan| PlanCard {
            price: plan.price_label(),
            current: Some(plan.id) == current_plan,
            plan: plan.clone(),
        })
        .collect();
    render(&PricingPage {
        ctx,
        plans: cards,
        operation_id: operation_id()?,
        signed_in: user.0.is_some(),
        has_subscription: current.is_some(),
    })
}

#[derive(Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    plan: String,
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

async fn start_checkout(
    state: &AppState,
    user: &User,
    plan: &Plan,
    operation: &Operation,
) -> Result<String, BillingError> {
    let customer = customers::ensure_customer(
        &state.db,
        &state.keyring,
        &state.token_hasher,
        &state.gateway,
        user,
    )
    .await?;
    if subscriptions::current(&state.db, user.id)
        .await?
        .is_some_and(|s| s.is_live())
    {
        // One live subscription per customer: changes go through the portal.
        return portal_url(state, user, operation, &customer).await;
    }
    let price = plan
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
                .customer(customer.as_str())
                .client_reference_id(user.id.to_string())
                .line_items(vec![CreateCheckoutSessionLineItems {
                    price: Some(price.clone()),
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

pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: CurrentUser,
    form: CsrfForm<CheckoutForm>,
) -> Result<HttpResponse, AppError> {
    let CheckoutForm { plan, operation_id } = form.0;
    let operation = claim_operation(&state, &req, user.0.id, "checkout", &operation_id).await?;
    let plan = plans::find_by_slug(&state.db, plan)
        .await?
        .filter(|p| p.active)
        .ok_or(AppError::NotFound)?;
    match start_checkout(&state, &user.0, &plan, &operation).await {
        Ok(url) => Ok(see_other(&url)),
        Err(err) => Err(billing_failure(&state, &req, user.0.id, err).await),
    }
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
    let checkout_customer = checkout.customer.as_ref().map(|c| c.id().to_string());
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
            .map(|s| s.status.clone())
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
    match portal_url(&state, &user.0, &operation, &customer).await {
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
        .details(
            serde_json::json!({ "subscription": crate::secret::mask_api_key(&current.stripe_id) }),
        );
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
