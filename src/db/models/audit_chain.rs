//! `audit_chains`: each audit chain's head (last sequence and hash) and checkpoint (the
//! sequence and hash of the last row retention pruned). See `audit::chain`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use crate::db::schema::audit_chains;
use crate::db::{DbConnection, DbError, kept_sql, now, per_backend};

/// The hash a chain starts from: there is no row before the first.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = audit_chains)]
pub struct ChainHead {
    pub chain_id: String,
    pub last_sequence: i64,
    pub last_hash: String,
    pub checkpoint_sequence: i64,
    pub checkpoint_hash: String,
    pub updated_at: NaiveDateTime,
}

/// Locks `chain`'s head row until the transaction ends (creating it, empty, if it is new) and
/// returns it. The lock is taken by a write, first: PostgreSQL locks the row (writers of other
/// chains go on), SQLite's deferred transaction becomes a write transaction before any read.
/// Call inside a transaction.
pub fn lock(conn: &mut DbConnection, chain: &str) -> Result<ChainHead, DbError> {
    // Kept prepared, and one statement that locks and reads: every audit append (every webhook
    // batch on SQLite) starts here.
    let touch = |conn: &mut DbConnection| -> Result<Option<ChainHead>, DbError> {
        let touch = kept_sql!(
            "UPDATE audit_chains SET last_sequence = last_sequence WHERE chain_id = $1 \
             RETURNING chain_id, last_sequence, last_hash, checkpoint_sequence, \
             checkpoint_hash, updated_at"
        )
        .bind::<Text, _>(chain);
        Ok(per_backend!(conn, |c| touch.get_result(c).optional())?)
    };
    if let Some(head) = touch(conn)? {
        return Ok(head);
    }
    // A new chain: its head is created, empty, then locked as any other.
    let at = now();
    let create = diesel::insert_into(audit_chains::table)
        .values((
            audit_chains::chain_id.eq(chain),
            audit_chains::last_sequence.eq(0_i64),
            audit_chains::last_hash.eq(GENESIS_HASH),
            audit_chains::checkpoint_sequence.eq(0_i64),
            audit_chains::checkpoint_hash.eq(GENESIS_HASH),
            audit_chains::updated_at.eq(at),
        ))
        .on_conflict_do_nothing();
    per_backend!(conn, |c| create.execute(c))?;
    touch(conn)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// The chains (lanes) of `instance`: `instance` itself and `instance#…`.
fn of_instance(
    instance: &str,
) -> diesel::dsl::Or<
    diesel::dsl::Eq<audit_chains::chain_id, String>,
    diesel::dsl::Escape<diesel::dsl::Like<audit_chains::chain_id, String>>,
> {
    // `_` is a LIKE wildcard (and may be in an instance id): escaped by `\`, named as the escape
    // character (PostgreSQL's default, SQLite has none).
    let lanes = format!("{}#%", instance.replace('_', "\\_"));
    audit_chains::chain_id
        .eq(instance.to_owned())
        .or(audit_chains::chain_id.like(lanes).escape('\\'))
}

/// Locks a head of `instance` that no other transaction holds and returns it.
///
/// PostgreSQL: `FOR UPDATE SKIP LOCKED` over the instance's lanes, so a writer never waits for
/// another (and never deadlocks through the audit log); when every lane is busy, a new lane
/// `instance#<random>` is created (its row is this transaction's until it ends). SQLite has one
/// writer at a time: the instance's one chain, [`lock`]ed.
pub fn lock_free_lane(conn: &mut DbConnection, instance: &str) -> Result<ChainHead, DbError> {
    let DbConnection::Postgresql(pg) = conn else {
        return lock(conn, instance);
    };
    let free = audit_chains::table
        .filter(of_instance(instance))
        .order(audit_chains::chain_id)
        .for_update()
        .skip_locked()
        .select(ChainHead::as_select())
        .first(pg)
        .optional()?;
    if let Some(head) = free {
        return Ok(head);
    }
    let lanes: i64 = audit_chains::table
        .filter(of_instance(instance))
        .count()
        .get_result(pg)?;
    if lanes == 0 {
        return lock(conn, instance);
    }
    let suffix = crate::secret::random_bytes::<4>()
        .map(hex::encode)
        .map_err(|_| DbError::Unavailable)?;
    let lane = format!("{instance}#{suffix}");
    let at = now();
    diesel::insert_into(audit_chains::table)
        .values((
            audit_chains::chain_id.eq(&lane),
            audit_chains::last_sequence.eq(0_i64),
            audit_chains::last_hash.eq(GENESIS_HASH),
            audit_chains::checkpoint_sequence.eq(0_i64),
            audit_chains::checkpoint_hash.eq(GENESIS_HASH),
            audit_chains::updated_at.eq(at),
        ))
        .execute(pg)?;
    Ok(audit_chains::table
        .find(&lane)
        .select(ChainHead::as_select())
        .first(pg)?)
}

/// Every lane of `instance`, unlocked.
pub fn lanes(conn: &mut DbConnection, instance: &str) -> Result<Vec<ChainHead>, DbError> {
    Ok(audit_chains::table
        .filter(of_instance(instance))
        .order(audit_chains::chain_id)
        .select(ChainHead::as_select())
        .load(conn)?)
}

/// Moves `chain`'s head to `sequence`/`hash` (its row locked by [`lock`]).
pub fn advance(
    conn: &mut DbConnection,
    chain: &str,
    sequence: i64,
    hash: &str,
) -> Result<(), DbError> {
    // Kept prepared, as the lock that goes with it ([`lock`]).
    let advance = kept_sql!(
        "UPDATE audit_chains SET last_sequence = $1, last_hash = $2, updated_at = $3 \
         WHERE chain_id = $4",
    )
    .bind::<BigInt, _>(sequence)
    .bind::<Text, _>(hash)
    .bind::<Timestamp, _>(now())
    .bind::<Text, _>(chain);
    per_backend!(conn, |c| advance.execute(c))?;
    Ok(())
}

/// Records that the rows of `chain` up to `sequence` are pruned, the last with `hash`.
pub fn set_checkpoint(
    conn: &mut DbConnection,
    chain: &str,
    sequence: i64,
    hash: &str,
) -> Result<(), DbError> {
    diesel::update(audit_chains::table.find(chain))
        .set((
            audit_chains::checkpoint_sequence.eq(sequence),
            audit_chains::checkpoint_hash.eq(hash),
            audit_chains::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Every chain's head, by chain id.
pub fn all(conn: &mut DbConnection) -> Result<Vec<ChainHead>, DbError> {
    Ok(audit_chains::table
        .order(audit_chains::chain_id)
        .select(ChainHead::as_select())
        .load(conn)?)
}

/// One chain's head, unlocked.
pub fn find(conn: &mut DbConnection, chain: &str) -> Result<Option<ChainHead>, DbError> {
    Ok(audit_chains::table
        .find(chain)
        .select(ChainHead::as_select())
        .first(conn)
        .optional()?)
}
