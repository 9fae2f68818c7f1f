//! Secret values as types, and the masking helpers used wherever a secret-ish value is shown.
//!
//! Keys and tokens are `secrecy` boxes: their `Debug` prints `[REDACTED]`, they are zeroed on
//! drop, and reading one takes an explicit, greppable `expose_secret()`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::ExposeSecretMut as _;
pub use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

/// Fixed-size key material (e.g. a 32-byte AES key), redacted in `Debug`.
pub type KeyBytes<const N: usize> = SecretBox<[u8; N]>;

/// Why a base64 key could not be decoded. Never carries the value itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyDecodeError {
    #[error("is not valid base64")]
    NotBase64,
    #[error("must decode to {expected} bytes (got {actual})")]
    WrongLength { expected: usize, actual: usize },
}

/// Decodes base64 (standard or URL-safe, padded or not) into exactly `N` bytes.
/// The decoded bytes live in a zeroizing buffer until they are copied into the key's box (which
/// `secrecy` zeroes on drop): no copy of the key is left behind in freed memory.
pub fn decode_key<const N: usize>(encoded: &str) -> Result<KeyBytes<N>, KeyDecodeError> {
    let encoded = encoded.trim();
    let bytes: Zeroizing<Vec<u8>> = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
        .map(Zeroizing::new)
        .ok_or(KeyDecodeError::NotBase64)?;
    if bytes.len() != N {
        return Err(KeyDecodeError::WrongLength {
            expected: N,
            actual: bytes.len(),
        });
    }
    let mut key = SecretBox::new(Box::new([0u8; N]));
    key.expose_secret_mut().copy_from_slice(&bytes);
    Ok(key)
}

/// Fresh random key material from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// Base64 (standard, padded): the format `tollgate keygen` prints and the config reads.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// URL-safe base64 without padding, for tokens that travel in forms, headers and cookies.
pub fn encode_token(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `user@example.com` → `u***r@example.com`; a one-letter local part becomes `u***@…`.
/// Anything that is not an email is masked whole.
pub fn mask_email(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return "***".to_owned();
    };
    let mut chars = local.chars();
    match (chars.next(), chars.next_back()) {
        (Some(first), Some(last)) => format!("{first}***{last}@{domain}"),
        (Some(first), None) => format!("{first}***@{domain}"),
        _ => format!("***@{domain}"),
    }
}

/// Known API-key prefixes, longest first: the part of a key that names its kind, not its secret.
const KEY_PREFIXES: [&str; 16] = [
    "sk-ant-api03-",
    "sk-ant-admin01-",
    "sk-ant-",
    "sk-proj-",
    "sk-svcacct-",
    "sk-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "pk_live_",
    "pk_test_",
    "whsec_",
    "tg_svc_",
    "cus_",
    "sub_",
];

/// `sk-ant-api03-…2a1`: the key's kind prefix and its last three characters, nothing else.
/// Short or unrecognised values show only the last three characters.
pub fn mask_api_key(key: &str) -> String {
    let key = key.trim();
    let chars: Vec<char> = key.chars().collect();
    let last3: String = chars[chars.len().saturating_sub(3)..].iter().collect();
    let prefix = KEY_PREFIXES
        .iter()
        .find(|prefix| key.starts_with(*prefix))
        .copied()
        .unwrap_or("");
    // A key barely longer than its prefix would give too much away.
    if chars.len() < prefix.chars().count() + 12 {
        return format!("{prefix}…");
    }
    format!("{prefix}…{last3}")
}

/// `4242424242424242` → `************4242`: every digit but the last four hidden.
pub fn mask_card(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 8 {
        return "*".repeat(digits.len());
    }
    let shown: String = digits[digits.len() - 4..].iter().collect();
    format!("{}{shown}", "*".repeat(digits.len() - 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_api_keys_to_prefix_and_last_three() {
        assert_eq!(
            mask_api_key("sk-ant-api03-DUMMYDUMMYDUMMYDUMMY-2a1"),
            "sk-ant-api03-…2a1"
        );
        assert_eq!(mask_api_key("sk-DUMMYDUMMYDUMMYDUMMYabc"), "sk-…abc");
        assert_eq!(mask_api_key("sk_test_DUMMYDUMMYDUMMYxyz"), "sk_test_…xyz");
        assert_eq!(mask_api_key("sk-ant-short"), "sk-ant-…");
        assert_eq!(mask_api_key("abcdefghijklmnopqrstu"), "…stu");
    }

    #[test]
    fn masks_cards_to_the_last_four_digits() {
        assert_eq!(mask_card("4242424242424242"), "************4242");
        assert_eq!(mask_card("4242 4242 4242 4242"), "************4242");
        assert_eq!(mask_card("123"), "***");
    }

    #[test]
    fn masks_emails_like_the_seed_documents() {
        assert_eq!(mask_email("user@example.com"), "u***r@example.com");
        assert_eq!(mask_email("a@example.com"), "a***@example.com");
        assert_eq!(mask_email("not-an-email"), "***");
    }

    #[test]
    fn decodes_keys_of_the_right_length_only() {
        let encoded = encode_base64(&[7u8; 32]);
        let key = decode_key::<32>(&encoded).unwrap();
        assert_eq!(key.expose_secret(), &[7u8; 32]);
        assert_eq!(
            decode_key::<64>(&encoded).unwrap_err(),
            KeyDecodeError::WrongLength {
                expected: 64,
                actual: 32
            }
        );
        assert_eq!(
            decode_key::<32>("not base64!").unwrap_err(),
            KeyDecodeError::NotBase64
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = decode_key::<32>(&encode_base64(&[0xAB; 32])).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
