//! Cryptography for data at rest and for tokens.
//!
//! - [`keyring`]: AES-256-GCM (`aes-gcm`) with a primary key and older keys that can still
//!   decrypt; every ciphertext names its key and is bound to its place by AAD.
//! - [`hashing`]: HMAC-SHA256 (`hmac`) keyed by `TOKEN_PEPPER` (and, during a rotation, the
//!   peppers in `TOKEN_PEPPERS_OLD`), for blind indexes and for tokens that are checked but
//!   never read back.
//! - [`rotation`]: `rotate-key`'s engine: the batch loop (one transaction per batch,
//!   compare-and-swap) that re-seals under the primary key and rebuilds blind indexes, and the
//!   description of a sealed column each domain gives for its own. It knows no tables.

pub mod hashing;
pub mod keyring;
pub mod rotation;

pub use hashing::{Domain, TokenHasher};
pub use keyring::{Aad, CryptoError, KeyId, Keyring};
