//! The local copy of each subscription's state, kept from what Stripe reports, and the
//! entitlements internal services read from it.
//!
//! Stripe's subscription reaches Tollgate in two shapes: async-stripe's typed object (an API
//! read or write) and a webhook event's JSON. Each is read into one [`StripeSubscription`], and
//! [`store`] alone turns that into Tollgate's row: a field Tollgate starts keeping is added to
//! the struct, and the compiler then asks both readers for it.

use chrono::{DateTime, NaiveDateTime, Timelike as _};
use diesel::Connection as _;
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems,
    CreateSubscriptionPaymentBehavior, RetrieveSubscription, UpdateSubscription,
};

use super::plans::{Plan, PlanPrice};
use super::{BillingError, Gateway, Operation, OperationClass};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
pub use crate::db::models::subscription::SubscriptionStatus;
use crate::db::models::subscription::{self, SubscriptionRow, SubscriptionState};
use crate::db::models::{plan, plan_change, stripe_operation};
use crate::db::{Db, DbConnection, DbError, now};
use crate::stripe_id::{CustomerId, SubscriptionId};

/// What Tollgate reads of a Stripe subscription, whichever shape brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSubscription {
    pub id: SubscriptionId,
    pub customer: CustomerId,
    pub status: SubscriptionStatus,
    /// The first item's price, and the product it belongs to (which names the plan).
    pub price: String,
    pub product: Option<String>,
    /// The first item's period (Stripe keeps periods per item).
    pub current_period_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<NaiveDateTime>,
    /// The first item's quantity (seats).
    pub quantity: u64,
}

/// A Unix time as Stripe sends it.
pub(crate) fn timestamp(unix: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(unix, 0).map(|t| t.naive_utc())
}

/// The subscription's plan item: the licensed one (metered items sit beside it, in no order
/// Stripe promises), or the first if none is licensed.
pub fn licensed_item(
    sub: &stripe_billing::Subscription,
) -> Result<&stripe_shared::SubscriptionItem, BillingError> {
    let items = &sub.items.data;
    items
        .iter()
        .find(|item| {
            item.price
                .recurring
                .as_ref()
                .is_none_or(|r| r.usage_type.as_str() != "metered")
        })
        .or_else(|| items.first())
        .ok_or_else(|| BillingError::Unexpected("subscription without items".into()))
}

impl StripeSubscription {
    /// Reads async-stripe's object (from an API call). The webhook path reads the event's JSON
    /// in `webhooks::handlers`: payloads come in the endpoint's API version, which need not
    /// carry every field async-stripe's struct requires.
    pub fn from_api(sub: &stripe_billing::Subscription) -> Result<Self, BillingError> {
        let item = licensed_item(sub)?;
        Ok(Self {
            id: SubscriptionId::new(sub.id.as_str()),
            customer: CustomerId::new(sub.customer.id().as_str()),
            status: SubscriptionStatus::from(sub.status.as_str()),
            price: item.price.id.to_string(),
            product: Some(item.price.product.id().to_string()),
            current_period_end: timestamp(item.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
            trial_end: sub.trial_end.and_then(timestamp),
            quantity: item.quantity.unwrap_or(1),
        })
    }
}

/// Whether `sub` says something other than the stored `row` (the fields Tollgate keeps).
pub fn differs(row: &SubscriptionRow, sub: &StripeSubscription) -> bool {
    (
        &row.status,
        row.stripe_price_id.as_str(),
        row.current_period_end,
        row.cancel_at_period_end,
        row.trial_end,
    ) != (
        &sub.status,
        sub.price.as_str(),
        sub.current_period_end,
        sub.cancel_at_period_end,
        sub.trial_end,
    )
}

/// Tollgate's row for what Stripe says of a subscription, as of `as_of`: the one place
/// Stripe's subscription becomes Tollgate's state, for the webhook and the API alike. Reads the
/// plan the subscription's product names.
fn state<'a>(
    conn: &mut DbConnection,
    sub: &'a StripeSubscription,
    as_of: NaiveDateTime,
) -> Result<SubscriptionState<'a>, DbError> {
    let plan_id = match &sub.product {
        Some(product) => plan::find_by_stripe_product(conn, product)?.map(|p| p.id),
        None => None,
    };
    Ok(SubscriptionState {
        plan_id,
        stripe_price_id: &sub.price,
        status: &sub.status,
        current_period_end: sub.current_period_end,
        cancel_at_period_end: sub.cancel_at_period_end,
        trial_end: sub.trial_end,
        stripe_updated_at: as_of,
    })
}

/// Stores what Stripe says of a subscription, for `user_id`, as of `as_of` (newer state already
/// stored is kept). Returns whether anything was written. For a caller already inside a
/// transaction that has written (the webhook's); see [`record`] for the API's reads.
pub fn store(
    conn: &mut DbConnection,
    user_id: UserId,
    sub: &StripeSubscription,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let state = state(conn, sub, as_of)?;
    write_and_notify(conn, user_id, &sub.id, |conn| {
        write_state(conn, user_id, sub, &state)
    })
}

/// Writes Stripe's subscription as of the state's time: the row, its quantity and what that
/// means for a change scheduled on it (each newer-wins on its own). Whether anything was
/// written.
fn write_state(
    conn: &mut DbConnection,
    user_id: UserId,
    sub: &StripeSubscription,
    state: &SubscriptionState<'_>,
) -> Result<bool, DbError> {
    let as_of = state.stripe_updated_at;
    let wrote = subscription::upsert(conn, user_id, &sub.id, state)?;
    let quantity = i64::try_from(sub.quantity).unwrap_or(i64::MAX);
    let seats = plan_change::set_quantity_if_newer(conn, &sub.id, quantity, as_of)?;
    if wrote {
        super::plan_changes::settle_scheduled(conn, user_id, sub)?;
    }
    Ok(wrote || seats)
}

/// Sets a subscription's status as of `as_of` (unless newer state is stored), telling whom
/// the change concerns. Returns whether it was written.
pub fn store_status(
    conn: &mut DbConnection,
    user_id: UserId,
    stripe_id: &SubscriptionId,
    status: SubscriptionStatus,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    write_and_notify(conn, user_id, stripe_id, |conn| {
        subscription::set_status_if_newer(conn, stripe_id, status, as_of)
    })
}

/// Changes a subscription's row with `write` and, when it wrote, puts what the change means
/// in the outbox ([`notify_change`]), in one transaction. The customer's row is locked before
/// the subscription is read (it exists even when the subscription's row does not yet), so two
/// writers (the webhook and the success page, on any instance) never both see the same state
/// before their change, and one customer's notifications are written in the order of the
/// changes.
fn write_and_notify(
    conn: &mut DbConnection,
    user_id: UserId,
    stripe_id: &SubscriptionId,
    write: impl FnOnce(&mut DbConnection) -> Result<bool, DbError>,
) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        crate::db::models::user::lock(conn, user_id)?;
        let before = subscription::find_by_stripe_id(conn, stripe_id)?;
        let quantity_before = plan_change::quantity(conn, stripe_id)?;
        let entitled_before = entitlements_in(conn, user_id)?;
        if !write(conn)? {
            return Ok(false);
        }
        if let Some(after) = subscription::find_by_stripe_id(conn, stripe_id)? {
            subscription::track_past_due(
                conn,
                stripe_id,
                after.status == SubscriptionStatus::PastDue,
                after.stripe_updated_at,
            )?;
            let entitled_after = entitlements_in(conn, user_id)?;
            let quantity_after = plan_change::quantity(conn, stripe_id)?;
            notify_change(
                conn,
                user_id,
                (before.as_ref(), &after),
                (&entitled_before, &entitled_after),
                (quantity_before, quantity_after),
            )?;
        }
        Ok(true)
    })
}

/// A subscription as the product's own services receive it in `subscription.*` events.
fn subscription_data(
    row: &SubscriptionRow,
    plan: Option<&plan::PlanRow>,
    quantity: Option<i64>,
) -> serde_json::Value {
    let time = |t: Option<NaiveDateTime>| {
        t.map(|t| {
            t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    serde_json::json!({
        "subscription": {
            "id": row.stripe_subscription_id.expose(),
            "status": row.status.as_str(),
            "plan": plan.map(|p| p.slug.as_str()),
            "current_period_end": time(row.current_period_end),
            "cancel_at_period_end": row.cancel_at_period_end,
            "trial_end": time(row.trial_end),
            "quantity": quantity,
        }
    })
}

/// What a subscription's change means, in the outbox: for the product's own services a
/// `subscription.activated`, `.canceled` or `.updated` event and, when what the customer may
/// use changed, `entitlements.changed`; for the customer an e-mail when the plan changed or the
/// subscription was cancelled. The cause is the change itself (the subscription, the Stripe
/// time it is as of and a digest of the state before and after): two writers recording the
/// same change add one notification, two changes in one second add one each.
fn notify_change(
    conn: &mut DbConnection,
    user_id: UserId,
    (before, after): (Option<&SubscriptionRow>, &SubscriptionRow),
    (entitled_before, entitled_after): (&Entitlements, &Entitlements),
    (quantity_before, quantity_after): (Option<i64>, Option<i64>),
) -> Result<(), DbError> {
    use crate::notify::{self, AppEvent, Email};

    let plan_after = after
        .plan_id
        .map(|id| plan::find(conn, id))
        .transpose()?
        .flatten();
    let data = subscription_data(after, plan_after.as_ref(), quantity_after);
    // The change itself (the state before and after): two changes within one second of
    // Stripe time differ by content.
    let digest = {
        use sha2::Digest as _;
        let before_data = before.map(|b| subscription_data(b, None, quantity_before));
        let both = serde_json::json!([before_data, data]).to_string();
        hex::encode(&sha2::Sha256::digest(both.as_bytes())[..8])
    };
    let cause = format!(
        "{}@{}:{digest}",
        after.stripe_subscription_id.expose(),
        after.stripe_updated_at.and_utc().timestamp_micros()
    );
    let plan_before = match before.and_then(|b| b.plan_id) {
        Some(id) if Some(id) != after.plan_id => plan::find(conn, id)?,
        Some(_) => plan_after.clone(),
        None => None,
    };
    let canceled = SubscriptionStatus::Canceled;
    let was_live = before.is_some_and(|b| b.status.is_live());
    let event = if after.status == canceled && before.is_some_and(|b| b.status != canceled) {
        Some(AppEvent::SubscriptionCanceled)
    } else if after.status.is_live() && !was_live {
        Some(AppEvent::SubscriptionActivated)
    } else if before.is_some() && quantity_before != quantity_after
        || before.is_some_and(|b| {
            (
                &b.status,
                b.plan_id,
                &b.stripe_price_id,
                b.current_period_end,
                b.cancel_at_period_end,
                b.trial_end,
            ) != (
                &after.status,
                after.plan_id,
                &after.stripe_price_id,
                after.current_period_end,
                after.cancel_at_period_end,
                after.trial_end,
            )
        })
    {
        Some(AppEvent::SubscriptionUpdated)
    } else {
        None
    };
    if let Some(event) = event {
        notify::publish(conn, event, user_id, data, &cause)?;
    }
    if entitled_before.grants() != entitled_after.grants() {
        let data = serde_json::to_value(entitled_after).unwrap_or_default();
        notify::publish(conn, AppEvent::EntitlementsChanged, user_id, data, &cause)?;
    }

    let Some(to) = crate::db::models::user::find(conn, user_id)?.map(|u| u.email) else {
        return Ok(());
    };
    let name = |plan: &Option<plan::PlanRow>| plan.as_ref().map(|p| p.name.clone());
    let mut emails = Vec::new();
    if let Some(b) = before
        && after.status.is_live()
        && b.plan_id.is_some()
        && after.plan_id.is_some()
        && b.plan_id != after.plan_id
    {
        emails.push(Email::PlanChanged {
            from: name(&plan_before),
            to: name(&plan_after),
        });
    }
    if after.status.is_live()
        && after.cancel_at_period_end
        && !before.is_some_and(|b| b.cancel_at_period_end)
    {
        emails.push(Email::SubscriptionCanceled {
            plan: name(&plan_after),
            ends_at: after.current_period_end,
            ended: false,
        });
    }
    // Ended without notice (a scheduled cancellation was announced when it was asked for).
    if after.status == canceled
        && before.is_some_and(|b| b.status != canceled && !b.cancel_at_period_end)
    {
        emails.push(Email::SubscriptionCanceled {
            plan: name(&plan_after),
            ends_at: None,
            ended: true,
        });
    }
    for message in &emails {
        notify::email(conn, Some(user_id), &to, message, &cause)?;
    }
    Ok(())
}

/// Stores what a Stripe subscription object says, for `user_id`, as of `observed_at` (newer
/// state already stored is kept).
pub async fn record(
    db: &Db,
    user_id: UserId,
    sub: &stripe_billing::Subscription,
    observed_at: NaiveDateTime,
) -> Result<bool, BillingError> {
    record_audited(
        db,
        user_id,
        StripeSubscription::from_api(sub)?,
        observed_at,
        None,
    )
    .await
}

/// An audit row written with a subscription's state, once per `once` key (a replayed Stripe
/// write records the subscription again, never the audit row).
pub(crate) struct AuditOnce {
    pub(crate) event: SecurityEvent,
    pub(crate) once: String,
    /// The reason a customer gave when cancelling, recorded with the audit row.
    pub(crate) reason: Option<super::cancellations::Reason>,
}

/// [`record`], writing `audit` in the same transaction, once per its key.
pub(crate) async fn record_audited(
    db: &Db,
    user_id: UserId,
    sub: StripeSubscription,
    observed_at: NaiveDateTime,
    audit: Option<AuditOnce>,
) -> Result<bool, BillingError> {
    // Events carry Stripe's whole-second `created`: an event from the second of this read is
    // taken as at least as new (it usually reports the very change just read).
    let observed_at = observed_at.with_nanosecond(0).unwrap_or(observed_at);
    Ok(db
        .run(move |conn| {
            // Read before the transaction, which then starts with a write: a SQLite transaction
            // that reads first cannot take the write lock once another connection has written.
            let state = state(conn, &sub, observed_at)?;
            conn.transaction(|conn| {
                let written = write_and_notify(conn, user_id, &sub.id, |conn| {
                    write_state(conn, user_id, &sub, &state)
                })?;
                if let Some(AuditOnce {
                    event,
                    once,
                    reason,
                }) = &audit
                {
                    // Recorded as an operation of its own.
                    let kind = event.kind.as_str();
                    if stripe_operation::record_once(conn, once, Some(user_id), kind)? {
                        audit::write(conn, event)?;
                        if let Some(reason) = reason {
                            reason.record(conn, user_id, sub.id.expose(), once, now())?;
                        }
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
    user_id: UserId,
    customer: &CustomerId,
    (plan, price): (&Plan, &PlanPrice),
) -> Result<FreeStart, BillingError> {
    let price_id = match (&price.stripe_price_id, price.is_free()) {
        (Some(id), true) => id.clone(),
        _ => return Err(BillingError::Unexpected("not a free Stripe price".into())),
    };
    let standing = db
        .run(move |conn| {
            // One statement, one snapshot: read apart, another request's subscription could
            // commit between the check and the count, giving the two requests different keys.
            let rows = subscription::all_for_user(conn, user_id)?;
            let live = rows.iter().any(|row| row.status.is_live());
            let earlier = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            Ok::<_, DbError>((!live).then_some(earlier))
        })
        .await?;
    let Some(earlier) = standing else {
        return Ok(FreeStart::AlreadySubscribed);
    };
    let key = format!("user-{user_id}-free-subscription-{earlier}");
    let sub = gateway
        .call(OperationClass::Subscription, user_id, Some(&key), || {
            CreateSubscription::new()
                .customer(customer.expose())
                .items(vec![CreateSubscriptionItems {
                    price: Some(price_id.clone()),
                    quantity: Some(1),
                    ..CreateSubscriptionItems::new()
                }])
                // A zero price needs no payment: anything else is refused, never left incomplete.
                .payment_behavior(CreateSubscriptionPaymentBehavior::ErrorIfIncomplete)
        })
        .await?;
    let sub = StripeSubscription::from_api(&sub)?;
    let event = actor
        .event(Kind::FreeSubscriptionStarted)
        .details(serde_json::json!({
            "plan": plan.slug,
            "subscription": sub.id.to_string(),
        }));
    let once = format!("{}-{}", event.kind.as_str(), sub.id.expose());
    let audit = AuditOnce {
        event,
        once,
        reason: None,
    };
    record_audited(db, user_id, sub, now(), Some(audit)).await?;
    Ok(FreeStart::Started)
}

/// The user's subscription as the account page shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub stripe_id: SubscriptionId,
    pub plan: Option<Plan>,
    pub status: SubscriptionStatus,
    pub current_period_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<NaiveDateTime>,
}

impl SubscriptionView {
    pub fn is_live(&self) -> bool {
        self.status.is_live()
    }
}

pub async fn current(db: &Db, user_id: UserId) -> Result<Option<SubscriptionView>, DbError> {
    db.run(move |conn| current_in(conn, user_id)).await
}

fn current_in(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<SubscriptionView>, DbError> {
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
    user_id: UserId,
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
    /// A past-due subscription was ended at once (its open invoice is no longer collected).
    Ended,
    /// No live subscription to change (nothing was asked of Stripe).
    NoSubscription,
}

/// Sets (`cancel`, with the customer's reason) or clears (`None`) cancel-at-period-end on the
/// user's live subscription at Stripe, then records the result with its audit row and the
/// reason (once per operation), in one transaction.
pub async fn set_cancel_at_period_end(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    user_id: UserId,
    operation: &Operation,
    cancel: Option<&super::cancellations::Reason>,
) -> Result<CancelChange, BillingError> {
    let Some(current) = current(db, user_id).await?.filter(|s| s.is_live()) else {
        return Ok(CancelChange::NoSubscription);
    };
    let stripe_id = &current.stripe_id;
    // Decided on Stripe's state, not the local copy: a customer who just paid on the hosted
    // invoice page (its webhook still on the way) is no longer past due, and a renewal that
    // failed a moment ago already is.
    let observed_at = now();
    let at_stripe = gateway
        .call(OperationClass::Subscription, user_id, None, || {
            RetrieveSubscription::new(stripe_id.expose())
        })
        .await?;
    let status = SubscriptionStatus::from(at_stripe.status.as_str());
    if !status.is_live() {
        record(db, user_id, &at_stripe, observed_at).await?;
        return Ok(CancelChange::NoSubscription);
    }
    super::plan_changes::release_before_cancel(
        db,
        gateway,
        (actor, user_id),
        operation,
        &at_stripe,
    )
    .await?;
    // One key per request whatever Stripe's state: a replayed operation id never makes a
    // different write (Stripe refuses a key reused for another request).
    let step = match cancel {
        Some(_) => "subscription-cancel",
        None => "subscription-resume",
    };
    let key = operation.idempotency_key(step);
    // Past due: canceled at once, so Stripe stops collecting the open invoice (no more
    // attempts, no charge after cancelling); no final invoice and no credit.
    let (kind, sub) = if cancel.is_some() && status == SubscriptionStatus::PastDue {
        let sub = gateway
            .call(OperationClass::Subscription, user_id, Some(&key), || {
                let request = CancelSubscription::new(stripe_id.expose())
                    .invoice_now(false)
                    .prorate(false);
                match cancel {
                    Some(reason) if !reason.is_empty() => {
                        request.cancellation_details(reason.to_stripe_on_cancel())
                    }
                    _ => request,
                }
            })
            .await?;
        (Kind::PastDueSubscriptionCanceled, sub)
    } else {
        let sub = gateway
            .call(OperationClass::Subscription, user_id, Some(&key), || {
                let update = UpdateSubscription::new(stripe_id.expose());
                match cancel {
                    // Stripe keeps the reason with the cancellation (its dashboard shows it too).
                    Some(reason) if !reason.is_empty() => update
                        .cancel_at_period_end(true)
                        .cancellation_details(reason.to_stripe()),
                    Some(_) => update.cancel_at_period_end(true),
                    None => update.cancel_at_period_end(false),
                }
            })
            .await?;
        let kind = match cancel {
            Some(_) => Kind::SubscriptionCancelRequested,
            None => Kind::SubscriptionResumed,
        };
        (kind, sub)
    };
    let event = actor.event(kind).details(serde_json::json!({
        "subscription": stripe_id.to_string(),
        "reason": cancel.and_then(|r| r.feedback()),
    }));
    let audit = AuditOnce {
        event,
        once: key,
        reason: cancel.cloned(),
    };
    let sub = StripeSubscription::from_api(&sub)?;
    record_audited(db, user_id, sub, now(), Some(audit)).await?;
    Ok(match kind {
        Kind::PastDueSubscriptionCanceled => CancelChange::Ended,
        _ => CancelChange::Done,
    })
}

/// What an internal service may grant a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entitlements {
    pub user_id: UserId,
    pub active: bool,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub entitlements: Vec<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// The subscription's quantity (seats), as Stripe last confirmed it.
    pub quantity: Option<i64>,
    /// Why access is off (`null` while it is on): `past_due` once a failed payment's grace is
    /// over, `canceled`, `no_subscription`, or the subscription's status (`unpaid`, …).
    pub reason: Option<String>,
    /// The live plan's metered features and where the user stands in the current period.
    pub limits: Vec<crate::usage::quota::Limit>,
}

impl Entitlements {
    /// What the user may use: whether access is on, under which plan, with which keys, for how
    /// many seats.
    fn grants(&self) -> (bool, Option<&str>, &[String], Option<i64>) {
        (
            self.active,
            self.plan.as_deref(),
            &self.entitlements,
            self.quantity,
        )
    }
}

/// [`entitlements_in`] as one consistent read (one snapshot: the limits and the subscription
/// they belong to are seen as of the same moment).
pub async fn entitlements(db: &Db, user_id: UserId) -> Result<Entitlements, DbError> {
    db.run(move |conn| crate::db::snapshot(conn, |conn| entitlements_in(conn, user_id)))
        .await
}

/// [`entitlements`] of an account that exists (`None` for an unknown id), in one snapshot.
pub async fn entitlements_of(db: &Db, user_id: UserId) -> Result<Option<Entitlements>, DbError> {
    db.run(move |conn| {
        crate::db::snapshot(conn, |conn| {
            if crate::db::models::user::find(conn, user_id)?.is_none() {
                return Ok(None);
            }
            entitlements_in(conn, user_id).map(Some)
        })
    })
    .await
}

/// Whether `user_id` may use their plan now: `None` when access is on, else why it is off
/// (`no_subscription`, `past_due` once a failed payment's grace is over, or the subscription's
/// status), with the subscription it was decided on.
fn access_in(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<(Option<SubscriptionView>, Option<String>), DbError> {
    let view = current_in(conn, user_id)?;
    let reason = inactive_reason_of(conn, view.as_ref().map(|v| (&v.status, &v.stripe_id)))?;
    Ok((view, reason))
}

/// Why a user whose current subscription has `status` (and Stripe id) may not use their plan
/// (`None`: they may): no subscription, one that is not live, or one past due beyond its
/// grace. The one rule behind the entitlements' `active` and `reason` and the quotas'.
pub fn inactive_reason_of(
    conn: &mut DbConnection,
    current: Option<(&SubscriptionStatus, &SubscriptionId)>,
) -> Result<Option<String>, DbError> {
    let Some((status, stripe_id)) = current else {
        return Ok(Some("no_subscription".to_owned()));
    };
    if !status.is_live() {
        return Ok(Some(status.to_string()));
    }
    if *status == SubscriptionStatus::PastDue && super::invoices::grace_is_over(conn, stripe_id)? {
        return Ok(Some("past_due".to_owned()));
    }
    Ok(None)
}

/// [`entitlements`], on a connection (inside a transaction that changes them).
pub fn entitlements_in(conn: &mut DbConnection, user_id: UserId) -> Result<Entitlements, DbError> {
    let (view, reason) = access_in(conn, user_id)?;
    let active = reason.is_none();
    Ok(Entitlements {
        user_id,
        active,
        plan: view
            .as_ref()
            .and_then(|v| v.plan.as_ref().map(|p| p.slug.clone())),
        status: view.as_ref().map(|v| v.status.to_string()),
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
        quantity: match &view {
            Some(v) => plan_change::quantity(conn, &v.stripe_id)?,
            None => None,
        },
        reason,
        limits: crate::usage::quota::limits_in(conn, user_id)?,
    })
}
