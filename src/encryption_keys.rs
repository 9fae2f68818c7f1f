//! Encryption keys as an operator sees them: every sealed column Tollgate has (each described
//! by the domain that owns it, for `rotate-key`), when each key id was first seen, how many
//! values each still seals, and the warnings that follow — the primary key is older than
//! `KEY_ROTATION_DAYS`, or a rotation is unfinished (values still under an old key). The
//! dashboard and `validate-secrets` both read [`report`].
//!
//! A key's age starts when Tollgate first saw it: at start-up for every configured key (and
//! when `rotate-key` seals under it), recorded once, never moved.

use chrono::NaiveDateTime;

use crate::billing::customers;
use crate::crypto::Keyring;
use crate::crypto::rotation::{self, KeyRole, Rotatable};
use crate::db::models::encryption_key;
use crate::db::{DbConnection, DbError};
use crate::{vault, webhooks};

/// Every sealed column Tollgate has, each described by the domain that owns it.
pub const SEALED_COLUMNS: &[&dyn Rotatable] = &[
    &vault::SEALED_KEYS,
    &customers::SEALED_CUSTOMER_IDS,
    &webhooks::SEALED_PAYLOADS,
    &crate::accounts::two_factor::SEALED_SECRETS,
    &crate::notify::endpoints::SEALED_SECRETS,
    &crate::notify::endpoints::SEALED_PREVIOUS_SECRETS,
    &crate::billing::cards::SEALED_CARDS,
];

/// `KEY_ROTATION_DAYS`'s default: seed 000 rotates keys every 90 days.
pub const DEFAULT_ROTATION_DAYS: u32 = 90;

/// Records every key of `keyring` as first seen `at`, unless it was seen before (idempotent).
pub fn record_configured(
    conn: &mut DbConnection,
    keyring: &Keyring,
    at: NaiveDateTime,
) -> Result<(), DbError> {
    for key_id in keyring.key_ids() {
        encryption_key::record_first_seen(conn, &key_id.to_string(), at)?;
    }
    Ok(())
}

/// One key, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub key_id: String,
    pub role: KeyRole,
    /// When Tollgate first saw it (`None`: never recorded, e.g. before the first start).
    pub first_seen: Option<NaiveDateTime>,
    /// Whole days since then.
    pub age_days: Option<i64>,
    /// How many values it seals, over every sealed column; `None` for the primary key, whose
    /// values (nearly all of them) are not counted: the report costs what is left to rotate.
    pub sealed: Option<i64>,
}

/// What an operator should act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyWarning {
    #[error(
        "the primary encryption key {key_id} is {age_days} days old (KEY_ROTATION_DAYS is {limit_days}): rotate it (docs/security.md, \"Rotating keys\")"
    )]
    PrimaryTooOld {
        key_id: String,
        age_days: i64,
        limit_days: u32,
    },
    #[error(
        "key rotation unfinished: {values} value(s) are still sealed by old key(s) {key_ids}: run `tollgate rotate-key`"
    )]
    RotationUnfinished { values: i64, key_ids: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The primary first, then the older keys, then keys that seal values but are missing.
    pub keys: Vec<KeyStatus>,
    pub warnings: Vec<KeyWarning>,
}

/// Every key the keyring knows or a value needs, with its age and what it seals, and the
/// warnings (primary older than `rotation_days` days at `now`; values under other keys).
pub fn report(
    conn: &mut DbConnection,
    keyring: &Keyring,
    rotation_days: u32,
    now: NaiveDateTime,
) -> Result<KeyReport, DbError> {
    let counts = rotation::check_old(conn, keyring, SEALED_COLUMNS)?;
    let seen = encryption_key::all(conn)?;
    let mut keys: Vec<KeyStatus> = keyring
        .key_ids()
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.to_string(),
                if i == 0 {
                    KeyRole::Primary
                } else {
                    KeyRole::Old
                },
            )
        })
        .chain(
            counts
                .iter()
                .filter(|count| count.role == KeyRole::Missing)
                .map(|count| (count.key_id.clone(), KeyRole::Missing)),
        )
        .map(|(key_id, role)| {
            let first_seen = seen.iter().find(|(id, _)| *id == key_id).map(|(_, at)| *at);
            KeyStatus {
                sealed: (role != KeyRole::Primary).then(|| {
                    counts
                        .iter()
                        .filter(|count| count.key_id == key_id)
                        .map(|count| count.count)
                        .sum()
                }),
                age_days: first_seen.map(|at| (now - at).num_days()),
                first_seen,
                key_id,
                role,
            }
        })
        .collect();
    keys.dedup_by(|a, b| a.key_id == b.key_id);
    let mut warnings = Vec::new();
    if let Some(primary) = keys.first()
        && let Some(age_days) = primary.age_days
        && age_days > i64::from(rotation_days)
    {
        warnings.push(KeyWarning::PrimaryTooOld {
            key_id: primary.key_id.clone(),
            age_days,
            limit_days: rotation_days,
        });
    }
    let unfinished: Vec<&KeyStatus> = keys
        .iter()
        .filter(|key| key.sealed.is_some_and(|n| n > 0))
        .collect();
    if !unfinished.is_empty() {
        warnings.push(KeyWarning::RotationUnfinished {
            values: unfinished.iter().filter_map(|key| key.sealed).sum(),
            key_ids: unfinished
                .iter()
                .map(|key| key.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(KeyReport { keys, warnings })
}
