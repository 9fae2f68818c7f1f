//! Spend alerts: when a customer's platform usage this period reaches 80 % and then 100 % of
//! their spend alert, they are told once per threshold and period — an e-mail and the app
//! webhook `usage.threshold_reached`, through the outbox — and it is audited.

use serde_json::json;

use crate::accounts::UserId;
use crate::audit::{self, Kind, SecurityEvent};
use crate::db::models::{plan, usage, user};
use crate::db::{DbConnection, DbError};
use crate::notify::{self, AppEvent, Email, email::Money};

use super::{Period, meters, spend};

/// The thresholds, in percent of the alert, in the order they are reached.
pub const PERCENTS: [i64; 2] = [80, 100];

/// Checks `user_id`'s spend in `period` against their alert and queues the notifications of
/// every threshold it reached for the first time. Call it in the transaction that stored the
/// user's platform usage, after storing it (the usage API does, once per user and batch; a
/// committed reservation must too): the `usage_thresholds_sent` row commits with the usage,
/// and its key makes each threshold notify once, whoever races. Returns the thresholds it
/// recorded now.
pub fn check(
    conn: &mut DbConnection,
    user_id: UserId,
    period: &Period,
) -> Result<Vec<i64>, DbError> {
    let limits = spend::limits(conn, user_id, period.plan_id)?;
    let Some(alert) = limits.alert.filter(|amount| *amount > 0) else {
        return Ok(Vec::new());
    };
    let components = meters::of_plan(conn, period.plan_id)?;
    let features = spend::usage_by_feature(conn, user_id, period, components)?;
    let spent = spend::spent(&features);
    let mut reached = Vec::new();
    for percent in PERCENTS {
        if spent.saturating_mul(100) < alert.saturating_mul(percent) {
            break;
        }
        if usage::mark_threshold(conn, user_id, period.end, percent)? {
            reached.push(percent);
        }
    }
    if reached.is_empty() {
        return Ok(reached);
    }
    let currency =
        plan::find(conn, period.plan_id)?.map_or_else(|| "usd".to_owned(), |plan| plan.currency);
    let recipient = user::find(conn, user_id)?.map(|row| row.email);
    for &percent in &reached {
        notify_threshold(
            conn,
            user_id,
            period,
            Threshold {
                percent,
                alert,
                spent,
                currency: &currency,
            },
            recipient.as_deref(),
        )?;
    }
    Ok(reached)
}

struct Threshold<'a> {
    percent: i64,
    alert: i64,
    spent: i64,
    currency: &'a str,
}

fn notify_threshold(
    conn: &mut DbConnection,
    user_id: UserId,
    period: &Period,
    threshold: Threshold<'_>,
    recipient: Option<&str>,
) -> Result<(), DbError> {
    let Threshold {
        percent,
        alert,
        spent,
        currency,
    } = threshold;
    let period_end = period.end.and_utc().timestamp();
    let cause = format!("usage_threshold:{user_id}:{period_end}:{percent}");
    notify::publish(
        conn,
        AppEvent::UsageThresholdReached,
        user_id,
        json!({
            "percent": percent,
            "alert_amount": alert,
            "spent": spent,
            "currency": currency,
            "period_end": period_end,
        }),
        &cause,
    )?;
    if let Some(to) = recipient {
        let message = Email::UsageThreshold {
            percent,
            alert: Money {
                amount: alert,
                currency: currency.to_owned(),
            },
            spent: Money {
                amount: spent,
                currency: currency.to_owned(),
            },
            period_end: Some(period.end),
        };
        notify::email(conn, Some(user_id), to, &message, &cause)?;
    }
    let event = SecurityEvent::new(Kind::UsageThresholdReached)
        .actor(format!("user:{user_id}"))
        .details(json!({
            "user_id": user_id,
            "percent": percent,
            "alert_amount": alert,
            "spent": spent,
            "currency": currency,
            "period_end": period_end,
        }));
    audit::write(conn, &event)
}
