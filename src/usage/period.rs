//! The billing period usage counts in: the live subscription's current period.

use chrono::{Months, NaiveDateTime};

use crate::accounts::UserId;
use crate::billing::plans::{Interval, Plan};
use crate::db::models::{plan, subscription};
use crate::db::{DbConnection, DbError};

/// A user's current billing period, `[start, end)`, and the plan it bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub plan_id: i64,
    /// The subscription's Stripe id.
    pub subscription: String,
}

impl Period {
    pub fn contains(&self, at: NaiveDateTime) -> bool {
        self.start <= at && at < self.end
    }
}

/// The current period of `user_id`'s live subscription (active, trialing or past due), or
/// `None` without one. Its start is one billing interval before its end (Stripe's periods are
/// whole calendar months or years from the billing anchor); the interval is the yearly price's
/// when the subscription is on it.
pub fn current(conn: &mut DbConnection, user_id: UserId) -> Result<Option<Period>, DbError> {
    let Some(row) = subscription::current_for_user(conn, user_id)? else {
        return Ok(None);
    };
    let (Some(end), Some(plan_id), true) =
        (row.current_period_end, row.plan_id, row.status.is_live())
    else {
        return Ok(None);
    };
    let Some(plan) = plan::find(conn, plan_id)?.map(Plan::from) else {
        return Ok(None);
    };
    let yearly = plan.interval == Interval::Year
        || plan.stripe_yearly_price_id.as_deref() == Some(row.stripe_price_id.as_str());
    let months = Months::new(if yearly { 12 } else { 1 });
    let start = end.checked_sub_months(months).unwrap_or(end);
    Ok(Some(Period {
        start,
        end,
        plan_id,
        subscription: row.stripe_subscription_id.expose().to_owned(),
    }))
}
