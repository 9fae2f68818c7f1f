//! `stripe_refetches`: objects whose state must be read again from Stripe, because two of its
//! events carried the same `created` second and differing content.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::stripe_refetches;
use crate::db::{DbConnection, DbError, now, per_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stripe_refetches)]
pub struct RefetchRow {
    pub stripe_object_id: String,
    pub object_type: String,
    pub user_id: UserId,
    pub requested_at: NaiveDateTime,
    pub attempts: i64,
}

/// Asks for `object_id` (of `object_type`, `user_id`'s) to be read again; once per object.
pub fn request(
    conn: &mut DbConnection,
    object_type: &str,
    object_id: &str,
    user_id: UserId,
) -> Result<(), DbError> {
    let insert = diesel::insert_into(stripe_refetches::table)
        .values((
            stripe_refetches::stripe_object_id.eq(object_id),
            stripe_refetches::object_type.eq(object_type),
            stripe_refetches::user_id.eq(user_id),
            stripe_refetches::requested_at.eq(now()),
            stripe_refetches::attempts.eq(0),
        ))
        .on_conflict_do_nothing();
    per_backend!(conn, |c| insert.execute(c))?;
    Ok(())
}

/// Up to `limit` pending objects, oldest request first.
pub fn pending(conn: &mut DbConnection, limit: i64) -> Result<Vec<RefetchRow>, DbError> {
    Ok(stripe_refetches::table
        .order(stripe_refetches::requested_at.asc())
        .limit(limit)
        .select(RefetchRow::as_select())
        .load(conn)?)
}

/// Done: the object's state was read and stored.
pub fn finish(conn: &mut DbConnection, object_id: &str) -> Result<(), DbError> {
    diesel::delete(stripe_refetches::table.find(object_id)).execute(conn)?;
    Ok(())
}

/// A failed attempt (kept for the next pass, counted).
pub fn failed(conn: &mut DbConnection, object_id: &str) -> Result<(), DbError> {
    diesel::update(stripe_refetches::table.find(object_id))
        .set(stripe_refetches::attempts.eq(stripe_refetches::attempts + 1))
        .execute(conn)?;
    Ok(())
}
