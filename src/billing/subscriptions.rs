//! The local copy of each subscription's state, kept from what Stripe reports, and the
//! entitlements internal services read from it.

use chrono::{DateTime, NaiveDateTime, Timelike as _};
use diesel::Connection as _;
use stripe_billing::subscription::{
    CreateSubscription, CreateSubscriptionItems, CreateSubscriptionPaymentBehavior,
    RetrieveSubscription, UpdateSubscription,
};

use super::plans::{Plan, PlanPrice};
use super::{BillingError, Gateway, Operation, OperationClass};
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::db::models::subscription::{self, SubscriptionRow, SubscriptionState};
use crate::db::models::{plan, stripe_operation};
use crate::db::{Db, DbError, now};

/// Statuses in which the customer has what they pay for.
pub const LIVE_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

fn timestamp(unix: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(unix, 0).map(|t| t.naive_utc())
}

/// Stores what a Stripe subscription object says, for `user_id`, as of `observed_at` (newer
/// state already stored is kept).
pub async fn record(
    db: &Db,
    user_id: i64,
    sub: &stripe_billing::Subscription,
    observed_at: NaiveDateTime,
) -> Result<bool, BillingError> {
    record_audited(db, user_id, sub, observed_at, None).await
}

/// An audit row written with a subscription's state, once per `once` key (a replayed Stripe
/// write records the subscription again, never the audit row).
struct AuditOnce {
    event: SecurityEvent,
    once: String,
}

/// [`record`], writing `audit` in the same transaction, once per its key.
async fn record_audited(
    db: &Db,
    user_id: i64,
    sub: &stripe_billing::Subscription,
    observed_at: NaiveDateTime,
    audit: Option<AuditOnce>,
) -> Result<bool, BillingError> {
    let item = sub
        .items
        .data
        .first()
        .ok_or_else(|| BillingError::Unexpected("subscription without items".into()))?;
    let price = item.price.id.to_string();
    let product = item.price.product.id().to_string();
    let status = sub.status.as_str().to_owned();
    let period_end = timestamp(item.current_period_end);
    let trial_end = sub.trial_end.and_then(timestamp);
    let (stripe_id, cancel) = (sub.id.to_string(), sub.cancel_at_period_end);
    // Events carry Stripe's whole-second `created`: an event from the second of this read is
    // taken as at least as new (it usually reports the very change just read).
    let observed_at = observed_at.with_nanosecond(0).unwrap_or(observed_at);
    Ok(db
        .run(move |conn| {
            let plan_id = plan::find_by_stripe_product(conn, &product)?.map(|p| p.id);
            let state = SubscriptionState {
                plan_id,
                stripe_price_id: &price,
                status: &status,
                current_period_end: period_end,
                cancel_at_period_end: cancel,
                trial_end,
                stripe_updated_at: observed_at,
            };
            conn.transaction(|conn| {
                let written = subscription::upsert(conn, user_id, &stripe_id, &state)?;
                if let Some(AuditOnce { event, once }) = &audit {
                    // Recorded as an operation of its own.
                    let kind = event.kind.as_str();
                    if stripe_operation::record_once(conn, once, Some(user_id), kind)? {
                        audit::write(conn, event)?;
                    }
                }
                Ok::<_, DbError>(written)
            })
        })
        .await?)
}

/// What choosing a free plan came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeStart {
    Started,
    /// The user has a live subscription already: plan changes go through the portal.
    AlreadySubscribed,
}

/// Subscribes `user_id` to a free (`$0`) price without Checkout or a card: Stripe creates a
/// subscription on a zero price without a payment method. One live subscription per user: the
/// idempotency key counts the user's subscriptions, read in the same snapshot as the check for
/// a live one, so two concurrent requests make the same Stripe write once. Audited as
/// `actor`'s with the subscription, once.
pub async fn start_free(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    user_id: i64,
    customer: &str,
    (plan, price): (&Plan, &PlanPrice),
) -> Result<FreeStart, BillingError> {
    let price_id = match (&price.stripe_price_id, price.is_free()) {
        (Some(id), true) => id.clone(),
        _ => return Err(BillingError::Unexpected("not a free Stripe price".into())),
    };
    let standing = db
        .run(move |conn| {
            let live = subscription::current_for_user(conn, user_id)?
                .is_some_and(|row| LIVE_STATUSES.contains(&row.status.as_str()));
            Ok::<_, DbError>((!live).then_some(subscription::count_for_user(conn, user_id)?))
        })
        .await?;
    let Some(earlier) = standing else {
        return Ok(FreeStart::AlreadySubscribed);
    };
    let key = format!("user-{user_id}-free-subscription-{earlier}");
    let sub = gateway
        .call(OperationClass::Subscription, user_id, Some(&key), || {
            CreateSubscription::new()
                .customer(customer)
                .items(vec![CreateSubscriptionItems {
                    price: Some(price_id.clone()),
                    quantity: Some(1),
                    ..CreateSubscriptionItems::new()
                }])
                // A zero price needs no payment: anything else is refused, never left incomplete.
                .payment_behavior(CreateSubscriptionPaymentBehavior::ErrorIfIncomplete)
        })
        .await?;
    let event = actor
        .event(Kind::FreeSubscriptionStarted)
        .details(serde_json::json!({
            "plan": plan.slug,
            "subscription": crate::secret::mask_api_key(sub.id.as_str()),
        }));
    let once = format!("{}-{}", event.kind.as_str(), sub.id);
    record_audited(db, user_id, &sub, now(), Some(AuditOnce { event, once })).await?;
    Ok(FreeStart::Started)
}

/// The user's subscription as the account page shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub stripe_id: String,
    pub plan: Option<Plan>,
    pub status: String,
    pub current_period_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<NaiveDateTime>,
}

impl SubscriptionView {
    pub fn is_live(&self) -> bool {
        LIVE_STATUSES.contains(&self.status.as_str())
    }
}

pub async fn current(db: &Db, user_id: i64) -> Result<Option<SubscriptionView>, DbError> {
    db.run(move |conn| {
        let Some(row) = subscription::current_for_user(conn, user_id)? else {
            return Ok(None);
        };
        let plan = row
            .plan_id
            .map(|id| plan::find(conn, id))
            .transpose()?
            .flatten()
            .map(Plan::from);
        Ok(Some(view(row, plan)))
    })
    .await
}

fn view(row: SubscriptionRow, plan: Option<Plan>) -> SubscriptionView {
    SubscriptionView {
        stripe_id: row.stripe_subscription_id,
        plan,
        status: row.status,
        current_period_end: row.current_period_end,
        cancel_at_period_end: row.cancel_at_period_end,
        trial_end: row.trial_end,
    }
}

/// Fetches a subscription from Stripe and records it (after Checkout, before webhooks arrive).
pub async fn refresh(
    db: &Db,
    gateway: &Gateway,
    user_id: i64,
    stripe_id: &str,
) -> Result<(), BillingError> {
    let sub = gateway
        .call(OperationClass::Subscription, user_id, None, || {
            RetrieveSubscription::new(stripe_id)
        })
        .await?;
    record(db, user_id, &sub, now()).await?;
    Ok(())
}

/// What a cancel or resume request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelChange {
    Done,
    /// No live subscription to change (nothing was asked of Stripe).
    NoSubscription,
}

/// Sets (`cancel`) or clears cancel-at-period-end on the user's live subscription at Stripe,
/// then records the result with its audit row (once per operation), in one transaction.
pub async fn set_cancel_at_period_end(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    user_id: i64,
    operation: &Operation,
    cancel: bool,
) -> Result<CancelChange, BillingError> {
    let Some(current) = current(db, user_id).await?.filter(|s| s.is_live()) else {
        return Ok(CancelChange::NoSubscription);
    };
    let (step, kind) = match cancel {
        true => ("subscription-cancel", Kind::SubscriptionCancelRequested),
        false => ("subscription-resume", Kind::SubscriptionResumed),
    };
    let key = operation.idempotency_key(step);
    let stripe_id = current.stripe_id.as_str();
    let sub = gateway
        .call(OperationClass::Subscription, user_id, Some(&key), || {
            UpdateSubscription::new(stripe_id).cancel_at_period_end(cancel)
        })
        .await?;
    let event = actor
        .event(kind)
        .details(serde_json::json!({ "subscription": crate::secret::mask_api_key(stripe_id) }));
    let audit = AuditOnce { event, once: key };
    record_audited(db, user_id, &sub, now(), Some(audit)).await?;
    Ok(CancelChange::Done)
}

/// What an internal service may grant a user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entitlements {
    pub user_id: i64,
    pub active: bool,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub entitlements: Vec<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

pub async fn entitlements(db: &Db, user_id: i64) -> Result<Entitlements, DbError> {
    let view = current(db, user_id).await?;
    let active = view.as_ref().is_some_and(SubscriptionView::is_live);
    Ok(Entitlements {
        user_id,
        active,
        plan: view
            .as_ref()
            .and_then(|v| v.plan.as_ref().map(|p| p.slug.clone())),
        status: view.as_ref().map(|v| v.status.clone()),
        entitlements: if active {
            view.as_ref()
                .and_then(|v| v.plan.as_ref())
                .map(|p| p.entitlements.clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        },
        current_period_end: view
            .as_ref()
            .and_then(|v| v.current_period_end)
            .map(|t| t.and_utc().timestamp()),
        cancel_at_period_end: view.as_ref().is_some_and(|v| v.cancel_at_period_end),
    })
}
