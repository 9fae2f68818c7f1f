//! `alert_state`: when each alert rule was last raised, and what it counted (alert
//! notifications themselves go through the outbox, `notifications`).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::alert_state;
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
