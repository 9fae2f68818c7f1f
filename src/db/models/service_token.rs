//! `service_tokens`: internal services' bearer tokens, stored as HMACs only.

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
}

#[derive(Debug, Insertable)]
#[diesel(table_name = service_tokens)]
pub struct NewServiceToken<'a> {
    pub name: &'a str,
    pub scopes: &'a str,
    pub token_hash: &'a str,
    pub display_id: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, new: &NewServiceToken<'_>) -> Result<(), DbError> {
    diesel::insert_into(service_tokens::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

pub fn find_by_hash(
    conn: &mut DbConnection,
    hash: &str,
) -> Result<Option<ServiceTokenRow>, DbError> {
    Ok(service_tokens::table
        .filter(service_tokens::token_hash.eq(hash))
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

pub fn touch(conn: &mut DbConnection, id: i64) -> Result<(), DbError> {
    diesel::update(service_tokens::table.find(id))
        .set(service_tokens::last_used_at.eq(Some(now())))
        .execute(conn)?;
    Ok(())
}
