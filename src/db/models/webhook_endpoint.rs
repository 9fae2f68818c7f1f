//! `webhook_endpoints`: where the product's own services receive Tollgate's webhooks (Standard
//! Webhooks), with their sealed signing secrets.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::Swap;
use crate::db::schema::webhook_endpoints;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints)]
pub struct WebhookEndpointRow {
    pub id: i64,
    pub public_id: String,
    pub url: String,
    pub description: String,
    /// Space-separated event types.
    pub event_types: String,
    pub secret: Vec<u8>,
    pub key_id: String,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_key_id: Option<String>,
    pub previous_expires_at: Option<NaiveDateTime>,
    pub enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl WebhookEndpointRow {
    /// Whether the endpoint asked for events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.split_whitespace().any(|t| t == event_type)
    }
}

/// Enabled endpoints that receive `event_type`, oldest first (a handful of rows).
pub fn enabled_for(
    conn: &mut DbConnection,
    event_type: &str,
) -> Result<Vec<WebhookEndpointRow>, DbError> {
    let rows: Vec<WebhookEndpointRow> = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .order(webhook_endpoints::id)
        .select(WebhookEndpointRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|row| row.wants(event_type))
        .collect())
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<WebhookEndpointRow>, DbError> {
    Ok(webhook_endpoints::table
        .find(id)
        .select(WebhookEndpointRow::as_select())
        .first(conn)
        .optional()?)
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct NewWebhookEndpoint<'a> {
    pub public_id: &'a str,
    pub url: &'a str,
    pub description: &'a str,
    pub event_types: &'a str,
    pub secret: &'a [u8],
    pub key_id: &'a str,
    pub enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Inserts an endpoint; returns its row id.
pub fn insert(conn: &mut DbConnection, new: &NewWebhookEndpoint<'_>) -> Result<i64, DbError> {
    diesel::insert_into(webhook_endpoints::table)
        .values(new)
        .execute(conn)?;
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::public_id.eq(new.public_id))
        .select(webhook_endpoints::id)
        .first(conn)?)
}

/// The endpoint the console names by `public_id`.
/// The endpoint, locked for the rest of the transaction: a write first (an `UPDATE` that
/// changes nothing), so that SQLite takes its write lock before the read and PostgreSQL locks
/// the row. For changes that read the endpoint first.
pub fn find_for_update(
    conn: &mut DbConnection,
    public_id: &str,
) -> Result<Option<WebhookEndpointRow>, DbError> {
    diesel::update(webhook_endpoints::table.filter(webhook_endpoints::public_id.eq(public_id)))
        .set(webhook_endpoints::updated_at.eq(webhook_endpoints::updated_at))
        .execute(conn)?;
    find_by_public_id(conn, public_id)
}

pub fn find_by_public_id(
    conn: &mut DbConnection,
    public_id: &str,
) -> Result<Option<WebhookEndpointRow>, DbError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::public_id.eq(public_id))
        .select(WebhookEndpointRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every endpoint, oldest first (a handful of rows).
pub fn all(conn: &mut DbConnection) -> Result<Vec<WebhookEndpointRow>, DbError> {
    Ok(webhook_endpoints::table
        .order(webhook_endpoints::id)
        .select(WebhookEndpointRow::as_select())
        .load(conn)?)
}

/// Turns an endpoint on or off; true when the row existed and changed.
pub fn set_enabled(
    conn: &mut DbConnection,
    id: i64,
    enabled: bool,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::enabled.ne(enabled)),
    )
    .set((
        webhook_endpoints::enabled.eq(enabled),
        webhook_endpoints::updated_at.eq(at),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// A rotation's new values: the new secret, and the one it replaces (re-sealed for its new
/// column) with the end of its overlap.
pub struct RotatedSecret<'a> {
    pub secret: &'a [u8],
    pub key_id: &'a str,
    pub previous_secret: &'a [u8],
    pub previous_key_id: &'a str,
    pub previous_expires_at: NaiveDateTime,
    pub at: NaiveDateTime,
}

/// Replaces the secret only if the row still holds `old_secret` (compare-and-swap: two
/// rotations at once cannot both keep "the previous" secret). True when it was replaced.
pub fn rotate_secret(
    conn: &mut DbConnection,
    id: i64,
    old_secret: &[u8],
    new: &RotatedSecret<'_>,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::secret.eq(old_secret)),
    )
    .set((
        webhook_endpoints::secret.eq(new.secret),
        webhook_endpoints::key_id.eq(new.key_id),
        webhook_endpoints::previous_secret.eq(Some(new.previous_secret)),
        webhook_endpoints::previous_key_id.eq(Some(new.previous_key_id)),
        webhook_endpoints::previous_expires_at.eq(Some(new.previous_expires_at)),
        webhook_endpoints::updated_at.eq(new.at),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Deletes an endpoint; true when there was one.
pub fn delete(conn: &mut DbConnection, id: i64) -> Result<bool, DbError> {
    Ok(diesel::delete(webhook_endpoints::table.find(id)).execute(conn)? == 1)
}

/// Up to `limit` rows whose `secret` is sealed under a key other than `primary`, in id order
/// after `after_id` (for `rotate-key`).
pub fn secret_not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<WebhookEndpointRow>, DbError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::key_id.ne(primary))
        .filter(webhook_endpoints::id.gt(after_id))
        .order(webhook_endpoints::id.asc())
        .limit(limit)
        .select(WebhookEndpointRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed signing secrets, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_secret(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        webhook_endpoints {
            id,
            secret: diesel::sql_types::Binary,
            key_id
        },
        swaps,
        key_id
    )
}

/// How many `secret` values each key id holds.
pub fn secret_count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    key_counts_beside!(
        conn,
        webhook_endpoints::table,
        webhook_endpoints::key_id,
        beside
    )
}

/// Up to `limit` rows with a `previous_secret` sealed under a key other than `primary`.
pub fn previous_not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<WebhookEndpointRow>, DbError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::previous_secret.is_not_null())
        .filter(webhook_endpoints::previous_key_id.ne(primary))
        .filter(webhook_endpoints::id.gt(after_id))
        .order(webhook_endpoints::id.asc())
        .limit(limit)
        .select(WebhookEndpointRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed previous signing secrets, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_previous(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        webhook_endpoints {
            id,
            previous_secret: diesel::sql_types::Binary,
            previous_key_id
        },
        swaps,
        key_id
    )
}

/// How many `previous_secret` values each key id holds.
pub fn previous_count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    Ok(webhook_endpoints::table
        .filter(webhook_endpoints::previous_secret.is_not_null())
        .filter(webhook_endpoints::previous_key_id.is_not_null())
        .filter(
            webhook_endpoints::previous_key_id
                .lt(beside)
                .or(webhook_endpoints::previous_key_id.gt(beside)),
        )
        .group_by(webhook_endpoints::previous_key_id)
        .select((
            webhook_endpoints::previous_key_id.assume_not_null(),
            diesel::dsl::count_star(),
        ))
        .order(webhook_endpoints::previous_key_id.asc())
        .load(conn)?)
}
