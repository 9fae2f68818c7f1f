//! `audit_chains`: each audit chain's head (last sequence and hash) and checkpoint (the
//! sequence and hash of the last row retention pruned). See `audit::chain`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::audit_chains;
use crate::db::{DbConnection, DbError, now, per_backend};

/// The hash a chain starts from: there is no row before the first.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
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
    let touch = || {
        diesel::update(audit_chains::table.find(chain))
            .set(audit_chains::last_sequence.eq(audit_chains::last_sequence))
    };
    if touch().execute(conn)? == 0 {
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
        touch().execute(conn)?;
    }
    Ok(audit_chains::table
        .find(chain)
        .select(ChainHead::as_select())
        .first(conn)?)
}

/// Moves `chain`'s head to `sequence`/`hash` (its row locked by [`lock`]).
pub fn advance(
    conn: &mut DbConnection,
    chain: &str,
    sequence: i64,
    hash: &str,
) -> Result<(), DbError> {
    diesel::update(audit_chains::table.find(chain))
        .set((
            audit_chains::last_sequence.eq(sequence),
            audit_chains::last_hash.eq(hash),
            audit_chains::updated_at.eq(now()),
        ))
        .execute(conn)?;
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
