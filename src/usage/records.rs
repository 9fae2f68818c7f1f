//! Storing reported usage: the one write path for a usage record, shared by the usage API
//! and by committed reservations.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use crate::accounts::UserId;
use crate::db::models::usage::{self, NewUsageRecord};
use crate::db::{DbConnection, DbError, now};

use super::Period;

/// One unit of reported usage, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUsage {
    pub user_id: UserId,
    pub feature: String,
    pub quantity: i64,
    pub idempotency_key: String,
    pub occurred_at: NaiveDateTime,
    /// Made with the customer's own provider key: shown to them, never billed or counted.
    pub byok: bool,
    /// The reservation this usage commits, if any.
    pub reservation_id: Option<String>,
    /// The reporting service token's name.
    pub service: String,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, with this id.
    Accepted(i64),
    /// Its idempotency key was stored before with the same content: counted once, already.
    Duplicate,
    /// Its idempotency key was stored before with other content: refused.
    Conflict,
}

/// Where the user's billable usage goes: the current period (for counters), and whether they
/// have a Stripe customer (for the meter-event outbox).
#[derive(Debug, Clone)]
pub struct Destination {
    pub period: Option<Period>,
    pub has_customer: bool,
}

/// Stores `usage` in the caller's transaction: the record (unless its key is taken), and for
/// platform usage the counter of the period it happened in (when that is the current one) and
/// the outbox row that forwards it to Stripe (when the user has a Stripe customer).
pub fn store(
    conn: &mut DbConnection,
    usage: &NewUsage,
    destination: &Destination,
) -> Result<Stored, DbError> {
    let stored = store_all(conn, std::slice::from_ref(usage), |_| Some(destination))?;
    Ok(stored.first().copied().unwrap_or(Stored::Conflict))
}

/// [`store`] for a batch, in the caller's transaction, with the same rules for every record
/// (in order: a key repeated within the batch is a duplicate or a conflict of the first).
/// `destination` says where each user's usage goes (`None`: no period, no Stripe customer).
/// The counters are bumped once per user, feature and period, in a fixed order (two batches
/// never wait on each other's counters in opposite orders), and the outbox rows are inserted
/// in one statement.
pub fn store_all<'d>(
    conn: &mut DbConnection,
    usages: &[NewUsage],
    destination: impl Fn(UserId) -> Option<&'d Destination>,
) -> Result<Vec<Stored>, DbError> {
    let created_at = now();
    let mut results = Vec::with_capacity(usages.len());
    let mut counters: BTreeMap<(UserId, &str, NaiveDateTime), i64> = BTreeMap::new();
    let mut outbox = Vec::new();
    for usage in usages {
        let row = NewUsageRecord {
            user_id: usage.user_id,
            feature: &usage.feature,
            quantity: usage.quantity,
            idempotency_key: &usage.idempotency_key,
            occurred_at: usage.occurred_at,
            byok: usage.byok,
            reservation_id: usage.reservation_id.as_deref(),
            service: &usage.service,
            created_at,
        };
        let Some(id) = usage::insert_record(conn, &row)? else {
            let same = usage::record_by_key(conn, &usage.idempotency_key)?.is_some_and(|stored| {
                stored.user_id == usage.user_id
                    && stored.feature == usage.feature
                    && stored.quantity == usage.quantity
                    && stored.occurred_at == usage.occurred_at
                    && stored.byok == usage.byok
            });
            results.push(if same {
                Stored::Duplicate
            } else {
                Stored::Conflict
            });
            continue;
        };
        results.push(Stored::Accepted(id));
        // BYOK usage is the customer's own: never counted, never billed.
        if usage.byok {
            continue;
        }
        let Some(destination) = destination(usage.user_id) else {
            continue;
        };
        if let Some(period) = destination
            .period
            .as_ref()
            .filter(|p| p.contains(usage.occurred_at))
        {
            let counter = counters
                .entry((usage.user_id, usage.feature.as_str(), period.end))
                .or_default();
            *counter = counter.saturating_add(usage.quantity);
        }
        if destination.has_customer {
            outbox.push(id);
        }
    }
    for ((user_id, feature, period_end), used) in counters {
        usage::add_used(conn, user_id, feature, period_end, used)?;
    }
    usage::enqueue_all(conn, &outbox)?;
    Ok(results)
}
