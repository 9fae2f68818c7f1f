//! `settings`: named operator switches shared by every instance.

use diesel::Connection as _;
use diesel::prelude::*;

use crate::db::schema::settings;
use crate::db::{DbConnection, DbError, now};

pub fn get(conn: &mut DbConnection, name: &str) -> Result<Option<String>, DbError> {
    Ok(settings::table
        .find(name)
        .select(settings::value)
        .first(conn)
        .optional()?)
}

pub fn set(conn: &mut DbConnection, name: &str, value: &str) -> Result<(), DbError> {
    conn.transaction(|conn| {
        let updated = diesel::update(settings::table.find(name))
            .set((settings::value.eq(value), settings::updated_at.eq(now())))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(settings::table)
                .values((
                    settings::name.eq(name),
                    settings::value.eq(value),
                    settings::updated_at.eq(now()),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}
