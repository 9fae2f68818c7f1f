//! The BYOK vault: customers' own AI-provider API keys, sealed at rest, shown only masked, and
//! handed out in plaintext only through an audited lease to an internal service.

use chrono::NaiveDateTime;
use diesel::Connection as _;
use secrecy::{ExposeSecret as _, SecretString};

mod lease_desk;

pub use lease_desk::LeaseDesk;

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::crypto::rotation::SealedColumn;
use crate::crypto::{Aad, CryptoError, Keyring};
use crate::db::models::byok_key::{self, ByokKeyRow, NewByokKey};
use crate::db::models::setting;
use crate::db::{DbConnection, DbError, now};
use crate::secret::mask_api_key;

/// AI providers whose keys Tollgate keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Anthropic, Provider::OpenAi];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Anthropic => "Anthropic",
            Self::OpenAi => "OpenAI",
        }
    }

    /// How this provider's keys begin.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::Anthropic => "sk-ant-",
            Self::OpenAi => "sk-",
        }
    }

    /// What a key for this provider looks like, for the form's help text.
    pub fn key_hint(self) -> String {
        format!("starts with {}", self.key_prefix())
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

/// Where a key lives: the AAD that binds its ciphertext to one user and provider.
pub fn key_aad(user_id: UserId, provider: Provider) -> Aad {
    Aad::new(
        "byok_keys",
        "secret",
        format!("user:{user_id}/provider:{}", provider.as_str()),
    )
}

/// `byok_keys.secret` as `rotate-key` re-seals it.
pub const SEALED_KEYS: SealedColumn<ByokKeyRow> = SealedColumn {
    name: "byok_keys.secret",
    not_under_key: byok_key::not_under_key,
    id: |row| row.id,
    sealed: |row| &row.secret,
    aad: |row| match Provider::parse(&row.provider) {
        Some(provider) => Ok(key_aad(row.user_id, provider)),
        None => Err(format!("unknown provider `{}`", row.provider)),
    },
    replace: byok_key::replace_secret,
    count_by_key_id: byok_key::count_by_key_id,
};

const MIN_KEY_LEN: usize = 20;
const MAX_KEY_LEN: usize = 256;

/// Why a pasted key was refused. The messages are the form's: specific, and never the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFormatError {
    #[error("Enter your API key.")]
    Empty,
    #[error("This key is too short to be an API key: keys are at least {MIN_KEY_LEN} characters.")]
    TooShort,
    #[error("This key is too long to be an API key: keys are at most {MAX_KEY_LEN} characters.")]
    TooLong,
    #[error(
        "This key has characters API keys never contain. Paste only the key: letters, digits, - and _."
    )]
    Characters,
    #[error("This key doesn't look like an {} key: those start with {}", .0.label(), .0.key_prefix())]
    WrongShape(Provider),
    /// An Anthropic key offered as an OpenAI one (both begin `sk-`).
    #[error(
        "This looks like an {} key. Choose {} as the provider, or paste your {} key.",
        .looks_like.label(), .looks_like.label(), .chosen.label()
    )]
    WrongProvider {
        chosen: Provider,
        looks_like: Provider,
    },
}

/// A provider API key that has the provider's shape. Redacted in `Debug`.
#[derive(Debug)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn parse(provider: Provider, raw: SecretString) -> Result<Self, KeyFormatError> {
        let key = raw.expose_secret().trim();
        match key.len() {
            0 => return Err(KeyFormatError::Empty),
            len if len < MIN_KEY_LEN => return Err(KeyFormatError::TooShort),
            len if len > MAX_KEY_LEN => return Err(KeyFormatError::TooLong),
            _ => {}
        }
        // A more specific prefix than the chosen provider's names the key's provider: an
        // Anthropic key (sk-ant-…) also begins like an OpenAI key (sk-…).
        let looks_like = Provider::ALL.into_iter().find(|p| {
            p.key_prefix().len() > provider.key_prefix().len() && key.starts_with(p.key_prefix())
        });
        if let Some(looks_like) = looks_like {
            return Err(KeyFormatError::WrongProvider {
                chosen: provider,
                looks_like,
            });
        }
        if !key.starts_with(provider.key_prefix()) {
            return Err(KeyFormatError::WrongShape(provider));
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(KeyFormatError::Characters);
        }
        Ok(Self(SecretString::from(key.to_owned())))
    }

    pub fn masked(&self) -> String {
        mask_api_key(self.0.expose_secret())
    }
}

/// A stored key as the customer's page shows it.
#[derive(Debug)]
pub struct KeySummary {
    pub provider: Provider,
    pub masked: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for VaultError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// Seals and stores the key, replacing the user's previous key for that provider, and audits
/// it (masked) in the same transaction. Returns the masked key.
pub fn save_key(
    conn: &mut DbConnection,
    keyring: &Keyring,
    actor: &Actor,
    user_id: UserId,
    provider: Provider,
    key: &ApiKey,
) -> Result<String, VaultError> {
    let sealed = keyring.seal(
        key.0.expose_secret().as_bytes(),
        &key_aad(user_id, provider),
    )?;
    let masked = key.masked();
    let at = now();
    let row = NewByokKey {
        user_id,
        provider: provider.as_str(),
        secret: &sealed,
        key_id: &keyring.primary_id().to_string(),
        masked: &masked,
        created_at: at,
        updated_at: at,
    };
    let event = actor
        .event(Kind::ByokKeySaved)
        .details(serde_json::json!({ "provider": provider.as_str(), "key": masked }));
    conn.transaction::<_, VaultError, _>(|conn| {
        byok_key::upsert(conn, &row)?;
        audit::write(conn, &event)?;
        key_changed(conn, user_id, provider, Some(&masked))?;
        Ok(())
    })?;
    Ok(masked)
}

/// Tells the product's own services that the user's key for `provider` was saved (`masked`:
/// the key as customers see it) or deleted (`None`). Each change is its own cause.
fn key_changed(
    conn: &mut DbConnection,
    user_id: UserId,
    provider: Provider,
    masked: Option<&str>,
) -> Result<(), DbError> {
    let data = serde_json::json!({
        "provider": provider.as_str(),
        "state": if masked.is_some() { "saved" } else { "deleted" },
        "key": masked,
    });
    let cause = crate::notify::new_message_id();
    crate::notify::publish(
        conn,
        crate::notify::AppEvent::ByokKeyChanged,
        user_id,
        data,
        &cause,
    )?;
    Ok(())
}

pub fn list_keys(conn: &mut DbConnection, user_id: UserId) -> Result<Vec<KeySummary>, DbError> {
    Ok(byok_key::for_user(conn, user_id)?
        .into_iter()
        .filter_map(|row| {
            Some(KeySummary {
                provider: Provider::parse(&row.provider)?,
                masked: row.masked,
                created_at: row.created_at,
                updated_at: row.updated_at,
                last_used_at: row.last_used_at,
            })
        })
        .collect())
}

/// Deletes the user's key for `provider` and audits it, in one transaction. `false` when there
/// was none (nothing audited).
pub fn delete_key(
    conn: &mut DbConnection,
    actor: &Actor,
    user_id: UserId,
    provider: Provider,
) -> Result<bool, VaultError> {
    let event = actor
        .event(Kind::ByokKeyDeleted)
        .details(serde_json::json!({ "provider": provider.as_str() }));
    conn.transaction::<_, VaultError, _>(|conn| {
        let deleted = byok_key::delete(conn, user_id, provider.as_str())?;
        if deleted {
            audit::write(conn, &event)?;
            key_changed(conn, user_id, provider, None)?;
        }
        Ok(deleted)
    })
}

const LEASES_DISABLED: &str = "byok_leases_disabled";

pub fn leases_disabled(conn: &mut DbConnection) -> Result<bool, DbError> {
    Ok(setting::get(conn, LEASES_DISABLED)?.as_deref() == Some("true"))
}

pub fn set_leases_disabled(conn: &mut DbConnection, disabled: bool) -> Result<(), DbError> {
    setting::set(
        conn,
        LEASES_DISABLED,
        if disabled { "true" } else { "false" },
    )
}

/// A leased key: the plaintext, and the masked form for the audit log.
pub struct Lease {
    pub key: SecretString,
    pub masked: String,
    /// The key's row (its last use is recorded with the lease).
    key_id: i64,
}

/// What a lease request gets.
pub enum LeaseOutcome {
    /// Leases are switched off (`tollgate emergency`).
    Disabled,
    /// The user has no key for that provider.
    NoKey,
    /// The service token that asked was revoked before the lease was served.
    TokenRevoked,
    Leased(Lease),
}

/// Opens a key for an internal service. The key may be handed out only once its lease is
/// recorded ([`LeaseDesk`]): no key leaves without its audit row.
fn open_key(keyring: &Keyring, row: &ByokKeyRow, provider: Provider) -> Result<Lease, VaultError> {
    let key = keyring.open_string(&row.secret, &key_aad(row.user_id, provider))?;
    Ok(Lease {
        key,
        masked: row.masked.clone(),
        key_id: row.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> SecretString {
        SecretString::from(raw.to_owned())
    }

    #[test]
    fn keys_must_have_their_providers_shape_and_bounded_length() {
        assert!(
            ApiKey::parse(
                Provider::Anthropic,
                key("sk-ant-api03-DUMMY-0000000000000000")
            )
            .is_ok()
        );
        assert!(ApiKey::parse(Provider::OpenAi, key("sk-proj-DUMMY0000000000000000")).is_ok());
        assert_eq!(
            ApiKey::parse(Provider::OpenAi, key("sk-ant-api03-DUMMY-0000000000000000"))
                .unwrap_err(),
            KeyFormatError::WrongProvider {
                chosen: Provider::OpenAi,
                looks_like: Provider::Anthropic
            }
        );
        assert_eq!(
            ApiKey::parse(Provider::Anthropic, key("sk-proj-DUMMY0000000000000000")).unwrap_err(),
            KeyFormatError::WrongShape(Provider::Anthropic)
        );
        assert_eq!(
            ApiKey::parse(Provider::Anthropic, key("sk-ant-DUMMY 00000000000000000")).unwrap_err(),
            KeyFormatError::Characters
        );
        assert_eq!(
            ApiKey::parse(Provider::OpenAi, key("sk-short")).unwrap_err(),
            KeyFormatError::TooShort
        );
        assert_eq!(
            ApiKey::parse(Provider::OpenAi, key("  ")).unwrap_err(),
            KeyFormatError::Empty
        );
        let long = format!("sk-{}", "a".repeat(300));
        assert_eq!(
            ApiKey::parse(Provider::OpenAi, key(&long)).unwrap_err(),
            KeyFormatError::TooLong
        );
    }

    fn row(provider: &str) -> ByokKeyRow {
        ByokKeyRow {
            id: 7,
            user_id: UserId::from(42),
            provider: provider.to_owned(),
            secret: vec![1, 2, 3],
            key_id: "k1".to_owned(),
            masked: "sk-…000".to_owned(),
            created_at: now(),
            updated_at: now(),
            last_used_at: None,
        }
    }

    /// `rotate-key` must bind each key to the place it was sealed for, and refuse a row it
    /// cannot place rather than guess.
    #[test]
    fn rotation_places_each_key_where_it_was_sealed() {
        let anthropic = row("anthropic");
        assert_eq!(
            (SEALED_KEYS.aad)(&anthropic),
            Ok(key_aad(UserId::from(42), Provider::Anthropic))
        );
        assert_eq!((SEALED_KEYS.id)(&anthropic), 7);
        assert_eq!((SEALED_KEYS.sealed)(&anthropic), &[1, 2, 3]);
        assert_eq!(
            (SEALED_KEYS.aad)(&row("acme")),
            Err("unknown provider `acme`".to_owned())
        );
    }

    #[test]
    fn the_error_never_contains_the_key() {
        let err =
            ApiKey::parse(Provider::OpenAi, key("sk-ant-api03-DUMMY-SECRET-000000")).unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
    }
}
