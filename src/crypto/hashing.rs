//! HMAC-SHA256 keyed by `TOKEN_PEPPER`: blind indexes (look up an encrypted value by equality
//! without decrypting) and hashes of tokens that are checked but never read back.
//!
//! Each use names a domain, so the same input hashed for two purposes gives unrelated digests.
//! Token hashes are keyed by the pepper itself; blind indexes by a key of their own derived
//! from it (`HMAC(pepper, "tollgate blind-index v1")`), so the two never share a key.
//!
//! The hasher holds the primary pepper, which makes every new digest, and the older peppers of
//! a rotation (`TOKEN_PEPPERS_OLD`), whose digests are still recognised: [`TokenHasher::candidates`]
//! lists every digest a value may be stored under, each with the id of the pepper that made it.
//! Blind indexes made before the derived key existed (keyed by the pepper itself) are
//! candidates too, until `tollgate rotate-key` has rebuilt them.

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretBox};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroize as _;

use super::keyring::{KeyId, OldKeysError, parse_key_list};
use crate::secret::{KeyBytes, encode_token};

type HmacSha256 = Hmac<Sha256>;

/// What the blind-index key is derived with: a new label is a new key.
const BLIND_INDEX_LABEL: &[u8] = b"tollgate blind-index v1";

/// What a digest is for; part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    ServiceToken,
    StripeCustomerId,
    /// A two-factor recovery code (checked once, never read back).
    RecoveryCode,
    /// What a shared limiter counts (an address, an account, a token) as its key in Redis:
    /// Redis never sees who is being limited.
    LimitKey,
}

impl Domain {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ServiceToken => b"service-token",
            Self::StripeCustomerId => b"stripe-customer-id",
            Self::RecoveryCode => b"recovery-code",
            Self::LimitKey => b"limit-key",
        }
    }

    /// Blind indexes are keyed by the derived index key, tokens by the pepper itself.
    fn is_blind_index(self) -> bool {
        matches!(self, Self::StripeCustomerId)
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
    let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// One pepper and the keys derived from it.
struct Pepper {
    id: KeyId,
    /// The pepper itself: keys token hashes (and blind indexes made before the derived key).
    token_key: KeyBytes<32>,
    /// Keys blind indexes.
    index_key: KeyBytes<32>,
}

impl Pepper {
    fn new(pepper: &KeyBytes<32>) -> Self {
        let raw = pepper.expose_secret();
        let mut derived = [0u8; 32];
        derived.copy_from_slice(&hmac(raw, &[BLIND_INDEX_LABEL]).finalize().into_bytes());
        let index_key = SecretBox::new(Box::new(derived));
        derived.zeroize();
        Self {
            id: KeyId::of_pepper(raw),
            token_key: SecretBox::new(Box::new(*raw)),
            index_key,
        }
    }

    fn digest(&self, domain: Domain, value: &[u8], legacy: bool) -> String {
        let key = if domain.is_blind_index() && !legacy {
            &self.index_key
        } else {
            &self.token_key
        };
        let mac = hmac(key.expose_secret(), &[domain.label(), &[0], value]);
        encode_token(&mac.finalize().into_bytes())
    }
}

/// A digest a value may be stored under, and the pepper that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pepper: KeyId,
    /// A blind index made before blind indexes had a key of their own.
    pub legacy: bool,
    pub digest: String,
}

impl Candidate {
    /// Whether `stored` is this digest, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        self.digest.as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

/// The primary pepper, which makes every new digest, and the older ones still recognised.
pub struct TokenHasher {
    primary: Pepper,
    older: Vec<Pepper>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let older: Vec<_> = self.older.iter().map(|p| p.id).collect();
        f.debug_struct("TokenHasher")
            .field("primary", &self.primary.id)
            .field("older", &older)
            .finish()
    }
}

impl TokenHasher {
    pub fn new(primary: &KeyBytes<32>, older: &[KeyBytes<32>]) -> Self {
        let primary = Pepper::new(primary);
        let mut peppers: Vec<Pepper> = Vec::new();
        for pepper in older.iter().map(Pepper::new) {
            if pepper.id != primary.id && peppers.iter().all(|p| p.id != pepper.id) {
                peppers.push(pepper);
            }
        }
        Self {
            primary,
            older: peppers,
        }
    }

    /// Parses `TOKEN_PEPPERS_OLD`: comma-separated `base64` or `id:base64` entries, a given id
    /// matching the pepper's own (as `rotate-key --check` shows it).
    pub fn parse_old_peppers(raw: &str) -> Result<Vec<KeyBytes<32>>, OldKeysError> {
        parse_key_list(raw, KeyId::of_pepper)
    }

    pub fn primary_id(&self) -> KeyId {
        self.primary.id
    }

    /// Every pepper id this hasher recognises, primary first.
    pub fn pepper_ids(&self) -> Vec<KeyId> {
        std::iter::once(self.primary.id)
            .chain(self.older.iter().map(|p| p.id))
            .collect()
    }

    /// The digest under the primary pepper, as URL-safe base64: what gets stored.
    pub fn digest(&self, domain: Domain, value: &[u8]) -> String {
        self.primary.digest(domain, value, false)
    }

    /// Every digest `value` may be stored under, the primary pepper's first: one per pepper,
    /// and for blind indexes one more per pepper in the pre-derived-key form.
    pub fn candidates(&self, domain: Domain, value: &[u8]) -> Vec<Candidate> {
        let peppers = || std::iter::once(&self.primary).chain(self.older.iter());
        let current = peppers().map(|pepper| Candidate {
            pepper: pepper.id,
            legacy: false,
            digest: pepper.digest(domain, value, false),
        });
        let legacy = peppers()
            .filter(|_| domain.is_blind_index())
            .map(|pepper| Candidate {
                pepper: pepper.id,
                legacy: true,
                digest: pepper.digest(domain, value, true),
            });
        current.chain(legacy).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{decode_key, encode_base64};

    fn pepper(byte: u8) -> KeyBytes<32> {
        decode_key::<32>(&encode_base64(&[byte; 32])).unwrap()
    }

    fn hasher(byte: u8) -> TokenHasher {
        TokenHasher::new(&pepper(byte), &[])
    }

    #[test]
    fn digests_are_stable_keyed_and_domain_separated() {
        let h = hasher(1);
        let a = h.digest(Domain::ServiceToken, b"tg_svc_abc");
        assert_eq!(a, h.digest(Domain::ServiceToken, b"tg_svc_abc"));
        assert_ne!(a, h.digest(Domain::StripeCustomerId, b"tg_svc_abc"));
        assert_ne!(a, hasher(2).digest(Domain::ServiceToken, b"tg_svc_abc"));
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn blind_indexes_have_a_key_of_their_own() {
        let h = hasher(1);
        let candidates = h.candidates(Domain::StripeCustomerId, b"cus_1");
        assert_eq!(candidates.len(), 2);
        assert_eq!(
            candidates[0].digest,
            h.digest(Domain::StripeCustomerId, b"cus_1")
        );
        assert!(!candidates[0].legacy && candidates[1].legacy);
        assert_ne!(candidates[0].digest, candidates[1].digest);
        // The legacy form is the pepper itself over the same input: what tokens are keyed by.
        let raw = hmac(&[1; 32], &[b"stripe-customer-id", &[0], b"cus_1"]);
        assert_eq!(
            candidates[1].digest,
            encode_token(&raw.finalize().into_bytes())
        );
        assert_eq!(h.candidates(Domain::ServiceToken, b"tg_svc_abc").len(), 1);
    }

    #[test]
    fn old_peppers_are_recognised_after_the_primary() {
        let rotated = TokenHasher::new(&pepper(2), &[pepper(1), pepper(2), pepper(1)]);
        assert_eq!(rotated.pepper_ids().len(), 2, "duplicates are dropped");
        let before = hasher(1).digest(Domain::ServiceToken, b"tg_svc_abc");
        let candidates = rotated.candidates(Domain::ServiceToken, b"tg_svc_abc");
        assert_eq!(candidates[0].pepper, rotated.primary_id());
        let old = candidates.iter().find(|c| c.matches(&before)).unwrap();
        assert_eq!(old.pepper, hasher(1).primary_id());
        assert!(!candidates[0].matches(&before));
    }

    #[test]
    fn old_peppers_parse_with_their_own_ids() {
        let p = encode_base64(&[5; 32]);
        let id = KeyId::of_pepper(&[5; 32]);
        assert_eq!(
            TokenHasher::parse_old_peppers(&format!("{p},{id}:{p}"))
                .unwrap()
                .len(),
            2
        );
        // An encryption key id is not a pepper id.
        let key_id = KeyId::of(&[5; 32]);
        assert_ne!(key_id, id);
        assert!(matches!(
            TokenHasher::parse_old_peppers(&format!("{key_id}:{p}")),
            Err(OldKeysError::IdMismatch { position: 1, .. })
        ));
    }

    #[test]
    fn debug_shows_ids_only() {
        let shown = format!("{:?}", TokenHasher::new(&pepper(1), &[pepper(2)]));
        assert!(
            shown.contains(&hasher(1).primary_id().to_string()),
            "{shown}"
        );
        assert!(!shown.contains("1, 1, 1"), "{shown}");
    }
}
