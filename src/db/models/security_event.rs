//! `security_events`: the audit log. Rows are appended; the one exception is a repeated
//! refusal, counted on the row of its first occurrence (`count`, `last_seen_at`).

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::db::schema::security_events;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = security_events)]
pub struct SecurityEventRow {
    pub id: i64,
    /// When it happened (for a repeated event: the first time).
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub severity: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// The first occurrence's details.
    pub details: String,
    /// How many times it happened (1 unless repeats were counted here).
    pub count: i64,
    pub last_seen_at: NaiveDateTime,
    /// The request it came from (`X-Request-Id`), if a request caused it.
    pub request_id: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = security_events)]
pub struct NewSecurityEvent<'a> {
    pub occurred_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub kind: &'a str,
    pub severity: &'a str,
    pub actor: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: &'a str,
    /// Set for events whose repeats are counted on this row.
    pub aggregate_key: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Inserts several events (PostgreSQL: in one statement).
pub fn insert_many(conn: &mut DbConnection, new: &[NewSecurityEvent<'_>]) -> Result<(), DbError> {
    if new.is_empty() {
        return Ok(());
    }
    match conn {
        DbConnection::Postgresql(pg) => {
            diesel::insert_into(security_events::table)
                .values(new)
                .execute(pg)?;
        }
        DbConnection::Sqlite(sqlite) => {
            for event in new {
                diesel::insert_into(security_events::table)
                    .values(event)
                    .execute(sqlite)?;
            }
        }
    }
    Ok(())
}

/// Inserts an aggregated event, or, when its `aggregate_key` is already there, counts one more
/// occurrence on that row (one statement: concurrent repeats each add theirs).
pub fn insert_or_count(conn: &mut DbConnection, new: &NewSecurityEvent<'_>) -> Result<(), DbError> {
    use diesel::upsert::{DecoratableTarget as _, excluded};
    let insert = diesel::insert_into(security_events::table).values(new);
    let counted = (
        security_events::count.eq(security_events::count + 1),
        security_events::last_seen_at.eq(excluded(security_events::last_seen_at)),
    );
    match conn {
        DbConnection::Postgresql(pg) => {
            insert
                .on_conflict(security_events::aggregate_key)
                // PostgreSQL's unique index is partial (aggregated rows only): name its predicate.
                .filter_target(security_events::aggregate_key.is_not_null())
                .do_update()
                .set(counted)
                .execute(pg)?;
        }
        DbConnection::Sqlite(sqlite) => {
            insert
                .on_conflict(security_events::aggregate_key)
                .do_update()
                .set(counted)
                .execute(sqlite)?;
        }
    }
    Ok(())
}

/// The newest events first (a repeated event by its first occurrence: with repeats grouped per
/// time slot, that is at most one slot earlier than its last).
pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<SecurityEventRow>, DbError> {
    Ok(security_events::table
        .order(security_events::id.desc())
        .limit(limit)
        .select(SecurityEventRow::as_select())
        .load(conn)?)
}

/// `SUM(count)` as a BIGINT on both backends (PostgreSQL's SUM of a BIGINT is a NUMERIC).
fn occurrences() -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>("CAST(COALESCE(SUM(count), 0) AS BIGINT)")
}

/// How many times events of `kind` happened, repeats included.
pub fn count_of_kind(conn: &mut DbConnection, kind: &str) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq(kind))
        .select(occurrences())
        .get_result(conn)?)
}

/// How many times events of `kind` happened on rows last seen after `since`, repeats included.
/// A repeated row counts whole: at most one aggregation window of it may predate `since`.
pub fn occurrences_since(
    conn: &mut DbConnection,
    kind: &str,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq(kind))
        .filter(security_events::last_seen_at.gt(since))
        .select(occurrences())
        .get_result(conn)?)
}

/// How many times events of any of `kinds` (by `actor`, when given) happened on rows last seen
/// after `since`, repeats included: the alert rules' count (`security_events_kind` index).
pub fn occurrences_of_kinds_since(
    conn: &mut DbConnection,
    kinds: &[&str],
    actor: Option<&str>,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    let mut query = security_events::table
        .filter(security_events::kind.eq_any(kinds))
        .filter(security_events::last_seen_at.gt(since))
        .select(occurrences())
        .into_boxed();
    if let Some(actor) = actor {
        query = query.filter(security_events::actor.eq(actor));
    }
    Ok(query.get_result(conn)?)
}
