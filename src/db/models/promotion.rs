//! `coupons`, `promotion_codes` and `subscription_discounts`: the console's copy of the coupons
//! and codes admins created at Stripe, and the discount Stripe applies to each subscription.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::{coupons, promotion_codes, subscription_discounts};
use crate::db::{DbConnection, DbError, now, per_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = coupons)]
pub struct CouponRow {
    pub id: i64,
    pub operation_id: String,
    pub stripe_coupon_id: String,
    pub name: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
    pub duration_in_months: Option<i64>,
    pub redeem_by: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = coupons)]
pub struct NewCoupon<'a> {
    pub operation_id: &'a str,
    pub stripe_coupon_id: &'a str,
    pub name: &'a str,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<&'a str>,
    pub duration: &'a str,
    pub duration_in_months: Option<i64>,
    pub redeem_by: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
}

/// Inserts the coupon unless its form's operation already did; returns whether it inserted.
pub fn insert_coupon(conn: &mut DbConnection, coupon: &NewCoupon<'_>) -> Result<bool, DbError> {
    let insert = diesel::insert_into(coupons::table)
        .values((coupon, coupons::created_at.eq(now())))
        .on_conflict_do_nothing();
    Ok(per_backend!(conn, |c| insert.execute(c))? > 0)
}

pub fn all_coupons(conn: &mut DbConnection) -> Result<Vec<CouponRow>, DbError> {
    Ok(coupons::table
        .order(coupons::id.desc())
        .select(CouponRow::as_select())
        .load(conn)?)
}

pub fn find_coupon(conn: &mut DbConnection, id: i64) -> Result<Option<CouponRow>, DbError> {
    Ok(coupons::table
        .find(id)
        .select(CouponRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn coupon_by_operation(
    conn: &mut DbConnection,
    operation_id: &str,
) -> Result<Option<CouponRow>, DbError> {
    Ok(coupons::table
        .filter(coupons::operation_id.eq(operation_id))
        .select(CouponRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn coupon_by_stripe_id(
    conn: &mut DbConnection,
    stripe_id: &str,
) -> Result<Option<CouponRow>, DbError> {
    Ok(coupons::table
        .filter(coupons::stripe_coupon_id.eq(stripe_id))
        .select(CouponRow::as_select())
        .first(conn)
        .optional()?)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = promotion_codes)]
pub struct PromotionCodeRow {
    pub id: i64,
    pub operation_id: String,
    pub coupon_id: i64,
    pub code: String,
    pub stripe_promotion_code_id: String,
    pub expires_at: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = promotion_codes)]
pub struct NewPromotionCode<'a> {
    pub operation_id: &'a str,
    pub coupon_id: i64,
    pub code: &'a str,
    pub stripe_promotion_code_id: &'a str,
    pub expires_at: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
}

/// Inserts the code unless its operation already did (or the code exists); returns whether it
/// inserted.
pub fn insert_code(conn: &mut DbConnection, code: &NewPromotionCode<'_>) -> Result<bool, DbError> {
    let at = now();
    let insert = diesel::insert_into(promotion_codes::table)
        .values((
            code,
            promotion_codes::active.eq(true),
            promotion_codes::created_at.eq(at),
            promotion_codes::updated_at.eq(at),
        ))
        .on_conflict_do_nothing();
    Ok(per_backend!(conn, |c| insert.execute(c))? > 0)
}

pub fn all_codes(conn: &mut DbConnection) -> Result<Vec<PromotionCodeRow>, DbError> {
    Ok(promotion_codes::table
        .order(promotion_codes::id.desc())
        .select(PromotionCodeRow::as_select())
        .load(conn)?)
}

pub fn find_code(conn: &mut DbConnection, id: i64) -> Result<Option<PromotionCodeRow>, DbError> {
    Ok(promotion_codes::table
        .find(id)
        .select(PromotionCodeRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn code_by_text(
    conn: &mut DbConnection,
    code: &str,
) -> Result<Option<PromotionCodeRow>, DbError> {
    Ok(promotion_codes::table
        .filter(promotion_codes::code.eq(code))
        .select(PromotionCodeRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn code_by_stripe_id(
    conn: &mut DbConnection,
    stripe_id: &str,
) -> Result<Option<PromotionCodeRow>, DbError> {
    Ok(promotion_codes::table
        .filter(promotion_codes::stripe_promotion_code_id.eq(stripe_id))
        .select(PromotionCodeRow::as_select())
        .first(conn)
        .optional()?)
}

/// Marks the code inactive; returns whether it was active.
pub fn deactivate_code(conn: &mut DbConnection, id: i64) -> Result<bool, DbError> {
    let changed = diesel::update(
        promotion_codes::table
            .find(id)
            .filter(promotion_codes::active.eq(true)),
    )
    .set((
        promotion_codes::active.eq(false),
        promotion_codes::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(changed > 0)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscription_discounts)]
pub struct DiscountRow {
    pub id: i64,
    pub user_id: UserId,
    pub stripe_subscription_id: String,
    pub stripe_discount_id: String,
    pub stripe_coupon_id: Option<String>,
    pub stripe_promotion_code_id: Option<String>,
    pub starts_at: Option<NaiveDateTime>,
    pub ends_at: Option<NaiveDateTime>,
    pub removed: bool,
    pub stripe_updated_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A subscription's discount as one Stripe event reported it.
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = subscription_discounts, treat_none_as_null = true)]
pub struct DiscountState<'a> {
    pub stripe_discount_id: &'a str,
    pub stripe_coupon_id: Option<&'a str>,
    pub stripe_promotion_code_id: Option<&'a str>,
    pub starts_at: Option<NaiveDateTime>,
    pub ends_at: Option<NaiveDateTime>,
    pub removed: bool,
    pub stripe_updated_at: NaiveDateTime,
}

/// Records the subscription's discount as of `state.stripe_updated_at`. An older event never
/// overwrites newer state, and a removed discount stays removed: at the same second, a
/// deletion wins over its discount's creation or update. Returns whether anything was written.
pub fn upsert_discount(
    conn: &mut DbConnection,
    user_id: UserId,
    subscription_id: &str,
    state: &DiscountState<'_>,
) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        let at = now();
        let update_if_newer =
            |conn: &mut DbConnection| {
                let newer = subscription_discounts::table
                    .filter(subscription_discounts::stripe_subscription_id.eq(subscription_id))
                    .filter(subscription_discounts::stripe_updated_at.le(state.stripe_updated_at));
                if state.removed {
                    // A discount's deletion removes that discount, or an older one: never a
                    // newer discount from the same second (Stripe replaced it).
                    diesel::update(
                        newer.filter(
                            subscription_discounts::stripe_discount_id
                                .eq(state.stripe_discount_id)
                                .or(subscription_discounts::stripe_updated_at
                                    .lt(state.stripe_updated_at)),
                        ),
                    )
                    .set((state, subscription_discounts::updated_at.eq(at)))
                    .execute(conn)
                } else {
                    // Not over the same discount's deletion.
                    diesel::update(newer.filter(subscription_discounts::removed.eq(false).or(
                        subscription_discounts::stripe_discount_id.ne(state.stripe_discount_id),
                    )))
                    .set((state, subscription_discounts::updated_at.eq(at)))
                    .execute(conn)
                }
            };
        if update_if_newer(conn)? > 0 {
            return Ok(true);
        }
        let insert = diesel::insert_into(subscription_discounts::table)
            .values((
                subscription_discounts::user_id.eq(user_id),
                subscription_discounts::stripe_subscription_id.eq(subscription_id),
                state,
                subscription_discounts::updated_at.eq(at),
            ))
            .on_conflict_do_nothing();
        if per_backend!(conn, |c| insert.execute(c))? > 0 {
            return Ok(true);
        }
        Ok(update_if_newer(conn)? > 0)
    })
}

/// The discount on the subscription, if one is in force (not removed).
pub fn discount_for_subscription(
    conn: &mut DbConnection,
    subscription_id: &str,
) -> Result<Option<DiscountRow>, DbError> {
    Ok(subscription_discounts::table
        .filter(subscription_discounts::stripe_subscription_id.eq(subscription_id))
        .filter(subscription_discounts::removed.eq(false))
        .select(DiscountRow::as_select())
        .first(conn)
        .optional()?)
}
