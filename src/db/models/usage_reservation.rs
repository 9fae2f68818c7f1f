//! `usage_reservations` and the quota side of `usage_counters`: holds on a user's quota, taken
//! by `reserve`, turned into usage by `commit`, freed by `release` or by expiry. The rules (who
//! may hold what) live in `crate::usage::quota`; this module only reads and writes rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::{plan_meters, usage_counters, usage_reservations};
use crate::db::{DbConnection, DbError, per_backend};

/// A reservation's states, stored as text.
pub const HELD: &str = "held";
pub const COMMITTED: &str = "committed";
pub const RELEASED: &str = "released";
pub const EXPIRED: &str = "expired";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_reservations)]
pub struct ReservationRow {
    pub id: String,
    pub user_id: UserId,
    pub feature: String,
    pub quantity: i64,
    pub period_end: NaiveDateTime,
    pub state: String,
    pub expires_at: NaiveDateTime,
    pub committed_quantity: Option<i64>,
    pub service: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = usage_reservations)]
pub struct NewReservation<'a> {
    pub id: &'a str,
    pub user_id: UserId,
    pub feature: &'a str,
    pub quantity: i64,
    pub period_end: NaiveDateTime,
    pub state: &'a str,
    pub expires_at: NaiveDateTime,
    pub service: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, row: &NewReservation<'_>) -> Result<(), DbError> {
    diesel::insert_into(usage_reservations::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: &str) -> Result<Option<ReservationRow>, DbError> {
    Ok(usage_reservations::table
        .find(id)
        .select(ReservationRow::as_select())
        .first(conn)
        .optional()?)
}

/// Moves reservation `id` of `user_id` from `held` to `state` (with `committed`, for a
/// commit), only if it is still held, and for a commit or release only if it has not expired
/// by `now` (`unexpired`). True when this call moved it: the caller alone then frees its hold.
pub fn settle(
    conn: &mut DbConnection,
    id: &str,
    user_id: UserId,
    state: &str,
    committed: Option<i64>,
    now: NaiveDateTime,
    unexpired: bool,
) -> Result<bool, DbError> {
    let target = usage_reservations::table
        .filter(usage_reservations::id.eq(id))
        .filter(usage_reservations::user_id.eq(user_id))
        .filter(usage_reservations::state.eq(HELD));
    let changes = (
        usage_reservations::state.eq(state),
        usage_reservations::committed_quantity.eq(committed),
        usage_reservations::updated_at.eq(now),
    );
    let moved = if unexpired {
        diesel::update(target.filter(usage_reservations::expires_at.gt(now)))
            .set(changes)
            .execute(conn)?
    } else {
        diesel::update(target).set(changes).execute(conn)?
    };
    Ok(moved == 1)
}

/// Held reservations past their expiry (of one user, and one feature, when given), oldest
/// first, at most `limit`.
pub fn stale(
    conn: &mut DbConnection,
    user: Option<(UserId, Option<&str>)>,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<ReservationRow>, DbError> {
    let stale = usage_reservations::table
        .filter(usage_reservations::state.eq(HELD))
        .filter(usage_reservations::expires_at.le(now))
        .select(ReservationRow::as_select())
        .order(usage_reservations::expires_at.asc())
        .limit(limit);
    Ok(match user {
        None => stale.load(conn)?,
        Some((user_id, None)) => stale
            .filter(usage_reservations::user_id.eq(user_id))
            .load(conn)?,
        Some((user_id, Some(feature))) => stale
            .filter(usage_reservations::user_id.eq(user_id))
            .filter(usage_reservations::feature.eq(feature))
            .load(conn)?,
    })
}

/// Creates the user's counter of `feature` for the period ending `period_end` if it is not
/// there yet (a write: on SQLite it takes the write lock).
pub fn ensure_counter(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
) -> Result<(), DbError> {
    per_backend!(conn, |c| {
        diesel::insert_into(usage_counters::table)
            .values((
                usage_counters::user_id.eq(user_id),
                usage_counters::feature.eq(feature),
                usage_counters::period_end.eq(period_end),
                usage_counters::used.eq(0),
                usage_counters::reserved.eq(0),
            ))
            .on_conflict_do_nothing()
            .execute(c)?;
        Ok(())
    })
}

/// THE check-and-hold: adds `quantity` to the counter's `reserved` in one conditional
/// statement, only while `used + reserved + quantity` stays within `limit` (no limit: always).
/// True when it held. Concurrent holds on one counter are serialised by the row's lock, and
/// each re-evaluates the condition on the row as the one before it left it.
pub fn hold(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
    quantity: i64,
    limit: Option<i64>,
) -> Result<bool, DbError> {
    let counter = usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::feature.eq(feature))
        .filter(usage_counters::period_end.eq(period_end));
    let bump = usage_counters::reserved.eq(usage_counters::reserved + quantity);
    let held = match limit {
        Some(limit) => diesel::update(counter.filter(
            (usage_counters::used + usage_counters::reserved).le(limit.saturating_sub(quantity)),
        ))
        .set(bump)
        .execute(conn)?,
        None => diesel::update(counter).set(bump).execute(conn)?,
    };
    Ok(held == 1)
}

/// Frees `quantity` held units of a counter (never below zero).
pub fn unhold(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
    quantity: i64,
) -> Result<(), DbError> {
    let counter = usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::feature.eq(feature))
        .filter(usage_counters::period_end.eq(period_end));
    diesel::update(counter.filter(usage_counters::reserved.ge(quantity)))
        .set(usage_counters::reserved.eq(usage_counters::reserved - quantity))
        .execute(conn)?;
    Ok(())
}

/// `(used, reserved)` of one counter (zeros when it does not exist).
pub fn counter(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
) -> Result<(i64, i64), DbError> {
    Ok(usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::feature.eq(feature))
        .filter(usage_counters::period_end.eq(period_end))
        .select((usage_counters::used, usage_counters::reserved))
        .first(conn)
        .optional()?
        .unwrap_or((0, 0)))
}

/// Every plan's `(feature, fail_open)`: what a feature's policy is when the user's is unknown.
pub fn fail_open_policies(conn: &mut DbConnection) -> Result<Vec<(String, bool)>, DbError> {
    Ok(plan_meters::table
        .select((plan_meters::feature, plan_meters::fail_open))
        .load(conn)?)
}
