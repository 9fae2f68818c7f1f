//! `invoices`: the local copy of each Stripe invoice of a Tollgate customer, kept by `invoice.*`
//! webhooks; and `plan_past_due_grace`, a plan's own past-due grace.
//!
//! An invoice only moves forward: draft → open → uncollectible → paid or void. A write is
//! applied when it is as new as what is stored (Stripe's `created`) *and* does not move the
//! invoice back (a late `invoice.payment_failed` never reopens a paid invoice).

use chrono::NaiveDateTime;
use diesel::Connection as _;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::{invoices, plan_past_due_grace, subscriptions};
use crate::db::{DbConnection, DbError, now, per_backend};
use crate::stripe_id::{InvoiceId, SubscriptionId};

/// Stripe's invoice statuses, in the order an invoice moves through them.
pub const DRAFT: &str = "draft";
pub const OPEN: &str = "open";
pub const UNCOLLECTIBLE: &str = "uncollectible";
pub const PAID: &str = "paid";
pub const VOID: &str = "void";

/// How far along an invoice with `status` is; an unknown status (one Stripe adds later) ranks
/// with `open`, so it never replaces a settled one.
fn rank(status: &str) -> u8 {
    match status {
        DRAFT => 0,
        UNCOLLECTIBLE => 2,
        PAID | VOID => 3,
        _ => 1,
    }
}

/// The statuses an invoice may be in for `status` to replace it (no move backwards).
fn replaceable_by(status: &str) -> Vec<&'static str> {
    let to = rank(status);
    [DRAFT, OPEN, UNCOLLECTIBLE, PAID, VOID]
        .into_iter()
        .filter(|s| rank(s) <= to && !(to == 3 && rank(s) == 3 && *s != status))
        .collect()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invoices)]
pub struct InvoiceRow {
    pub id: i64,
    pub user_id: UserId,
    pub stripe_invoice_id: InvoiceId,
    pub stripe_subscription_id: Option<SubscriptionId>,
    pub number: Option<String>,
    pub status: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: String,
    pub stripe_created: NaiveDateTime,
    pub period_start: Option<NaiveDateTime>,
    pub period_end: Option<NaiveDateTime>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub payment_failed_at: Option<NaiveDateTime>,
    pub grace_ends_at: Option<NaiveDateTime>,
    pub stripe_updated_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What Stripe reported of an invoice, as of `stripe_updated_at`.
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = invoices)]
pub struct InvoiceState<'a> {
    pub stripe_subscription_id: Option<&'a SubscriptionId>,
    pub number: Option<&'a str>,
    pub status: &'a str,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: &'a str,
    pub stripe_created: NaiveDateTime,
    pub period_start: Option<NaiveDateTime>,
    pub period_end: Option<NaiveDateTime>,
    pub hosted_invoice_url: Option<&'a str>,
    pub invoice_pdf: Option<&'a str>,
    pub stripe_updated_at: NaiveDateTime,
}

/// Inserts or updates by Stripe id; a state older than the stored one, or one that would move
/// the invoice back, is ignored. Returns whether anything was written. Safe when the same
/// invoice is recorded concurrently (the insert cannot fail on the unique id).
pub fn upsert(
    conn: &mut DbConnection,
    user_id: UserId,
    stripe_id: &InvoiceId,
    state: &InvoiceState<'_>,
) -> Result<bool, DbError> {
    let allowed = replaceable_by(state.status);
    conn.transaction(|conn| {
        let at = now();
        let update_if_newer = |conn: &mut DbConnection| {
            diesel::update(
                invoices::table
                    .filter(invoices::stripe_invoice_id.eq(stripe_id))
                    .filter(invoices::user_id.eq(user_id))
                    .filter(invoices::stripe_updated_at.le(state.stripe_updated_at))
                    .filter(invoices::status.eq_any(&allowed)),
            )
            .set((state, invoices::updated_at.eq(at)))
            .execute(conn)
        };
        if update_if_newer(conn)? > 0 {
            return Ok(true);
        }
        let insert = diesel::insert_into(invoices::table)
            .values((
                invoices::user_id.eq(user_id),
                invoices::stripe_invoice_id.eq(stripe_id),
                state,
                invoices::created_at.eq(at),
                invoices::updated_at.eq(at),
            ))
            .on_conflict_do_nothing();
        if per_backend!(conn, |c| insert.execute(c))? > 0 {
            return Ok(true);
        }
        Ok(update_if_newer(conn)? > 0)
    })
}

/// Records that a payment of the invoice failed at `at`: the first failure starts the grace,
/// which ends at `grace_ends_at` (an earlier failure, arriving late, moves both back).
pub fn mark_payment_failed(
    conn: &mut DbConnection,
    stripe_id: &InvoiceId,
    at: NaiveDateTime,
    grace_ends_at: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        invoices::table
            .filter(invoices::stripe_invoice_id.eq(stripe_id))
            .filter(
                invoices::payment_failed_at
                    .is_null()
                    .or(invoices::payment_failed_at.gt(at)),
            ),
    )
    .set((
        invoices::payment_failed_at.eq(at),
        invoices::grace_ends_at.eq(grace_ends_at),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

pub fn find_by_stripe_id(
    conn: &mut DbConnection,
    stripe_id: &InvoiceId,
) -> Result<Option<InvoiceRow>, DbError> {
    Ok(invoices::table
        .filter(invoices::stripe_invoice_id.eq(stripe_id))
        .select(InvoiceRow::as_select())
        .first(conn)
        .optional()?)
}

/// One page of the user's invoices, newest first (`limit` rows from `offset`).
pub fn page_for_user(
    conn: &mut DbConnection,
    user_id: UserId,
    limit: i64,
    offset: i64,
) -> Result<Vec<InvoiceRow>, DbError> {
    Ok(invoices::table
        .filter(invoices::user_id.eq(user_id))
        .order((invoices::stripe_created.desc(), invoices::id.desc()))
        .limit(limit)
        .offset(offset)
        .select(InvoiceRow::as_select())
        .load(conn)?)
}

/// The user's oldest open invoice whose payment failed, of a subscription still live: what a
/// past-due customer is asked to pay. Stripe leaves a cancelled subscription's invoice open
/// (it only stops collecting it), so the subscription's status decides, not the invoice's.
/// One indexed query (every signed-in page asks).
pub fn oldest_failed_open(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<InvoiceRow>, DbError> {
    let live = subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .filter(subscriptions::status.eq_any(["past_due", "unpaid", "active", "trialing"]))
        .select(subscriptions::stripe_subscription_id.nullable());
    Ok(invoices::table
        .filter(invoices::user_id.eq(user_id))
        .filter(invoices::status.eq(OPEN))
        .filter(invoices::payment_failed_at.is_not_null())
        .filter(invoices::stripe_subscription_id.eq_any(live))
        .order(invoices::payment_failed_at.asc())
        .select(InvoiceRow::as_select())
        .first(conn)
        .optional()?)
}

/// When the past-due grace of a subscription ends: the earliest among its open invoices whose
/// payment failed (`None`: no failed invoice is known yet).
pub fn grace_ends_for_subscription(
    conn: &mut DbConnection,
    subscription: &SubscriptionId,
) -> Result<Option<NaiveDateTime>, DbError> {
    Ok(invoices::table
        .filter(invoices::stripe_subscription_id.eq(subscription))
        .filter(invoices::status.eq_any([OPEN, UNCOLLECTIBLE]))
        .select(diesel::dsl::min(invoices::grace_ends_at))
        .first::<Option<NaiveDateTime>>(conn)?)
}

/// A plan's own past-due grace in days, if it has one.
pub fn plan_grace_days(conn: &mut DbConnection, plan_id: i64) -> Result<Option<i64>, DbError> {
    Ok(plan_past_due_grace::table
        .filter(plan_past_due_grace::plan_id.eq(plan_id))
        .select(plan_past_due_grace::days)
        .first(conn)
        .optional()?)
}

/// Sets (or, with `None`, removes) a plan's own past-due grace.
pub fn set_plan_grace_days(
    conn: &mut DbConnection,
    plan_id: i64,
    days: Option<i64>,
) -> Result<(), DbError> {
    diesel::delete(plan_past_due_grace::table.filter(plan_past_due_grace::plan_id.eq(plan_id)))
        .execute(conn)?;
    if let Some(days) = days {
        diesel::insert_into(plan_past_due_grace::table)
            .values((
                plan_past_due_grace::plan_id.eq(plan_id),
                plan_past_due_grace::days.eq(days),
            ))
            .execute(conn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoice_never_moves_back() {
        assert_eq!(replaceable_by(OPEN), [DRAFT, OPEN]);
        assert_eq!(replaceable_by(PAID), [DRAFT, OPEN, UNCOLLECTIBLE, PAID]);
        assert_eq!(replaceable_by(VOID), [DRAFT, OPEN, UNCOLLECTIBLE, VOID]);
        assert_eq!(replaceable_by("a_future_status"), [DRAFT, OPEN]);
    }
}
