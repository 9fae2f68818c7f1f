//! `rotate-key`'s engine: re-sealing a column under the primary key, batch by batch.
//!
//! It knows no tables: the domain that owns a sealed column describes it with a
//! [`SealedColumn`] (how to load rows not under a key, each row's id, ciphertext and AAD, the
//! compare-and-swap, the count per key id), and `commands::rotate` lists them. [`swap_batch`]
//! is the batch every rotation shares, blind-index rebuilds included.
//!
//! Work goes in batches, each one transaction; a row is replaced only if it still holds the
//! value that was read (compare-and-swap), so the running application's own writes are never
//! overwritten. Rows already under the primary key are not touched, so a rerun after an
//! interruption at any point simply finishes the job: nothing is lost, nothing done twice.

use std::borrow::Borrow as _;

use crate::crypto::{Aad, CryptoError, KeyId, Keyring};
use crate::db::models::Swap;
use crate::db::{DbConnection, DbError};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{column} row {id}: {source}")]
    Crypto {
        column: &'static str,
        id: i64,
        source: CryptoError,
    },
    /// The row cannot be placed (its AAD cannot be built), e.g. an unknown provider name.
    #[error("{column} row {id}: {reason}")]
    Corrupt {
        column: &'static str,
        id: i64,
        reason: String,
    },
    #[error("stopped on request after {0} row(s) of the current batch (fault injection)")]
    InjectedFault(usize),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for RotationError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// One batch's result.
#[derive(Debug, Default, Clone, Copy)]
pub struct Batch {
    /// The highest row id looked at (the next batch starts after it); `None` when none was left.
    pub last_id: Option<i64>,
    pub rotated: usize,
    /// Rows replaced by the application between our read and our write (already re-sealed).
    pub raced: usize,
}

/// A batch size as SQL's `LIMIT`.
pub fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The batch every rotation shares, in one transaction: `load` the rows; compute each one's
/// `new` value (`None`: nothing to do) before any is touched, so a row that cannot be opened
/// stops the batch before it begins; then `replace` them all as compare-and-swaps of the `old`
/// values read. `fail_after` replaces only that many and then aborts the transaction (to test
/// crash safety).
pub fn swap_batch<R, V: ToOwned + ?Sized>(
    conn: &mut DbConnection,
    fail_after: Option<usize>,
    load: impl FnOnce(&mut DbConnection) -> Result<Vec<R>, RotationError>,
    id: impl Fn(&R) -> i64,
    old: impl Fn(&R) -> &V,
    new: impl Fn(&R) -> Result<Option<V::Owned>, RotationError>,
    replace: impl FnOnce(&mut DbConnection, &[Swap<'_, V>]) -> Result<usize, DbError>,
) -> Result<Batch, RotationError> {
    // It reads, then writes: on SQLite it takes the write lock first, or a batch run from the
    // CLI beside a serving instance would fail at its first write whenever the server wrote
    // meanwhile ("database is locked").
    crate::db::write_transaction(conn, |conn| {
        let rows = load(conn)?;
        let fresh = rows
            .iter()
            .filter_map(|row| new(row).map(|value| Some((row, value?))).transpose())
            .collect::<Result<Vec<_>, RotationError>>()?;
        let swaps: Vec<Swap<'_, V>> = fresh
            .iter()
            .map(|(row, value)| Swap {
                id: id(row),
                old: old(row),
                new: value.borrow(),
            })
            .collect();
        let (now, fault) = match fail_after {
            Some(n) if n < swaps.len() => (&swaps[..n], Some(n)),
            _ => (&swaps[..], None),
        };
        // Nothing to swap (no row, or none that needed it): no statement at all.
        let rotated = match now {
            [] => 0,
            now => replace(conn, now)?,
        };
        if let Some(n) = fault {
            return Err(RotationError::InjectedFault(n));
        }
        Ok(Batch {
            last_id: rows.last().map(&id),
            rotated,
            raced: swaps.len() - rotated,
        })
    })
}

/// Up to `limit` rows sealed under a key other than `primary`, in id order after `after_id`:
/// `(conn, primary, after_id, limit)`.
pub type LoadNotUnderKey<R> = fn(&mut DbConnection, &str, i64, i64) -> Result<Vec<R>, DbError>;

/// Replaces sealed values and their key id, each only if its row still holds the value read
/// (compare-and-swap), a batch at once: `(conn, swaps, key id)`, how many were replaced.
pub type CompareAndSwap = fn(&mut DbConnection, &[Swap<'_, [u8]>], &str) -> Result<usize, DbError>;

/// `(key id, values)` of every key id but `beside` (`""`: every key id; key ids are never
/// empty), as two ranges of the key-id index: counting what is left under old keys costs what
/// is left, not the whole table.
pub type CountByKeyId = fn(&mut DbConnection, &str) -> Result<Vec<(String, i64)>, DbError>;

/// A column holding sealed values, described by the domain that owns it (rows of type `R`).
pub struct SealedColumn<R> {
    /// `table.column`, as `rotate-key` reports it.
    pub name: &'static str,
    pub not_under_key: LoadNotUnderKey<R>,
    /// The row's id, as `not_under_key` orders and `replace` finds it.
    pub id: fn(&R) -> i64,
    /// The row's sealed value.
    pub sealed: fn(&R) -> &[u8],
    /// The row's place, which its ciphertext is bound to; `Err` says why it has none.
    pub aad: fn(&R) -> Result<Aad, String>,
    pub replace: CompareAndSwap,
    pub count_by_key_id: CountByKeyId,
}

/// What `rotate-key` does with any sealed column, whatever its rows (so columns of different
/// row types fit in one list). Implemented by [`SealedColumn`].
pub trait Rotatable: Sync {
    fn name(&self) -> &'static str;
    /// How many values each key id but `beside` holds (`""`: every key id), as
    /// `(key id, count)`.
    fn counts(&self, conn: &mut DbConnection, beside: &str) -> Result<Vec<(String, i64)>, DbError>;
    /// Re-seals up to `limit` values not under the primary key, with ids after `after_id`.
    /// `fail_after` aborts the transaction after that many rows (to test crash safety).
    fn rotate_batch(
        &self,
        conn: &mut DbConnection,
        keyring: &Keyring,
        after_id: i64,
        limit: usize,
        fail_after: Option<usize>,
    ) -> Result<Batch, RotationError>;
}

impl<R> Rotatable for SealedColumn<R> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn counts(&self, conn: &mut DbConnection, beside: &str) -> Result<Vec<(String, i64)>, DbError> {
        (self.count_by_key_id)(conn, beside)
    }

    fn rotate_batch(
        &self,
        conn: &mut DbConnection,
        keyring: &Keyring,
        after_id: i64,
        limit: usize,
        fail_after: Option<usize>,
    ) -> Result<Batch, RotationError> {
        let primary = keyring.primary_id().to_string();
        // Every row of the batch is placed before any is touched: a corrupt row stops the
        // batch before it begins.
        let load = |conn: &mut DbConnection| {
            (self.not_under_key)(conn, &primary, after_id, sql_limit(limit))?
                .into_iter()
                .map(|row| match (self.aad)(&row) {
                    Ok(aad) => Ok((row, aad)),
                    Err(reason) => Err(RotationError::Corrupt {
                        column: self.name,
                        id: (self.id)(&row),
                        reason,
                    }),
                })
                .collect()
        };
        let reseal = |(row, aad): &(R, Aad)| {
            keyring
                .reseal((self.sealed)(row), aad)
                .map_err(|source| RotationError::Crypto {
                    column: self.name,
                    id: (self.id)(row),
                    source,
                })
        };
        swap_batch(
            conn,
            fail_after,
            load,
            |(row, _)| (self.id)(row),
            |(row, _)| (self.sealed)(row),
            reseal,
            |conn, swaps| (self.replace)(conn, swaps, &primary),
        )
    }
}

/// What `rotate-key --check` reports for one column and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    pub column: &'static str,
    pub key_id: String,
    pub count: i64,
    pub role: KeyRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Primary,
    Old,
    /// Not in the keyring at all: these values cannot be opened until the key is configured.
    Missing,
}

/// How many values of each of `columns` each key holds, and what that key is to `keyring`.
pub fn check(
    conn: &mut DbConnection,
    keyring: &Keyring,
    columns: &[&dyn Rotatable],
) -> Result<Vec<KeyCount>, DbError> {
    counted(conn, keyring, columns, "")
}

/// [`check`] without the primary key's values (what is left to rotate, and what no key
/// opens), at the cost of those values alone: for the dashboard, however large the tables.
pub fn check_old(
    conn: &mut DbConnection,
    keyring: &Keyring,
    columns: &[&dyn Rotatable],
) -> Result<Vec<KeyCount>, DbError> {
    counted(conn, keyring, columns, &keyring.primary_id().to_string())
}

fn counted(
    conn: &mut DbConnection,
    keyring: &Keyring,
    columns: &[&dyn Rotatable],
    beside: &str,
) -> Result<Vec<KeyCount>, DbError> {
    let known: Vec<String> = keyring.key_ids().iter().map(KeyId::to_string).collect();
    let primary = keyring.primary_id().to_string();
    let mut report = Vec::new();
    for column in columns {
        for (key_id, count) in column.counts(conn, beside)? {
            let role = if key_id == primary {
                KeyRole::Primary
            } else if known.contains(&key_id) {
                KeyRole::Old
            } else {
                KeyRole::Missing
            };
            report.push(KeyCount {
                column: column.name(),
                key_id,
                count,
                role,
            });
        }
    }
    Ok(report)
}
