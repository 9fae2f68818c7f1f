//! Spend on usage in a period, and the alert and caps that watch it.

use crate::accounts::UserId;
use crate::db::models::usage;
use crate::db::{DbConnection, DbError};

use super::Period;
use super::meters::Component;

/// The spend settings in force for a user (minor units per billing period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendLimits {
    /// The customer's alert: notified at 80 % and 100 % of it.
    pub alert: Option<i64>,
    /// The customer's own hard cap.
    pub own_cap: Option<i64>,
    /// The plan's hard cap (set by an admin).
    pub plan_cap: Option<i64>,
}

impl SpendLimits {
    /// The cap reservations respect: the lower of the customer's and the plan's.
    pub fn cap(&self) -> Option<i64> {
        match (self.own_cap, self.plan_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub fn limits(
    conn: &mut DbConnection,
    user_id: UserId,
    plan_id: i64,
) -> Result<SpendLimits, DbError> {
    let settings = usage::spend_settings(conn, user_id, plan_id)?;
    Ok(SpendLimits {
        alert: settings.alert,
        own_cap: settings.own_cap,
        plan_cap: settings.plan_cap,
    })
}

/// Per feature of the plan: units used and units held by live reservations this period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUsage {
    pub component: Component,
    pub used: i64,
    pub reserved: i64,
}

impl FeatureUsage {
    pub fn charge(&self) -> i64 {
        self.component.rate.charge(self.used)
    }
}

/// The plan's components with the user's counters for `period`.
pub fn usage_by_feature(
    conn: &mut DbConnection,
    user_id: UserId,
    period: &Period,
    components: Vec<Component>,
) -> Result<Vec<FeatureUsage>, DbError> {
    let counters = usage::counters(conn, user_id, period.end)?;
    Ok(components
        .into_iter()
        .map(|component| {
            let (used, reserved) = counters
                .iter()
                .find(|(feature, _, _)| *feature == component.feature)
                .map_or((0, 0), |(_, used, reserved)| (*used, *reserved));
            FeatureUsage {
                component,
                used,
                reserved,
            }
        })
        .collect())
}

/// What the used units cost so far this period, over every feature (minor units).
pub fn spent(features: &[FeatureUsage]) -> i64 {
    features
        .iter()
        .map(FeatureUsage::charge)
        .fold(0i64, i64::saturating_add)
}
