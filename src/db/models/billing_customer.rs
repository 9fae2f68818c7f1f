//! `billing_customers`: each user's Stripe customer id, sealed, with a blind index for lookups
//! (and the id of the pepper that made the index).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::Swap;
use crate::db::models::user::UserId;
use crate::db::schema::billing_customers;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = billing_customers)]
pub struct BillingCustomerRow {
    pub user_id: UserId,
    pub stripe_customer_sealed: Vec<u8>,
    pub key_id: String,
    pub stripe_customer_index: String,
    pub stripe_customer_masked: String,
    pub created_at: NaiveDateTime,
    /// The pepper the index was made under; `None`: made before pepper ids were recorded.
    pub index_key_id: Option<String>,
}

pub fn insert(conn: &mut DbConnection, row: &BillingCustomerRow) -> Result<(), DbError> {
    diesel::insert_into(billing_customers::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn for_user(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<BillingCustomerRow>, DbError> {
    Ok(billing_customers::table
        .find(user_id)
        .select(BillingCustomerRow::as_select())
        .first(conn)
        .optional()?)
}

/// Which of `user_ids` have a Stripe customer.
pub fn users_with_customer(
    conn: &mut DbConnection,
    user_ids: &[UserId],
) -> Result<Vec<UserId>, DbError> {
    Ok(billing_customers::table
        .filter(billing_customers::user_id.eq_any(user_ids))
        .select(billing_customers::user_id)
        .load(conn)?)
}

/// The row whose index is any of `indexes` (the digests a customer id may be stored under),
/// in one statement: `rotate-key` may re-index the row between two. PostgreSQL keeps `= ANY($1)`
/// prepared. SQLite cannot keep an `IN` list, whose length varies, and would parse and plan it
/// on every call (every webhook's customer lookup): with one pepper, the usual case, there are
/// two digests (the current form and the legacy one), asked for as `= ? OR = ?`, which it keeps.
pub fn by_any_index(
    conn: &mut DbConnection,
    indexes: &[String],
) -> Result<Option<BillingCustomerRow>, DbError> {
    use billing_customers::stripe_customer_index as index;
    let found = match (conn, indexes) {
        (DbConnection::Sqlite(sqlite), [first, second]) => billing_customers::table
            .select(BillingCustomerRow::as_select())
            .filter(index.eq(first).or(index.eq(second)))
            .first(sqlite),
        (conn, indexes) => billing_customers::table
            .select(BillingCustomerRow::as_select())
            .filter(index.eq_any(indexes))
            .first(conn),
    };
    Ok(found.optional()?)
}

/// For each group of `groups` (the indexes one customer id may be stored under), the user whose
/// row has one of them. PostgreSQL: one statement for every group (`= ANY($1)`, kept
/// prepared), a round trip saved per group; where two rows match a group (which `rotate-key`
/// never leaves), the first of the group's indexes wins. SQLite, in process: [`by_any_index`]
/// per group, in one statement per group (kept prepared with one pepper's two digests; one
/// with every group's indexes in an `IN` list would be parsed and planned on every call).
pub fn users_by_any_index(
    conn: &mut DbConnection,
    groups: &[&[String]],
) -> Result<Vec<Option<UserId>>, DbError> {
    match conn {
        DbConnection::Postgresql(pg) => {
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            let all: Vec<&str> = groups
                .iter()
                .flat_map(|g| g.iter())
                .map(String::as_str)
                .collect();
            let found: std::collections::HashMap<String, UserId> = billing_customers::table
                .filter(billing_customers::stripe_customer_index.eq_any(&all))
                .select((
                    billing_customers::stripe_customer_index,
                    billing_customers::user_id,
                ))
                .load(pg)?
                .into_iter()
                .collect();
            Ok(groups
                .iter()
                .map(|group| group.iter().find_map(|index| found.get(index).copied()))
                .collect())
        }
        conn => groups
            .iter()
            .map(|group| Ok(by_any_index(conn, group)?.map(|row| row.user_id)))
            .collect(),
    }
}

/// Rows whose index is not under the `primary` pepper (or has no recorded pepper), by user id.
pub fn index_not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_user: i64,
    limit: i64,
) -> Result<Vec<BillingCustomerRow>, DbError> {
    Ok(billing_customers::table
        .filter(
            billing_customers::index_key_id
                .is_null()
                .or(billing_customers::index_key_id.ne(primary)),
        )
        .filter(billing_customers::user_id.gt(after_user))
        .order(billing_customers::user_id.asc())
        .limit(limit)
        .select(BillingCustomerRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of blind indexes, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_index(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, str>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        billing_customers {
            user_id,
            stripe_customer_index: diesel::sql_types::Text,
            index_key_id
        },
        swaps,
        key_id
    )
}

/// How many indexes each pepper id made (`None`: not recorded).
pub fn count_by_index_key_id(
    conn: &mut DbConnection,
) -> Result<Vec<(Option<String>, i64)>, DbError> {
    Ok(billing_customers::table
        .group_by(billing_customers::index_key_id)
        .select((billing_customers::index_key_id, diesel::dsl::count_star()))
        .order(billing_customers::index_key_id.asc())
        .load(conn)?)
}

pub fn not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_user: i64,
    limit: i64,
) -> Result<Vec<BillingCustomerRow>, DbError> {
    Ok(billing_customers::table
        .filter(billing_customers::key_id.ne(primary))
        .filter(billing_customers::user_id.gt(after_user))
        .order(billing_customers::user_id.asc())
        .limit(limit)
        .select(BillingCustomerRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed Stripe customer ids, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_sealed(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        billing_customers {
            user_id,
            stripe_customer_sealed: diesel::sql_types::Binary,
            key_id
        },
        swaps,
        key_id
    )
}

pub fn count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    key_counts_beside!(
        conn,
        billing_customers::table,
        billing_customers::key_id,
        beside
    )
}

/// Up to `limit` customers of users after `after_user`, by user id (a page of reconciliation).
pub fn page_after(
    conn: &mut DbConnection,
    after_user: i64,
    limit: i64,
) -> Result<Vec<BillingCustomerRow>, DbError> {
    Ok(billing_customers::table
        .filter(billing_customers::user_id.gt(after_user))
        .order(billing_customers::user_id.asc())
        .limit(limit)
        .select(BillingCustomerRow::as_select())
        .load(conn)?)
}

/// Inserts `rows` in one statement (`tollgate bench seed`).
pub fn insert_many(conn: &mut DbConnection, rows: &[BillingCustomerRow]) -> Result<(), DbError> {
    let insert = diesel::insert_into(billing_customers::table).values(rows);
    match conn {
        DbConnection::Postgresql(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    Ok(())
}
