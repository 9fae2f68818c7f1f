//! `service_tokens`: internal services' bearer tokens, stored as HMACs only (with the id of the
//! pepper that made each HMAC).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::service_tokens;
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = service_tokens)]
pub struct ServiceTokenRow {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub token_hash: String,
    pub display_id: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    /// The pepper the hash was made under; `None`: not recorded yet (set on the next use).
    pub hash_key_id: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = service_tokens)]
pub struct NewServiceToken<'a> {
    pub name: &'a str,
    pub scopes: &'a str,
    pub token_hash: &'a str,
    pub display_id: &'a str,
    pub created_at: NaiveDateTime,
    pub hash_key_id: &'a str,
}

pub fn insert(conn: &mut DbConnection, new: &NewServiceToken<'_>) -> Result<(), DbError> {
    diesel::insert_into(service_tokens::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

/// The token whose hash is any of `hashes` (the digests a token may be stored under).
pub fn find_by_any_hash(
    conn: &mut DbConnection,
    hashes: &[String],
) -> Result<Option<ServiceTokenRow>, DbError> {
    Ok(service_tokens::table
        .filter(service_tokens::token_hash.eq_any(hashes))
        .select(ServiceTokenRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn all(conn: &mut DbConnection) -> Result<Vec<ServiceTokenRow>, DbError> {
    Ok(service_tokens::table
        .order(service_tokens::name.asc())
        .select(ServiceTokenRow::as_select())
        .load(conn)?)
}

/// Revokes the named token (or every live token when `name` is `None`); returns how many.
pub fn revoke(conn: &mut DbConnection, name: Option<&str>) -> Result<usize, DbError> {
    let live = service_tokens::table
        .filter(service_tokens::revoked_at.is_null())
        .into_boxed();
    let target = match name {
        Some(name) => live.filter(service_tokens::name.eq(name.to_owned())),
        None => live,
    };
    let ids: Vec<i64> = target.select(service_tokens::id).load(conn)?;
    Ok(
        diesel::update(service_tokens::table.filter(service_tokens::id.eq_any(ids)))
            .set(service_tokens::revoked_at.eq(Some(now())))
            .execute(conn)?,
    )
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<ServiceTokenRow>, DbError> {
    Ok(service_tokens::table
        .find(id)
        .select(ServiceTokenRow::as_select())
        .first(conn)
        .optional()?)
}

/// Which of `ids` belong to tokens that are not revoked.
pub fn live_of(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    Ok(service_tokens::table
        .filter(service_tokens::id.eq_any(ids))
        .filter(service_tokens::revoked_at.is_null())
        .select(service_tokens::id)
        .load(conn)?)
}

/// Revokes the token with this id if it is live; whether it was.
pub fn revoke_by_id(conn: &mut DbConnection, id: i64) -> Result<bool, DbError> {
    let updated = diesel::update(
        service_tokens::table
            .find(id)
            .filter(service_tokens::revoked_at.is_null()),
    )
    .set(service_tokens::revoked_at.eq(Some(now())))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Records a use of the token, whose hash is (still) under the pepper `hash_key_id`.
pub fn touch(conn: &mut DbConnection, id: i64, hash_key_id: &str) -> Result<(), DbError> {
    diesel::update(service_tokens::table.find(id))
        .set((
            service_tokens::last_used_at.eq(Some(now())),
            service_tokens::hash_key_id.eq(Some(hash_key_id)),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a use and replaces the hash with one under the pepper `hash_key_id`, only if the row
/// still holds `old` (compare-and-swap: a concurrent use may have re-hashed it first).
pub fn rehash(
    conn: &mut DbConnection,
    id: i64,
    old: &str,
    new: &str,
    hash_key_id: &str,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        service_tokens::table
            .find(id)
            .filter(service_tokens::token_hash.eq(old)),
    )
    .set((
        service_tokens::token_hash.eq(new),
        service_tokens::hash_key_id.eq(Some(hash_key_id)),
        service_tokens::last_used_at.eq(Some(now())),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// How many live (unrevoked) tokens each pepper id hashed (`None`: not recorded yet).
pub fn count_live_by_hash_key_id(
    conn: &mut DbConnection,
) -> Result<Vec<(Option<String>, i64)>, DbError> {
    Ok(service_tokens::table
        .filter(service_tokens::revoked_at.is_null())
        .group_by(service_tokens::hash_key_id)
        .select((service_tokens::hash_key_id, diesel::dsl::count_star()))
        .order(service_tokens::hash_key_id.asc())
        .load(conn)?)
}
