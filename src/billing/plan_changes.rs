//! Changing plan, billing interval or seats inside the product: a preview from Stripe's invoice
//! preview, then the change, made Stripe's way.
//!
//! What counts as an upgrade: the new price is worth more per year (unit amount × quantity,
//! a monthly price × 12), or the interval gets longer (monthly → yearly: Stripe restarts the
//! billing cycle and bills the year at once, crediting the unused month). An upgrade applies at
//! once with `proration_behavior=always_invoice` (the prorated difference is invoiced and
//! charged now, as Stripe's own portal does): with `create_prorations` the difference would wait
//! for the next invoice, and a customer could upgrade, use the higher plan, and cancel before
//! paying for it. `payment_behavior=pending_if_incomplete` keeps the old plan if that payment
//! fails. Anything else is a downgrade: by default (`PLAN_CHANGE_DOWNGRADE=period_end`) it
//! waits for the end of the paid period as a Stripe subscription schedule (the current phase,
//! then the new price), so nothing is credited and Stripe, not Tollgate, applies it at the
//! renewal; `immediate` applies it at once, the unused time credited to the customer's balance.
//!
//! Entitlements follow what Stripe confirms: the subscription Stripe returns from the update
//! (or its webhook) is recorded, never the form's wish. Stripe is read before every preview and
//! change, so a change is always computed from Stripe's state, not from a possibly stale copy.

use std::marker::PhantomData;

use stripe::StripeRequest;
use stripe_billing::invoice::{
    CreatePreviewInvoice, CreatePreviewInvoiceSubscriptionDetails,
    CreatePreviewInvoiceSubscriptionDetailsItems,
    CreatePreviewInvoiceSubscriptionDetailsProrationBehavior,
};
use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionPaymentBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_billing::subscription_schedule::{
    CreateSubscriptionSchedule, ReleaseSubscriptionSchedule, UpdateSubscriptionSchedule,
    UpdateSubscriptionSchedulePhases, UpdateSubscriptionSchedulePhasesDuration,
    UpdateSubscriptionSchedulePhasesDurationInterval, UpdateSubscriptionSchedulePhasesEndDate,
    UpdateSubscriptionSchedulePhasesItems, UpdateSubscriptionSchedulePhasesStartDate,
};
use stripe_client_core::RequestBuilder;

use super::plans::{self, Interval, Plan, PlanPrice};
use super::subscriptions::{self, AuditOnce, StripeSubscription};
use super::{Billing, BillingError, Operation, OperationClass};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::config::DowngradeTiming;
use crate::db::models::plan_change::{self, NewPlanChange, PlanChangeRow};
use crate::db::models::stripe_operation;
use crate::db::{DbConnection, DbError, now};
use crate::stripe_id::SubscriptionId;

/// Most seats a form may ask for, whatever a plan allows (a bound on the parsed number).
pub const MAX_QUANTITY: u64 = 10_000;
/// Longest slug worth looking up.
const MAX_SLUG: usize = 40;
/// How old a preview's proration date may be when it is confirmed (seconds).
const PREVIEW_VALID_SECS: i64 = 15 * 60;

/// Why a plan change cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no such plan on offer")]
    NotOffered,
    #[error("not a billing interval")]
    BadInterval,
    #[error("quantity outside the plan's range {0}..={1}")]
    BadQuantity(u64, u64),
    #[error("no live subscription")]
    NoSubscription,
    #[error("the subscription ends at the close of the period")]
    Ending,
    #[error("a change is already scheduled")]
    AlreadyScheduled,
    #[error("that is the current plan")]
    Unchanged,
    #[error("the preview is out of date")]
    Stale,
    #[error("the subscription is past due")]
    PastDue,
    #[error("a change at the period end would drop the trial or the discount")]
    KeepsTrialOrDiscount,
    #[error("a change to or from a plan with metered usage")]
    Metered,
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<DbError> for ChangeError {
    fn from(err: DbError) -> Self {
        Self::Billing(err.into())
    }
}

/// What the customer asked to move to.
#[derive(Debug, Clone)]
pub struct Target {
    pub plan: Plan,
    pub price: PlanPrice,
    pub quantity: u64,
    /// The plan's seat range (`(1, 1)`: not per-seat).
    pub seats: (u64, u64),
}

/// A per-seat plan's range of seats; `(1, 1)` for the others.
pub async fn seats(billing: Billing<'_>, plan_id: i64) -> Result<(u64, u64), DbError> {
    let range = billing
        .db
        .run(move |conn| plan_change::seats(conn, plan_id))
        .await?;
    Ok(range.map_or((1, 1), |(min, max)| {
        (
            u64::try_from(min).unwrap_or(1).max(1),
            u64::try_from(max).unwrap_or(1).max(1),
        )
    }))
}

/// The quantity a form asks for (none: the fewest seats), if the plan's `seats` allow it.
pub fn quantity_within(seats: (u64, u64), raw: Option<&str>) -> Result<u64, ChangeError> {
    let quantity = match raw.map(str::trim) {
        None | Some("") => seats.0,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|q| *q <= MAX_QUANTITY)
            .ok_or(ChangeError::BadQuantity(seats.0, seats.1))?,
    };
    if quantity < seats.0 || quantity > seats.1 {
        return Err(ChangeError::BadQuantity(seats.0, seats.1));
    }
    Ok(quantity)
}

/// The active plan, price and quantity a form names (as submitted: checked here, against the
/// database, so an archived plan is never sold).
pub async fn target(
    billing: Billing<'_>,
    slug: &str,
    interval: &str,
    quantity: Option<&str>,
) -> Result<Target, ChangeError> {
    if slug.is_empty() || slug.len() > MAX_SLUG {
        return Err(ChangeError::NotOffered);
    }
    let plan = plans::find_by_slug(billing.db, slug.to_owned())
        .await
        .map_err(BillingError::from)?;
    let (plan, price) = match plans::offer(plan.as_slice(), slug, interval) {
        Ok(offer) => offer,
        Err(plans::OfferError::UnknownInterval) => return Err(ChangeError::BadInterval),
        Err(plans::OfferError::NotOffered) => return Err(ChangeError::NotOffered),
    };
    if price.stripe_price_id.is_none() {
        return Err(ChangeError::NotOffered);
    }
    let seats = seats(billing, plan.id).await?;
    let quantity = quantity_within(seats, quantity)?;
    Ok(Target {
        plan,
        price,
        quantity,
        seats,
    })
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Now,
    /// At the end of the current period (this Unix time).
    PeriodEnd(i64),
}

/// What Stripe says the subscription is now (read before each preview and change).
struct Current {
    id: SubscriptionId,
    item: String,
    price: String,
    unit_amount: i64,
    yearly: bool,
    quantity: u64,
    period_start: i64,
    period_end: i64,
    schedule: Option<String>,
    /// Stripe's status and cancel-at-period-end (the local copy may lag behind).
    status: String,
    cancel_at_period_end: bool,
    /// Whether a trial or a discount is on the subscription (a schedule's phases would drop them).
    trial_or_discount: bool,
}

impl Current {
    fn from_api(sub: &stripe_billing::Subscription) -> Result<Self, BillingError> {
        let item = super::subscriptions::licensed_item(sub)?;
        Ok(Self {
            id: SubscriptionId::new(sub.id.as_str()),
            item: item.id.to_string(),
            price: item.price.id.to_string(),
            unit_amount: item.price.unit_amount.unwrap_or(0),
            yearly: item
                .price
                .recurring
                .as_ref()
                .is_some_and(|r| r.interval.as_str() == "year"),
            quantity: item.quantity.unwrap_or(1),
            period_start: item.current_period_start,
            period_end: item.current_period_end,
            schedule: sub.schedule.as_ref().map(|s| s.id().to_string()),
            status: sub.status.as_str().to_owned(),
            cancel_at_period_end: sub.cancel_at_period_end,
            trial_or_discount: sub.status.as_str() == "trialing" || !sub.discounts.is_empty(),
        })
    }

    /// A year's worth of what is paid (comparable across intervals).
    fn per_year(&self) -> i128 {
        i128::from(self.unit_amount) * i128::from(self.quantity) * if self.yearly { 1 } else { 12 }
    }

    /// Whether moving to `target` is a downgrade (see the module docs).
    fn is_downgrade(&self, target: &Target) -> bool {
        let yearly = target.price.interval == Interval::Year;
        let per_year = i128::from(target.price.amount)
            * i128::from(target.quantity)
            * if yearly { 1 } else { 12 };
        match (self.yearly, yearly) {
            (true, false) => true,
            (false, true) => false,
            _ => per_year < self.per_year(),
        }
    }
}

/// A request whose answer Tollgate reads only in part (`O`: the fields it uses).
pub(crate) struct Partial<R, O>(R, PhantomData<O>);

impl<R: StripeRequest, O> StripeRequest for Partial<R, O> {
    type Output = O;

    fn build(&self) -> RequestBuilder {
        self.0.build()
    }
}

pub(crate) fn partial<R, O>(request: R) -> Partial<R, O> {
    Partial(request, PhantomData)
}

#[derive(miniserde::Deserialize)]
struct PreviewInvoice {
    currency: String,
    lines: PreviewLines,
}

#[derive(miniserde::Deserialize)]
struct PreviewLines {
    data: Vec<PreviewLine>,
}

#[derive(miniserde::Deserialize)]
struct PreviewLine {
    amount: i64,
    period: LinePeriod,
    parent: Option<LineParent>,
}

#[derive(miniserde::Deserialize)]
struct LinePeriod {
    start: i64,
    end: i64,
}

#[derive(miniserde::Deserialize)]
struct LineParent {
    subscription_item_details: Option<LineItemDetails>,
}

#[derive(miniserde::Deserialize)]
struct LineItemDetails {
    proration: bool,
    subscription_item: Option<String>,
}

impl PreviewLine {
    /// Whether the line bills subscription item `item` (not a metered item's usage).
    fn bills_item(&self, item: &str) -> bool {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_item_details.as_ref())
            .is_none_or(|d| d.subscription_item.as_deref().is_none_or(|i| i == item))
    }

    fn proration(&self) -> bool {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_item_details.as_ref())
            .is_some_and(|d| d.proration)
    }
}

#[derive(miniserde::Deserialize)]
struct ScheduleRef {
    id: String,
}

/// What a change would cost, from Stripe's invoice preview.
#[derive(Debug, Clone)]
pub struct Preview {
    pub from_plan: Option<String>,
    pub target: Target,
    pub timing: Timing,
    /// Charged when confirmed (negative: a credit to the customer's balance).
    pub due_now: i64,
    /// The next regular invoice: its amount and Unix date.
    pub next_amount: i64,
    pub next_date: i64,
    pub currency: String,
    /// The time the proration is computed as of (carried by the confirm form).
    pub proration_date: i64,
}

/// The user's live subscription as Stripe has it, and the plan it is on locally.
async fn current(
    billing: Billing<'_>,
    user_id: UserId,
) -> Result<(Current, Option<Plan>), ChangeError> {
    let Some(local) = subscriptions::current(billing.db, user_id)
        .await?
        .filter(|s| s.is_live())
    else {
        return Err(ChangeError::NoSubscription);
    };
    // Past due: a change (an immediate downgrade above all) would credit time not paid for.
    if local.status == subscriptions::SubscriptionStatus::PastDue {
        return Err(ChangeError::PastDue);
    }
    if local.cancel_at_period_end {
        return Err(ChangeError::Ending);
    }
    let id = local.stripe_id.clone();
    let sub = billing
        .gateway
        .call(OperationClass::Subscription, user_id, None, || {
            RetrieveSubscription::new(id.expose())
        })
        .await
        .map_err(BillingError::from)?;
    let current = Current::from_api(&sub)?;
    // Stripe's copy decides (a failed renewal or a cancellation may not have reached us yet).
    match current.status.as_str() {
        "active" | "trialing" => {}
        "past_due" | "unpaid" => return Err(ChangeError::PastDue),
        _ => return Err(ChangeError::NoSubscription),
    }
    if current.cancel_at_period_end {
        return Err(ChangeError::Ending);
    }
    Ok((current, local.plan))
}

/// The change the user has scheduled, if any.
pub async fn scheduled(
    billing: Billing<'_>,
    user_id: UserId,
) -> Result<Option<(PlanChangeRow, Option<Plan>)>, DbError> {
    billing
        .db
        .run(move |conn| {
            let Some(change) = plan_change::scheduled_for_user(conn, user_id)? else {
                return Ok(None);
            };
            let plan = crate::db::models::plan::find(conn, change.to_plan_id)?.map(Plan::from);
            Ok(Some((change, plan)))
        })
        .await
}

/// When the change would take effect; refused when it would wait for a schedule whose phases
/// would drop the subscription's trial or discount.
fn timing(
    current: &Current,
    target: &Target,
    downgrades: DowngradeTiming,
) -> Result<Timing, ChangeError> {
    match (current.is_downgrade(target), downgrades) {
        (true, DowngradeTiming::PeriodEnd) if current.trial_or_discount => {
            Err(ChangeError::KeepsTrialOrDiscount)
        }
        (true, DowngradeTiming::PeriodEnd) => Ok(Timing::PeriodEnd(current.period_end)),
        _ => Ok(Timing::Now),
    }
}

impl Timing {
    /// How the preview form names it (and the confirm checks it against).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::PeriodEnd(_) => "period_end",
        }
    }
}

/// A change of plan or interval to or from a plan with metered components is refused: it
/// would have to swap the subscription's metered items as well (a new plan's metered prices in,
/// the old plan's out), which Tollgate does not do yet, and leaving them would bill usage at the
/// old plan's rates. A change of seats on the same price keeps its metered items and is fine.
async fn refuse_metered(
    billing: Billing<'_>,
    from: Option<&Plan>,
    target: &Target,
    price_changes: bool,
) -> Result<(), ChangeError> {
    if !price_changes {
        return Ok(());
    }
    let plans: Vec<i64> = from
        .map(|p| p.id)
        .into_iter()
        .chain([target.plan.id])
        .collect();
    let metered = billing
        .db
        .run(move |conn| {
            for plan_id in plans {
                if !crate::usage::meters::of_plan(conn, plan_id)?.is_empty() {
                    return Ok::<_, DbError>(true);
                }
            }
            Ok(false)
        })
        .await?;
    if metered {
        return Err(ChangeError::Metered);
    }
    Ok(())
}

fn price_id(target: &Target) -> Result<String, BillingError> {
    target
        .price
        .stripe_price_id
        .clone()
        .ok_or_else(|| BillingError::Unexpected("plan has no Stripe price".into()))
}

/// Stripe's invoice preview of moving the user's subscription to `target`.
pub async fn preview(
    billing: Billing<'_>,
    user_id: UserId,
    target: Target,
    downgrades: DowngradeTiming,
) -> Result<Preview, ChangeError> {
    if scheduled(billing, user_id).await?.is_some() {
        return Err(ChangeError::AlreadyScheduled);
    }
    let (current, from) = current(billing, user_id).await?;
    let price = price_id(&target)?;
    if current.price == price && current.quantity == target.quantity {
        return Err(ChangeError::Unchanged);
    }
    refuse_metered(billing, from.as_ref(), &target, current.price != price).await?;
    let timing = timing(&current, &target, downgrades)?;
    let proration_date = chrono::Utc::now().timestamp();
    let behavior = match timing {
        Timing::Now => CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::AlwaysInvoice,
        Timing::PeriodEnd(_) => CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::None,
    };
    let invoice: PreviewInvoice = billing
        .gateway
        .call(OperationClass::Subscription, user_id, None, || {
            let details = CreatePreviewInvoiceSubscriptionDetails {
                items: Some(vec![CreatePreviewInvoiceSubscriptionDetailsItems {
                    id: Some(current.item.clone()),
                    price: Some(price.clone()),
                    quantity: Some(target.quantity),
                    ..Default::default()
                }]),
                proration_behavior: Some(behavior.clone()),
                proration_date: Some(proration_date),
                ..Default::default()
            };
            partial(
                CreatePreviewInvoice::new()
                    .subscription(current.id.expose())
                    .subscription_details(details),
            )
        })
        .await
        .map_err(BillingError::from)?;
    let resets_cycle = current.yearly != (target.price.interval == Interval::Year);
    // The plan item's lines: a metered item's usage so far is billed whatever the change.
    let plan_lines = || {
        invoice
            .lines
            .data
            .iter()
            .filter(|l| l.bills_item(&current.item))
    };
    let prorations: i64 = plan_lines()
        .filter(|l| l.proration())
        .map(|l| l.amount)
        .sum();
    let next = plan_lines().rfind(|l| !l.proration());
    let (next_amount, next_start, next_end) = next.map_or((0, current.period_end, 0), |l| {
        (l.amount, l.period.start, l.period.end)
    });
    let (due_now, next_date) = match timing {
        Timing::PeriodEnd(_) => (0, next_start),
        Timing::Now if resets_cycle => (prorations + next_amount, next_end),
        Timing::Now => (prorations, next_start),
    };
    Ok(Preview {
        from_plan: from.map(|p| p.name),
        target,
        timing,
        due_now,
        next_amount,
        next_date,
        currency: invoice.currency,
        proration_date,
    })
}

/// What confirming a change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Stripe applied it (recorded from Stripe's answer).
    Applied,
    /// Stripe will apply it at this Unix time.
    Scheduled(i64),
}

/// What the confirm form says was previewed: the Stripe price, when the change takes effect and
/// the time the proration was computed as of.
#[derive(Debug, Clone)]
pub struct Previewed {
    pub price_id: String,
    pub timing: String,
    pub proration_date: i64,
}

/// Makes the change `target` (as `previewed`) on the user's subscription: refused as stale when
/// the price or the timing is no longer what the customer saw. Replaying the same operation
/// makes it once: each Stripe write carries the operation's key, and the local row and audit
/// row are written once per operation.
pub async fn confirm(
    billing: Billing<'_>,
    actor: &Actor,
    (user_id, operation): (UserId, &Operation),
    target: Target,
    previewed: &Previewed,
    downgrades: DowngradeTiming,
) -> Result<Confirmed, ChangeError> {
    let proration_date = previewed.proration_date;
    let schedule_key = operation.idempotency_key("plan-change-schedule");
    if let Some((change, _)) = scheduled(billing, user_id).await? {
        // The same form again, after it scheduled its change: done already.
        let done = billing
            .db
            .run({
                let key = schedule_key.clone();
                move |conn| stripe_operation::exists(conn, &key)
            })
            .await?;
        if done {
            return Ok(Confirmed::Scheduled(
                change.effective_at.and_utc().timestamp(),
            ));
        }
        return Err(ChangeError::AlreadyScheduled);
    }
    let (current, from) = current(billing, user_id).await?;
    let price = price_id(&target)?;
    if current.price == price && current.quantity == target.quantity {
        // Replayed after Stripe applied it: nothing more to do.
        return match operation.first_time {
            true => Err(ChangeError::Unchanged),
            false => Ok(Confirmed::Applied),
        };
    }
    refuse_metered(billing, from.as_ref(), &target, current.price != price).await?;
    let now = chrono::Utc::now().timestamp();
    if proration_date > now + 60
        || proration_date < now - PREVIEW_VALID_SECS
        || proration_date < current.period_start
    {
        return Err(ChangeError::Stale);
    }
    // What the customer saw is what is made: an admin's new price, or a subscription that
    // changed since (turning an upgrade into a downgrade), asks for a new preview.
    let timing = timing(&current, &target, downgrades)?;
    if price != previewed.price_id || timing.as_str() != previewed.timing {
        return Err(ChangeError::Stale);
    }
    let details = serde_json::json!({
        "subscription": current.id.to_string(),
        "from_plan": from.as_ref().map(|p| p.slug.clone()),
        "to_plan": target.plan.slug,
        "interval": target.price.interval.as_str(),
        "quantity": target.quantity,
    });
    match timing {
        Timing::Now => {
            apply_now(
                billing,
                actor,
                (user_id, operation),
                (&current, &price, proration_date),
                (&target, details),
            )
            .await
        }
        Timing::PeriodEnd(at) => {
            let row = (&current, price.as_str(), &target);
            schedule(billing, actor, (user_id, operation), row, details).await?;
            Ok(Confirmed::Scheduled(at))
        }
    }
}

async fn apply_now(
    billing: Billing<'_>,
    actor: &Actor,
    (user_id, operation): (UserId, &Operation),
    (current, price, proration_date): (&Current, &str, i64),
    (target, details): (&Target, serde_json::Value),
) -> Result<Confirmed, ChangeError> {
    // A schedule left on the subscription would undo the change at the renewal.
    if let Some(schedule) = &current.schedule {
        let key = operation.idempotency_key("plan-change-release");
        billing
            .gateway
            .call(OperationClass::Subscription, user_id, Some(&key), || {
                partial::<_, ScheduleRef>(ReleaseSubscriptionSchedule::new(schedule.as_str()))
            })
            .await
            .map_err(BillingError::from)?;
    }
    let key = operation.idempotency_key("plan-change");
    let sub = billing
        .gateway
        .call(OperationClass::Subscription, user_id, Some(&key), || {
            UpdateSubscription::new(current.id.expose())
                .items(vec![UpdateSubscriptionItems {
                    id: Some(current.item.clone()),
                    price: Some(price.to_owned()),
                    quantity: Some(target.quantity),
                    ..Default::default()
                }])
                .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
                // The proration the preview showed, to the second.
                .proration_date(proration_date)
                .payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete)
        })
        .await
        .map_err(BillingError::from)?;
    // A replay gets Stripe's stored answer for the key, which may be older than the
    // subscription now is: what Stripe says now is recorded instead.
    let sub = match operation.first_time {
        true => sub,
        false => billing
            .gateway
            .call(OperationClass::Subscription, user_id, None, || {
                RetrieveSubscription::new(current.id.expose())
            })
            .await
            .map_err(BillingError::from)?,
    };
    let event = actor.event(Kind::PlanChanged).details(details);
    let audit = AuditOnce {
        event,
        once: key,
        reason: None,
    };
    let sub = StripeSubscription::from_api(&sub)?;
    subscriptions::record_audited(billing.db, user_id, sub, now(), Some(audit)).await?;
    Ok(Confirmed::Applied)
}

fn duration(interval: Interval) -> UpdateSubscriptionSchedulePhasesDuration {
    UpdateSubscriptionSchedulePhasesDuration {
        interval: match interval {
            Interval::Month => UpdateSubscriptionSchedulePhasesDurationInterval::Month,
            Interval::Year => UpdateSubscriptionSchedulePhasesDurationInterval::Year,
        },
        interval_count: Some(1),
    }
}

/// Holds the change in a Stripe subscription schedule (this period as it is, then the new
/// price) and records it locally, with its audit row, once.
async fn schedule(
    billing: Billing<'_>,
    actor: &Actor,
    (user_id, operation): (UserId, &Operation),
    (current, price, target): (&Current, &str, &Target),
    details: serde_json::Value,
) -> Result<(), ChangeError> {
    let create_key = operation.idempotency_key("plan-change-schedule");
    let schedule: ScheduleRef = match &current.schedule {
        // One left by an earlier change (or made in Stripe's dashboard): reused.
        Some(id) => ScheduleRef { id: id.clone() },
        None => billing
            .gateway
            .call(
                OperationClass::Subscription,
                user_id,
                Some(&create_key),
                || {
                    partial(
                        CreateSubscriptionSchedule::new().from_subscription(current.id.expose()),
                    )
                },
            )
            .await
            .map_err(BillingError::from)?,
    };
    let phases_key = operation.idempotency_key("plan-change-phases");
    let _: ScheduleRef = billing
        .gateway
        .call(
            OperationClass::Subscription,
            user_id,
            Some(&phases_key),
            || {
                let this_period = UpdateSubscriptionSchedulePhases {
                    start_date: Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
                        current.period_start,
                    )),
                    end_date: Some(UpdateSubscriptionSchedulePhasesEndDate::Timestamp(
                        current.period_end,
                    )),
                    ..UpdateSubscriptionSchedulePhases::new(vec![
                        UpdateSubscriptionSchedulePhasesItems {
                            price: Some(current.price.clone()),
                            quantity: Some(current.quantity),
                            ..Default::default()
                        },
                    ])
                };
                let next = UpdateSubscriptionSchedulePhases {
                    duration: Some(duration(target.price.interval)),
                    ..UpdateSubscriptionSchedulePhases::new(vec![
                        UpdateSubscriptionSchedulePhasesItems {
                            price: Some(price.to_owned()),
                            quantity: Some(target.quantity),
                            ..Default::default()
                        },
                    ])
                };
                partial(
                    UpdateSubscriptionSchedule::new(schedule.id.as_str())
                        .phases(vec![this_period, next])
                        .end_behavior(stripe_shared::SubscriptionScheduleEndBehavior::Release),
                )
            },
        )
        .await
        .map_err(BillingError::from)?;
    let row = (
        current.id.clone(),
        schedule.id,
        target.plan.id,
        price.to_owned(),
        i64::try_from(target.quantity).unwrap_or(1),
    );
    let effective_at = subscriptions::timestamp(current.period_end).unwrap_or_else(now);
    let event = actor.event(Kind::PlanChangeScheduled).details(details);
    billing
        .db
        .run(move |conn| {
            use diesel::Connection as _;
            conn.transaction(|conn| {
                crate::db::models::user::lock(conn, user_id)?;
                if !stripe_operation::record_once(conn, &create_key, Some(user_id), "plan_change")?
                {
                    return Ok(());
                }
                let at = now();
                plan_change::insert(
                    conn,
                    &NewPlanChange {
                        user_id,
                        stripe_subscription_id: &row.0,
                        stripe_schedule_id: &row.1,
                        to_plan_id: row.2,
                        to_price_id: &row.3,
                        to_quantity: row.4,
                        effective_at,
                        status: plan_change::SCHEDULED,
                        created_at: at,
                        updated_at: at,
                    },
                )?;
                audit::write(conn, &event)
            })
        })
        .await?;
    Ok(())
}

/// Calls off the user's scheduled change: the schedule is released (the subscription renews as
/// it is), the local row marked canceled with its audit row, once. Whether there was one.
pub async fn cancel_scheduled(
    billing: Billing<'_>,
    actor: &Actor,
    (user_id, operation): (UserId, &Operation),
) -> Result<bool, ChangeError> {
    let Some((change, _)) = scheduled(billing, user_id).await? else {
        return Ok(false);
    };
    let key = operation.idempotency_key("plan-change-cancel");
    let _: ScheduleRef = billing
        .gateway
        .call(OperationClass::Subscription, user_id, Some(&key), || {
            partial(ReleaseSubscriptionSchedule::new(
                change.stripe_schedule_id.as_str(),
            ))
        })
        .await
        .map_err(BillingError::from)?;
    let event = actor
        .event(Kind::PlanChangeCanceled)
        .details(serde_json::json!({
            "subscription": change.stripe_subscription_id.to_string(),
            "to_plan_id": change.to_plan_id,
        }));
    billing
        .db
        .run(move |conn| {
            use diesel::Connection as _;
            conn.transaction(|conn| {
                if plan_change::settle(conn, change.id, plan_change::CANCELED)? {
                    audit::write(conn, &event)?;
                }
                Ok::<_, DbError>(())
            })
        })
        .await?;
    Ok(true)
}

/// Before the customer cancels or resumes: Stripe refuses to change the cancellation of a
/// subscription a schedule manages, so a schedule on it (a scheduled downgrade, or one made in
/// Stripe's dashboard) is released first, and the user's scheduled change, which will no longer
/// happen, is marked canceled with its audit row, once.
pub(crate) async fn release_before_cancel(
    db: &crate::db::Db,
    gateway: &super::Gateway,
    (actor, user_id): (&Actor, UserId),
    operation: &Operation,
    sub: &stripe_billing::Subscription,
) -> Result<(), BillingError> {
    if let Some(schedule) = sub.schedule.as_ref().map(|s| s.id().to_string()) {
        let key = operation.idempotency_key("subscription-cancel-release");
        let _: ScheduleRef = gateway
            .call(OperationClass::Subscription, user_id, Some(&key), || {
                partial(ReleaseSubscriptionSchedule::new(schedule.as_str()))
            })
            .await?;
    }
    let event = actor
        .event(Kind::PlanChangeCanceled)
        .details(serde_json::json!({
            "subscription": SubscriptionId::new(sub.id.as_str()).to_string(),
            "because": "subscription_cancel",
        }));
    db.run(move |conn| {
        use diesel::Connection as _;
        conn.transaction(|conn| {
            crate::db::models::user::lock(conn, user_id)?;
            let Some(change) = plan_change::scheduled_for_user(conn, user_id)? else {
                return Ok(());
            };
            if plan_change::settle(conn, change.id, plan_change::CANCELED)? {
                audit::write(conn, &event)?;
            }
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// Inside the transaction that records Stripe's subscription: a scheduled change Stripe has now
/// applied (the subscription carries its price and quantity) is marked applied and audited; one
/// on a subscription that ended is marked canceled.
pub(crate) fn settle_scheduled(
    conn: &mut DbConnection,
    user_id: UserId,
    sub: &StripeSubscription,
) -> Result<(), DbError> {
    let Some(change) = plan_change::scheduled_for_subscription(conn, &sub.id)? else {
        return Ok(());
    };
    if !sub.status.is_live() {
        plan_change::settle(conn, change.id, plan_change::CANCELED)?;
        return Ok(());
    }
    let quantity = i64::try_from(sub.quantity).unwrap_or(i64::MAX);
    if sub.price == change.to_price_id
        && quantity == change.to_quantity
        && plan_change::settle(conn, change.id, plan_change::APPLIED)?
    {
        let event = SecurityEvent::new(Kind::PlanChangeApplied)
            .actor("stripe")
            .details(serde_json::json!({
                "user_id": user_id,
                "subscription": sub.id.to_string(),
                "to_plan_id": change.to_plan_id,
                "quantity": change.to_quantity,
            }));
        audit::write(conn, &event)?;
    }
    Ok(())
}

/// One plan, interval or seat count the account page offers to change to.
#[derive(Debug, Clone)]
pub struct ChangeOption {
    pub slug: String,
    pub name: String,
    pub interval: &'static str,
    pub label: String,
    /// The plan's seat range (`(1, 1)`: not per-seat).
    pub seats: (u64, u64),
    /// The subscription's own price (offered to change the seats only).
    pub current: bool,
}

/// What the user's live subscription can change to: every active plan's prices but the current
/// one (kept, for a per-seat plan, to change the seats); and the current quantity.
pub async fn options(
    billing: Billing<'_>,
    user_id: UserId,
) -> Result<(Vec<ChangeOption>, Option<i64>), DbError> {
    billing
        .db
        .run(move |conn| {
            use crate::db::models::{plan, subscription};
            // Past due: nothing is offered (a change waits until the open invoice is paid).
            let Some(row) = subscription::current_for_user(conn, user_id)?.filter(|r| {
                r.status.is_live()
                    && r.status != subscriptions::SubscriptionStatus::PastDue
                    && !r.cancel_at_period_end
            }) else {
                return Ok((Vec::new(), None));
            };
            let quantity = plan_change::quantity(conn, &row.stripe_subscription_id)?;
            let mut options = Vec::new();
            for plan in plan::active(conn)?.into_iter().map(Plan::from) {
                let seats = plan_change::seats(conn, plan.id)?.map_or((1, 1), |(min, max)| {
                    (
                        u64::try_from(min).unwrap_or(1),
                        u64::try_from(max).unwrap_or(1),
                    )
                });
                for price in plan.prices() {
                    let current = price.stripe_price_id.as_deref() == Some(&row.stripe_price_id);
                    if price.stripe_price_id.is_none() || (current && seats.1 <= 1) {
                        continue;
                    }
                    options.push(ChangeOption {
                        slug: plan.slug.clone(),
                        name: plan.name.clone(),
                        interval: price.interval.as_str(),
                        label: price.label(),
                        seats,
                        current,
                    });
                }
            }
            Ok((options, quantity))
        })
        .await
}
