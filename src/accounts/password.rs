//! Passwords: the length policy, argon2id hashing, and verification that costs the same
//! whether or not the account exists.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

/// A candidate password that meets the policy. Redacted in `Debug`.
#[derive(Debug)]
pub struct NewPassword(SecretString);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("use at least {MIN_LEN} characters")]
    TooShort,
    #[error("use at most {MAX_LEN} characters")]
    TooLong,
}

impl NewPassword {
    pub fn parse(raw: SecretString) -> Result<Self, PasswordPolicyError> {
        let len = raw.expose_secret().chars().count();
        if len < MIN_LEN {
            return Err(PasswordPolicyError::TooShort);
        }
        if len > MAX_LEN {
            return Err(PasswordPolicyError::TooLong);
        }
        Ok(Self(raw))
    }

    /// argon2id (OWASP parameters), PHC string with a random salt.
    pub fn hash(&self) -> Result<String, HashError> {
        let salt_bytes = crate::secret::random_bytes::<16>().map_err(|_| HashError)?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| HashError)?;
        let hash = hasher()
            .hash_password(self.0.expose_secret().as_bytes(), &salt)
            .map_err(|_| HashError)?;
        Ok(hash.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

fn hasher() -> Argon2<'static> {
    // argon2id, 19 MiB, 2 passes, 1 lane: OWASP's recommended minimum.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the account does not exist so that
/// an unknown email takes the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::secret::random_bytes::<24>().unwrap_or([7; 24]);
        NewPassword(SecretString::from(crate::secret::encode_token(&random)))
            .hash()
            .unwrap_or_default()
    })
}

/// Checks `candidate` against `stored` (or against a dummy hash when there is no account).
/// Always does one full argon2 verification. Comparison inside is constant-time.
pub fn verify(candidate: &SecretString, stored: Option<&str>) -> bool {
    let matched = verify_against(candidate, stored.unwrap_or_else(|| dummy_hash()));
    matched && stored.is_some()
}

fn verify_against(candidate: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(candidate.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// Warms the dummy hash at start-up so the first failed sign-in is not measurably faster.
pub fn prepare() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn enforces_length_in_characters() {
        assert_eq!(
            NewPassword::parse(secret("short")).unwrap_err(),
            PasswordPolicyError::TooShort
        );
        assert!(NewPassword::parse(secret("twelve chars")).is_ok());
        assert!(NewPassword::parse(secret(&"é".repeat(128))).is_ok());
        assert_eq!(
            NewPassword::parse(secret(&"a".repeat(129))).unwrap_err(),
            PasswordPolicyError::TooLong
        );
    }

    #[test]
    fn hashes_with_argon2id_and_verifies() {
        let password = NewPassword::parse(secret("correct horse battery")).unwrap();
        let hash = password.hash().unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify(&secret("correct horse battery"), Some(&hash)));
        assert!(!verify(&secret("wrong horse battery"), Some(&hash)));
        assert!(!verify(&secret("correct horse battery"), None));
    }
}
