//! Billing: plans synced to Stripe, each user's Stripe customer, Checkout and the Billing
//! Portal, the local copy of subscription state, and entitlements.
//!
//! Convention: a pooled connection is never held across a call to Stripe. Each operation reads
//! what it needs, releases the connection, calls Stripe with an idempotency key derived from a
//! stored operation id and its owner ([`operations`]), then writes the result in a new
//! transaction.

pub mod customers;
pub mod gateway;
pub mod operations;
pub mod plans;
pub mod subscriptions;

use crate::crypto::CryptoError;
use crate::db::DbError;
pub use gateway::{Gateway, GatewayError, OperationClass};
pub use operations::Operation;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("Stripe returned an object Tollgate cannot use: {0}")]
    Unexpected(String),
    #[error("the operation id was claimed by another account")]
    OperationTaken,
}

/// A random operation id for a form: submitting the same form twice reuses it.
pub fn new_operation_id() -> Result<String, getrandom::Error> {
    Ok(crate::secret::encode_token(&crate::secret::random_bytes::<
        16,
    >()?))
}

/// Accepts only ids of the shape `new_operation_id` makes.
pub fn valid_operation_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
