//! Alerts: when failures of one kind pile up (N or more within a window), one CRITICAL `alert`
//! audit event and one ERROR log line, at most once per window, however many instances share
//! the database. The failures are counted from the audit log itself, repeats included: an
//! aggregated row counts as many failures as its `count`.

use chrono::Duration;
use diesel::prelude::*;

use super::{Kind, SecurityEvent, write};
use crate::config::AlertSettings;
use crate::db::models::security_event;
use crate::db::schema::alert_state;
use crate::db::{DbConnection, DbError, now, per_backend};

/// What to count, and how many within how long raise the alert.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The alert's stable name (in the `alert` event's details and the log line).
    pub name: &'static str,
    pub counts: Kind,
    pub threshold: u32,
    pub window_secs: u32,
}

impl Rule {
    pub fn webhook_signature_failures(settings: &AlertSettings) -> Self {
        Self {
            name: "webhook_signature_failures",
            counts: Kind::WebhookInvalidSignature,
            threshold: settings.webhook_signature_failures,
            window_secs: settings.window_secs,
        }
    }

    pub fn payment_failures(settings: &AlertSettings) -> Self {
        Self {
            name: "payment_failures",
            counts: Kind::PaymentFailed,
            threshold: settings.payment_failures,
            window_secs: settings.window_secs,
        }
    }
}

/// Counts the rule's events in the window and raises the alert if they reach the threshold and
/// it was not raised within the window already. Returns whether this call raised it.
pub fn check(conn: &mut DbConnection, rule: &Rule) -> Result<bool, DbError> {
    let at = now();
    let since = at - Duration::seconds(rule.window_secs.into());
    let count = security_event::occurrences_since(conn, rule.counts.as_str(), since)?;
    if count < i64::from(rule.threshold) {
        return Ok(false);
    }
    ensure_state_row(conn, rule.name)?;
    // Exactly one caller per window wins this update.
    let claimed = diesel::update(
        alert_state::table
            .find(rule.name)
            .filter(alert_state::last_raised_at.le(since)),
    )
    .set(alert_state::last_raised_at.eq(at))
    .execute(conn)?;
    if claimed == 0 {
        return Ok(false);
    }
    write(
        conn,
        &SecurityEvent::new(Kind::Alert)
            .actor("tollgate")
            .details(serde_json::json!({
                "alert": rule.name,
                "count": count,
                "threshold": rule.threshold,
                "window_secs": rule.window_secs,
            })),
    )?;
    tracing::error!(
        alert = rule.name,
        count,
        window_secs = rule.window_secs,
        "ALERT: {count} {} events within {} s",
        rule.counts.as_str(),
        rule.window_secs
    );
    Ok(true)
}

/// Creates the rule's state row (never raised) unless it exists. `ON CONFLICT` is spelled per
/// backend: diesel's multi-backend connection has no portable form of it.
fn ensure_state_row(conn: &mut DbConnection, name: &str) -> Result<(), DbError> {
    let never = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let row = (
        alert_state::name.eq(name),
        alert_state::last_raised_at.eq(never),
    );
    let insert = diesel::insert_into(alert_state::table).values(row);
    per_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(())
}
