//! Writing metered components (`plan_meters`) and their features' meters (`usage_meters`), as
//! admins change them. Reads are in `usage`; the rules are in `crate::usage::admin`.

use diesel::prelude::*;

use crate::db::models::usage::PlanMeterRow;
use crate::db::schema::{plan_meters, usage_meters};
use crate::db::{DbConnection, DbError, now, per_backend};

/// Records the meter of `feature` (unless it exists) and sets its unit name.
pub fn ensure_meter(
    conn: &mut DbConnection,
    feature: &str,
    unit_name: &str,
    event_name: &str,
) -> Result<(), DbError> {
    let at = now();
    per_backend!(conn, |c| {
        diesel::insert_into(usage_meters::table)
            .values((
                usage_meters::feature.eq(feature),
                usage_meters::unit_name.eq(unit_name),
                usage_meters::event_name.eq(event_name),
                usage_meters::created_at.eq(at),
                usage_meters::updated_at.eq(at),
            ))
            .on_conflict(usage_meters::feature)
            .do_update()
            .set((
                usage_meters::unit_name.eq(unit_name),
                usage_meters::updated_at.eq(at),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// Stores the Stripe meter of `feature` (once: an id stored first is kept).
pub fn set_stripe_meter(
    conn: &mut DbConnection,
    feature: &str,
    meter_id: &str,
) -> Result<(), DbError> {
    per_backend!(conn, |c| {
        diesel::update(
            usage_meters::table
                .find(feature)
                .filter(usage_meters::stripe_meter_id.is_null()),
        )
        .set(usage_meters::stripe_meter_id.eq(meter_id))
        .execute(c)?;
        Ok(())
    })
}

/// The component of `feature` on plan `plan_id`.
pub fn component(
    conn: &mut DbConnection,
    plan_id: i64,
    feature: &str,
) -> Result<Option<PlanMeterRow>, DbError> {
    per_backend!(conn, |c| Ok(plan_meters::table
        .filter(plan_meters::plan_id.eq(plan_id))
        .filter(plan_meters::feature.eq(feature))
        .select(PlanMeterRow::as_select())
        .first(c)
        .optional()?))
}

/// How many components plan `plan_id` has.
pub fn count(conn: &mut DbConnection, plan_id: i64) -> Result<i64, DbError> {
    per_backend!(conn, |c| Ok(plan_meters::table
        .filter(plan_meters::plan_id.eq(plan_id))
        .count()
        .get_result(c)?))
}

/// A component's values as an admin set them.
#[derive(Debug, Clone)]
pub struct ComponentFields<'a> {
    pub plan_id: i64,
    pub feature: &'a str,
    pub included: i64,
    pub package_size: i64,
    pub package_amount: i64,
    pub quota: Option<i64>,
    pub fail_open: bool,
    pub stripe_price_id: Option<&'a str>,
}

/// Inserts or replaces the component of `fields.feature` on its plan.
pub fn upsert(conn: &mut DbConnection, fields: &ComponentFields<'_>) -> Result<(), DbError> {
    let at = now();
    per_backend!(conn, |c| {
        diesel::insert_into(plan_meters::table)
            .values((
                plan_meters::plan_id.eq(fields.plan_id),
                plan_meters::feature.eq(fields.feature),
                plan_meters::included.eq(fields.included),
                plan_meters::package_size.eq(fields.package_size),
                plan_meters::package_amount.eq(fields.package_amount),
                plan_meters::quota.eq(fields.quota),
                plan_meters::fail_open.eq(fields.fail_open),
                plan_meters::stripe_price_id.eq(fields.stripe_price_id),
                plan_meters::created_at.eq(at),
                plan_meters::updated_at.eq(at),
            ))
            .on_conflict((plan_meters::plan_id, plan_meters::feature))
            .do_update()
            .set((
                plan_meters::included.eq(fields.included),
                plan_meters::package_size.eq(fields.package_size),
                plan_meters::package_amount.eq(fields.package_amount),
                plan_meters::quota.eq(fields.quota),
                plan_meters::fail_open.eq(fields.fail_open),
                plan_meters::stripe_price_id.eq(fields.stripe_price_id),
                plan_meters::updated_at.eq(at),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// Removes the component of `feature` from plan `plan_id`; whether there was one.
pub fn delete(conn: &mut DbConnection, plan_id: i64, feature: &str) -> Result<bool, DbError> {
    per_backend!(conn, |c| Ok(diesel::delete(
        plan_meters::table
            .filter(plan_meters::plan_id.eq(plan_id))
            .filter(plan_meters::feature.eq(feature)),
    )
    .execute(c)?
        > 0))
}
