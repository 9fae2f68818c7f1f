//! Two-factor sign-in for console accounts: a TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s,
//! one step of skew either way) sealed with the keyring and bound to its account, and ten
//! one-time recovery codes of which only peppered HMACs are kept.
//!
//! A code is accepted once: the step it belongs to is recorded, and a code from that step or
//! an earlier one is refused (a compare-and-swap, so two racing requests cannot both pass).
//! Every outcome is audited here, in the transaction that records it.

use diesel::Connection as _;
use secrecy::SecretString;
use totp_rs::{Algorithm, TOTP};

use crate::accounts::{User, UserId};
use crate::audit::{self, Actor, Kind};
use crate::crypto::rotation::SealedColumn;
use crate::crypto::{Aad, CryptoError, Domain, Keyring, TokenHasher};
use crate::db::models::two_factor::{self as store, TwoFactorRow};
use crate::db::{DbConnection, DbError};

/// What authenticator apps show as the account's issuer.
pub const ISSUER: &str = "Tollgate";
/// Seconds per code.
const STEP_SECS: u64 = 30;
/// Steps accepted either side of now (clock drift).
const SKEW_STEPS: i64 = 1;
const DIGITS: usize = 6;
/// Random bytes in a secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// How many recovery codes an enrolment hands out.
pub const RECOVERY_CODES: usize = 10;
/// The longest code worth looking at (a recovery code with separators and spaces).
const MAX_CODE_LEN: usize = 64;

/// Where an account's TOTP secret lives: its ciphertext is bound to the account.
pub fn secret_aad(user_id: UserId) -> Aad {
    Aad::new("two_factor", "secret", format!("user:{user_id}"))
}

/// `two_factor.secret` as `rotate-key` re-seals it.
pub const SEALED_SECRETS: SealedColumn<TwoFactorRow> = SealedColumn {
    name: "two_factor.secret",
    not_under_key: store::not_under_key,
    id: |row| row.user_id.get(),
    sealed: |row| &row.secret,
    aad: |row| Ok(secret_aad(row.user_id)),
    replace: store::replace_secret,
    count_by_key_id: store::count_by_key_id,
};

#[derive(Debug, thiserror::Error)]
pub enum TwoFactorError {
    #[error("two-factor secret: {0}")]
    Crypto(#[from] CryptoError),
    #[error("two-factor secret cannot be used: {0}")]
    Secret(String),
    #[error("no random numbers: {0}")]
    Random(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for TwoFactorError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// An enrolment in progress as the page shows it: the secret to type in and the `otpauth://`
/// URI an app can import. Both are secrets (redacted in `Debug`).
#[derive(Debug)]
pub struct Enrolment {
    pub secret_base32: SecretString,
    pub otpauth_uri: SecretString,
}

fn totp(secret: Vec<u8>, account: &str) -> Result<TOTP, TwoFactorError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS,
        secret,
        Some(ISSUER.to_owned()),
        account.replace(':', ""),
    )
    .map_err(|err| TwoFactorError::Secret(err.to_string()))
}

fn open_secret(
    keyring: &Keyring,
    row: &TwoFactorRow,
    account: &str,
) -> Result<TOTP, TwoFactorError> {
    let secret = keyring.open(&row.secret, &secret_aad(row.user_id))?;
    totp(secret.to_vec(), account)
}

fn enrolment(totp: &TOTP) -> Enrolment {
    Enrolment {
        secret_base32: SecretString::from(totp.get_secret_base32()),
        otpauth_uri: SecretString::from(totp.get_url()),
    }
}

pub fn is_enrolled(conn: &mut DbConnection, user_id: UserId) -> Result<bool, DbError> {
    store::is_confirmed(conn, user_id)
}

/// What the enrolment page shows the account.
#[derive(Debug)]
pub enum EnrolmentState {
    /// Two-factor sign-in is on.
    Enrolled,
    /// A secret waiting for its first code (made now, or earlier and not yet confirmed).
    Pending(Enrolment),
}

/// The digest a pending secret keeps of the enrolling session's binding value.
fn binding_digest(binding: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(binding.as_bytes()))
}

/// Whether `row` is a pending secret of the session holding `binding`.
fn pending_for(row: &TwoFactorRow, binding: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    row.confirmed_at.is_none()
        && row.pending_binding.as_deref().is_some_and(|stored| {
            bool::from(stored.as_bytes().ct_eq(binding_digest(binding).as_bytes()))
        })
}

/// The account's enrolment as the session holding `binding` sees it: the secret it is enrolling,
/// or a new one (replacing another session's pending secret, which that session can then no
/// longer confirm: a secret is shown to one session only).
pub fn enrolment_state(
    conn: &mut DbConnection,
    keyring: &Keyring,
    user: &User,
    binding: &str,
) -> Result<EnrolmentState, TwoFactorError> {
    match store::find(conn, user.id)? {
        Some(row) if row.confirmed_at.is_some() => Ok(EnrolmentState::Enrolled),
        Some(row) if pending_for(&row, binding) => Ok(EnrolmentState::Pending(enrolment(
            &open_secret(keyring, &row, &user.email)?,
        ))),
        _ => {
            let secret = crate::secret::random_bytes::<SECRET_BYTES>()
                .map_err(|err| TwoFactorError::Random(err.to_string()))?;
            let sealed = keyring.seal(&secret, &secret_aad(user.id))?;
            let key_id = keyring.primary_id().to_string();
            let digest = binding_digest(binding);
            if !store::put_pending(conn, user.id, &sealed, &key_id, &digest)? {
                return Ok(EnrolmentState::Enrolled);
            }
            Ok(EnrolmentState::Pending(enrolment(&totp(
                secret.to_vec(),
                &user.email,
            )?)))
        }
    }
}

/// The current time step.
fn now_step() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(STEP_SECS as i64)
}

/// The step within the allowed skew whose code `code` is, if any (each compared in constant
/// time by `totp-rs`).
fn matching_step(totp: &TOTP, code: &str) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now_step();
    (now - SKEW_STEPS..=now + SKEW_STEPS)
        .filter(|step| *step >= 0)
        .find(|step| totp.check(code, step.unsigned_abs() * STEP_SECS))
}

/// Ten new recovery codes (`xxxx-xxxx-xxxx-xxxx`, hex), and their hashes.
fn new_recovery_codes(
    hasher: &TokenHasher,
) -> Result<(Vec<SecretString>, Vec<String>), TwoFactorError> {
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    let mut hashes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let bytes = crate::secret::random_bytes::<8>()
            .map_err(|err| TwoFactorError::Random(err.to_string()))?;
        let hex = hex::encode(bytes);
        hashes.push(hasher.digest(Domain::RecoveryCode, hex.as_bytes()));
        let shown = format!(
            "{}-{}-{}-{}",
            &hex[0..4],
            &hex[4..8],
            &hex[8..12],
            &hex[12..16]
        );
        codes.push(SecretString::from(shown));
    }
    Ok((codes, hashes))
}

/// A recovery code as typed, normalised (separators and spaces dropped, lower case).
fn normalised_recovery_code(code: &str) -> Option<String> {
    let code: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    (code.len() == 16 && code.bytes().all(|b| b.is_ascii_hexdigit())).then_some(code)
}

/// What confirming an enrolment did.
#[derive(Debug)]
pub enum Confirmation {
    /// Two-factor sign-in is on; these recovery codes are shown once.
    Enrolled(Vec<SecretString>),
    /// The code did not match the pending secret (audited).
    WrongCode,
    /// Nothing to confirm: no pending secret, or already enrolled.
    NothingPending,
}

/// Confirms the account's pending secret with a code from the authenticator: on success
/// two-factor sign-in is on, its recovery codes are made, and it is audited.
pub fn confirm_enrolment(
    conn: &mut DbConnection,
    keyring: &Keyring,
    hasher: &TokenHasher,
    actor: &Actor,
    user: &User,
    binding: &str,
    code: &str,
) -> Result<Confirmation, TwoFactorError> {
    let Some(row) = store::find(conn, user.id)?.filter(|row| pending_for(row, binding)) else {
        return Ok(Confirmation::NothingPending);
    };
    let totp = open_secret(keyring, &row, &user.email)?;
    let Some(step) = matching_step(&totp, code) else {
        let event = actor
            .event(Kind::TwoFactorFailed)
            .details(serde_json::json!({ "stage": "enrolment", "user_id": user.id }));
        audit::write(conn, &event)?;
        return Ok(Confirmation::WrongCode);
    };
    let (codes, hashes) = new_recovery_codes(hasher)?;
    let id = user.id;
    conn.transaction::<_, TwoFactorError, _>(|conn| {
        if !store::take_step(conn, id, step, true)? {
            return Ok(Confirmation::NothingPending);
        }
        store::replace_recovery_codes(conn, id, &hashes)?;
        // Every session signed in with the password alone ends (the caller signs its own in
        // again): one opened before enrolment must not become a two-factor session after it.
        let sessions_ended = crate::db::models::session::delete_for_user(conn, id)?;
        let event = actor
            .event(Kind::TwoFactorEnrolled)
            .details(serde_json::json!({
                "user_id": id,
                "recovery_codes": RECOVERY_CODES,
                "sessions_ended": sessions_ended,
            }));
        audit::write(conn, &event)?;
        Ok(Confirmation::Enrolled(codes))
    })
}

/// How a sign-in's second step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Code,
    RecoveryCode,
    /// Wrong, replayed or malformed (audited).
    Refused,
}

/// At most [`MAX_CODE_LEN`] characters of what was typed (cut by characters: a byte cut could
/// split one and panic).
fn bounded_code(code: &str) -> &str {
    code.char_indices()
        .nth(MAX_CODE_LEN)
        .map_or(code, |(end, _)| &code[..end])
}

/// Checks a code (or a recovery code) for `user_id`'s sign-in; a success is spent at once.
/// Every outcome is audited.
pub fn verify(
    conn: &mut DbConnection,
    keyring: &Keyring,
    hasher: &TokenHasher,
    actor: &Actor,
    user: &User,
    code: &str,
) -> Result<SecondFactor, TwoFactorError> {
    let code = bounded_code(code);
    let Some(row) = store::find(conn, user.id)?.filter(|row| row.confirmed_at.is_some()) else {
        return refuse(conn, actor, user.id, "not_enrolled");
    };
    let id = user.id;
    if let Some(step) = matching_step(&open_secret(keyring, &row, &user.email)?, code) {
        return conn.transaction::<_, TwoFactorError, _>(|conn| {
            if !store::take_step(conn, id, step, false)? {
                return refuse(conn, actor, id, "replayed");
            }
            let event = actor
                .event(Kind::TwoFactorSucceeded)
                .details(serde_json::json!({ "user_id": id }));
            audit::write(conn, &event)?;
            Ok(SecondFactor::Code)
        });
    }
    let Some(recovery) = normalised_recovery_code(code) else {
        return refuse(conn, actor, id, "wrong_code");
    };
    let candidates = hasher.candidates(Domain::RecoveryCode, recovery.as_bytes());
    // Read before the transaction (a SQLite transaction must begin with a write); using the
    // code is a compare-and-swap, so a code read here as unused is still used only once.
    let unused = store::unused_recovery_codes(conn, id)?;
    conn.transaction::<_, TwoFactorError, _>(|conn| {
        let found = unused
            .iter()
            .find(|(_, hash)| candidates.iter().any(|c| c.matches(hash)));
        match found {
            Some((code_id, _)) if store::use_recovery_code(conn, *code_id)? => {
                let event = actor
                    .event(Kind::RecoveryCodeUsed)
                    .details(serde_json::json!({
                        "user_id": id,
                        "recovery_codes_left": unused.len().saturating_sub(1),
                    }));
                audit::write(conn, &event)?;
                Ok(SecondFactor::RecoveryCode)
            }
            _ => refuse(conn, actor, id, "wrong_code"),
        }
    })
}

fn refuse(
    conn: &mut DbConnection,
    actor: &Actor,
    user_id: UserId,
    reason: &str,
) -> Result<SecondFactor, TwoFactorError> {
    let event = actor
        .event(Kind::TwoFactorFailed)
        .details(serde_json::json!({
            "stage": "sign_in",
            "user_id": user_id,
            "reason": reason,
        }));
    audit::write(conn, &event)?;
    Ok(SecondFactor::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_read_however_they_are_typed() {
        assert_eq!(
            normalised_recovery_code(" ABCD-ef01-2345-6789 ").as_deref(),
            Some("abcdef0123456789")
        );
        assert_eq!(normalised_recovery_code("abcd-ef01"), None);
        assert_eq!(normalised_recovery_code("zzzz-ef01-2345-6789"), None);
    }

    #[test]
    fn a_code_matches_its_step_within_the_skew_only() {
        let totp = totp(vec![7; SECRET_BYTES], "a@example.com").unwrap();
        let now = now_step();
        let at = |step: i64| totp.generate(step.unsigned_abs() * STEP_SECS);
        assert_eq!(matching_step(&totp, &at(now)), Some(now));
        assert_eq!(matching_step(&totp, &at(now - 1)), Some(now - 1));
        assert_eq!(matching_step(&totp, &at(now + 1)), Some(now + 1));
        assert_eq!(matching_step(&totp, &at(now - 5)), None);
        assert_eq!(matching_step(&totp, "12345"), None);
        assert_eq!(matching_step(&totp, "abcdef"), None);
    }

    #[test]
    fn a_long_code_is_cut_by_characters_never_inside_one() {
        let code = format!("{}é", "1".repeat(MAX_CODE_LEN - 1));
        let cut = bounded_code(&code);
        assert_eq!(cut.chars().count(), MAX_CODE_LEN);
        assert!(cut.ends_with('é'));
        assert_eq!(bounded_code(&"9".repeat(500)).len(), MAX_CODE_LEN);
    }
}
