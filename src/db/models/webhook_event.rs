//! `webhook_events`: Stripe events as received, with their processing status.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::db::models::Swap;
use crate::db::schema::webhook_events;
use crate::db::text::stored_as_text;
use crate::db::{DbConnection, DbError, now};

/// Where a stored event is in its processing (stored as text, under a CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum WebhookEventStatus {
    /// Claimed for reprocessing, its handler not run again yet. (Rows stored before events were
    /// written with their outcome were `received` until their handler had run, in the same
    /// transaction.)
    Received,
    Applied,
    /// Could not be applied: kept, with the reason, for reprocessing.
    Failed,
    /// A type Tollgate does not act on.
    Ignored,
}

impl WebhookEventStatus {
    pub const ALL: [Self; 4] = [Self::Received, Self::Applied, Self::Failed, Self::Ignored];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook event status")]
pub struct UnknownStatus;

impl FromStr for WebhookEventStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or(UnknownStatus)
    }
}

/// As its text (audit details name the status an event ended with).
impl serde::Serialize for WebhookEventStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for WebhookEventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

stored_as_text!(WebhookEventStatus);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct WebhookEventRow {
    pub id: i64,
    pub stripe_event_id: String,
    pub event_type: String,
    pub livemode: bool,
    pub stripe_created: NaiveDateTime,
    pub payload_sealed: Vec<u8>,
    pub key_id: String,
    pub status: WebhookEventStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub received_at: NaiveDateTime,
    pub processed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent<'a> {
    pub stripe_event_id: &'a str,
    pub event_type: &'a str,
    pub livemode: bool,
    pub stripe_created: NaiveDateTime,
    pub payload_sealed: &'a [u8],
    pub key_id: &'a str,
    pub status: WebhookEventStatus,
    pub attempts: i64,
    /// Why applying it failed (status `failed`).
    pub last_error: Option<&'a str>,
    pub received_at: NaiveDateTime,
    pub processed_at: Option<NaiveDateTime>,
    /// SHA-256 of the `Stripe-Signature` header it arrived with.
    pub signature_digest: Option<&'a str>,
}

/// Inserts `events` in one statement, none of them stored before (`tollgate bench seed`).
pub fn insert_all(conn: &mut DbConnection, events: &[NewWebhookEvent<'_>]) -> Result<(), DbError> {
    let insert = diesel::insert_into(webhook_events::table).values(events);
    match conn {
        DbConnection::Postgresql(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    Ok(())
}

/// The signature digest the stored event `stripe_id` first arrived with: `None` when no such
/// event is stored, `Some(None)` for an event stored before digests were kept.
pub fn signature_digest(
    conn: &mut DbConnection,
    stripe_id: &str,
) -> Result<Option<Option<String>>, DbError> {
    Ok(webhook_events::table
        .filter(webhook_events::stripe_event_id.eq(stripe_id))
        .select(webhook_events::signature_digest)
        .first(conn)
        .optional()?)
}

/// The class of the advisory locks an event id is claimed under on PostgreSQL (any fixed
/// number; two-key advisory locks never meet the one-key locks of migrations).
const CLAIM_LOCK_CLASS: i32 = 0x5754_4556;

/// Claims `ids` for the caller's transaction, before it looks at whether they are stored: on
/// PostgreSQL a transaction-scoped advisory lock per id (by its hash), taken in one order, so
/// that another delivery of one of them, on any writer thread or instance, waits here until
/// this transaction has ended, and then finds the event stored without having run its
/// handler. SQLite needs none: a writer's transaction holds the database's write lock from
/// its start ([`crate::db::write_transaction`]). The statement reads no table: its kept plan
/// never goes stale.
pub fn claim(conn: &mut DbConnection, ids: &[&str]) -> Result<(), DbError> {
    use diesel::sql_types::{Array, Integer};
    if let DbConnection::Postgresql(pg) = conn {
        crate::kept_sql!(
            "SELECT pg_advisory_xact_lock($1, key) FROM \
             (SELECT DISTINCT hashtext(id) AS key FROM unnest($2) AS ids(id) ORDER BY key) AS k",
        )
        .bind::<Integer, _>(CLAIM_LOCK_CLASS)
        .bind::<Array<Text>, _>(ids)
        .execute(pg)?;
    }
    Ok(())
}

/// The Stripe ids among `ids` that are stored already (committed, or written earlier in this
/// transaction). PostgreSQL plans the lookup on every call: a plan kept from when the table
/// was small would scan it whole once it has grown (see [`crate::kept_sql!`]). SQLite,
/// in process, looks each id up by a statement the connection keeps prepared.
pub fn stored_among(
    conn: &mut DbConnection,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, DbError> {
    match conn {
        DbConnection::Postgresql(pg) => {
            #[derive(QueryableByName)]
            struct Stored {
                #[diesel(sql_type = Text)]
                stripe_event_id: String,
            }
            let rows: Vec<Stored> = diesel::sql_query(
                "SELECT stripe_event_id FROM webhook_events WHERE stripe_event_id = ANY($1)",
            )
            .bind::<diesel::sql_types::Array<Text>, _>(ids)
            .load(pg)?;
            Ok(rows.into_iter().map(|row| row.stripe_event_id).collect())
        }
        DbConnection::Sqlite(sqlite) => {
            let mut stored = std::collections::HashSet::new();
            for id in ids {
                let found = webhook_events::table
                    .filter(webhook_events::stripe_event_id.eq(id))
                    .select(webhook_events::stripe_event_id)
                    .first::<String>(sqlite)
                    .optional()?;
                stored.extend(found);
            }
            Ok(stored)
        }
    }
}

/// Stores `events`, each with its outcome, and returns how many it stored: an event stored
/// meanwhile by a concurrent transaction (another writer thread or instance, which this one
/// waits for) is skipped, without aborting the surrounding transaction, and the caller, who
/// applied it, must roll back ([`crate::webhooks::store_and_apply`]). Kept prepared on both
/// backends (an insert's plan does not go stale): PostgreSQL takes the batch in one statement
/// (one array per column), SQLite one row at a time.
pub fn insert_new(
    conn: &mut DbConnection,
    events: &[NewWebhookEvent<'_>],
) -> Result<usize, DbError> {
    use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, Timestamp};
    // The columns both statements bind, in their binds' order ($1 to $12).
    macro_rules! insert_columns {
        () => {
            "INSERT INTO webhook_events (stripe_event_id, event_type, livemode, stripe_created, \
             payload_sealed, key_id, status, attempts, last_error, received_at, processed_at, \
             signature_digest)"
        };
    }
    match conn {
        DbConnection::Postgresql(pg) => {
            // One array per column, in `events`' order.
            fn column<'a, T>(
                events: &[NewWebhookEvent<'a>],
                field: impl Fn(&NewWebhookEvent<'a>) -> T,
            ) -> Vec<T> {
                events.iter().map(field).collect()
            }
            Ok(crate::kept_sql!(concat!(
                insert_columns!(),
                " SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (stripe_event_id) DO NOTHING"
            ))
            .bind::<Array<Text>, _>(column(events, |e| e.stripe_event_id))
            .bind::<Array<Text>, _>(column(events, |e| e.event_type))
            .bind::<Array<Bool>, _>(column(events, |e| e.livemode))
            .bind::<Array<Timestamp>, _>(column(events, |e| e.stripe_created))
            .bind::<Array<Binary>, _>(column(events, |e| e.payload_sealed))
            .bind::<Array<Text>, _>(column(events, |e| e.key_id))
            .bind::<Array<Text>, _>(column(events, |e| e.status.as_str()))
            .bind::<Array<BigInt>, _>(column(events, |e| e.attempts))
            .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.last_error))
            .bind::<Array<Timestamp>, _>(column(events, |e| e.received_at))
            .bind::<Array<Nullable<Timestamp>>, _>(column(events, |e| e.processed_at))
            .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.signature_digest))
            .execute(pg)?)
        }
        DbConnection::Sqlite(sqlite) => {
            let mut stored = 0;
            let mut times = crate::db::SqliteTimes::default();
            for e in events {
                let received_at = times.text(e.received_at).to_owned();
                let processed_at = e.processed_at.map(|at| times.text(at).to_owned());
                stored += crate::kept_sql!(concat!(
                    insert_columns!(),
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (stripe_event_id) DO NOTHING"
                ))
                .bind::<Text, _>(e.stripe_event_id)
                .bind::<Text, _>(e.event_type)
                .bind::<Bool, _>(e.livemode)
                .bind::<Timestamp, _>(e.stripe_created)
                .bind::<Binary, _>(e.payload_sealed)
                .bind::<Text, _>(e.key_id)
                .bind::<Text, _>(e.status.as_str())
                .bind::<BigInt, _>(e.attempts)
                .bind::<Nullable<Text>, _>(e.last_error)
                .bind::<Text, _>(received_at)
                .bind::<Nullable<Text>, _>(processed_at)
                .bind::<Nullable<Text>, _>(e.signature_digest)
                .execute(sqlite)?;
            }
            Ok(stored)
        }
    }
}

/// Records the outcome of an attempt to apply the event.
pub fn finish(
    conn: &mut DbConnection,
    stripe_id: &str,
    status: WebhookEventStatus,
    error: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(webhook_events::table.filter(webhook_events::stripe_event_id.eq(stripe_id)))
        .set((
            webhook_events::status.eq(status),
            webhook_events::attempts.eq(webhook_events::attempts + 1),
            webhook_events::last_error.eq(error),
            webhook_events::processed_at.eq(Some(now())),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, stripe_id: &str) -> Result<Option<WebhookEventRow>, DbError> {
    Ok(webhook_events::table
        .filter(webhook_events::stripe_event_id.eq(stripe_id))
        .select(WebhookEventRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<WebhookEventRow>, DbError> {
    Ok(webhook_events::table
        .order(webhook_events::id.desc())
        .limit(limit)
        .select(WebhookEventRow::as_select())
        .load(conn)?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(webhook_events::table.count().get_result(conn)?)
}

pub fn find_by_id(conn: &mut DbConnection, id: i64) -> Result<Option<WebhookEventRow>, DbError> {
    Ok(webhook_events::table
        .find(id)
        .select(WebhookEventRow::as_select())
        .first(conn)
        .optional()?)
}

/// Up to `limit` events older than the event `before` (all when none), newest first,
/// optionally only those with one status (keyset pagination, served by the primary key and
/// `webhook_events_status`).
pub fn list(
    conn: &mut DbConnection,
    status: Option<WebhookEventStatus>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<WebhookEventRow>, DbError> {
    let mut query = webhook_events::table
        .filter(webhook_events::id.lt(before.unwrap_or(i64::MAX)))
        .order(webhook_events::id.desc())
        .limit(limit)
        .select(WebhookEventRow::as_select())
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(webhook_events::status.eq(status));
    }
    Ok(query.load(conn)?)
}

/// Claims a failed event for reprocessing (`failed` → `received`): exactly one caller wins,
/// whatever the concurrency or the number of instances.
pub fn claim_failed(conn: &mut DbConnection, id: i64) -> Result<bool, DbError> {
    let updated = diesel::update(
        webhook_events::table
            .find(id)
            .filter(webhook_events::status.eq(WebhookEventStatus::Failed)),
    )
    .set(webhook_events::status.eq(WebhookEventStatus::Received))
    .execute(conn)?;
    Ok(updated == 1)
}

pub fn not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<WebhookEventRow>, DbError> {
    Ok(webhook_events::table
        .filter(webhook_events::key_id.ne(primary))
        .filter(webhook_events::id.gt(after_id))
        .order(webhook_events::id.asc())
        .limit(limit)
        .select(WebhookEventRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed payloads, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_sealed(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        webhook_events {
            id,
            payload_sealed: diesel::sql_types::Binary,
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
    key_counts_beside!(conn, webhook_events::table, webhook_events::key_id, beside)
}

/// The statuses retention may delete: the event is finished with (never `received`, which is
/// still to apply, nor `failed`, which waits for reprocessing).
const FINISHED: [WebhookEventStatus; 2] =
    [WebhookEventStatus::Applied, WebhookEventStatus::Ignored];

/// Ids of up to `limit` finished events received before `cutoff`, oldest first.
pub fn finished_ids_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(webhook_events::table
        .filter(webhook_events::status.eq_any(FINISHED))
        .filter(webhook_events::received_at.lt(cutoff))
        .order(webhook_events::id)
        .limit(limit)
        .select(webhook_events::id)
        .load(conn)?)
}

/// How many finished events were received before `cutoff`.
pub fn count_finished_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(webhook_events::table
        .filter(webhook_events::status.eq_any(FINISHED))
        .filter(webhook_events::received_at.lt(cutoff))
        .count()
        .get_result(conn)?)
}

/// Deletes the events `ids` that are finished and were received before `cutoff` (checked again:
/// one reprocessed meanwhile stays).
pub fn delete_finished(
    conn: &mut DbConnection,
    ids: &[i64],
    cutoff: NaiveDateTime,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        webhook_events::table
            .filter(webhook_events::id.eq_any(ids))
            .filter(webhook_events::status.eq_any(FINISHED))
            .filter(webhook_events::received_at.lt(cutoff)),
    )
    .execute(conn)?)
}

/// Stripe's creation time of the newest stored event (where replaying missed events starts).
pub fn newest_stripe_created(conn: &mut DbConnection) -> Result<Option<NaiveDateTime>, DbError> {
    Ok(webhook_events::table
        .select(diesel::dsl::max(webhook_events::stripe_created))
        .first(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_text_the_check_constraint_allows() {
        let texts: Vec<&str> = WebhookEventStatus::ALL
            .map(WebhookEventStatus::as_str)
            .into();
        assert_eq!(texts, ["received", "applied", "failed", "ignored"]);
        for status in WebhookEventStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!("Applied".parse::<WebhookEventStatus>(), Err(UnknownStatus));
    }
}
