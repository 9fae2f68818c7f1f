//! The read side of `security_events` for operators: filtered, keyset-paginated searches (the
//! console's list, its export, `tollgate audit list`) and the GROUP BY aggregations of the
//! security dashboard. Every count is of occurrences: an aggregated row counts as its `count`.
//!
//! Hour and day buckets and JSON fields are spelled per backend (SQLite's `strftime` and
//! `json_extract`, PostgreSQL's `to_char` and `->>`); everything else is one diesel query.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use crate::db::schema::security_events;
use crate::db::{DbConnection, DbError};

use super::security_event::SecurityEventRow;

/// What a search keeps: every set field must match.
#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    /// Any of these severities (`None`: all).
    pub severities: Option<Vec<&'static str>>,
    pub kind: Option<&'static str>,
    /// Any of these actor labels (`None`: all; empty: none).
    pub actors: Option<Vec<String>>,
    pub ip: Option<String>,
    /// Rows last seen at or after this.
    pub from: Option<NaiveDateTime>,
    /// Rows first seen before this.
    pub to: Option<NaiveDateTime>,
}

/// Where a page starts: keyset pagination by id, newest first, stable under inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Newest,
    /// The rows just older than this id.
    Before(i64),
    /// The rows just newer than this id.
    After(i64),
}

type Backend = <DbConnection as diesel::Connection>::Backend;

fn filtered(search: &EventSearch) -> security_events::BoxedQuery<'static, Backend> {
    let mut query = security_events::table.into_boxed();
    if let Some(severities) = &search.severities {
        query = query.filter(security_events::severity.eq_any(severities.clone()));
    }
    if let Some(kind) = search.kind {
        query = query.filter(security_events::kind.eq(kind));
    }
    if let Some(actors) = &search.actors {
        query = query.filter(security_events::actor.eq_any(actors.clone()));
    }
    if let Some(ip) = &search.ip {
        query = query.filter(security_events::ip.eq(ip.clone()));
    }
    if let Some(from) = search.from {
        query = query.filter(security_events::last_seen_at.ge(from));
    }
    if let Some(to) = search.to {
        query = query.filter(security_events::occurred_at.lt(to));
    }
    query
}

/// Up to `limit` matching rows from `position`, newest first.
pub fn search(
    conn: &mut DbConnection,
    search: &EventSearch,
    position: Position,
    limit: i64,
) -> Result<Vec<SecurityEventRow>, DbError> {
    let query = filtered(search)
        .select(SecurityEventRow::as_select())
        .limit(limit);
    Ok(match position {
        Position::Newest => query.order(security_events::id.desc()).load(conn)?,
        Position::Before(id) => query
            .filter(security_events::id.lt(id))
            .order(security_events::id.desc())
            .load(conn)?,
        Position::After(id) => {
            let mut rows: Vec<SecurityEventRow> = query
                .filter(security_events::id.gt(id))
                .order(security_events::id.asc())
                .load(conn)?;
            rows.reverse();
            rows
        }
    })
}

/// Whether a matching row is older (`Before`) or newer (`After`) than the id.
pub fn any_beyond(
    conn: &mut DbConnection,
    search: &EventSearch,
    position: Position,
) -> Result<bool, DbError> {
    let query = filtered(search).select(security_events::id).limit(1);
    let found: Option<i64> = match position {
        Position::Newest => query.first(conn).optional()?,
        Position::Before(id) => query
            .filter(security_events::id.lt(id))
            .first(conn)
            .optional()?,
        Position::After(id) => query
            .filter(security_events::id.gt(id))
            .first(conn)
            .optional()?,
    };
    Ok(found.is_some())
}

/// `SUM(count)` as a BIGINT on both backends (PostgreSQL's SUM of a BIGINT is a NUMERIC).
fn occurrences() -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>("CAST(COALESCE(SUM(count), 0) AS BIGINT)")
}

/// Occurrences per kind among `kinds`, on rows last seen at or after `since`.
pub fn occurrences_by_kind(
    conn: &mut DbConnection,
    kinds: &[&'static str],
    since: NaiveDateTime,
) -> Result<Vec<(String, i64)>, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq_any(kinds))
        .filter(security_events::last_seen_at.ge(since))
        .group_by(security_events::kind)
        .select((security_events::kind, occurrences()))
        .load(conn)?)
}

/// The `limit` source addresses with the most occurrences of `kinds` since `since`, most first.
pub fn top_addresses(
    conn: &mut DbConnection,
    kinds: &[&'static str],
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<(String, i64)>, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq_any(kinds))
        .filter(security_events::last_seen_at.ge(since))
        .filter(security_events::ip.is_not_null())
        .group_by(security_events::ip)
        .select((
            sql::<Text>("COALESCE(ip, '')"),
            sql::<BigInt>("CAST(COALESCE(SUM(count), 0) AS BIGINT)"),
        ))
        .order(sql::<BigInt>(
            "CAST(COALESCE(SUM(count), 0) AS BIGINT) DESC",
        ))
        .limit(limit)
        .load(conn)?)
}

/// A time bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Keys `YYYY-MM-DD HH`.
    Hour,
    /// Keys `YYYY-MM-DD`.
    Day,
}

#[derive(Debug, QueryableByName)]
pub struct BucketCount {
    #[diesel(sql_type = Text)]
    pub bucket: String,
    #[diesel(sql_type = Text)]
    pub severity: String,
    #[diesel(sql_type = BigInt)]
    pub occurrences: i64,
}

/// Occurrences per (time bucket of the first occurrence, severity) since `since` (the start of
/// an hour): at most one row per bucket and severity, however many events.
pub fn occurrences_by_bucket(
    conn: &mut DbConnection,
    bucket: Bucket,
    since: NaiveDateTime,
) -> Result<Vec<BucketCount>, DbError> {
    let (sqlite_format, pg_format) = match bucket {
        Bucket::Hour => ("%Y-%m-%d %H", "YYYY-MM-DD HH24"),
        Bucket::Day => ("%Y-%m-%d", "YYYY-MM-DD"),
    };
    // From the hourly rollup the appends keep (`security_event_hours`): at most 24 rows per
    // severity and lane a day, however many events.
    let query = |key: String, placeholder: &str| {
        format!(
            "SELECT {key} AS bucket, severity, CAST(SUM(occurrences) AS BIGINT) AS occurrences \
             FROM security_event_hours WHERE hour >= {placeholder} \
             GROUP BY {key}, severity ORDER BY bucket"
        )
    };
    Ok(match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query(query(format!("to_char(hour, '{pg_format}')"), "$1"))
                .bind::<Timestamp, _>(since)
                .load(pg)?
        }
        DbConnection::Sqlite(sqlite) => {
            diesel::sql_query(query(format!("strftime('{sqlite_format}', hour)"), "?"))
                .bind::<Timestamp, _>(since)
                .load(sqlite)?
        }
    })
}

#[derive(Debug, QueryableByName)]
pub struct RouteCount {
    #[diesel(sql_type = Nullable<Text>)]
    pub limiter: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub path: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub occurrences: i64,
}

/// Rate-limit refusals (`rate_limited`, `webhook_rate_limit_exceeded`) since `since` per
/// limiter and path (from their details; an aggregated row counts whole under its first
/// path), most first, at most `limit` lines.
pub fn rate_limited_by_route(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<RouteCount>, DbError> {
    let query = |limiter: &str, path: &str, placeholders: (&str, &str)| {
        format!(
            "SELECT {limiter} AS limiter, {path} AS path, CAST(SUM(count) AS BIGINT) AS occurrences \
             FROM security_events \
             WHERE kind IN ('rate_limited', 'webhook_rate_limit_exceeded') AND last_seen_at >= {} \
             GROUP BY {limiter}, {path} ORDER BY occurrences DESC LIMIT {}",
            placeholders.0, placeholders.1
        )
    };
    Ok(match conn {
        DbConnection::Postgresql(pg) => diesel::sql_query(query(
            "(details::jsonb ->> 'limiter')",
            "(details::jsonb ->> 'path')",
            ("$1", "$2"),
        ))
        .bind::<Timestamp, _>(since)
        .bind::<BigInt, _>(limit)
        .load(pg)?,
        DbConnection::Sqlite(sqlite) => diesel::sql_query(query(
            "json_extract(details, '$.limiter')",
            "json_extract(details, '$.path')",
            ("?", "?"),
        ))
        .bind::<Timestamp, _>(since)
        .bind::<BigInt, _>(limit)
        .load(sqlite)?,
    })
}
