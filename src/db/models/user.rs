//! `users`: accounts that sign in with an email and password.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::users;
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Inserts a user and returns the stored row (a unique violation means the email is taken).
pub fn insert(conn: &mut DbConnection, new: &NewUser<'_>) -> Result<UserRow, DbError> {
    diesel::insert_into(users::table)
        .values(new)
        .execute(conn)?;
    find_by_email(conn, new.email)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

pub fn find_by_email(conn: &mut DbConnection, email: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn set_role(conn: &mut DbConnection, id: i64, role: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::role.eq(role), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn set_password_hash(conn: &mut DbConnection, id: i64, hash: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn record_login(conn: &mut DbConnection, id: i64) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(Some(now())))
        .execute(conn)?;
    Ok(())
}

/// The emails of the given accounts, as `(id, email)` (one query, for lists that name people).
pub fn emails_by_id(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<(i64, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email))
        .load(conn)?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(users::table.count().get_result(conn)?)
}
