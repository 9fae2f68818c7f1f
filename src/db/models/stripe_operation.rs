//! `stripe_operations`: one row per Stripe write, whose key derives the idempotency key.

use diesel::prelude::*;

use crate::db::schema::stripe_operations;
use crate::db::{DbConnection, DbError, now};

/// Records the operation (once); a second call with the same key is a retry of the same write.
pub fn record(
    conn: &mut DbConnection,
    key: &str,
    user_id: Option<i64>,
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
