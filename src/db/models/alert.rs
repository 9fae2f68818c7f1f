//! `alert_state` (when each alert rule was last raised, and what it counted) and
//! `alert_deliveries` (alert notifications waiting for, or done with, the webhook channel).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{alert_deliveries, alert_state};
use crate::db::{DbConnection, DbError, per_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alert_state)]
pub struct AlertStateRow {
    pub name: String,
    pub last_raised_at: NaiveDateTime,
    pub last_count: i64,
    pub window_secs: i64,
}

/// Creates the rule's state row (never raised) unless it exists. `ON CONFLICT` is spelled per
/// backend: diesel's multi-backend connection has no portable form of it.
pub fn ensure_state(conn: &mut DbConnection, name: &str) -> Result<(), DbError> {
    let never = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let row = (
        alert_state::name.eq(name),
        alert_state::last_raised_at.eq(never),
    );
    let insert = diesel::insert_into(alert_state::table).values(row);
    per_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(())
}

/// Claims the rule's window: sets it raised at `at` unless it was raised after `since`.
/// Exactly one caller per window, on any instance, gets `true`.
pub fn claim(
    conn: &mut DbConnection,
    name: &str,
    since: NaiveDateTime,
    at: NaiveDateTime,
    count: i64,
    window_secs: i64,
) -> Result<bool, DbError> {
    let claimed = diesel::update(
        alert_state::table
            .find(name)
            .filter(alert_state::last_raised_at.le(since)),
    )
    .set((
        alert_state::last_raised_at.eq(at),
        alert_state::last_count.eq(count),
        alert_state::window_secs.eq(window_secs),
    ))
    .execute(conn)?;
    Ok(claimed == 1)
}

/// Every rule's state (a handful of rows).
pub fn states(conn: &mut DbConnection) -> Result<Vec<AlertStateRow>, DbError> {
    Ok(alert_state::table
        .select(AlertStateRow::as_select())
        .order(alert_state::name)
        .load(conn)?)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alert_deliveries)]
pub struct AlertDeliveryRow {
    pub id: i64,
    pub rule: String,
    pub body: String,
    pub created_at: NaiveDateTime,
    pub attempts: i64,
    pub next_attempt_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
    pub dead_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = alert_deliveries)]
pub struct NewAlertDelivery<'a> {
    pub rule: &'a str,
    pub body: &'a str,
    pub created_at: NaiveDateTime,
    pub next_attempt_at: NaiveDateTime,
}

pub fn insert_delivery(conn: &mut DbConnection, new: &NewAlertDelivery<'_>) -> Result<(), DbError> {
    diesel::insert_into(alert_deliveries::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

/// Deliveries neither delivered nor dead whose next attempt is due at `at`, oldest first.
pub fn due(
    conn: &mut DbConnection,
    at: NaiveDateTime,
    limit: i64,
) -> Result<Vec<AlertDeliveryRow>, DbError> {
    Ok(alert_deliveries::table
        .filter(alert_deliveries::delivered_at.is_null())
        .filter(alert_deliveries::dead_at.is_null())
        .filter(alert_deliveries::next_attempt_at.le(at))
        .order(alert_deliveries::next_attempt_at)
        .limit(limit)
        .select(AlertDeliveryRow::as_select())
        .load(conn)?)
}

/// Claims a due delivery for one attempt: counts the attempt and pushes its next attempt to
/// `lease_until` (if this instance dies mid-attempt, another retries it then). `false` when
/// another worker claimed it first.
pub fn claim_attempt(
    conn: &mut DbConnection,
    id: i64,
    at: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> Result<bool, DbError> {
    let claimed = diesel::update(
        alert_deliveries::table
            .find(id)
            .filter(alert_deliveries::delivered_at.is_null())
            .filter(alert_deliveries::dead_at.is_null())
            .filter(alert_deliveries::next_attempt_at.le(at)),
    )
    .set((
        alert_deliveries::attempts.eq(alert_deliveries::attempts + 1),
        alert_deliveries::next_attempt_at.eq(lease_until),
    ))
    .execute(conn)?;
    Ok(claimed == 1)
}

pub fn mark_delivered(conn: &mut DbConnection, id: i64, at: NaiveDateTime) -> Result<(), DbError> {
    diesel::update(alert_deliveries::table.find(id))
        .set((
            alert_deliveries::delivered_at.eq(at),
            alert_deliveries::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a failed attempt: retried at `next` or, when `next` is `None`, given up (dead).
pub fn mark_failed(
    conn: &mut DbConnection,
    id: i64,
    error: &str,
    next: Option<NaiveDateTime>,
    at: NaiveDateTime,
) -> Result<(), DbError> {
    let update = diesel::update(alert_deliveries::table.find(id));
    match next {
        Some(next) => update
            .set((
                alert_deliveries::last_error.eq(error),
                alert_deliveries::next_attempt_at.eq(next),
            ))
            .execute(conn)?,
        None => update
            .set((
                alert_deliveries::last_error.eq(error),
                alert_deliveries::dead_at.eq(at),
            ))
            .execute(conn)?,
    };
    Ok(())
}

/// Every delivery, oldest first (tests and the console).
pub fn all(conn: &mut DbConnection) -> Result<Vec<AlertDeliveryRow>, DbError> {
    Ok(alert_deliveries::table
        .order(alert_deliveries::id)
        .select(AlertDeliveryRow::as_select())
        .load(conn)?)
}
