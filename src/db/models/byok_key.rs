//! `byok_keys`: customers' provider API keys, sealed. One per user and provider.

use chrono::NaiveDateTime;
use diesel::Connection as _;
use diesel::prelude::*;

use crate::db::models::Swap;
use crate::db::models::user::UserId;
use crate::db::schema::byok_keys;
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = byok_keys)]
pub struct ByokKeyRow {
    pub id: i64,
    pub user_id: UserId,
    pub provider: String,
    pub secret: Vec<u8>,
    pub key_id: String,
    pub masked: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = byok_keys)]
pub struct NewByokKey<'a> {
    pub user_id: UserId,
    pub provider: &'a str,
    pub secret: &'a [u8],
    pub key_id: &'a str,
    pub masked: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Adds the key, or replaces the user's existing key for that provider.
pub fn upsert(conn: &mut DbConnection, new: &NewByokKey<'_>) -> Result<(), DbError> {
    conn.transaction(|conn| {
        let replaced = diesel::update(
            byok_keys::table
                .filter(byok_keys::user_id.eq(new.user_id))
                .filter(byok_keys::provider.eq(new.provider)),
        )
        .set((
            byok_keys::secret.eq(new.secret),
            byok_keys::key_id.eq(new.key_id),
            byok_keys::masked.eq(new.masked),
            // A replacement is a new key: it is added now and has not been used.
            byok_keys::created_at.eq(new.created_at),
            byok_keys::updated_at.eq(new.updated_at),
            byok_keys::last_used_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
        if replaced == 0 {
            diesel::insert_into(byok_keys::table)
                .values(new)
                .execute(conn)?;
        }
        Ok(())
    })
}

pub fn for_user(conn: &mut DbConnection, user_id: UserId) -> Result<Vec<ByokKeyRow>, DbError> {
    Ok(byok_keys::table
        .filter(byok_keys::user_id.eq(user_id))
        .order(byok_keys::provider.asc())
        .select(ByokKeyRow::as_select())
        .load(conn)?)
}

pub fn find(
    conn: &mut DbConnection,
    user_id: UserId,
    provider: &str,
) -> Result<Option<ByokKeyRow>, DbError> {
    Ok(byok_keys::table
        .filter(byok_keys::user_id.eq(user_id))
        .filter(byok_keys::provider.eq(provider))
        .select(ByokKeyRow::as_select())
        .first(conn)
        .optional()?)
}

/// Deletes the user's key for a provider; false when there was none.
pub fn delete(conn: &mut DbConnection, user_id: UserId, provider: &str) -> Result<bool, DbError> {
    let deleted = diesel::delete(
        byok_keys::table
            .filter(byok_keys::user_id.eq(user_id))
            .filter(byok_keys::provider.eq(provider)),
    )
    .execute(conn)?;
    Ok(deleted > 0)
}

/// Every key of the users `user_ids` (one statement: a batch of leases reads them at once).
pub fn of_users(conn: &mut DbConnection, user_ids: &[UserId]) -> Result<Vec<ByokKeyRow>, DbError> {
    Ok(byok_keys::table
        .filter(byok_keys::user_id.eq_any(user_ids))
        .select(ByokKeyRow::as_select())
        .load(conn)?)
}

/// Marks the keys `ids` used now (one statement, kept prepared: diesel prepares an `UPDATE`
/// anew on every call); returns the ids of those still there (a key deleted meanwhile is not).
pub fn touch_all(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Touched {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    match conn {
        DbConnection::Postgresql(pg) => {
            let touched: Vec<Touched> = crate::kept_sql!(
                "UPDATE byok_keys SET last_used_at = $1 WHERE id = ANY($2) RETURNING id",
            )
            .bind::<diesel::sql_types::Timestamp, _>(now())
            .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(ids)
            .load(pg)?;
            Ok(touched.into_iter().map(|row| row.id).collect())
        }
        // SQLite has no arrays, and prepares in process.
        DbConnection::Sqlite(sqlite) => Ok(diesel::update(
            byok_keys::table.filter(byok_keys::id.eq_any(ids)),
        )
        .set(byok_keys::last_used_at.eq(Some(now())))
        .returning(byok_keys::id)
        .get_results(sqlite)?),
    }
}

/// Up to `limit` rows sealed under a key other than `primary`, in id order after `after_id`.
pub fn not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ByokKeyRow>, DbError> {
    Ok(byok_keys::table
        .filter(byok_keys::key_id.ne(primary))
        .filter(byok_keys::id.gt(after_id))
        .order(byok_keys::id.asc())
        .limit(limit)
        .select(ByokKeyRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed keys, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_secret(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        byok_keys {
            id,
            secret: diesel::sql_types::Binary,
            key_id
        },
        swaps,
        key_id
    )
}

/// How many values each key id holds.
pub fn count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    key_counts_beside!(conn, byok_keys::table, byok_keys::key_id, beside)
}
