//! `subscriptions`: the local copy of each Stripe subscription's state, and the one place that
//! says which statuses are live.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::Connection as _;
use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::db::models::user::UserId;
use crate::db::schema::subscriptions;
use crate::db::text::stored_as_text;
use crate::db::{DbConnection, DbError, now, per_backend};
use crate::stripe_id::SubscriptionId;

/// A subscription's status, as Stripe names it (stored as that text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    /// A status Stripe added after this was written: kept as sent, and never live.
    Other(String),
}

impl SubscriptionStatus {
    /// Whether the customer has what they pay for: active, trialing, or past due (Stripe is
    /// still retrying the payment).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
            Self::Other(status) => status,
        }
    }
}

impl From<&str> for SubscriptionStatus {
    /// Any text Stripe sends is a status: one Tollgate does not know is kept as [`Self::Other`].
    fn from(status: &str) -> Self {
        match status {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl FromStr for SubscriptionStatus {
    type Err = Infallible;

    fn from_str(status: &str) -> Result<Self, Infallible> {
        Ok(Self::from(status))
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

stored_as_text!(SubscriptionStatus);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionRow {
    pub id: i64,
    pub user_id: UserId,
    pub stripe_subscription_id: SubscriptionId,
    pub plan_id: Option<i64>,
    pub stripe_price_id: String,
    pub status: SubscriptionStatus,
    pub current_period_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<NaiveDateTime>,
    pub stripe_updated_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// The state Stripe reported, as of `stripe_updated_at`.
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionState<'a> {
    pub plan_id: Option<i64>,
    pub stripe_price_id: &'a str,
    pub status: &'a SubscriptionStatus,
    pub current_period_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<NaiveDateTime>,
    pub stripe_updated_at: NaiveDateTime,
}

/// Inserts or updates by Stripe id; an update older than what is stored is ignored (Stripe's
/// events can arrive out of order). Returns whether anything was written.
///
/// Safe when the same subscription is recorded concurrently (a webhook and the success page,
/// on any instance): the insert cannot fail on the unique id, and whoever loses the insert
/// applies its state as a conditional update instead.
pub fn upsert(
    conn: &mut DbConnection,
    user_id: UserId,
    stripe_id: &SubscriptionId,
    state: &SubscriptionState<'_>,
) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        let at = now();
        let update_if_newer = |conn: &mut DbConnection| {
            diesel::update(
                subscriptions::table
                    .filter(subscriptions::stripe_subscription_id.eq(stripe_id))
                    .filter(subscriptions::stripe_updated_at.le(state.stripe_updated_at)),
            )
            .set((state, subscriptions::updated_at.eq(at)))
            .execute(conn)
        };
        if update_if_newer(conn)? > 0 {
            return Ok(true);
        }
        let insert = diesel::insert_into(subscriptions::table)
            .values((
                subscriptions::user_id.eq(user_id),
                subscriptions::stripe_subscription_id.eq(stripe_id),
                state,
                subscriptions::created_at.eq(at),
                subscriptions::updated_at.eq(at),
            ))
            .on_conflict_do_nothing();
        if per_backend!(conn, |c| insert.execute(c))? > 0 {
            return Ok(true);
        }
        // Stored meanwhile by someone else (now committed): newer state still wins.
        Ok(update_if_newer(conn)? > 0)
    })
}

/// Sets the status, unless newer state is already stored. Returns whether it was written.
pub fn set_status_if_newer(
    conn: &mut DbConnection,
    stripe_id: &SubscriptionId,
    status: SubscriptionStatus,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq(stripe_id))
            .filter(subscriptions::stripe_updated_at.le(as_of)),
    )
    .set((
        subscriptions::status.eq(status),
        subscriptions::stripe_updated_at.eq(as_of),
        subscriptions::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

pub fn find_by_stripe_id(
    conn: &mut DbConnection,
    stripe_id: &SubscriptionId,
) -> Result<Option<SubscriptionRow>, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::stripe_subscription_id.eq(stripe_id))
        .select(SubscriptionRow::as_select())
        .first(conn)
        .optional()?)
}

/// The user's most relevant subscription: a live one if any, else the newest.
pub fn current_for_user(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<SubscriptionRow>, DbError> {
    let rows: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .order((subscriptions::created_at.desc(), subscriptions::id.desc()))
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    Ok(pick_current(rows, |row| row))
}

/// The subscriptions of `user_ids`, newest first.
pub fn all_for_users(
    conn: &mut DbConnection,
    user_ids: &[UserId],
) -> Result<Vec<SubscriptionRow>, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::user_id.eq_any(user_ids))
        .order((subscriptions::created_at.desc(), subscriptions::id.desc()))
        .select(SubscriptionRow::as_select())
        .load(conn)?)
}

/// The subscription that speaks for a user, of theirs newest first (each with whatever was
/// read beside it): the newest live one, else the newest.
pub fn pick_current<T>(rows: Vec<T>, row: impl Fn(&T) -> &SubscriptionRow) -> Option<T> {
    let live = rows.iter().position(|r| row(r).status.is_live());
    match live {
        Some(index) => rows.into_iter().nth(index),
        None => rows.into_iter().next(),
    }
}

/// How many live subscriptions (active, trialing, past due) plan `plan_id` has.
pub fn live_count_for_plan(conn: &mut DbConnection, plan_id: i64) -> Result<i64, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::plan_id.eq(plan_id))
        .filter(subscriptions::status.eq_any(["active", "trialing", "past_due"]))
        .count()
        .get_result(conn)?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(subscriptions::table.count().get_result(conn)?)
}

/// How many subscriptions the user has ever had (any status).
pub fn count_for_user(conn: &mut DbConnection, user_id: UserId) -> Result<i64, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .count()
        .get_result(conn)?)
}

/// Every subscription the user has had, newest first.
pub fn all_for_user(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Vec<SubscriptionRow>, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .order((subscriptions::created_at.desc(), subscriptions::id.desc()))
        .select(SubscriptionRow::as_select())
        .load(conn)?)
}

/// Records that `subscription` is past due since `since` (the first time it was seen past due
/// in this run of failures is kept), or, when it is not past due, forgets it.
pub fn track_past_due(
    conn: &mut DbConnection,
    subscription: &SubscriptionId,
    past_due: bool,
    since: NaiveDateTime,
) -> Result<(), DbError> {
    use crate::db::schema::subscription_past_due as t;
    if past_due {
        let insert = diesel::insert_into(t::table)
            .values((
                t::stripe_subscription_id.eq(subscription.expose()),
                t::since.eq(since),
            ))
            .on_conflict_do_nothing();
        crate::db::per_backend!(conn, |c| insert.execute(c))?;
    } else {
        diesel::delete(t::table.find(subscription.expose())).execute(conn)?;
    }
    Ok(())
}

/// Since when `subscription` is past due, if it is (see [`track_past_due`]).
pub fn past_due_since(
    conn: &mut DbConnection,
    subscription: &SubscriptionId,
) -> Result<Option<NaiveDateTime>, DbError> {
    use crate::db::schema::subscription_past_due as t;
    Ok(t::table
        .find(subscription.expose())
        .select(t::since)
        .first(conn)
        .optional()?)
}

/// A subscription row as `tollgate bench seed` makes it up.
#[derive(Debug, Insertable)]
#[diesel(table_name = subscriptions)]
pub struct NewSubscription<'a> {
    pub user_id: UserId,
    pub stripe_subscription_id: String,
    #[diesel(embed)]
    pub state: SubscriptionState<'a>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Inserts `rows` in one statement (`tollgate bench seed`).
pub fn insert_many(conn: &mut DbConnection, rows: &[NewSubscription<'_>]) -> Result<(), DbError> {
    let insert = diesel::insert_into(subscriptions::table).values(rows);
    match conn {
        DbConnection::Postgresql(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_as_the_text_they_were_stored_as() {
        for text in [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
            "a_status_from_the_future",
        ] {
            let status: SubscriptionStatus = text.parse().unwrap();
            assert_eq!(status.as_str(), text);
            assert_eq!(status.to_string(), text);
        }
        assert_eq!(
            "a_status_from_the_future".parse::<SubscriptionStatus>(),
            Ok(SubscriptionStatus::Other("a_status_from_the_future".into()))
        );
    }

    #[test]
    fn active_trialing_and_past_due_are_the_live_statuses() {
        let live: Vec<&str> = [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
            "unknown",
        ]
        .into_iter()
        .filter(|text| text.parse::<SubscriptionStatus>().unwrap().is_live())
        .collect();
        assert_eq!(live, ["trialing", "active", "past_due"]);
    }
}
