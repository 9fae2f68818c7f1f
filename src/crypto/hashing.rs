//! HMAC-SHA256 keyed by `TOKEN_PEPPER`: blind indexes (look up an encrypted value by equality
//! without decrypting) and hashes of tokens that are checked but never read back.
//!
//! Each use names a domain, so the same input hashed for two purposes gives unrelated digests.

use hmac::{Hmac, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;

use crate::secret::{KeyBytes, encode_token};

type HmacSha256 = Hmac<Sha256>;

/// What a digest is for; part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    ServiceToken,
    StripeCustomerId,
}

impl Domain {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ServiceToken => b"service-token",
            Self::StripeCustomerId => b"stripe-customer-id",
        }
    }
}

pub struct TokenHasher {
    pepper: KeyBytes<32>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher([REDACTED])")
    }
}

impl TokenHasher {
    pub fn new(pepper: &KeyBytes<32>) -> Self {
        Self {
            pepper: secrecy::SecretBox::new(Box::new(*pepper.expose_secret())),
        }
    }

    fn mac(&self, domain: Domain, value: &[u8]) -> HmacSha256 {
        // A 32-byte key is always a valid HMAC key; `new_from_slice` cannot fail here.
        let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(self.pepper.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(domain.label());
        mac.update(&[0]);
        mac.update(value);
        mac
    }

    /// The digest as URL-safe base64: what gets stored and looked up.
    pub fn digest(&self, domain: Domain, value: &[u8]) -> String {
        encode_token(&self.mac(domain, value).finalize().into_bytes())
    }

    /// Checks `value` against a stored digest in constant time.
    pub fn verify(&self, domain: Domain, value: &[u8], stored: &str) -> bool {
        use base64::Engine as _;
        let Ok(expected) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(stored) else {
            return false;
        };
        self.mac(domain, value).verify_slice(&expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{decode_key, encode_base64};

    fn hasher(byte: u8) -> TokenHasher {
        TokenHasher::new(&decode_key::<32>(&encode_base64(&[byte; 32])).unwrap())
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
    fn verify_accepts_only_the_same_value() {
        let h = hasher(1);
        let stored = h.digest(Domain::ServiceToken, b"tg_svc_abc");
        assert!(h.verify(Domain::ServiceToken, b"tg_svc_abc", &stored));
        assert!(!h.verify(Domain::ServiceToken, b"tg_svc_abd", &stored));
        assert!(!h.verify(Domain::ServiceToken, b"tg_svc_abc", "not base64!"));
    }
}
