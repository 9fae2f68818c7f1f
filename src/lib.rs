//! Tollgate: a self-hosted, security-first Stripe billing server.

pub mod accounts;
pub mod audit;
pub mod billing;
pub mod cache;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod db;
pub mod encryption_keys;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod secret;
pub mod service_tokens;
pub mod startup;
pub mod stripe_id;
pub mod telemetry;
pub mod usage;
pub mod vault;
pub mod web;
pub mod webhooks;

/// The allocator of every binary built from this crate (the server, its tests and benchmarks):
/// mimalloc, whose per-thread free lists cost a fraction of glibc malloc's on the request paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
