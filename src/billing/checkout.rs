//! Buying a plan: a free plan starts at once (no Checkout, no card), a paid one at Stripe
//! Checkout (with the plan's trial); someone with a live subscription is sent to the portal,
//! where plans change. And the way back: the success page shows a Checkout Session only to the
//! account that made it.

use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionPaymentMethodCollection, CreateCheckoutSessionSubscriptionData,
    CreateCheckoutSessionSubscriptionDataTrialSettings,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod,
    RetrieveCheckoutSession,
};

use super::plans::{Plan, PlanPrice};
use super::subscriptions::{self, FreeStart, SubscriptionView};
use super::{Billing, BillingError, GatewayError, Operation, OperationClass, customers, portal};
use crate::accounts::{User, UserId};
use crate::audit::Actor;
use crate::db::models::subscription;
use crate::db::{Db, DbError};
use crate::stripe_id::CustomerId;

/// Where choosing a plan leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Stripe's page: Checkout, or the portal for someone who has a subscription.
    Stripe(String),
    /// A free plan, started at once.
    Free,
}

/// Starts `user` on the chosen plan and price (see the module docs), for `quantity` seats (a
/// per-seat plan's range is checked by the caller; a free plan has one).
pub async fn start(
    billing: Billing<'_>,
    actor: &Actor,
    user: &User,
    (plan, price): (&Plan, &PlanPrice),
    operation: &Operation,
    quantity: u64,
) -> Result<Started, BillingError> {
    let Billing {
        db,
        keyring,
        hasher,
        gateway,
        ..
    } = billing;
    let customer = customers::ensure_customer(db, keyring, hasher, gateway, user).await?;
    let subscribed = if price.is_free() {
        let offer = (plan, price);
        match subscriptions::start_free(db, gateway, actor, user.id, &customer, offer).await? {
            FreeStart::Started => return Ok(Started::Free),
            FreeStart::AlreadySubscribed => true,
        }
    } else {
        subscriptions::current(db, user.id)
            .await?
            .is_some_and(|s| s.is_live())
    };
    let url = if subscribed {
        // One live subscription per customer: changes go through the portal.
        portal::session_url(billing, user.id, operation, &customer).await?
    } else {
        let offer = (plan, price, quantity);
        session_url(billing, user.id, offer, operation, &customer).await?
    };
    Ok(Started::Stripe(url))
}

/// Whether `user_id` may take a plan's trial: a trial is for a first subscription only, so
/// anyone who has had one (trialing, canceled or ended) pays from the start and a card-free
/// trial cannot be taken again and again.
pub async fn trial_offered(db: &Db, user_id: UserId) -> Result<bool, DbError> {
    db.run(move |conn| subscription::count_for_user(conn, user_id))
        .await
        .map(|count| count == 0)
}

/// A Stripe Checkout Session for `price` (with the plan's trial), returning its page.
async fn session_url(
    billing: Billing<'_>,
    user_id: UserId,
    (plan, price, quantity): (&Plan, &PlanPrice, u64),
    operation: &Operation,
    customer: &CustomerId,
) -> Result<String, BillingError> {
    let price_id = price
        .stripe_price_id
        .clone()
        .ok_or_else(|| BillingError::Unexpected("plan has no Stripe price".into()))?;
    let base = billing.public_url;
    let success = format!("{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}");
    let cancel = format!("{base}/billing/cancel");
    let first = trial_offered(billing.db, user_id).await?;
    let trial = u32::try_from(plan.trial_days)
        .ok()
        .filter(|d| *d > 0 && first);
    // A card-free trial: Checkout asks for a card only if one is required (it is not during a
    // trial), and a trial that ends without one cancels the subscription: never a charge
    // attempt on nothing.
    let without_card =
        trial.is_some() && super::plans::trial_without_card(billing.db, plan.id).await?;
    let metered = metered_prices(billing.db, plan, price).await?;
    let mut line_items = vec![CreateCheckoutSessionLineItems {
        price: Some(price_id.clone()),
        quantity: Some(quantity),
        ..Default::default()
    }];
    // Metered items carry no quantity: Stripe bills what their meters counted.
    line_items.extend(
        metered
            .into_iter()
            .map(|price| CreateCheckoutSessionLineItems {
                price: Some(price),
                ..Default::default()
            }),
    );
    let key = operation.idempotency_key("checkout");
    let session = billing
        .gateway
        .call(OperationClass::Default, user_id, Some(&key), || {
            let request = CreateCheckoutSession::new()
                .mode(stripe_checkout::CheckoutSessionMode::Subscription)
                .customer(customer.expose())
                .client_reference_id(user_id.to_string())
                .line_items(line_items.clone())
                .success_url(success.clone())
                .cancel_url(cancel.clone())
                // Codes admins create in the console are typed on Stripe's page.
                .allow_promotion_codes(true);
            match trial {
                Some(days) if without_card => request
                    .payment_method_collection(CreateCheckoutSessionPaymentMethodCollection::IfRequired)
                    .subscription_data(CreateCheckoutSessionSubscriptionData {
                        trial_period_days: Some(days),
                        trial_settings: Some(CreateCheckoutSessionSubscriptionDataTrialSettings {
                            end_behavior: CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior {
                                missing_payment_method: CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod::Cancel,
                            },
                        }),
                        ..Default::default()
                    }),
                Some(days) => request.subscription_data(CreateCheckoutSessionSubscriptionData {
                    trial_period_days: Some(days),
                    ..Default::default()
                }),
                None => request,
            }
        })
        .await?;
    session
        .url
        .ok_or_else(|| BillingError::Unexpected("checkout session without url".into()))
}

/// The metered Prices a subscription to `plan` at `price` carries. Stripe requires every item of
/// a subscription to share one interval, and the metered Prices are on the plan's own interval:
/// a plan's other (yearly) option has none (see docs: usage on the yearly option is not billed).
pub async fn metered_prices(
    db: &Db,
    plan: &Plan,
    price: &PlanPrice,
) -> Result<Vec<String>, DbError> {
    if price.interval != plan.interval {
        return Ok(Vec::new());
    }
    let plan_id = plan.id;
    let components = db
        .run(move |conn| crate::usage::meters::of_plan(conn, plan_id))
        .await?;
    Ok(components
        .into_iter()
        .filter_map(|c| c.stripe_price_id)
        .collect())
}

/// Why the way back from Checkout shows nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReturnError {
    /// Not a Checkout Session of this account's (or none at all): shown as not found, so that
    /// nobody learns whether another account's session exists.
    #[error("not this account's checkout session")]
    NotYours,
    #[error(transparent)]
    Billing(#[from] BillingError),
}

/// Longest Checkout Session id worth asking Stripe about.
const MAX_SESSION_ID: usize = 255;

/// The way back from Checkout: the session `session_id` if it is `user_id`'s (by reference and
/// by customer), its subscription recorded at once (webhooks may still be on their way), and
/// the user's subscription as it stands.
pub async fn returned(
    billing: Billing<'_>,
    user_id: UserId,
    session_id: &str,
) -> Result<Option<SubscriptionView>, ReturnError> {
    if !session_id.starts_with("cs_") || session_id.len() > MAX_SESSION_ID {
        return Err(ReturnError::NotYours);
    }
    let checkout = billing
        .gateway
        .call(OperationClass::Default, user_id, None, || {
            RetrieveCheckoutSession::new(session_id)
        })
        .await
        .map_err(|err| match err {
            GatewayError::Refused { status: 404, .. } => ReturnError::NotYours,
            other => ReturnError::Billing(other.into()),
        })?;
    let own_customer = customers::customer_id(billing.db, billing.keyring, user_id).await?;
    let checkout_customer = checkout
        .customer
        .as_ref()
        .map(|c| CustomerId::new(c.id().as_str()));
    if checkout.client_reference_id.as_deref() != Some(user_id.to_string().as_str())
        || checkout_customer != own_customer
    {
        return Err(ReturnError::NotYours);
    }
    if let Some(sub) = &checkout.subscription {
        subscriptions::refresh(billing.db, billing.gateway, user_id, sub.id().as_str()).await?;
    }
    let current = subscriptions::current(billing.db, user_id).await;
    Ok(current.map_err(BillingError::from)?)
}
