//! What the usage page reads and the spend settings it writes: a user's usage records of a
//! period, their daily totals, the customer's spend limits and a plan's spend cap.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text, Timestamp};

use crate::db::models::usage::UsageRecordRow;
use crate::db::models::user::UserId;
use crate::db::schema::{plan_spend_caps, usage_records, usage_spend_limits};
use crate::db::{DbConnection, DbError, now, per_backend};

/// Most records one export carries (a month of heavy use is far below it).
pub const EXPORT_LIMIT: i64 = 200_000;

/// The user's records that happened in `[start, end)`, oldest first (at most
/// [`EXPORT_LIMIT`]).
pub fn records_between(
    conn: &mut DbConnection,
    user_id: UserId,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<Vec<UsageRecordRow>, DbError> {
    per_backend!(conn, |c| Ok(usage_records::table
        .filter(usage_records::user_id.eq(user_id))
        .filter(usage_records::occurred_at.ge(start))
        .filter(usage_records::occurred_at.lt(end))
        .order((usage_records::occurred_at.asc(), usage_records::id.asc()))
        .limit(EXPORT_LIMIT)
        .select(UsageRecordRow::as_select())
        .load(c)?))
}

/// One day's total of one feature, platform or BYOK.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct DailyTotal {
    /// `YYYY-MM-DD` (UTC).
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(sql_type = Text)]
    pub feature: String,
    #[diesel(sql_type = Bool)]
    pub byok: bool,
    #[diesel(sql_type = BigInt)]
    pub quantity: i64,
}

/// The user's usage in `[start, end)` summed per day, feature and BYOK flag (one grouped
/// query: the page never loads the records themselves).
pub fn daily_totals(
    conn: &mut DbConnection,
    user_id: UserId,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<Vec<DailyTotal>, DbError> {
    let query = |day: &str, p: [&str; 3]| {
        format!(
            "SELECT {day} AS day, feature, byok, CAST(SUM(quantity) AS BIGINT) AS quantity \
             FROM usage_records WHERE user_id = {} AND occurred_at >= {} AND occurred_at < {} \
             GROUP BY {day}, feature, byok ORDER BY day, feature",
            p[0], p[1], p[2]
        )
    };
    Ok(match conn {
        DbConnection::Postgresql(pg) => diesel::sql_query(query(
            "to_char(occurred_at, 'YYYY-MM-DD')",
            ["$1", "$2", "$3"],
        ))
        .bind::<BigInt, _>(user_id.get())
        .bind::<Timestamp, _>(start)
        .bind::<Timestamp, _>(end)
        .load(pg)?,
        DbConnection::Sqlite(sqlite) => {
            diesel::sql_query(query("strftime('%Y-%m-%d', occurred_at)", ["?", "?", "?"]))
                .bind::<BigInt, _>(user_id.get())
                .bind::<Timestamp, _>(start)
                .bind::<Timestamp, _>(end)
                .load(sqlite)?
        }
    })
}

/// Sets the customer's spend alert and cap (minor units); both `None` removes the row.
pub fn set_spend_limits(
    conn: &mut DbConnection,
    user_id: UserId,
    alert: Option<i64>,
    cap: Option<i64>,
) -> Result<(), DbError> {
    per_backend!(conn, |c| {
        if alert.is_none() && cap.is_none() {
            diesel::delete(usage_spend_limits::table.find(user_id)).execute(c)?;
            return Ok(());
        }
        diesel::insert_into(usage_spend_limits::table)
            .values((
                usage_spend_limits::user_id.eq(user_id),
                usage_spend_limits::alert_amount.eq(alert),
                usage_spend_limits::cap_amount.eq(cap),
                usage_spend_limits::updated_at.eq(now()),
            ))
            .on_conflict(usage_spend_limits::user_id)
            .do_update()
            .set((
                usage_spend_limits::alert_amount.eq(alert),
                usage_spend_limits::cap_amount.eq(cap),
                usage_spend_limits::updated_at.eq(now()),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// A plan's spend cap per customer (minor units), if it has one.
pub fn plan_spend_cap(conn: &mut DbConnection, plan_id: i64) -> Result<Option<i64>, DbError> {
    per_backend!(conn, |c| Ok(plan_spend_caps::table
        .find(plan_id)
        .select(plan_spend_caps::cap_amount)
        .first(c)
        .optional()?))
}

/// Sets (`None`: removes) a plan's spend cap per customer. Starts with a write (the delete).
pub fn set_plan_spend_cap(
    conn: &mut DbConnection,
    plan_id: i64,
    cap: Option<i64>,
) -> Result<(), DbError> {
    per_backend!(conn, |c| {
        diesel::delete(plan_spend_caps::table.find(plan_id)).execute(c)?;
        if let Some(cap) = cap {
            diesel::insert_into(plan_spend_caps::table)
                .values((
                    plan_spend_caps::plan_id.eq(plan_id),
                    plan_spend_caps::cap_amount.eq(cap),
                    plan_spend_caps::updated_at.eq(now()),
                ))
                .execute(c)?;
        }
        Ok(())
    })
}
