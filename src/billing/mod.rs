//! Billing: plans synced to Stripe (`plans`), each user's Stripe customer (`customers`),
//! Checkout and the way back from it (`checkout`), the Billing Portal (`portal`), the local copy
//! of subscription state and entitlements (`subscriptions`), operation ids (`operations`) and
//! every call to Stripe (`gateway`).
//!
//! Convention: a pooled connection is never held across a call to Stripe. Each operation reads
//! what it needs, releases the connection, calls Stripe with an idempotency key derived from a
//! stored operation id and its owner ([`operations`]), then writes the result in a new
//! transaction.

pub mod cancellations;
pub mod cards;
pub mod checkout;
pub mod customers;
pub mod gateway;
pub mod invoices;
pub mod operations;
pub mod plan_changes;
pub mod plans;
pub mod portal;
pub mod promotions;
pub mod subscriptions;

use crate::crypto::{CryptoError, Keyring, TokenHasher};
use crate::db::{Db, DbError};
pub use gateway::{Gateway, GatewayError, OperationClass};
pub use operations::{Operation, OperationId};

/// What billing operations reach: the database, the keys of the sealed customer ids, Stripe,
/// and the address Stripe sends people back to.
#[derive(Clone, Copy)]
pub struct Billing<'a> {
    pub db: &'a Db,
    pub keyring: &'a Keyring,
    pub hasher: &'a TokenHasher,
    pub gateway: &'a Gateway,
    /// Where people reach Tollgate (no trailing slash).
    pub public_url: &'a str,
}

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
    OperationId::generate().map(|id| id.as_str().to_owned())
}
