//! Cryptography for data at rest and for tokens.
//!
//! - [`keyring`]: AES-256-GCM (`aes-gcm`) with a primary key and older keys that can still
//!   decrypt; every ciphertext names its key and is bound to its place by AAD.
//! - [`hashing`]: HMAC-SHA256 (`hmac`) keyed by `TOKEN_PEPPER` (and, during a rotation, the
//!   peppers in `TOKEN_PEPPERS_OLD`), for blind indexes and for tokens that are checked but
//!   never read back.
//! - [`rotation`]: `rotate-key`'s batches: re-sealing under the primary key and rebuilding blind
//!   indexes under the primary pepper.

pub mod hashing;
pub mod keyring;
pub mod rotation;

pub use hashing::TokenHasher;
pub use keyring::{Aad, CryptoError, KeyId, Keyring};
