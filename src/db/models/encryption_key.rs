//! `encryption_keys`: when each encryption key id was first seen (its age starts there).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::encryption_keys;
use crate::db::{DbConnection, DbError, per_backend};

/// Records `key_id` as first seen `at` unless it was seen before (then nothing changes).
pub fn record_first_seen(
    conn: &mut DbConnection,
    key_id: &str,
    at: NaiveDateTime,
) -> Result<(), DbError> {
    let insert = diesel::insert_into(encryption_keys::table).values((
        encryption_keys::key_id.eq(key_id),
        encryption_keys::first_seen_at.eq(at),
    ));
    per_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(())
}

/// Every recorded key id with when it was first seen.
pub fn all(conn: &mut DbConnection) -> Result<Vec<(String, NaiveDateTime)>, DbError> {
    Ok(encryption_keys::table
        .select((encryption_keys::key_id, encryption_keys::first_seen_at))
        .order(encryption_keys::first_seen_at.asc())
        .load(conn)?)
}
