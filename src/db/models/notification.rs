//! `notifications`: the outbox every notification goes through (customer e-mail, the product's
//! own services' webhooks, alert webhooks). Rows are inserted in the transaction of the change
//! that causes them (once per `dedupe_key`) and claimed by delivery workers, each claim a
//! lease: a row whose worker died is due again when its lease runs out.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{notifications, webhook_endpoints};
use crate::db::{DbConnection, DbError, per_backend};

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    pub id: i64,
    pub message_id: String,
    pub dedupe_key: String,
    pub channel: String,
    pub event_type: String,
    pub user_id: Option<i64>,
    pub endpoint_id: Option<i64>,
    pub recipient: String,
    pub order_key: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: NaiveDateTime,
    pub claimed_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = notifications)]
pub struct NewNotification<'a> {
    pub message_id: &'a str,
    pub dedupe_key: &'a str,
    pub channel: &'a str,
    pub event_type: &'a str,
    pub user_id: Option<i64>,
    pub endpoint_id: Option<i64>,
    pub recipient: &'a str,
    pub order_key: &'a str,
    pub payload: &'a str,
    pub status: &'a str,
    pub next_attempt_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Statuses a row is still on its way in (it holds back later rows of its order key).
pub const UNFINISHED: [&str; 3] = ["pending", "sending", "retrying"];

/// Inserts the notification unless one with its dedupe key exists. Returns whether it did.
pub fn insert_once(conn: &mut DbConnection, new: &NewNotification<'_>) -> Result<bool, DbError> {
    let insert = diesel::insert_into(notifications::table)
        .values(new)
        .on_conflict(notifications::dedupe_key)
        .do_nothing();
    Ok(per_backend!(conn, |c| insert.execute(c))? == 1)
}

diesel::alias!(notifications as earlier: Earlier);

/// Ids of up to `limit` rows due at `at` whose order key has no earlier unfinished row, oldest
/// first, leaving out rows for a disabled endpoint (they wait, paused, until it is enabled
/// again). A candidate list: [`claim`] decides, row by row, who sends each.
pub fn due_ids(
    conn: &mut DbConnection,
    at: NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let blocked = earlier
        .filter(
            earlier
                .field(notifications::order_key)
                .eq(notifications::order_key),
        )
        .filter(earlier.field(notifications::id).lt(notifications::id))
        .filter(earlier.field(notifications::status).eq_any(UNFINISHED));
    Ok(notifications::table
        .filter(notifications::status.eq_any(UNFINISHED))
        .filter(notifications::next_attempt_at.le(at))
        .filter(diesel::dsl::not(diesel::dsl::exists(blocked)))
        .filter(
            notifications::endpoint_id
                .is_null()
                .or(notifications::endpoint_id.eq_any(
                    webhook_endpoints::table
                        .filter(webhook_endpoints::enabled.eq(true))
                        .select(webhook_endpoints::id.nullable()),
                )),
        )
        .order(notifications::id)
        .limit(limit)
        .select(notifications::id)
        .load(conn)?)
}

/// Which of `ids` wait behind an earlier unfinished row of their order key (the console says
/// so rather than showing a next attempt already past).
pub fn held_back(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<i64>, DbError> {
    let blocked = earlier
        .filter(
            earlier
                .field(notifications::order_key)
                .eq(notifications::order_key),
        )
        .filter(earlier.field(notifications::id).lt(notifications::id))
        .filter(earlier.field(notifications::status).eq_any(UNFINISHED));
    Ok(notifications::table
        .filter(notifications::id.eq_any(ids))
        .filter(notifications::status.eq_any(UNFINISHED))
        .filter(diesel::dsl::exists(blocked))
        .select(notifications::id)
        .load(conn)?)
}

/// Claims row `id` for one attempt, under the claim's own `token` (`claimed_by`), if it is still
/// due at `at`: marks it `sending`, counts the attempt and leases it until `lease_until`. Exactly one worker, on any
/// instance, gets the row back; the others get `None`. On PostgreSQL the row is locked with
/// `FOR UPDATE SKIP LOCKED` first, so concurrent workers pass over it without waiting.
pub fn claim(
    conn: &mut DbConnection,
    id: i64,
    token: &str,
    at: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> Result<Option<NotificationRow>, DbError> {
    conn.transaction(|conn| {
        let still_due = || {
            notifications::table
                .find(id)
                .filter(notifications::status.eq_any(UNFINISHED))
                .filter(notifications::next_attempt_at.le(at))
        };
        if let DbConnection::Postgresql(pg) = conn {
            let locked: Option<i64> = still_due()
                .select(notifications::id)
                .for_update()
                .skip_locked()
                .first(pg)
                .optional()?;
            if locked.is_none() {
                return Ok(None);
            }
        }
        let claimed = diesel::update(still_due())
            .set((
                notifications::status.eq("sending"),
                notifications::attempts.eq(notifications::attempts + 1),
                notifications::next_attempt_at.eq(lease_until),
                notifications::claimed_by.eq(token),
                notifications::updated_at.eq(at),
            ))
            .execute(conn)?;
        if claimed != 1 {
            return Ok(None);
        }
        Ok(Some(
            notifications::table
                .find(id)
                .select(NotificationRow::as_select())
                .first(conn)?,
        ))
    })
}

/// Ends a claimed attempt: `sent` (with `sent_at`), `retrying` (due at `next`), `dead` or
/// `not_sent`, with the error in words. Only the claim that is still current (its `token`) is
/// ended: a worker whose lease ran out, and whose row another worker took, changes nothing.
pub fn finish(
    conn: &mut DbConnection,
    id: i64,
    token: &str,
    status: &str,
    error: Option<&str>,
    next: Option<NaiveDateTime>,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    let current = notifications::table
        .find(id)
        .filter(notifications::status.eq("sending"))
        .filter(notifications::claimed_by.eq(token));
    let sent_at = (status == "sent").then_some(at);
    let updated = diesel::update(current)
        .set((
            notifications::status.eq(status),
            notifications::last_error.eq(error),
            notifications::next_attempt_at.eq(next.unwrap_or(at)),
            notifications::sent_at.eq(sent_at),
            notifications::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(updated == 1)
}

/// Puts a row whose status is one of `from` back in the queue for a fresh round of attempts.
/// Returns the row as it was, or `None` when there is no such row in such a status.
pub fn requeue(
    conn: &mut DbConnection,
    id: i64,
    from: &[&str],
    at: NaiveDateTime,
) -> Result<Option<NotificationRow>, DbError> {
    conn.transaction(|conn| {
        // A write first (SQLite takes its write lock; PostgreSQL locks the row) before the read.
        diesel::update(notifications::table.find(id))
            .set(notifications::updated_at.eq(notifications::updated_at))
            .execute(conn)?;
        let before = notifications::table
            .find(id)
            .select(NotificationRow::as_select())
            .first(conn)
            .optional()?;
        let updated = diesel::update(
            notifications::table
                .find(id)
                .filter(notifications::status.eq_any(from)),
        )
        .set((
            notifications::status.eq("pending"),
            notifications::attempts.eq(0),
            notifications::next_attempt_at.eq(at),
            notifications::updated_at.eq(at),
        ))
        .execute(conn)?;
        Ok(before.filter(|_| updated == 1))
    })
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<NotificationRow>, DbError> {
    Ok(notifications::table
        .find(id)
        .select(NotificationRow::as_select())
        .first(conn)
        .optional()?)
}

/// What the console lists: newest first, filtered by channel and status, a page at a time
/// (`before`: the last id of the previous page).
#[derive(Debug, Clone, Default)]
pub struct Listing<'a> {
    pub channel: Option<&'a str>,
    pub status: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub before: Option<i64>,
    pub limit: i64,
}

pub fn list(
    conn: &mut DbConnection,
    listing: &Listing<'_>,
) -> Result<Vec<NotificationRow>, DbError> {
    let mut query = notifications::table
        .select(NotificationRow::as_select())
        .order(notifications::id.desc())
        .limit(listing.limit)
        .into_boxed();
    if let Some(channel) = listing.channel {
        query = query.filter(notifications::channel.eq(channel.to_owned()));
    }
    if let Some(status) = listing.status {
        query = query.filter(notifications::status.eq(status.to_owned()));
    }
    if let Some(event_type) = listing.event_type {
        query = query.filter(notifications::event_type.eq(event_type.to_owned()));
    }
    if let Some(before) = listing.before {
        query = query.filter(notifications::id.lt(before));
    }
    Ok(query.load(conn)?)
}

/// Rows per channel and status (the console's summary).
pub fn counts(conn: &mut DbConnection) -> Result<Vec<(String, String, i64)>, DbError> {
    Ok(notifications::table
        .group_by((notifications::channel, notifications::status))
        .select((
            notifications::channel,
            notifications::status,
            diesel::dsl::count_star(),
        ))
        .order((notifications::channel, notifications::status))
        .load(conn)?)
}

/// Statuses a row ends in.
const FINISHED: [&str; 3] = ["sent", "dead", "not_sent"];

/// Finished rows last changed before `cutoff` (retention).
pub fn count_finished_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(notifications::table
        .filter(notifications::status.eq_any(FINISHED))
        .filter(notifications::updated_at.lt(cutoff))
        .count()
        .get_result(conn)?)
}

/// Up to `limit` ids of finished rows last changed before `cutoff`, oldest first.
pub fn finished_ids_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(notifications::table
        .filter(notifications::status.eq_any(FINISHED))
        .filter(notifications::updated_at.lt(cutoff))
        .order(notifications::id)
        .limit(limit)
        .select(notifications::id)
        .load(conn)?)
}

/// Deletes the rows of `ids` still finished and last changed before `cutoff` (a row
/// redelivered meanwhile stays).
pub fn delete_finished(
    conn: &mut DbConnection,
    ids: &[i64],
    cutoff: NaiveDateTime,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        notifications::table
            .filter(notifications::id.eq_any(ids))
            .filter(notifications::status.eq_any(FINISHED))
            .filter(notifications::updated_at.lt(cutoff)),
    )
    .execute(conn)?)
}

/// Every row, oldest first (tests).
pub fn all(conn: &mut DbConnection) -> Result<Vec<NotificationRow>, DbError> {
    Ok(notifications::table
        .order(notifications::id)
        .select(NotificationRow::as_select())
        .load(conn)?)
}
