//! `sessions`: server-side session state, keyed by a hash of the cookie's session key.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::sessions;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub key_hash: String,
    pub user_id: Option<UserId>,
    pub state: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    pub key_hash: &'a str,
    pub user_id: Option<UserId>,
    pub state: &'a str,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, new: &NewSession<'_>) -> Result<(), DbError> {
    diesel::insert_into(sessions::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, key_hash: &str) -> Result<Option<SessionRow>, DbError> {
    Ok(sessions::table
        .find(key_hash)
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Replaces the state of a live session; returns false when it no longer exists.
pub fn update_state(
    conn: &mut DbConnection,
    key_hash: &str,
    user_id: Option<UserId>,
    state: &str,
    expires_at: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(sessions::table.find(key_hash))
        .set((
            sessions::user_id.eq(user_id),
            sessions::state.eq(state),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(updated == 1)
}

/// Pushes the idle expiry forward, skipping the write while the stored expiry is recent enough.
pub fn touch(
    conn: &mut DbConnection,
    key_hash: &str,
    expires_at: NaiveDateTime,
    unless_after: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::update(
        sessions::table
            .find(key_hash)
            .filter(sessions::expires_at.lt(unless_after)),
    )
    .set(sessions::expires_at.eq(expires_at))
    .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, key_hash: &str) -> Result<(), DbError> {
    diesel::delete(sessions::table.find(key_hash)).execute(conn)?;
    Ok(())
}

/// Removes every session of one user (promotion, password reset); returns how many.
pub fn delete_for_user(conn: &mut DbConnection, user_id: UserId) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)?)
}

/// Removes every session; returns how many there were.
pub fn delete_all(conn: &mut DbConnection) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table).execute(conn)?)
}

pub fn delete_expired(conn: &mut DbConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::delete(sessions::table.filter(sessions::expires_at.lt(now))).execute(conn)?)
}

/// Key hashes of up to `limit` sessions expired before `now`.
pub fn expired_keys(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(sessions::table
        .filter(sessions::expires_at.lt(now))
        .limit(limit)
        .select(sessions::key_hash)
        .load(conn)?)
}

/// How many sessions expired before `now`.
pub fn count_expired(conn: &mut DbConnection, now: NaiveDateTime) -> Result<i64, DbError> {
    Ok(sessions::table
        .filter(sessions::expires_at.lt(now))
        .count()
        .get_result(conn)?)
}

/// Deletes the sessions `keys` that expired before `now` (checked again: one renewed
/// meanwhile stays).
pub fn delete_expired_keys(
    conn: &mut DbConnection,
    keys: &[String],
    now: NaiveDateTime,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        sessions::table
            .filter(sessions::key_hash.eq_any(keys))
            .filter(sessions::expires_at.lt(now)),
    )
    .execute(conn)?)
}
