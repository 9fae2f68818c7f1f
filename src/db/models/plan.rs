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
}

/// The fields an admin edits.
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = plans)]
pub struct PlanFields<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub billing_interval: &'a str,
    pub trial_days: i64,
    pub features: &'a str,
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

pub fn update(conn: &mut DbConnection, id: i64, fields: &PlanFields<'_>) -> Result<(), DbError> {
    diesel::update(plans::table.find(id))
        .set((fields, plans::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

/// Records the Stripe objects behind a plan and whether it is offered.
pub fn set_stripe(
    conn: &mut DbConnection,
    id: i64,
    product: Option<&str>,
    price: Option<&str>,
    active: bool,
) -> Result<(), DbError> {
    diesel::update(plans::table.find(id))
        .set((
            plans::stripe_product_id.eq(product),
            plans::stripe_price_id.eq(price),
            plans::active.eq(active),
            plans::updated_at.eq(now()),
        ))
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
