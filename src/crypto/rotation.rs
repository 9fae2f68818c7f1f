//! Re-encrypting every sealed column under the primary key (`tollgate rotate-key`).
//!
//! Work goes in batches, each one transaction; a row is replaced only if it still holds the
//! ciphertext that was read (compare-and-swap), so the running application's own writes are
//! never overwritten. Rows already under the primary key are not touched, so a rerun after an
//! interruption at any point simply finishes the job: nothing is lost, nothing done twice.

use diesel::Connection as _;

use crate::crypto::{Aad, CryptoError, KeyId, Keyring};
use crate::db::models::{billing_customer, byok_key, webhook_event};
use crate::db::{DbConnection, DbError};
use crate::vault::{self, Provider};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{column} row {id}: {source}")]
    Crypto {
        column: &'static str,
        id: i64,
        source: CryptoError,
    },
    #[error("{column} row {id}: unknown provider `{provider}`")]
    Corrupt {
        column: &'static str,
        id: i64,
        provider: String,
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

/// A column holding sealed values.
pub trait SealedColumn: Sync {
    fn name(&self) -> &'static str;
    /// How many values each key id holds, as `(key id, count)`.
    fn counts(&self, conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError>;
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

/// One sealed value as a batch sees it: its row, its place (AAD) and its ciphertext.
struct SealedValue {
    id: i64,
    aad: Aad,
    sealed: Vec<u8>,
}

/// The batch loop every column shares: in one transaction, load the values not under the
/// primary key, re-seal each, and compare-and-swap it into place.
fn rotate_in_transaction(
    conn: &mut DbConnection,
    keyring: &Keyring,
    column: &'static str,
    fail_after: Option<usize>,
    load: impl FnOnce(&mut DbConnection, &str) -> Result<Vec<SealedValue>, RotationError>,
    replace: impl Fn(&mut DbConnection, i64, &[u8], &[u8], &str) -> Result<bool, DbError>,
) -> Result<Batch, RotationError> {
    let primary = keyring.primary_id().to_string();
    conn.transaction(|conn| {
        let values = load(conn, &primary)?;
        let mut batch = Batch {
            last_id: values.last().map(|v| v.id),
            ..Batch::default()
        };
        for value in values {
            if fail_after == Some(batch.rotated + batch.raced) {
                return Err(RotationError::InjectedFault(batch.rotated + batch.raced));
            }
            let Some(resealed) = keyring
                .reseal(&value.sealed, &value.aad)
                .map_err(|source| RotationError::Crypto {
                    column,
                    id: value.id,
                    source,
                })?
            else {
                continue;
            };
            if replace(conn, value.id, &value.sealed, &resealed, &primary)? {
                batch.rotated += 1;
            } else {
                batch.raced += 1;
            }
        }
        Ok(batch)
    })
}

fn batch_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `byok_keys.secret`, bound to `user:{id}/provider:{name}`.
pub struct ByokSecrets;

impl SealedColumn for ByokSecrets {
    fn name(&self) -> &'static str {
        "byok_keys.secret"
    }

    fn counts(&self, conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError> {
        byok_key::count_by_key_id(conn)
    }

    fn rotate_batch(
        &self,
        conn: &mut DbConnection,
        keyring: &Keyring,
        after_id: i64,
        limit: usize,
        fail_after: Option<usize>,
    ) -> Result<Batch, RotationError> {
        let column = self.name();
        let load = |conn: &mut DbConnection, primary: &str| {
            byok_key::not_under_key(conn, primary, after_id, batch_limit(limit))?
                .into_iter()
                .map(|row| {
                    let provider =
                        Provider::parse(&row.provider).ok_or_else(|| RotationError::Corrupt {
                            column,
                            id: row.id,
                            provider: row.provider.clone(),
                        })?;
                    Ok(SealedValue {
                        id: row.id,
                        aad: vault::key_aad(row.user_id, provider),
                        sealed: row.secret,
                    })
                })
                .collect()
        };
        rotate_in_transaction(
            conn,
            keyring,
            column,
            fail_after,
            load,
            byok_key::replace_secret,
        )
    }
}

/// `billing_customers.stripe_customer_sealed`, bound to `user:{id}`.
pub struct StripeCustomerIds;

impl SealedColumn for StripeCustomerIds {
    fn name(&self) -> &'static str {
        "billing_customers.stripe_customer_sealed"
    }

    fn counts(&self, conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError> {
        billing_customer::count_by_key_id(conn)
    }

    fn rotate_batch(
        &self,
        conn: &mut DbConnection,
        keyring: &Keyring,
        after_id: i64,
        limit: usize,
        fail_after: Option<usize>,
    ) -> Result<Batch, RotationError> {
        let load = |conn: &mut DbConnection, primary: &str| {
            Ok(
                billing_customer::not_under_key(conn, primary, after_id, batch_limit(limit))?
                    .into_iter()
                    .map(|row| SealedValue {
                        id: row.user_id,
                        aad: crate::billing::customers::customer_aad(row.user_id),
                        sealed: row.stripe_customer_sealed,
                    })
                    .collect(),
            )
        };
        rotate_in_transaction(
            conn,
            keyring,
            self.name(),
            fail_after,
            load,
            billing_customer::replace_sealed,
        )
    }
}

/// `webhook_events.payload_sealed`, bound to the Stripe event id.
pub struct WebhookPayloads;

impl SealedColumn for WebhookPayloads {
    fn name(&self) -> &'static str {
        "webhook_events.payload_sealed"
    }

    fn counts(&self, conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError> {
        webhook_event::count_by_key_id(conn)
    }

    fn rotate_batch(
        &self,
        conn: &mut DbConnection,
        keyring: &Keyring,
        after_id: i64,
        limit: usize,
        fail_after: Option<usize>,
    ) -> Result<Batch, RotationError> {
        let load = |conn: &mut DbConnection, primary: &str| {
            Ok(
                webhook_event::not_under_key(conn, primary, after_id, batch_limit(limit))?
                    .into_iter()
                    .map(|row| SealedValue {
                        id: row.id,
                        aad: crate::webhooks::payload_aad(&row.stripe_event_id),
                        sealed: row.payload_sealed,
                    })
                    .collect(),
            )
        };
        rotate_in_transaction(
            conn,
            keyring,
            self.name(),
            fail_after,
            load,
            webhook_event::replace_sealed,
        )
    }
}

/// Every sealed column Tollgate has.
pub const SEALED_COLUMNS: &[&dyn SealedColumn] =
    &[&ByokSecrets, &StripeCustomerIds, &WebhookPayloads];

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

pub fn check(conn: &mut DbConnection, keyring: &Keyring) -> Result<Vec<KeyCount>, DbError> {
    let known: Vec<String> = keyring.key_ids().iter().map(KeyId::to_string).collect();
    let primary = keyring.primary_id().to_string();
    let mut report = Vec::new();
    for column in SEALED_COLUMNS {
        for (key_id, count) in column.counts(conn)? {
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
