//! The customer's invoices as Stripe reports them (`invoice.*` webhooks), the past-due grace
//! that starts when a renewal's payment fails, and what the account pages show of both.

use chrono::NaiveDateTime;

use crate::accounts::UserId;
use crate::db::models::invoice::{self, InvoiceRow, InvoiceState};
use crate::db::models::subscription;
use crate::db::{Db, DbConnection, DbError, now};
use crate::reconcile::refetch::Ties;
use crate::stripe_id::{InvoiceId, SubscriptionId};

/// How many invoices one page of `/account/invoices` lists.
pub const PAGE_SIZE: i64 = 20;

/// What Tollgate keeps of a Stripe invoice (read from an event's object by the webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInvoice {
    pub id: InvoiceId,
    pub subscription: Option<SubscriptionId>,
    pub number: Option<String>,
    pub status: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: String,
    pub created: NaiveDateTime,
    pub period_start: Option<NaiveDateTime>,
    pub period_end: Option<NaiveDateTime>,
    /// Stripe's hosted invoice page and PDF (only `https://` or `http://` links are kept).
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
}

/// A link Stripe gave, kept only when it is a web address (never `javascript:` and the like).
pub fn web_link(url: Option<&str>) -> Option<String> {
    url.filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .filter(|u| u.len() <= 2048)
        .map(str::to_owned)
}

/// Stores what Stripe says of the user's invoice as of `as_of` (an older state, or one that
/// would move the invoice back, is ignored). Runs in the caller's transaction (the webhook's).
pub fn store(
    conn: &mut DbConnection,
    user_id: UserId,
    inv: &StripeInvoice,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let state = InvoiceState {
        stripe_subscription_id: inv.subscription.as_ref(),
        number: inv.number.as_deref(),
        status: &inv.status,
        amount_due: inv.amount_due,
        amount_paid: inv.amount_paid,
        amount_remaining: inv.amount_remaining,
        currency: &inv.currency,
        stripe_created: inv.created,
        period_start: inv.period_start,
        period_end: inv.period_end,
        hosted_invoice_url: inv.hosted_invoice_url.as_deref(),
        invoice_pdf: inv.invoice_pdf.as_deref(),
        stripe_updated_at: as_of,
    };
    invoice::upsert(conn, user_id, &inv.id, &state)
}

/// Whether `row` (as stored) and `inv` (as an event reports it) differ in what Tollgate keeps.
pub fn differs(row: &InvoiceRow, inv: &StripeInvoice) -> bool {
    row.status != inv.status
        || row.number != inv.number
        || row.amount_due != inv.amount_due
        || row.amount_paid != inv.amount_paid
        || row.amount_remaining != inv.amount_remaining
        || row.hosted_invoice_url != inv.hosted_invoice_url
        || row.invoice_pdf != inv.invoice_pdf
}

/// [`store`] for a webhook event created at `created`: an event of the same second as the
/// stored state but with other content cannot be ordered by time, so the invoice is also asked
/// to be read again from Stripe (after the commit; see `reconcile::refetch`).
pub fn store_event(
    conn: &mut DbConnection,
    ties: &Ties,
    user_id: UserId,
    inv: &StripeInvoice,
    created: NaiveDateTime,
) -> Result<bool, DbError> {
    if let Some(stored) = invoice::find_by_stripe_id(conn, &inv.id)?
        && stored.user_id == user_id
        && stored.stripe_updated_at == created
        && differs(&stored, inv)
    {
        crate::reconcile::refetch::request_invoice(conn, ties, &inv.id, user_id)?;
    }
    store(conn, user_id, inv, created)
}

/// A payment of the invoice failed at `at`: the subscription's past-due grace starts (once: the
/// first failure counts), for its plan's grace days or `default_days`.
pub fn payment_failed(
    conn: &mut DbConnection,
    inv: &StripeInvoice,
    at: NaiveDateTime,
    default_days: u32,
) -> Result<(), DbError> {
    let days = match &inv.subscription {
        Some(sub) => grace_days(conn, sub, default_days)?,
        None => i64::from(default_days),
    };
    let ends = at + chrono::Duration::days(days);
    invoice::mark_payment_failed(conn, &inv.id, at, ends)?;
    Ok(())
}

/// The subscription's plan's own grace, else the default.
fn grace_days(
    conn: &mut DbConnection,
    sub: &SubscriptionId,
    default_days: u32,
) -> Result<i64, DbError> {
    let plan = subscription::find_by_stripe_id(conn, sub)?.and_then(|row| row.plan_id);
    let own = match plan {
        Some(plan_id) => invoice::plan_grace_days(conn, plan_id)?,
        None => None,
    };
    Ok(own.unwrap_or(i64::from(default_days)))
}

/// The grace of a past-due subscription none of whose failed invoices is known: its plan's
/// own, else `PAST_DUE_GRACE_DAYS`'s default (the configured value is not at hand here).
pub const FALLBACK_GRACE_DAYS: u32 = 7;

/// Whether a past-due subscription's grace is over (its first failed payment was longer ago
/// than the grace). With no failed invoice recorded (its `invoice.payment_failed` missed or
/// late), the grace runs from the time the subscription was first seen past due.
pub fn grace_is_over(conn: &mut DbConnection, sub: &SubscriptionId) -> Result<bool, DbError> {
    let ends = match invoice::grace_ends_for_subscription(conn, sub)? {
        Some(ends) => Some(ends),
        None => match subscription::past_due_since(conn, sub)? {
            Some(since) => {
                Some(since + chrono::Duration::days(grace_days(conn, sub, FALLBACK_GRACE_DAYS)?))
            }
            None => None,
        },
    };
    Ok(ends.is_some_and(|ends| ends <= now()))
}

/// The hosted page of the invoice a past-due customer should pay, if there is one: what the
/// banner on every signed-in page links to.
pub async fn past_due_link(db: &Db, user_id: UserId) -> Result<Option<String>, DbError> {
    db.run(move |conn| {
        Ok(invoice::oldest_failed_open(conn, user_id)?.and_then(|row| row.hosted_invoice_url))
    })
    .await
}

/// One page (from 1) of the user's invoices, newest first, and whether there is another.
pub async fn page(db: &Db, user_id: UserId, page: i64) -> Result<(Vec<InvoiceRow>, bool), DbError> {
    let offset = (page.max(1) - 1).saturating_mul(PAGE_SIZE);
    db.run(move |conn| {
        let mut rows = invoice::page_for_user(conn, user_id, PAGE_SIZE + 1, offset)?;
        let more = rows.len() as i64 > PAGE_SIZE;
        rows.truncate(PAGE_SIZE as usize);
        Ok((rows, more))
    })
    .await
}

/// The longest past-due grace a plan may have.
pub const MAX_GRACE_DAYS: i64 = 90;

/// A plan's own past-due grace, as an admin types it: empty for the default, else 1 to
/// [`MAX_GRACE_DAYS`] days; the message to show otherwise.
pub fn parse_grace_days(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    match raw.parse::<i64>() {
        Ok(days) if (1..=MAX_GRACE_DAYS).contains(&days) => Ok(Some(days)),
        _ => Err(format!(
            "Enter a whole number of days from 1 to {MAX_GRACE_DAYS}, or leave it empty for the default."
        )),
    }
}

/// A plan's own past-due grace (`None`: the default), if it has one.
pub async fn plan_grace(db: &Db, plan_id: i64) -> Result<Option<i64>, DbError> {
    db.run(move |conn| invoice::plan_grace_days(conn, plan_id))
        .await
}

/// Sets (`None`: removes) a plan's own past-due grace, audited as `actor`'s in the same
/// transaction. Applies to payments that fail from now on.
pub async fn set_plan_grace(
    db: &Db,
    actor: &crate::audit::Actor,
    plan_id: i64,
    days: Option<i64>,
) -> Result<(), DbError> {
    use diesel::Connection as _;
    let event = actor
        .event(crate::audit::Kind::PlanGraceChanged)
        .details(serde_json::json!({ "plan_id": plan_id, "days": days }));
    db.run(move |conn| {
        // Starts with a write (the delete): a SQLite transaction must.
        conn.transaction(|conn| {
            invoice::set_plan_grace_days(conn, plan_id, days)?;
            crate::audit::write(conn, &event)
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_grace_is_empty_or_1_to_90_days() {
        assert_eq!(parse_grace_days(" "), Ok(None));
        assert_eq!(parse_grace_days("1"), Ok(Some(1)));
        assert_eq!(parse_grace_days(" 90 "), Ok(Some(90)));
        for bad in ["0", "91", "-3", "7.5", "seven", "99999999999999999999"] {
            assert!(parse_grace_days(bad).is_err(), "{bad}");
        }
    }
}
