//! The keyring: one primary AES-256-GCM key that seals, any number of older keys that still
//! open, each known by an id derived from the key itself.
//!
//! A sealed value is `[version 1][key id 4][nonce 12][ciphertext ‖ tag 16]`. The version byte and
//! key id are authenticated too, and the caller's [`Aad`] names where the value lives (table,
//! column, row), so a ciphertext copied to another row or column fails to open.

use std::fmt;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::secret::{KeyBytes, KeyDecodeError, decode_key, random_bytes};

const FORMAT_V1: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// A key's public name: the first 4 bytes of SHA-256("tollgate-key-id" ‖ key), shown as 8 hex
/// digits. The same key always has the same id, so it cannot be mislabelled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    pub(crate) fn of(key: &[u8; 32]) -> Self {
        Self::derive(b"tollgate-key-id", key)
    }

    /// A `TOKEN_PEPPER`'s id: the same construction under its own label, so a pepper and an
    /// encryption key never share a name.
    pub(crate) fn of_pepper(pepper: &[u8; 32]) -> Self {
        Self::derive(b"tollgate-pepper-id", pepper)
    }

    fn derive(label: &[u8], key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(label)
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }

    /// The id a sealed value was made with (without opening it).
    pub fn of_sealed(sealed: &[u8]) -> Result<Self, CryptoError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        if sealed[0] != FORMAT_V1 {
            return Err(CryptoError::UnknownVersion(sealed[0]));
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&sealed[1..1 + KEY_ID_LEN]);
        Ok(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != KEY_ID_LEN * 2 || !s.is_ascii() {
            return Err(());
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| ())?;
        }
        Ok(Self(id))
    }
}

/// Where a sealed value lives. Opening with any other place fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad(String);

impl Aad {
    /// `table.column` at `row` (a stable identity of the row, e.g. `user:42/provider:openai`).
    pub fn new(table: &str, column: &str, row: impl fmt::Display) -> Self {
        Self(format!("tollgate:{table}.{column}:{row}"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("sealed value needs key {0}, which is not in the keyring")]
    UnknownKey(KeyId),
    /// Wrong key, wrong place (AAD) or a tampered byte: GCM cannot tell which, by design.
    #[error("sealed value failed authentication")]
    Authentication,
    #[error("the random generator failed")]
    Random,
}

struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(material: &KeyBytes<32>) -> Self {
        let bytes = material.expose_secret();
        Self {
            id: KeyId::of(bytes),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }
}

/// The primary key and the older keys, ready to seal and open.
pub struct Keyring {
    primary: Key,
    older: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let older: Vec<_> = self.older.iter().map(|k| k.id).collect();
        f.debug_struct("Keyring")
            .field("primary", &self.primary.id)
            .field("older", &older)
            .finish()
    }
}

/// Why `ENCRYPTION_KEYS_OLD` (or `TOKEN_PEPPERS_OLD`) could not be read. Never holds key
/// material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OldKeysError {
    #[error("entry {position}: {source}")]
    Key {
        position: usize,
        source: KeyDecodeError,
    },
    #[error("entry {position}: id {given} does not match the key (its id is {actual})")]
    IdMismatch {
        position: usize,
        given: String,
        actual: KeyId,
    },
}

impl Keyring {
    pub fn new(primary: &KeyBytes<32>, older: &[KeyBytes<32>]) -> Self {
        let primary = Key::new(primary);
        let older = older
            .iter()
            .map(Key::new)
            .filter(|k| k.id != primary.id)
            .collect();
        Self { primary, older }
    }

    /// Parses `ENCRYPTION_KEYS_OLD`: comma-separated `base64` or `id:base64` entries. A given id
    /// must match the key's own id, so a key cannot be filed under the wrong name.
    pub fn parse_old_keys(raw: &str) -> Result<Vec<KeyBytes<32>>, OldKeysError> {
        parse_key_list(raw, KeyId::of)
    }

    pub fn primary_id(&self) -> KeyId {
        self.primary.id
    }

    /// Every key id this keyring can open, primary first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        std::iter::once(self.primary.id)
            .chain(self.older.iter().map(|k| k.id))
            .collect()
    }

    fn key(&self, id: KeyId) -> Option<&Key> {
        std::iter::once(&self.primary)
            .chain(self.older.iter())
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` with the primary key for the place `aad` names.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>().map_err(|_| CryptoError::Random)?;
        let mut header = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        header.push(FORMAT_V1);
        header.extend_from_slice(&self.primary.id.0);
        header.extend_from_slice(&nonce_bytes);
        let associated = associated_data(&header[..1 + KEY_ID_LEN], aad);
        let ciphertext = self
            .primary
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: &associated,
                },
            )
            .map_err(|_| CryptoError::Authentication)?;
        header.extend_from_slice(&ciphertext);
        Ok(header)
    }

    /// Opens a sealed value made by any key in the ring, for the place `aad` names.
    pub fn open(&self, sealed: &[u8], aad: &Aad) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let id = KeyId::of_sealed(sealed)?;
        let key = self.key(id).ok_or(CryptoError::UnknownKey(id))?;
        let (header, ciphertext) = sealed.split_at(HEADER_LEN);
        let associated = associated_data(&header[..1 + KEY_ID_LEN], aad);
        key.cipher
            .decrypt(
                Nonce::from_slice(&header[1 + KEY_ID_LEN..]),
                Payload {
                    msg: ciphertext,
                    aad: &associated,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Opens a sealed UTF-8 string into a secret.
    pub fn open_string(
        &self,
        sealed: &[u8],
        aad: &Aad,
    ) -> Result<secrecy::SecretString, CryptoError> {
        let bytes = self.open(sealed, aad)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Malformed)?;
        Ok(secrecy::SecretString::from(text.to_owned()))
    }

    /// Re-seals a value under the primary key (for `rotate-key`). Values already under the
    /// primary key are returned as `None`.
    pub fn reseal(&self, sealed: &[u8], aad: &Aad) -> Result<Option<Vec<u8>>, CryptoError> {
        if KeyId::of_sealed(sealed)? == self.primary.id {
            return Ok(None);
        }
        let plaintext = self.open(sealed, aad)?;
        self.seal(&plaintext, aad).map(Some)
    }
}

/// Parses a comma-separated list of `base64` or `id:base64` keys, where a given id must be the
/// one `id_of` derives from the key (`ENCRYPTION_KEYS_OLD`, `TOKEN_PEPPERS_OLD`).
pub(crate) fn parse_key_list(
    raw: &str,
    id_of: fn(&[u8; 32]) -> KeyId,
) -> Result<Vec<KeyBytes<32>>, OldKeysError> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            let position = index + 1;
            let (given, encoded) = match entry.split_once(':') {
                Some((id, key)) => (Some(id.trim()), key),
                None => (None, entry),
            };
            let key = decode_key::<32>(encoded)
                .map_err(|source| OldKeysError::Key { position, source })?;
            let actual = id_of(key.expose_secret());
            match given {
                Some(given) if given.parse::<KeyId>().ok() != Some(actual) => {
                    Err(OldKeysError::IdMismatch {
                        position,
                        given: given.to_owned(),
                        actual,
                    })
                }
                _ => Ok(key),
            }
        })
        .collect()
}

/// The header (version and key id) and the place, authenticated together.
fn associated_data(header: &[u8], aad: &Aad) -> Vec<u8> {
    let mut associated = Vec::with_capacity(header.len() + aad.0.len());
    associated.extend_from_slice(header);
    associated.extend_from_slice(aad.0.as_bytes());
    associated
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::encode_base64;

    /// With `aes`'s `zeroize` feature the expanded round keys are wiped when a keyring (and so
    /// each cipher) is dropped; without it this does not compile.
    #[test]
    fn cipher_key_schedules_are_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes::Aes256>();
        wiped_on_drop::<aes_gcm::aes::Aes256>();
    }

    fn key(byte: u8) -> KeyBytes<32> {
        decode_key::<32>(&encode_base64(&[byte; 32])).unwrap()
    }

    fn place() -> Aad {
        Aad::new("byok_keys", "secret", "user:1/provider:openai")
    }

    #[test]
    fn seals_and_opens_with_a_fresh_nonce_each_time() {
        let ring = Keyring::new(&key(1), &[]);
        let a = ring.seal(b"sk-secret", &place()).unwrap();
        let b = ring.seal(b"sk-secret", &place()).unwrap();
        assert_ne!(a, b, "random nonce");
        assert_eq!(a[0], FORMAT_V1);
        assert_eq!(KeyId::of_sealed(&a).unwrap(), ring.primary_id());
        assert_eq!(&ring.open(&a, &place()).unwrap()[..], b"sk-secret");
    }

    #[test]
    fn a_copied_ciphertext_fails_in_another_row_or_column() {
        let ring = Keyring::new(&key(1), &[]);
        let sealed = ring.seal(b"sk-secret", &place()).unwrap();
        let other_row = Aad::new("byok_keys", "secret", "user:2/provider:openai");
        let other_column = Aad::new("users", "stripe_customer_id", "user:1/provider:openai");
        assert_eq!(
            ring.open(&sealed, &other_row).unwrap_err(),
            CryptoError::Authentication
        );
        assert_eq!(
            ring.open(&sealed, &other_column).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn tampering_unknown_keys_and_garbage_are_typed_errors() {
        let ring = Keyring::new(&key(1), &[]);
        let sealed = ring.seal(b"sk-secret", &place()).unwrap();
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert!(ring.open(&tampered, &place()).is_err(), "byte {index}");
        }
        let stranger = Keyring::new(&key(9), &[]);
        assert_eq!(
            stranger.open(&sealed, &place()).unwrap_err(),
            CryptoError::UnknownKey(ring.primary_id())
        );
        assert_eq!(
            ring.open(b"short", &place()).unwrap_err(),
            CryptoError::Malformed
        );
        let mut future = sealed.clone();
        future[0] = 2;
        assert_eq!(
            ring.open(&future, &place()).unwrap_err(),
            CryptoError::UnknownVersion(2)
        );
    }

    #[test]
    fn a_wrong_key_with_the_same_id_cannot_happen_but_a_forged_id_fails_authentication() {
        let ring = Keyring::new(&key(1), &[]);
        let other = Keyring::new(&key(2), &[]);
        let mut sealed = other.seal(b"x", &place()).unwrap();
        sealed[1..5].copy_from_slice(&ring.primary_id().0);
        assert_eq!(
            ring.open(&sealed, &place()).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn older_keys_open_and_reseal_moves_values_to_the_primary() {
        let old = Keyring::new(&key(1), &[]);
        let sealed = old.seal(b"sk-secret", &place()).unwrap();
        let rotated = Keyring::new(&key(2), &[key(1)]);
        assert_eq!(&rotated.open(&sealed, &place()).unwrap()[..], b"sk-secret");
        let resealed = rotated.reseal(&sealed, &place()).unwrap().unwrap();
        assert_eq!(KeyId::of_sealed(&resealed).unwrap(), rotated.primary_id());
        assert!(
            rotated.reseal(&resealed, &place()).unwrap().is_none(),
            "idempotent"
        );
        assert!(
            old.open(&resealed, &place()).is_err(),
            "the old ring cannot read the new key"
        );
    }

    #[test]
    fn old_keys_parse_with_or_without_a_matching_id() {
        let k = encode_base64(&[5; 32]);
        let id = KeyId::of(&[5; 32]);
        assert_eq!(
            Keyring::parse_old_keys(&format!("{k}, {id}:{k}"))
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            Keyring::parse_old_keys(&format!("deadbeef:{k}")),
            Err(OldKeysError::IdMismatch { position: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse_old_keys("nope"),
            Err(OldKeysError::Key { position: 1, .. })
        ));
        assert!(Keyring::parse_old_keys("").unwrap().is_empty());
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = Keyring::new(&key(1), &[key(2)]);
        let shown = format!("{ring:?}");
        assert!(shown.contains(&ring.primary_id().to_string()));
        assert!(!shown.contains("1, 1, 1"));
    }
}
