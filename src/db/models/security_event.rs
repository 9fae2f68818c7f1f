//! `security_events`: the audit log. Rows are appended; the one exception is a repeated
//! refusal, counted on the row of its first occurrence (`count`, `last_seen_at`), and retention,
//! which deletes a chain's oldest rows (see `audit::retention`).

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use crate::db::schema::security_events;
use crate::db::{DbConnection, DbError, kept_sql, per_backend};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = security_events)]
pub struct SecurityEventRow {
    pub id: i64,
    /// When it happened (for a repeated event: the first time).
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub severity: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// The first occurrence's details.
    pub details: String,
    /// How many times it happened (1 unless repeats were counted here).
    pub count: i64,
    pub last_seen_at: NaiveDateTime,
    /// The request it came from (`X-Request-Id`), if a request caused it.
    pub request_id: Option<String>,
}

/// A row as the audit chain reads it: its chained content, place and hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = security_events)]
pub struct ChainedRow {
    pub id: i64,
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub severity: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub details: String,
    pub aggregate_key: Option<String>,
    pub request_id: Option<String>,
    /// The chain it belongs to (`audit::chain`); `None` for rows older than the chain.
    pub chain_id: Option<String>,
    /// Its place in the chain (1, 2, …).
    pub chain_seq: Option<i64>,
    /// SHA-256 (hex) over its content and the previous row's hash.
    pub hash: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = security_events)]
pub struct NewSecurityEvent<'a> {
    pub occurred_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub kind: &'a str,
    pub severity: &'a str,
    pub actor: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: &'a str,
    /// Set for events whose repeats are counted on this row.
    pub aggregate_key: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub chain_id: Option<&'a str>,
    pub chain_seq: Option<i64>,
    pub hash: Option<String>,
}

/// Rows per multi-row INSERT (× the table's columns stays far below PostgreSQL's 65,535
/// parameters).
const INSERT_CHUNK: usize = 1_000;

/// Inserts several events (PostgreSQL: one statement per [`INSERT_CHUNK`] rows), none of
/// them aggregated: those go through [`insert_or_count`], whose caller tells an insert from a
/// counted repeat (here, SQLite would count a repeat where PostgreSQL refuses it).
pub fn insert_many(conn: &mut DbConnection, new: &[NewSecurityEvent<'_>]) -> Result<(), DbError> {
    if new.is_empty() {
        return Ok(());
    }
    match conn {
        // PostgreSQL binds at most 65,535 parameters per statement: a long batch goes in
        // chunks (in order, so the chain's ids still rise with its sequence).
        DbConnection::Postgresql(pg) => {
            for chunk in new.chunks(INSERT_CHUNK) {
                diesel::insert_into(security_events::table)
                    .values(chunk)
                    .execute(pg)?;
            }
        }
        // One row at a time, kept prepared; the rows of a batch share their time, written once.
        DbConnection::Sqlite(sqlite) => {
            let mut times = crate::db::SqliteTimes::default();
            for event in new {
                sqlite_insert_or_count(sqlite, &mut times, event)?;
            }
        }
    }
    Ok(())
}

/// Where an append leaves its chain: the head's new sequence and hash.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub chain: &'a str,
    pub sequence: i64,
    pub hash: &'a str,
}

/// PostgreSQL: an append of rows none of which is aggregated, in one statement (one round trip
/// instead of three): the rows are inserted in the order given (so the chain's ids rise with
/// its sequence), `hours` are added to the hourly rollup of `head.chain` as
/// [`count_hours`] adds them, and the chain's head moves to `head`, as `audit_chain::advance`
/// moves it. The caller holds the head's lock. One statement, kept prepared.
pub fn append_plain(
    pg: &mut diesel::PgConnection,
    rows: &[NewSecurityEvent<'_>],
    hours: &[(NaiveDateTime, &str, i64)],
    head: Head<'_>,
) -> Result<(), DbError> {
    use diesel::sql_types::{Array, Nullable, Text, Timestamp};
    crate::kept_sql!(
        "WITH appended AS (\
           INSERT INTO security_events (occurred_at, last_seen_at, kind, severity, actor, ip, \
             details, aggregate_key, request_id, chain_id, chain_seq, hash) \
           SELECT occurred_at, last_seen_at, kind, severity, actor, ip, details, \
             aggregate_key, request_id, chain_id, chain_seq, hash \
           FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) WITH ORDINALITY \
             AS r(occurred_at, last_seen_at, kind, severity, actor, ip, details, \
               aggregate_key, request_id, chain_id, chain_seq, hash, n) \
           ORDER BY n), \
         rollup AS (\
           INSERT INTO security_event_hours (hour, severity, lane, occurrences) \
           SELECT hour, severity, $15, occurrences FROM unnest($13, $14, $16) \
             AS h(hour, severity, occurrences) \
           ON CONFLICT (hour, severity, lane) DO UPDATE \
             SET occurrences = security_event_hours.occurrences + excluded.occurrences) \
         UPDATE audit_chains SET last_sequence = $17, last_hash = $18, updated_at = $19 \
         WHERE chain_id = $15",
    )
    .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
    .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.last_seen_at).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.severity).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.actor).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.ip).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.details).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.aggregate_key).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.request_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.chain_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.chain_seq).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.hash.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Timestamp>, _>(hours.iter().map(|h| h.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(hours.iter().map(|h| h.1).collect::<Vec<_>>())
    .bind::<Text, _>(head.chain)
    .bind::<Array<BigInt>, _>(hours.iter().map(|h| h.2).collect::<Vec<_>>())
    .bind::<BigInt, _>(head.sequence)
    .bind::<Text, _>(head.hash)
    .bind::<Timestamp, _>(crate::db::now())
    .execute(pg)?;
    Ok(())
}

/// Inserts an aggregated event, or, when its `aggregate_key` is already there, counts one more
/// occurrence on that row (one statement: concurrent repeats each add theirs).
pub fn insert_or_count(conn: &mut DbConnection, new: &NewSecurityEvent<'_>) -> Result<(), DbError> {
    use diesel::upsert::{DecoratableTarget as _, excluded};
    match conn {
        DbConnection::Postgresql(pg) => {
            diesel::insert_into(security_events::table)
                .values(new)
                .on_conflict(security_events::aggregate_key)
                // PostgreSQL's unique index is partial (aggregated rows only): name its predicate.
                .filter_target(security_events::aggregate_key.is_not_null())
                .do_update()
                .set((
                    security_events::count.eq(security_events::count + 1),
                    security_events::last_seen_at.eq(excluded(security_events::last_seen_at)),
                ))
                .execute(pg)?;
        }
        DbConnection::Sqlite(sqlite) => {
            sqlite_insert_or_count(sqlite, &mut crate::db::SqliteTimes::default(), new)?;
        }
    }
    Ok(())
}

/// SQLite: inserts `event`, or, when its `aggregate_key` is already there, counts one more
/// occurrence on that row, by one statement kept prepared. The unique index on
/// `aggregate_key` is partial, as on PostgreSQL (only aggregated rows are in it), so the
/// conflict target names its predicate. A row without a key is a plain insert.
fn sqlite_insert_or_count(
    sqlite: &mut diesel::SqliteConnection,
    times: &mut crate::db::SqliteTimes,
    event: &NewSecurityEvent<'_>,
) -> Result<(), DbError> {
    use diesel::sql_types::Nullable;
    let occurred_at = times.text(event.occurred_at).to_owned();
    let last_seen_at = times.text(event.last_seen_at).to_owned();
    kept_sql!(
        "INSERT INTO security_events (occurred_at, last_seen_at, kind, severity, actor, ip, \
         details, aggregate_key, request_id, chain_id, chain_seq, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (aggregate_key) WHERE aggregate_key IS NOT NULL \
         DO UPDATE SET count = count + 1, last_seen_at = excluded.last_seen_at",
    )
    .bind::<Text, _>(occurred_at)
    .bind::<Text, _>(last_seen_at)
    .bind::<Text, _>(event.kind)
    .bind::<Text, _>(event.severity)
    .bind::<Nullable<Text>, _>(event.actor)
    .bind::<Nullable<Text>, _>(event.ip)
    .bind::<Text, _>(event.details)
    .bind::<Nullable<Text>, _>(event.aggregate_key)
    .bind::<Nullable<Text>, _>(event.request_id)
    .bind::<Nullable<Text>, _>(event.chain_id)
    .bind::<Nullable<BigInt>, _>(event.chain_seq)
    .bind::<Nullable<Text>, _>(event.hash.as_deref())
    .execute(sqlite)?;
    Ok(())
}

/// The newest events first (a repeated event by its first occurrence: with repeats grouped per
/// time slot, that is at most one slot earlier than its last).
pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<SecurityEventRow>, DbError> {
    Ok(security_events::table
        .order(security_events::id.desc())
        .limit(limit)
        .select(SecurityEventRow::as_select())
        .load(conn)?)
}

/// `SUM(count)` as a BIGINT on both backends (PostgreSQL's SUM of a BIGINT is a NUMERIC).
fn occurrences() -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>("CAST(COALESCE(SUM(count), 0) AS BIGINT)")
}

/// How many times events of `kind` happened, repeats included.
pub fn count_of_kind(conn: &mut DbConnection, kind: &str) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq(kind))
        .select(occurrences())
        .get_result(conn)?)
}

/// How many times events of `kind` happened on rows last seen after `since`, repeats included.
/// A repeated row counts whole: at most one aggregation window of it may predate `since`.
pub fn occurrences_since(
    conn: &mut DbConnection,
    kind: &str,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::kind.eq(kind))
        .filter(security_events::last_seen_at.gt(since))
        .select(occurrences())
        .get_result(conn)?)
}

/// How many times events of any of `kinds` (by `actor`, when given) happened on rows last seen
/// after `since`, repeats included: the alert rules' count (`security_events_kind` index).
pub fn occurrences_of_kinds_since(
    conn: &mut DbConnection,
    kinds: &[&str],
    actor: Option<&str>,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    let mut query = security_events::table
        .filter(security_events::kind.eq_any(kinds))
        .filter(security_events::last_seen_at.gt(since))
        .select(occurrences())
        .into_boxed();
    if let Some(actor) = actor {
        query = query.filter(security_events::actor.eq(actor));
    }
    Ok(query.get_result(conn)?)
}

/// A row's chain and sequence (`None` for rows older than the chain).
pub type ChainPosition = (Option<String>, Option<i64>);

/// The chain and sequence of the row holding `aggregate_key` (to tell an insert from a
/// counted repeat), and when it first occurred (the hour its repeats count in).
pub fn chain_position(
    conn: &mut DbConnection,
    aggregate_key: &str,
) -> Result<Option<(ChainPosition, NaiveDateTime)>, DbError> {
    let row: Option<(Option<String>, Option<i64>, NaiveDateTime)> = security_events::table
        .filter(security_events::aggregate_key.eq(aggregate_key))
        .select((
            security_events::chain_id,
            security_events::chain_seq,
            security_events::occurred_at,
        ))
        .first(conn)
        .optional()?;
    Ok(row.map(|(chain, sequence, at)| ((chain, sequence), at)))
}

/// Adds occurrences to the hourly rollup the security dashboard reads
/// (`security_event_hours`): `(hour, severity, occurrences)`, each hour truncated, written
/// under `lane`, the chain whose head the caller holds (so no two transactions update one
/// row).
pub fn count_hours(
    conn: &mut DbConnection,
    lane: &str,
    counts: &[(NaiveDateTime, &str, i64)],
) -> Result<(), DbError> {
    for &(hour, severity, occurrences) in counts {
        // Kept prepared: every audit append on SQLite (every webhook batch) ends here.
        let add = kept_sql!(
            "INSERT INTO security_event_hours (hour, severity, lane, occurrences) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hour, severity, lane) \
             DO UPDATE SET occurrences = security_event_hours.occurrences + excluded.occurrences",
        )
        .bind::<Timestamp, _>(hour)
        .bind::<Text, _>(severity)
        .bind::<Text, _>(lane)
        .bind::<BigInt, _>(occurrences);
        per_backend!(conn, |c| add.execute(c))?;
    }
    Ok(())
}

/// Deletes the hourly counts of the hours that ended at or before `cutoff` (retention).
pub fn prune_hours(conn: &mut DbConnection, cutoff: NaiveDateTime) -> Result<usize, DbError> {
    use crate::db::schema::security_event_hours as hours;
    Ok(
        diesel::delete(hours::table.filter(hours::hour.le(cutoff - chrono::Duration::hours(1))))
            .execute(conn)?,
    )
}

/// Up to `limit` rows of `chain` after sequence `after`, in sequence order.
pub fn chain_rows(
    conn: &mut DbConnection,
    chain: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ChainedRow>, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.eq(chain))
        .filter(security_events::chain_seq.gt(after))
        .order(security_events::chain_seq)
        .limit(limit)
        .select(ChainedRow::as_select())
        .load(conn)?)
}

/// The first row (by sequence) of `chain` at or before sequence `through`: rows a checkpoint
/// says are pruned.
pub fn first_row_through(
    conn: &mut DbConnection,
    chain: &str,
    through: i64,
) -> Result<Option<ChainedRow>, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.eq(chain))
        .filter(security_events::chain_seq.le(through))
        .order(security_events::chain_seq)
        .select(ChainedRow::as_select())
        .first(conn)
        .optional()?)
}

/// The first row (by id) that claims a chain not in `chains`, or a chain without a sequence.
pub fn first_row_outside(
    conn: &mut DbConnection,
    chains: &[String],
) -> Result<Option<ChainedRow>, DbError> {
    let outside = security_events::chain_id
        .is_not_null()
        .and(security_events::chain_id.ne_all(chains))
        .or(security_events::chain_id.is_not_null().and(
            security_events::chain_seq
                .is_null()
                .or(security_events::hash.is_null()),
        ));
    Ok(security_events::table
        .filter(outside)
        .order(security_events::id)
        .select(ChainedRow::as_select())
        .first(conn)
        .optional()?)
}

/// How many rows predate the chain (written before it existed).
pub fn unchained_count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.is_null())
        .count()
        .get_result(conn)?)
}

/// The lowest sequence of `chain` after `after` last seen at or after `cutoff`: retention
/// prunes a chain from its start up to (not including) this row.
pub fn first_kept_sequence(
    conn: &mut DbConnection,
    chain: &str,
    after: i64,
    cutoff: NaiveDateTime,
) -> Result<Option<i64>, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.eq(chain))
        .filter(security_events::chain_seq.gt(after))
        .filter(security_events::last_seen_at.ge(cutoff))
        .select(diesel::dsl::min(security_events::chain_seq))
        .first::<Option<i64>>(conn)?)
}

/// How many rows of `chain` lie after sequence `after` and before `before` (all, if `None`).
pub fn count_chain_between(
    conn: &mut DbConnection,
    chain: &str,
    after: i64,
    before: Option<i64>,
) -> Result<i64, DbError> {
    let mut query = security_events::table
        .filter(security_events::chain_id.eq(chain))
        .filter(security_events::chain_seq.gt(after))
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(security_events::chain_seq.lt(before));
    }
    Ok(query.count().get_result(conn)?)
}

/// Deletes the rows of `chain` after sequence `after` up to and including `through`.
pub fn delete_chain_range(
    conn: &mut DbConnection,
    chain: &str,
    after: i64,
    through: i64,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        security_events::table
            .filter(security_events::chain_id.eq(chain))
            .filter(security_events::chain_seq.gt(after))
            .filter(security_events::chain_seq.le(through)),
    )
    .execute(conn)?)
}

/// Ids of up to `limit` rows that predate the chain and were last seen before `cutoff`.
pub fn unchained_ids_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.is_null())
        .filter(security_events::last_seen_at.lt(cutoff))
        .order(security_events::id)
        .limit(limit)
        .select(security_events::id)
        .load(conn)?)
}

/// Deletes rows that predate the chain by id.
pub fn delete_unchained(conn: &mut DbConnection, ids: &[i64]) -> Result<usize, DbError> {
    Ok(diesel::delete(
        security_events::table
            .filter(security_events::chain_id.is_null())
            .filter(security_events::id.eq_any(ids)),
    )
    .execute(conn)?)
}

/// How many rows predate the chain and were last seen before `cutoff`.
pub fn count_unchained_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(security_events::table
        .filter(security_events::chain_id.is_null())
        .filter(security_events::last_seen_at.lt(cutoff))
        .count()
        .get_result(conn)?)
}
