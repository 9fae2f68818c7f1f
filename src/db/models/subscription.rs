//! `subscriptions`: the local copy of each Stripe subscription's state.

use chrono::NaiveDateTime;
use diesel::Connection as _;
use diesel::prelude::*;

use crate::db::schema::subscriptions;
use crate::db::{DbConnection, DbError, now, per_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionRow {
    pub id: i64,
    pub user_id: i64,
    pub stripe_subscription_id: String,
    pub plan_id: Option<i64>,
    pub stripe_price_id: String,
    pub status: String,
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
    pub status: &'a str,
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
    user_id: i64,
    stripe_id: &str,
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
    stripe_id: &str,
    status: &str,
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

/// Whether a subscription in `status` gives access (active, trialing or past due).
pub fn is_live_status(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

/// The user's most relevant subscription: a live one if any, else the newest.
pub fn current_for_user(
    conn: &mut DbConnection,
    user_id: i64,
) -> Result<Option<SubscriptionRow>, DbError> {
    let rows: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .order(subscriptions::created_at.desc())
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    let live = rows.iter().position(|r| is_live_status(&r.status));
    Ok(match live {
        Some(index) => rows.into_iter().nth(index),
        None => rows.into_iter().next(),
    })
}

/// How many subscriptions the user has ever had (any status).
pub fn count_for_user(conn: &mut DbConnection, user_id: i64) -> Result<i64, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .count()
        .get_result(conn)?)
}
