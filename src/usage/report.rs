//! Usage reported by services (`POST /internal/v1/usage`): a batch of records is parsed and
//! checked whole, then stored all at once or not at all, in one transaction, through
//! [`records::store_all`] — the same rules as every other usage write. Each distinct user is
//! resolved once per batch (exists, current period, Stripe customer), and after storing, each
//! user's spend is checked against their alert ([`thresholds::check`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDateTime, Timelike as _};
use diesel::Connection as _;
use serde::Deserialize;
use serde_json::Value;

use crate::accounts::UserId;
use crate::db::models::{billing_customer, usage, user};
use crate::db::{DbConnection, DbError};

use super::records::{self, Destination, NewUsage, Stored};
use super::{period, thresholds};

/// The most records one call may carry.
pub const MAX_RECORDS: usize = 1000;
/// How far back a record's timestamp may be (Stripe's meter events accept 35 days).
const MAX_AGE: Duration = Duration::days(35);
/// How far ahead a record's timestamp may be (clock drift).
const MAX_AHEAD: Duration = Duration::minutes(5);
const MAX_KEY_LEN: usize = 100;
const MAX_FEATURE_LEN: usize = 100;

/// Why a batch was refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The first offending record, when one is to blame (not for a batch of the wrong size).
    pub index: Option<usize>,
    pub message: String,
}

impl Invalid {
    fn batch(message: &str) -> Self {
        Self {
            index: None,
            message: message.to_owned(),
        }
    }

    fn record(index: usize, message: &str) -> Self {
        Self {
            index: Some(index),
            message: format!("record {index}: {message}"),
        }
    }
}

/// One record as a service sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    user_id: i64,
    feature: String,
    quantity: i64,
    idempotency_key: String,
    /// Unix seconds; now when left out.
    timestamp: Option<i64>,
    #[serde(default)]
    byok: bool,
}

/// A parsed record: `occurred_at` is `None` when the service left the timestamp out (then it
/// is the time of the first report of its key, so that a retry is a duplicate).
#[derive(Debug, Clone)]
pub struct Record {
    usage: NewUsage,
    timestamp_given: bool,
}

impl Record {
    pub fn key(&self) -> &str {
        &self.usage.idempotency_key
    }

    /// The customer it counts for.
    pub fn user_id(&self) -> crate::accounts::UserId {
        self.usage.user_id
    }
}

/// Parses a request body: `{"records": [ … ]}` (1 to [`MAX_RECORDS`]) or one record object.
/// `now` is the server's clock; `service` names the reporting token.
pub fn parse(body: &[u8], now: NaiveDateTime, service: &str) -> Result<Vec<Record>, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Invalid::batch("the body is not JSON: send {\"records\": [{\"user_id\", \"feature\", \"quantity\", \"idempotency_key\"}, …]}")
    })?;
    let items = match value {
        Value::Object(mut object) if object.contains_key("records") => {
            match object.remove("records") {
                Some(Value::Array(items)) if object.is_empty() => items,
                _ => {
                    return Err(Invalid::batch(
                        "\"records\" must be the only field, an array",
                    ));
                }
            }
        }
        single @ Value::Object(_) => vec![single],
        _ => return Err(Invalid::batch("send a JSON object")),
    };
    if items.is_empty() || items.len() > MAX_RECORDS {
        return Err(Invalid::batch("send 1 to 1000 records"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_record(index, item, now, service))
        .collect()
}

fn parse_record(
    index: usize,
    item: Value,
    now: NaiveDateTime,
    service: &str,
) -> Result<Record, Invalid> {
    let raw: RawRecord = serde_json::from_value(item).map_err(|_| {
        Invalid::record(
            index,
            "expected {\"user_id\": integer, \"feature\": string, \"quantity\": integer, \"idempotency_key\": string, \"timestamp\"?: integer, \"byok\"?: boolean}",
        )
    })?;
    if raw.user_id < 1 {
        return Err(Invalid::record(index, "user_id must be a positive integer"));
    }
    if raw.feature.is_empty()
        || raw.feature.len() > MAX_FEATURE_LEN
        || !raw.feature.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Invalid::record(
            index,
            "feature must be a metered feature's key",
        ));
    }
    if !(1..=super::quota::MAX_QUANTITY).contains(&raw.quantity) {
        return Err(Invalid::record(
            index,
            "quantity must be at least 1 and at most 1,000,000,000,000",
        ));
    }
    if raw.idempotency_key.is_empty()
        || raw.idempotency_key.len() > MAX_KEY_LEN
        || !raw
            .idempotency_key
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(Invalid::record(
            index,
            "idempotency_key must be 1 to 100 printable ASCII characters",
        ));
    }
    let occurred_at = match raw.timestamp {
        None => now.with_nanosecond(0).unwrap_or(now),
        Some(seconds) => DateTime::from_timestamp(seconds, 0)
                .map(|at| at.naive_utc())
                .filter(|at| *at >= now - MAX_AGE && *at <= now + MAX_AHEAD)
                .ok_or_else(|| {
                    Invalid::record(
                        index,
                        "timestamp must be Unix seconds within the last 35 days and at most 5 minutes ahead",
                    )
                })?,
    };
    Ok(Record {
        usage: NewUsage {
            user_id: UserId::from(raw.user_id),
            feature: raw.feature,
            quantity: raw.quantity,
            idempotency_key: raw.idempotency_key,
            occurred_at,
            byok: raw.byok,
            reservation_id: None,
            service: service.to_owned(),
        },
        timestamp_given: raw.timestamp.is_some(),
    })
}

/// What a batch came to: each record's fate, in order, or why none was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Stored(Vec<Stored>),
    Rejected(Invalid),
}

/// Stores a parsed batch in one transaction: all of it, or — when a record names an unknown
/// user or a feature without a meter — none of it.
pub fn store(conn: &mut DbConnection, records: Vec<Record>) -> Result<Reported, DbError> {
    conn.transaction(|conn| {
        // The writes come first (SQLite takes its write lock; PostgreSQL locks the users' rows
        // in id order): the reads that decide where usage goes cannot go stale under us. Each
        // step is one statement for the whole batch, whatever its size.
        let mut first_of_user: BTreeMap<UserId, usize> = BTreeMap::new();
        for (index, record) in records.iter().enumerate() {
            first_of_user.entry(record.usage.user_id).or_insert(index);
        }
        let user_ids: Vec<UserId> = first_of_user.keys().copied().collect();
        let existing: HashSet<UserId> = user::lock_all(conn, &user_ids)?.into_iter().collect();
        let features: BTreeSet<&str> = records.iter().map(|r| r.usage.feature.as_str()).collect();
        let metered: BTreeSet<String> =
            usage::metered_features(conn, &features.into_iter().collect::<Vec<_>>())?
                .into_iter()
                .collect();
        if let Some(index) = records
            .iter()
            .position(|r| !metered.contains(&r.usage.feature))
        {
            return Ok(Reported::Rejected(Invalid::record(
                index,
                "feature is not a metered feature",
            )));
        }
        if let Some(&index) = first_of_user
            .iter()
            .find_map(|(user_id, index)| (!existing.contains(user_id)).then_some(index))
        {
            return Ok(Reported::Rejected(Invalid::record(index, "unknown user")));
        }
        let mut periods = period::current_of(conn, &user_ids)?;
        let customers: HashSet<UserId> = billing_customer::users_with_customer(conn, &user_ids)?
            .into_iter()
            .collect();
        let destinations: HashMap<UserId, Destination> = user_ids
            .iter()
            .map(|&user_id| {
                let destination = Destination {
                    period: periods.remove(&user_id),
                    has_customer: customers.contains(&user_id),
                };
                (user_id, destination)
            })
            .collect();
        let usages = with_first_times(conn, records)?;
        let stored = records::store_all(conn, &usages, |user_id| destinations.get(&user_id))?;
        let counted: BTreeSet<UserId> = usages
            .iter()
            .zip(&stored)
            .filter(|(usage, outcome)| matches!(outcome, Stored::Accepted(_)) && !usage.byok)
            .map(|(usage, _)| usage.user_id)
            .collect();
        // Only a customer with an alert can cross a threshold: one query finds them.
        let counted: Vec<UserId> = counted.into_iter().collect();
        let alerted: BTreeSet<UserId> = if counted.is_empty() {
            BTreeSet::new()
        } else {
            usage::users_with_alert(conn, &counted)?
                .into_iter()
                .collect()
        };
        for user_id in alerted {
            if let Some(period) = destinations.get(&user_id).and_then(|d| d.period.as_ref()) {
                thresholds::check(conn, user_id, period)?;
            }
        }
        Ok(Reported::Stored(stored))
    })
}

/// A record without a timestamp whose key was reported before happened when it was first
/// reported: its retry is then the same record (a duplicate), not a conflict.
fn with_first_times(
    conn: &mut DbConnection,
    records: Vec<Record>,
) -> Result<Vec<NewUsage>, DbError> {
    let untimed: Vec<&str> = records
        .iter()
        .filter(|r| !r.timestamp_given)
        .map(|r| r.usage.idempotency_key.as_str())
        .collect();
    let first: HashMap<String, NaiveDateTime> = if untimed.is_empty() {
        HashMap::new()
    } else {
        usage::occurred_at_of_keys(conn, &untimed)?
            .into_iter()
            .collect()
    };
    Ok(records
        .into_iter()
        .map(|record| {
            let mut usage = record.usage;
            if !record.timestamp_given
                && let Some(at) = first.get(&usage.idempotency_key)
            {
                usage.occurred_at = *at;
            }
            usage
        })
        .collect())
}
