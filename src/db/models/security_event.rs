//! `security_events`: the append-only audit log.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::security_events;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = security_events)]
pub struct SecurityEventRow {
    pub id: i64,
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub severity: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub details: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = security_events)]
pub struct NewSecurityEvent<'a> {
    pub occurred_at: NaiveDateTime,
    pub kind: &'a str,
    pub severity: &'a str,
    pub actor: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: &'a str,
}

/// Inserts several events (PostgreSQL: in one statement).
pub fn insert_many(conn: &mut DbConnection, new: &[NewSecurityEvent<'_>]) -> Result<(), DbError> {
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

/// The newest events first.
pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<SecurityEventRow>, DbError> {
    Ok(security_events::table
        .order(security_events::id.desc())
        .limit(limit)
        .select(SecurityEventRow::as_select())
        .load(conn)?)
}

pub fn count_of_kind(conn: &mut DbConnection, kind: &str) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq(kind))
        .count()
        .get_result(conn)?)
}
