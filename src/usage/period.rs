//! The billing period usage counts in: the live subscription's current period.

use std::collections::HashMap;

use chrono::{Months, NaiveDateTime};

use crate::accounts::UserId;
use crate::billing::plans::{Interval, Plan};
use crate::db::models::subscription::SubscriptionRow;
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
    Ok(current_of(conn, &[user_id])?.remove(&user_id))
}

/// [`current`] for many users at once, in two queries: the periods of those among `user_ids`
/// that have one.
pub fn current_of(
    conn: &mut DbConnection,
    user_ids: &[UserId],
) -> Result<HashMap<UserId, Period>, DbError> {
    let mut by_user: HashMap<UserId, Vec<SubscriptionRow>> = HashMap::new();
    for row in subscription::all_for_users(conn, user_ids)? {
        by_user.entry(row.user_id).or_default().push(row);
    }
    let current: Vec<SubscriptionRow> = by_user
        .into_values()
        .filter_map(|rows| subscription::pick_current(rows, |row| row))
        .collect();
    let plan_ids: Vec<i64> = current.iter().filter_map(|row| row.plan_id).collect();
    let plans: HashMap<i64, Plan> = plan::find_all(conn, &plan_ids)?
        .into_iter()
        .map(|row| (row.id, Plan::from(row)))
        .collect();
    Ok(current
        .iter()
        .filter_map(|row| {
            let plan = plans.get(&row.plan_id?)?;
            Some((row.user_id, of(row, plan)?))
        })
        .collect())
}

/// The current period of subscription `row` on `plan`, when it is live.
fn of(row: &SubscriptionRow, plan: &Plan) -> Option<Period> {
    let (Some(end), Some(plan_id), true) =
        (row.current_period_end, row.plan_id, row.status.is_live())
    else {
        return None;
    };
    let yearly = plan.interval == Interval::Year
        || plan.stripe_yearly_price_id.as_deref() == Some(row.stripe_price_id.as_str());
    let months = Months::new(if yearly { 12 } else { 1 });
    let start = end.checked_sub_months(months).unwrap_or(end);
    Some(Period {
        start,
        end,
        plan_id,
        subscription: row.stripe_subscription_id.expose().to_owned(),
    })
}
