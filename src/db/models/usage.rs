//! The usage tables (issue 16): metered components, stored usage, its counters and outbox.
//! Domain rules live in `crate::usage`; this module only reads and writes rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::{
    plan_meters, plan_spend_caps, usage_counters, usage_meters, usage_outbox, usage_records,
    usage_spend_limits, usage_thresholds_sent,
};
use crate::db::{DbConnection, DbError, now, per_backend};

/// A plan's metered component joined with its feature's meter.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = plan_meters)]
pub struct PlanMeterRow {
    pub id: i64,
    pub plan_id: i64,
    pub feature: String,
    pub included: i64,
    pub package_size: i64,
    pub package_amount: i64,
    pub quota: Option<i64>,
    pub fail_open: bool,
    pub stripe_price_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_meters)]
pub struct UsageMeterRow {
    pub feature: String,
    pub unit_name: String,
    pub event_name: String,
    pub stripe_meter_id: Option<String>,
}

/// The plan's metered components with their meters, by feature.
pub fn components_of_plan(
    conn: &mut DbConnection,
    plan_id: i64,
) -> Result<Vec<(PlanMeterRow, UsageMeterRow)>, DbError> {
    per_backend!(conn, |c| Ok(plan_meters::table
        .inner_join(usage_meters::table)
        .filter(plan_meters::plan_id.eq(plan_id))
        .order(plan_meters::feature.asc())
        .select((PlanMeterRow::as_select(), UsageMeterRow::as_select()))
        .load(c)?))
}

/// The meter of `feature`, if it is a metered feature.
pub fn meter(conn: &mut DbConnection, feature: &str) -> Result<Option<UsageMeterRow>, DbError> {
    per_backend!(conn, |c| Ok(usage_meters::table
        .find(feature)
        .select(UsageMeterRow::as_select())
        .first(c)
        .optional()?))
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_records)]
pub struct UsageRecordRow {
    pub id: i64,
    pub user_id: UserId,
    pub feature: String,
    pub quantity: i64,
    pub idempotency_key: String,
    pub occurred_at: NaiveDateTime,
    pub byok: bool,
    pub reservation_id: Option<String>,
    pub service: String,
    pub forwarded_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// `None` is inserted as NULL, not as `DEFAULT`: a batch is then one multi-row statement on
/// SQLite too (SQLite has no `DEFAULT` in `VALUES`, and diesel would insert row by row).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = usage_records, treat_none_as_default_value = false)]
pub struct NewUsageRecord<'a> {
    pub user_id: UserId,
    pub feature: &'a str,
    pub quantity: i64,
    pub idempotency_key: &'a str,
    pub occurred_at: NaiveDateTime,
    pub byok: bool,
    pub reservation_id: Option<&'a str>,
    pub service: &'a str,
    pub created_at: NaiveDateTime,
}

/// The record stored under `key`.
/// Inserts the records whose idempotency keys are not taken (the keys of `records` are
/// distinct), in one statement on PostgreSQL: `(idempotency_key, id)` of those inserted. A
/// racing insert of the same key waits for the first to commit and inserts nothing.
pub fn insert_records(
    conn: &mut DbConnection,
    records: &[NewUsageRecord<'_>],
) -> Result<Vec<(String, i64)>, DbError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    per_backend!(conn, |c| Ok(diesel::insert_into(usage_records::table)
        .values(records)
        .on_conflict_do_nothing()
        .returning((usage_records::idempotency_key, usage_records::id))
        .get_results(c)?))
}

/// The stored records with any of `keys`.
pub fn records_by_keys(
    conn: &mut DbConnection,
    keys: &[&str],
) -> Result<Vec<UsageRecordRow>, DbError> {
    per_backend!(conn, |c| Ok(usage_records::table
        .filter(usage_records::idempotency_key.eq_any(keys))
        .select(UsageRecordRow::as_select())
        .load(c)?))
}

/// Adds units to many counters (distinct: user, feature, period end), creating those not there
/// yet, in one statement: each `(user_id, feature, period_end, used)`.
pub fn add_used_all(
    conn: &mut DbConnection,
    counters: &[(UserId, &str, NaiveDateTime, i64)],
) -> Result<(), DbError> {
    if counters.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = counters
        .iter()
        .map(|&(user_id, feature, period_end, used)| {
            (
                usage_counters::user_id.eq(user_id),
                usage_counters::feature.eq(feature),
                usage_counters::period_end.eq(period_end),
                usage_counters::used.eq(used),
                usage_counters::reserved.eq(0),
            )
        })
        .collect();
    per_backend!(conn, |c| {
        diesel::insert_into(usage_counters::table)
            .values(&rows)
            .on_conflict((
                usage_counters::user_id,
                usage_counters::feature,
                usage_counters::period_end,
            ))
            .do_update()
            .set(
                usage_counters::used
                    .eq(usage_counters::used + diesel::upsert::excluded(usage_counters::used)),
            )
            .execute(c)?;
        Ok(())
    })
}

/// The user's counters for the period ending `period_end`: `(feature, used, reserved)`.
pub fn counters(
    conn: &mut DbConnection,
    user_id: UserId,
    period_end: NaiveDateTime,
) -> Result<Vec<(String, i64, i64)>, DbError> {
    per_backend!(conn, |c| Ok(usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::period_end.eq(period_end))
        .select((
            usage_counters::feature,
            usage_counters::used,
            usage_counters::reserved,
        ))
        .load(c)?))
}

/// Queues records `ids` for Stripe's meter events API, due now, in one statement.
pub fn enqueue_all(conn: &mut DbConnection, ids: &[i64]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let at = now();
    let rows: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                usage_outbox::usage_record_id.eq(*id),
                usage_outbox::attempts.eq(0),
                usage_outbox::next_attempt_at.eq(at),
            )
        })
        .collect();
    per_backend!(conn, |c| {
        diesel::insert_into(usage_outbox::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(c)?;
        Ok(())
    })
}

/// The customer's own spend alert and cap, and their plan's cap (minor units per period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendSettings {
    pub alert: Option<i64>,
    pub own_cap: Option<i64>,
    pub plan_cap: Option<i64>,
}

pub fn spend_settings(
    conn: &mut DbConnection,
    user_id: UserId,
    plan_id: i64,
) -> Result<SpendSettings, DbError> {
    per_backend!(conn, |c| {
        let own: Option<(Option<i64>, Option<i64>)> = usage_spend_limits::table
            .find(user_id)
            .select((
                usage_spend_limits::alert_amount,
                usage_spend_limits::cap_amount,
            ))
            .first(c)
            .optional()?;
        let plan: Option<i64> = plan_spend_caps::table
            .find(plan_id)
            .select(plan_spend_caps::cap_amount)
            .first(c)
            .optional()?;
        let (alert, own_cap) = own.unwrap_or((None, None));
        Ok(SpendSettings {
            alert,
            own_cap,
            plan_cap: plan,
        })
    })
}

/// Which of `user_ids` have set a spend alert.
pub fn users_with_alert(
    conn: &mut DbConnection,
    user_ids: &[UserId],
) -> Result<Vec<UserId>, DbError> {
    per_backend!(conn, |c| Ok(usage_spend_limits::table
        .filter(usage_spend_limits::user_id.eq_any(user_ids))
        .filter(usage_spend_limits::alert_amount.gt(0))
        .select(usage_spend_limits::user_id)
        .load(c)?))
}

/// Which of `features` are metered features (have a meter).
pub fn metered_features(
    conn: &mut DbConnection,
    features: &[&str],
) -> Result<Vec<String>, DbError> {
    per_backend!(conn, |c| Ok(usage_meters::table
        .filter(usage_meters::feature.eq_any(features))
        .select(usage_meters::feature)
        .load(c)?))
}

/// Records that the user's spend reached `percent` of their alert in the period ending
/// `period_end`, unless it was recorded before. Returns whether this call recorded it (the
/// primary key makes it once, whoever races).
pub fn mark_threshold(
    conn: &mut DbConnection,
    user_id: UserId,
    period_end: NaiveDateTime,
    percent: i64,
) -> Result<bool, DbError> {
    let inserted = per_backend!(conn, |c| diesel::insert_into(usage_thresholds_sent::table)
        .values((
            usage_thresholds_sent::user_id.eq(user_id),
            usage_thresholds_sent::period_end.eq(period_end),
            usage_thresholds_sent::percent.eq(percent),
            usage_thresholds_sent::sent_at.eq(now()),
        ))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// `(idempotency_key, occurred_at)` of the stored records among `keys`.
pub fn occurred_at_of_keys(
    conn: &mut DbConnection,
    keys: &[&str],
) -> Result<Vec<(String, NaiveDateTime)>, DbError> {
    per_backend!(conn, |c| Ok(usage_records::table
        .filter(usage_records::idempotency_key.eq_any(keys))
        .select((usage_records::idempotency_key, usage_records::occurred_at))
        .load(c)?))
}

/// A claimed outbox row with what its meter event needs.
#[derive(Debug, Clone)]
pub struct DueUsage {
    pub record_id: i64,
    pub attempts: i64,
    pub user_id: UserId,
    pub quantity: i64,
    pub occurred_at: NaiveDateTime,
    pub event_name: String,
    /// When the record was stored: part of its meter event's identifier.
    pub created_at: NaiveDateTime,
}

/// Claims up to `limit` outbox rows due at `at`, oldest first: each claimed row is leased
/// until `lease_until` (its `next_attempt_at`), so no other sender takes it meanwhile; a
/// sender that dies leaves it due again when the lease runs out. On PostgreSQL the rows are
/// locked with `FOR UPDATE SKIP LOCKED` (concurrent senders pass over each other's rows); on
/// SQLite the transaction takes the write lock before it chooses them.
pub fn claim_due(
    conn: &mut DbConnection,
    at: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> Result<Vec<DueUsage>, DbError> {
    use diesel::Connection as _;

    conn.transaction(|conn| {
        let ids: Vec<i64> = match conn {
            DbConnection::Postgresql(pg) => {
                let ids: Vec<i64> = usage_outbox::table
                    .filter(usage_outbox::next_attempt_at.le(at))
                    .order((usage_outbox::next_attempt_at, usage_outbox::usage_record_id))
                    .limit(limit)
                    .select(usage_outbox::usage_record_id)
                    .for_update()
                    .skip_locked()
                    .load(pg)?;
                diesel::update(
                    usage_outbox::table.filter(usage_outbox::usage_record_id.eq_any(&ids)),
                )
                .set(usage_outbox::next_attempt_at.eq(lease_until))
                .execute(pg)?;
                ids
            }
            DbConnection::Sqlite(sqlite) => {
                // A write first: SQLite's write lock is taken before the rows are chosen.
                diesel::update(usage_outbox::table.filter(usage_outbox::usage_record_id.eq(-1)))
                    .set(usage_outbox::attempts.eq(usage_outbox::attempts))
                    .execute(sqlite)?;
                let ids: Vec<i64> = usage_outbox::table
                    .filter(usage_outbox::next_attempt_at.le(at))
                    .order((usage_outbox::next_attempt_at, usage_outbox::usage_record_id))
                    .limit(limit)
                    .select(usage_outbox::usage_record_id)
                    .load(sqlite)?;
                diesel::update(
                    usage_outbox::table.filter(usage_outbox::usage_record_id.eq_any(&ids)),
                )
                .set(usage_outbox::next_attempt_at.eq(lease_until))
                .execute(sqlite)?;
                ids
            }
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64, UserId, i64, NaiveDateTime, String, NaiveDateTime)> =
            per_backend!(conn, |c| {
                usage_outbox::table
                    .inner_join(usage_records::table)
                    .inner_join(
                        usage_meters::table.on(usage_meters::feature.eq(usage_records::feature)),
                    )
                    .filter(usage_outbox::usage_record_id.eq_any(&ids))
                    .order((usage_records::occurred_at, usage_records::id))
                    .select((
                        usage_outbox::usage_record_id,
                        usage_outbox::attempts,
                        usage_records::user_id,
                        usage_records::quantity,
                        usage_records::occurred_at,
                        usage_meters::event_name,
                        usage_records::created_at,
                    ))
                    .load(c)?
            });
        Ok(rows
            .into_iter()
            .map(
                |(record_id, attempts, user_id, quantity, occurred_at, event_name, created_at)| {
                    DueUsage {
                        record_id,
                        attempts,
                        user_id,
                        quantity,
                        occurred_at,
                        event_name,
                        created_at,
                    }
                },
            )
            .collect())
    })
}

/// Stripe has the record's meter event: the outbox row goes and the record says when.
pub fn forwarded(
    conn: &mut DbConnection,
    record_id: i64,
    at: NaiveDateTime,
) -> Result<(), DbError> {
    use diesel::Connection as _;

    conn.transaction(|conn| {
        per_backend!(conn, |c| {
            diesel::delete(usage_outbox::table.find(record_id)).execute(c)?;
            diesel::update(usage_records::table.find(record_id))
                .set(usage_records::forwarded_at.eq(at))
                .execute(c)?;
            Ok(())
        })
    })
}

/// An attempt failed: the row stays, due again at `next`, with the failure in words.
pub fn failed(
    conn: &mut DbConnection,
    record_id: i64,
    next: NaiveDateTime,
    error: &str,
) -> Result<(), DbError> {
    per_backend!(conn, |c| {
        diesel::update(usage_outbox::table.find(record_id))
            .set((
                usage_outbox::attempts.eq(usage_outbox::attempts + 1),
                usage_outbox::next_attempt_at.eq(next),
                usage_outbox::last_error.eq(error),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// Rows in the outbox (forwarded or not yet).
pub fn outbox_depth(conn: &mut DbConnection) -> Result<i64, DbError> {
    per_backend!(conn, |c| Ok(usage_outbox::table.count().get_result(c)?))
}
