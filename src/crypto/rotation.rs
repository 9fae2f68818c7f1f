//! `rotate-key`'s engine: re-sealing a column under the primary key, batch by batch.
//!
//! It knows no tables: the domain that owns a sealed column describes it with a
//! [`SealedColumn`] (how to load rows not under a key, each row's id, ciphertext and AAD, the
//! compare-and-swap, the count per key id), and `commands::rotate` lists them. [`run_batch`]
//! is the loop every rotation shares, blind-index rebuilds included.
//!
//! Work goes in batches, each one transaction; a row is replaced only if it still holds the
//! value that was read (compare-and-swap), so the running application's own writes are never
//! overwritten. Rows already under the primary key are not touched, so a rerun after an
//! interruption at any point simply finishes the job: nothing is lost, nothing done twice.

use diesel::Connection as _;

use crate::crypto::{Aad, CryptoError, KeyId, Keyring};
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

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Replaced,
    /// The application replaced the row between our read and our write.
    Raced,
    /// Nothing to do (already under the primary key).
    Unchanged,
}

impl Step {
    /// A compare-and-swap's result: true when it replaced the row.
    pub fn swapped(replaced: bool) -> Self {
        if replaced {
            Self::Replaced
        } else {
            Self::Raced
        }
    }
}

/// A batch size as SQL's `LIMIT`.
pub fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The batch loop every rotation shares: in one transaction, `load` the rows, then `step`
/// each (compute its new value, compare-and-swap it into place). `fail_after` aborts the
/// transaction after that many rows were replaced or raced (to test crash safety).
pub fn run_batch<T>(
    conn: &mut DbConnection,
    fail_after: Option<usize>,
    load: impl FnOnce(&mut DbConnection) -> Result<Vec<T>, RotationError>,
    id: impl Fn(&T) -> i64,
    mut step: impl FnMut(&mut DbConnection, T) -> Result<Step, RotationError>,
) -> Result<Batch, RotationError> {
    conn.transaction(|conn| {
        let rows = load(conn)?;
        let mut batch = Batch {
            last_id: rows.last().map(&id),
            ..Batch::default()
        };
        for row in rows {
            let done = batch.rotated + batch.raced;
            if fail_after == Some(done) {
                return Err(RotationError::InjectedFault(done));
            }
            match step(conn, row)? {
                Step::Replaced => batch.rotated += 1,
                Step::Raced => batch.raced += 1,
                Step::Unchanged => {}
            }
        }
        Ok(batch)
    })
}

/// Up to `limit` rows sealed under a key other than `primary`, in id order after `after_id`:
/// `(conn, primary, after_id, limit)`.
pub type LoadNotUnderKey<R> = fn(&mut DbConnection, &str, i64, i64) -> Result<Vec<R>, DbError>;

/// Replaces a sealed value and its key id only if the row still holds the one read
/// (compare-and-swap): `(conn, id, old, new, key id)`, true when it was replaced.
pub type CompareAndSwap = fn(&mut DbConnection, i64, &[u8], &[u8], &str) -> Result<bool, DbError>;

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
        let reseal = |conn: &mut DbConnection, (row, aad): (R, Aad)| {
            let id = (self.id)(&row);
            let old = (self.sealed)(&row);
            let resealed = keyring
                .reseal(old, &aad)
                .map_err(|source| RotationError::Crypto {
                    column: self.name,
                    id,
                    source,
                })?;
            let Some(new) = resealed else {
                return Ok(Step::Unchanged);
            };
            Ok(Step::swapped((self.replace)(
                conn, id, old, &new, &primary,
            )?))
        };
        run_batch(conn, fail_after, load, |(row, _)| (self.id)(row), reseal)
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
