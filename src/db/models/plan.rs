//! `plans`: what customers can subscribe to, and the Stripe Product and Price behind each.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::plans;
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = plans)]
pub struct PlanRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub amount: i64,
    pub currency: String,
    pub billing_interval: String,
    pub trial_days: i64,
    pub features: String,
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// What the pricing page lists, one line each (not the entitlement keys in `features`).
    pub feature_lines: String,
    /// Shown as "most popular".
    pub highlighted: bool,
    /// A yearly price beside a monthly plan's price (minor units), if offered.
    pub yearly_amount: Option<i64>,
    pub stripe_yearly_price_id: Option<String>,
}

/// The fields an admin edits (an empty yearly price clears the stored one).
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = plans, treat_none_as_null = true)]
pub struct PlanFields<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub billing_interval: &'a str,
    pub trial_days: i64,
    pub features: &'a str,
    pub feature_lines: &'a str,
    pub highlighted: bool,
    pub yearly_amount: Option<i64>,
}

pub fn insert(conn: &mut DbConnection, fields: &PlanFields<'_>) -> Result<PlanRow, DbError> {
    let at = now();
    diesel::insert_into(plans::table)
        .values((
            fields,
            plans::active.eq(false),
            plans::created_at.eq(at),
            plans::updated_at.eq(at),
        ))
        .execute(conn)?;
    find_by_slug(conn, fields.slug)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(plans::table.count().get_result(conn)?)
}

pub fn update(conn: &mut DbConnection, id: i64, fields: &PlanFields<'_>) -> Result<(), DbError> {
    diesel::update(plans::table.find(id))
        .set((fields, plans::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

/// The Stripe objects behind a plan: its Product, its Price and its optional yearly Price.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeIds<'a> {
    pub product: Option<&'a str>,
    pub price: Option<&'a str>,
    pub yearly_price: Option<&'a str>,
}

/// Records the Stripe objects behind a plan and whether it is offered.
pub fn set_stripe(
    conn: &mut DbConnection,
    id: i64,
    ids: StripeIds<'_>,
    active: bool,
) -> Result<(), DbError> {
    diesel::update(plans::table.find(id))
        .set((
            plans::stripe_product_id.eq(ids.product),
            plans::stripe_price_id.eq(ids.price),
            plans::stripe_yearly_price_id.eq(ids.yearly_price),
            plans::active.eq(active),
            plans::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes the "most popular" badge from every plan but `id`: one plan carries it at a time.
pub fn highlight_only(conn: &mut DbConnection, id: i64) -> Result<(), DbError> {
    diesel::update(plans::table.filter(plans::id.ne(id)))
        .set(plans::highlighted.eq(false))
        .execute(conn)?;
    Ok(())
}

pub fn all(conn: &mut DbConnection) -> Result<Vec<PlanRow>, DbError> {
    Ok(plans::table
        .order((plans::active.desc(), plans::amount.asc()))
        .select(PlanRow::as_select())
        .load(conn)?)
}

pub fn active(conn: &mut DbConnection) -> Result<Vec<PlanRow>, DbError> {
    Ok(plans::table
        .filter(plans::active.eq(true))
        .order(plans::amount.asc())
        .select(PlanRow::as_select())
        .load(conn)?)
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<PlanRow>, DbError> {
    Ok(plans::table
        .find(id)
        .select(PlanRow::as_select())
        .first(conn)
        .optional()?)
}

/// The plans among `ids` that exist.
pub fn find_all(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<PlanRow>, DbError> {
    Ok(plans::table
        .filter(plans::id.eq_any(ids))
        .select(PlanRow::as_select())
        .load(conn)?)
}

pub fn find_by_slug(conn: &mut DbConnection, slug: &str) -> Result<Option<PlanRow>, DbError> {
    Ok(plans::table
        .filter(plans::slug.eq(slug))
        .select(PlanRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_by_stripe_product(
    conn: &mut DbConnection,
    product: &str,
) -> Result<Option<PlanRow>, DbError> {
    Ok(plans::table
        .filter(plans::stripe_product_id.eq(product))
        .select(PlanRow::as_select())
        .first(conn)
        .optional()?)
}
