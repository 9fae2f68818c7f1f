//! Storing reported usage: the one write path for a usage record, shared by the usage API
//! and by committed reservations.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;

use crate::accounts::UserId;
use crate::db::models::usage::{self, NewUsageRecord, UsageRecordRow};
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
///
/// A constant number of statements whatever the batch's size: the records are inserted in one
/// statement (ordered by key, so two batches sharing keys never wait on each other in opposite
/// orders), the keys already taken are read back in one more, the counters are bumped in one
/// statement (in user, feature and period order) and the outbox rows inserted in one.
pub fn store_all<'d>(
    conn: &mut DbConnection,
    usages: &[NewUsage],
    destination: impl Fn(UserId) -> Option<&'d Destination>,
) -> Result<Vec<Stored>, DbError> {
    let created_at = now();
    let mut first_of_key: HashMap<&str, usize> = HashMap::with_capacity(usages.len());
    for (index, usage) in usages.iter().enumerate() {
        first_of_key
            .entry(usage.idempotency_key.as_str())
            .or_insert(index);
    }
    let mut fresh: Vec<&NewUsage> = first_of_key.values().map(|&i| &usages[i]).collect();
    fresh.sort_unstable_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    let rows: Vec<NewUsageRecord<'_>> = fresh
        .iter()
        .map(|usage| NewUsageRecord {
            user_id: usage.user_id,
            feature: &usage.feature,
            quantity: usage.quantity,
            idempotency_key: &usage.idempotency_key,
            occurred_at: usage.occurred_at,
            byok: usage.byok,
            reservation_id: usage.reservation_id.as_deref(),
            service: &usage.service,
            created_at,
        })
        .collect();
    let inserted: HashMap<String, i64> = usage::insert_records(conn, &rows)?.into_iter().collect();
    let taken: Vec<&str> = fresh
        .iter()
        .map(|usage| usage.idempotency_key.as_str())
        .filter(|key| !inserted.contains_key(*key))
        .collect();
    let stored_before: HashMap<String, UsageRecordRow> = if taken.is_empty() {
        HashMap::new()
    } else {
        usage::records_by_keys(conn, &taken)?
            .into_iter()
            .map(|row| (row.idempotency_key.clone(), row))
            .collect()
    };

    let mut results = Vec::with_capacity(usages.len());
    let mut counters: BTreeMap<(UserId, &str, NaiveDateTime), i64> = BTreeMap::new();
    let mut outbox = Vec::new();
    for (index, usage) in usages.iter().enumerate() {
        let key = usage.idempotency_key.as_str();
        let id = inserted.get(key).copied();
        let first = first_of_key.get(key).copied().unwrap_or(index);
        let Some(id) = id.filter(|_| first == index) else {
            // The key's holder: the batch's first record of it when that one was stored now,
            // else the record stored before.
            let same = match id {
                Some(_) => usages
                    .get(first)
                    .is_some_and(|holder| facts(holder) == facts(usage)),
                None => stored_before
                    .get(key)
                    .is_some_and(|stored| stored_facts(stored) == facts(usage)),
            };
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
    let counters: Vec<_> = counters
        .into_iter()
        .map(|((user_id, feature, period_end), used)| (user_id, feature, period_end, used))
        .collect();
    usage::add_used_all(conn, &counters)?;
    usage::enqueue_all(conn, &outbox)?;
    Ok(results)
}

/// What a report of usage says (two reports of one key that say the same are one report).
type Facts<'a> = (UserId, &'a str, i64, NaiveDateTime, bool);

fn facts(usage: &NewUsage) -> Facts<'_> {
    let NewUsage {
        user_id,
        feature,
        quantity,
        occurred_at,
        byok,
        ..
    } = usage;
    (*user_id, feature, *quantity, *occurred_at, *byok)
}

fn stored_facts(row: &UsageRecordRow) -> Facts<'_> {
    let UsageRecordRow {
        user_id,
        feature,
        quantity,
        occurred_at,
        byok,
        ..
    } = row;
    (*user_id, feature, *quantity, *occurred_at, *byok)
}
