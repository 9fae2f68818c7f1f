//! What the usage page shows: the current period's usage per metered feature against its
//! included quantity and quota, BYOK usage apart, the daily totals, the spend settings, and the
//! period's records as a CSV file.

use chrono::NaiveDateTime;

use crate::accounts::UserId;
use crate::audit::query::defuse_formula;
use crate::db::models::plan;
use crate::db::models::usage::UsageRecordRow;
use crate::db::models::usage_view::{self, DailyTotal};
use crate::db::{DbConnection, DbError};

use super::spend::{self, FeatureUsage, SpendLimits};
use super::{Period, meters, period};

/// BYOK usage of one feature this period: shown, never billed or counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByokUsage {
    pub feature: String,
    pub unit_name: String,
    pub quantity: i64,
}

/// A user's usage in their current period.
#[derive(Debug, Clone)]
pub struct Summary {
    pub period: Period,
    pub plan_name: String,
    pub currency: String,
    /// The plan's metered features with the platform usage counted against them.
    pub features: Vec<FeatureUsage>,
    pub byok: Vec<ByokUsage>,
    /// Per day, feature and BYOK flag.
    pub daily: Vec<DailyTotal>,
    pub limits: SpendLimits,
}

impl Summary {
    /// What the platform usage costs so far (minor units).
    pub fn spent(&self) -> i64 {
        spend::spent(&self.features)
    }
}

/// The user's current period's usage, or `None` without a live subscription. One read, in one
/// connection, before any call to Stripe.
pub fn current(conn: &mut DbConnection, user_id: UserId) -> Result<Option<Summary>, DbError> {
    let Some(period) = period::current(conn, user_id)? else {
        return Ok(None);
    };
    let Some(plan) = plan::find(conn, period.plan_id)? else {
        return Ok(None);
    };
    let components = meters::of_plan(conn, period.plan_id)?;
    let daily = usage_view::daily_totals(conn, user_id, period.start, period.end)?;
    // Every feature used with the customer's own key, in the plan or not.
    let mut byok: Vec<ByokUsage> = Vec::new();
    for day in daily.iter().filter(|d| d.byok) {
        match byok.iter_mut().find(|b| b.feature == day.feature) {
            Some(seen) => seen.quantity = seen.quantity.saturating_add(day.quantity),
            None => byok.push(ByokUsage {
                feature: day.feature.clone(),
                unit_name: components
                    .iter()
                    .find(|c| c.feature == day.feature)
                    .map_or_else(|| day.feature.clone(), |c| c.unit_name.clone()),
                quantity: day.quantity,
            }),
        }
    }
    let features = spend::usage_by_feature(conn, user_id, &period, components)?;
    let limits = spend::limits(conn, user_id, period.plan_id)?;
    Ok(Some(Summary {
        plan_name: plan.name,
        currency: plan.currency,
        features,
        byok,
        daily,
        limits,
        period,
    }))
}

/// The records of the user's current period (none without one), oldest first.
pub fn current_records(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Vec<UsageRecordRow>, DbError> {
    match period::current(conn, user_id)? {
        Some(period) => usage_view::records_between(conn, user_id, period.start, period.end),
        None => Ok(Vec::new()),
    }
}

fn timestamp(at: &NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const CSV_HEADER: [&str; 5] = ["date", "feature", "quantity", "byok", "idempotency_key"];

/// `records` as CSV: a header, then one line per record. Text cells a spreadsheet would run
/// as a formula are defused (the services choose features' keys and idempotency keys).
pub fn csv(records: &[UsageRecordRow]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(CSV_HEADER)?;
    for record in records {
        writer.write_record([
            timestamp(&record.occurred_at).as_str(),
            &defuse_formula(&record.feature),
            &record.quantity.to_string(),
            if record.byok { "true" } else { "false" },
            &defuse_formula(&record.idempotency_key),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}
