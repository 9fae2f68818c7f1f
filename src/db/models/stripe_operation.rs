//! `stripe_operations`: one row per operation (a billing form's submission), owned by the user
//! who first submitted its id; its Stripe writes' idempotency keys derive from the id and that
//! user.

use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::stripe_operations;
use crate::db::{DbConnection, DbError, now, per_backend};

/// Records the operation (once); a second call with the same key is a retry of the same write.
pub fn record(
    conn: &mut DbConnection,
    key: &str,
    user_id: Option<UserId>,
    kind: &str,
) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(stripe_operations::table)
        .values((
            stripe_operations::operation_key.eq(key),
            stripe_operations::user_id.eq(user_id),
            stripe_operations::kind.eq(kind),
            stripe_operations::created_at.eq(now()),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Records `key` unless it is recorded already, and says whether this call recorded it. Safe
/// inside a transaction on either backend (a duplicate is skipped, not an error).
pub fn record_once(
    conn: &mut DbConnection,
    key: &str,
    user_id: Option<UserId>,
    kind: &str,
) -> Result<bool, DbError> {
    let insert = diesel::insert_into(stripe_operations::table)
        .values((
            stripe_operations::operation_key.eq(key),
            stripe_operations::user_id.eq(user_id),
            stripe_operations::kind.eq(kind),
            stripe_operations::created_at.eq(now()),
        ))
        .on_conflict_do_nothing();
    Ok(per_backend!(conn, |c| insert.execute(c))? > 0)
}

/// Whose an operation id is, as seen by the user submitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Recorded now, for this user.
    First,
    /// Already recorded for this same user: a retry or a double submission.
    Repeat,
    /// Already recorded for someone else.
    Foreign,
}

/// Records `key` for `user_id` unless it is recorded already, and says whose it is.
pub fn claim(
    conn: &mut DbConnection,
    key: &str,
    user_id: Option<UserId>,
    kind: &str,
) -> Result<Claim, DbError> {
    if record(conn, key, user_id, kind)? {
        return Ok(Claim::First);
    }
    let owner: Option<UserId> = stripe_operations::table
        .filter(stripe_operations::operation_key.eq(key))
        .select(stripe_operations::user_id)
        .first(conn)?;
    Ok(if owner == user_id {
        Claim::Repeat
    } else {
        Claim::Foreign
    })
}

/// Ids of up to `limit` operations recorded before `cutoff`, oldest first.
pub fn ids_before(
    conn: &mut DbConnection,
    cutoff: chrono::NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(stripe_operations::table
        .filter(stripe_operations::created_at.lt(cutoff))
        .order(stripe_operations::id)
        .limit(limit)
        .select(stripe_operations::id)
        .load(conn)?)
}

/// How many operations were recorded before `cutoff`.
pub fn count_before(
    conn: &mut DbConnection,
    cutoff: chrono::NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(stripe_operations::table
        .filter(stripe_operations::created_at.lt(cutoff))
        .count()
        .get_result(conn)?)
}

/// Deletes the operations `ids`.
pub fn delete_ids(conn: &mut DbConnection, ids: &[i64]) -> Result<usize, DbError> {
    Ok(
        diesel::delete(stripe_operations::table.filter(stripe_operations::id.eq_any(ids)))
            .execute(conn)?,
    )
}

/// Whether the operation key was recorded.
pub fn exists(conn: &mut DbConnection, key: &str) -> Result<bool, DbError> {
    use diesel::dsl::exists;
    Ok(diesel::select(exists(
        stripe_operations::table.filter(stripe_operations::operation_key.eq(key)),
    ))
    .get_result(conn)?)
}
