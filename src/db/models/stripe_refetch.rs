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

/// Asks for `object_id` (of `object_type`, `user_id`'s) to be read again. One row per object: a
/// new tie on an object already pending moves its `requested_at` (so a read that started before
/// it does not settle it) and gives it its attempts back.
pub fn request(
    conn: &mut DbConnection,
    object_type: &str,
    object_id: &str,
    user_id: UserId,
) -> Result<(), DbError> {
    let at = now();
    let insert = diesel::insert_into(stripe_refetches::table)
        .values((
            stripe_refetches::stripe_object_id.eq(object_id),
            stripe_refetches::object_type.eq(object_type),
            stripe_refetches::user_id.eq(user_id),
            stripe_refetches::requested_at.eq(at),
            stripe_refetches::attempts.eq(0),
        ))
        .on_conflict(stripe_refetches::stripe_object_id)
        .do_update()
        .set((
            stripe_refetches::requested_at.eq(at),
            stripe_refetches::attempts.eq(0),
        ));
    per_backend!(conn, |c| insert.execute(c))?;
    Ok(())
}

/// Up to `limit` pending objects with fewer than `max_attempts` failed attempts, oldest request
/// first (objects that failed `max_attempts` times are parked for `tollgate sync`).
pub fn pending(
    conn: &mut DbConnection,
    limit: i64,
    max_attempts: i64,
) -> Result<Vec<RefetchRow>, DbError> {
    Ok(stripe_refetches::table
        .filter(stripe_refetches::attempts.lt(max_attempts))
        .order(stripe_refetches::requested_at.asc())
        .limit(limit)
        .select(RefetchRow::as_select())
        .load(conn)?)
}

/// Done: the object's state was read and stored. Only the request that was read is settled: a
/// newer tie recorded while Stripe was being read keeps the row.
pub fn finish(
    conn: &mut DbConnection,
    object_id: &str,
    requested_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::delete(
        stripe_refetches::table
            .find(object_id)
            .filter(stripe_refetches::requested_at.eq(requested_at)),
    )
    .execute(conn)?;
    Ok(())
}

/// Settled by a full read (`tollgate sync` compared the object with Stripe's state as read at
/// `observed_at`): requests made before that read are dropped, parked ones included.
pub fn settled_by_sync(
    conn: &mut DbConnection,
    object_id: &str,
    observed_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::delete(
        stripe_refetches::table
            .find(object_id)
            .filter(stripe_refetches::requested_at.le(observed_at)),
    )
    .execute(conn)?;
    Ok(())
}

/// A failed attempt (kept for the next pass, counted).
pub fn failed(conn: &mut DbConnection, object_id: &str) -> Result<(), DbError> {
    diesel::update(stripe_refetches::table.find(object_id))
        .set(stripe_refetches::attempts.eq(stripe_refetches::attempts + 1))
        .execute(conn)?;
    Ok(())
}
