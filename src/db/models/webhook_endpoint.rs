//! `webhook_endpoints`: where the product's own services receive Tollgate's webhooks (Standard
//! Webhooks), with their sealed signing secrets.

use chrono::NaiveDateTime;
use diesel::prelude::*;

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
