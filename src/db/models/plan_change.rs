//! `plan_changes` (period-end changes held by a Stripe subscription schedule),
//! `subscription_quantities` (each subscription's seats, as of Stripe's time) and `plan_seats`
//! (per-seat plans' quantity range).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::{plan_changes, plan_seats, subscription_quantities};
use crate::db::{DbConnection, DbError, now, per_backend};
use crate::stripe_id::SubscriptionId;

pub const SCHEDULED: &str = "scheduled";
pub const APPLIED: &str = "applied";
pub const CANCELED: &str = "canceled";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = plan_changes)]
pub struct PlanChangeRow {
    pub id: i64,
    pub user_id: UserId,
    pub stripe_subscription_id: SubscriptionId,
    pub stripe_schedule_id: String,
    pub to_plan_id: i64,
    pub to_price_id: String,
    pub to_quantity: i64,
    pub effective_at: NaiveDateTime,
    pub status: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = plan_changes)]
pub struct NewPlanChange<'a> {
    pub user_id: UserId,
    pub stripe_subscription_id: &'a SubscriptionId,
    pub stripe_schedule_id: &'a str,
    pub to_plan_id: i64,
    pub to_price_id: &'a str,
    pub to_quantity: i64,
    pub effective_at: NaiveDateTime,
    pub status: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, row: &NewPlanChange<'_>) -> Result<(), DbError> {
    diesel::insert_into(plan_changes::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The user's change waiting for the end of the period, if any.
pub fn scheduled_for_user(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<PlanChangeRow>, DbError> {
    Ok(plan_changes::table
        .filter(plan_changes::user_id.eq(user_id))
        .filter(plan_changes::status.eq(SCHEDULED))
        .order(plan_changes::id.desc())
        .select(PlanChangeRow::as_select())
        .first(conn)
        .optional()?)
}

/// The subscription's change waiting for the end of the period, if any.
pub fn scheduled_for_subscription(
    conn: &mut DbConnection,
    stripe_id: &SubscriptionId,
) -> Result<Option<PlanChangeRow>, DbError> {
    Ok(plan_changes::table
        .filter(plan_changes::stripe_subscription_id.eq(stripe_id))
        .filter(plan_changes::status.eq(SCHEDULED))
        .order(plan_changes::id.desc())
        .select(PlanChangeRow::as_select())
        .first(conn)
        .optional()?)
}

/// Moves a scheduled change to `status`; whether it was still scheduled.
pub fn settle(conn: &mut DbConnection, id: i64, status: &str) -> Result<bool, DbError> {
    let updated = diesel::update(
        plan_changes::table
            .filter(plan_changes::id.eq(id))
            .filter(plan_changes::status.eq(SCHEDULED)),
    )
    .set((
        plan_changes::status.eq(status),
        plan_changes::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Stores the subscription's quantity as of `as_of`, unless newer is stored. Returns whether
/// it was written.
pub fn set_quantity_if_newer(
    conn: &mut DbConnection,
    stripe_id: &SubscriptionId,
    quantity: i64,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        subscription_quantities::table
            .filter(subscription_quantities::stripe_subscription_id.eq(stripe_id))
            .filter(subscription_quantities::stripe_updated_at.le(as_of)),
    )
    .set((
        subscription_quantities::quantity.eq(quantity),
        subscription_quantities::stripe_updated_at.eq(as_of),
    ))
    .execute(conn)?;
    if updated > 0 {
        return Ok(true);
    }
    let insert = diesel::insert_into(subscription_quantities::table)
        .values((
            subscription_quantities::stripe_subscription_id.eq(stripe_id),
            subscription_quantities::quantity.eq(quantity),
            subscription_quantities::stripe_updated_at.eq(as_of),
        ))
        .on_conflict_do_nothing();
    Ok(per_backend!(conn, |c| insert.execute(c))? > 0)
}

pub fn quantity(
    conn: &mut DbConnection,
    stripe_id: &SubscriptionId,
) -> Result<Option<i64>, DbError> {
    Ok(subscription_quantities::table
        .filter(subscription_quantities::stripe_subscription_id.eq(stripe_id))
        .select(subscription_quantities::quantity)
        .first(conn)
        .optional()?)
}

/// A per-seat plan's quantity range (`None`: one seat, not per-seat).
pub fn seats(conn: &mut DbConnection, plan_id: i64) -> Result<Option<(i64, i64)>, DbError> {
    Ok(plan_seats::table
        .filter(plan_seats::plan_id.eq(plan_id))
        .select((plan_seats::min_quantity, plan_seats::max_quantity))
        .first(conn)
        .optional()?)
}

/// Makes the plan per-seat within `range`, or not per-seat (`None`).
pub fn set_seats(
    conn: &mut DbConnection,
    plan_id: i64,
    range: Option<(i64, i64)>,
) -> Result<(), DbError> {
    diesel::delete(plan_seats::table.filter(plan_seats::plan_id.eq(plan_id))).execute(conn)?;
    if let Some((min, max)) = range {
        diesel::insert_into(plan_seats::table)
            .values((
                plan_seats::plan_id.eq(plan_id),
                plan_seats::min_quantity.eq(min),
                plan_seats::max_quantity.eq(max),
            ))
            .execute(conn)?;
    }
    Ok(())
}
