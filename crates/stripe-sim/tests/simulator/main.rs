//! The Stripe simulator, driven by `async-stripe` exactly as Tollgate drives Stripe: every
//! endpoint deserializes; idempotency, errors, hosted pages, signed webhooks with retries, and
//! the `/_sim` test controls behave as documented. One binary, one module per surface.

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod api;
mod changes;
mod checkout;
mod invoices;
mod lists;
mod metering;
mod portal;
mod promotions;
mod trials;
mod webhooks;
