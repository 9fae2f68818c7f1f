//! Tollgate's integration tests: one binary, one module per capability. Every test talks HTTP
//! to a real server (or runs the real binary) with a database of its own, on SQLite and — when
//! reachable — PostgreSQL.

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod accounts;
mod admin;
mod alerts;
mod app_webhooks;
mod audit;
mod audit_queries;
mod audit_trail;
mod auth_budgets;
mod billing;
mod cli;
mod cluster;
mod confirmations;
mod csrf;
mod database;
#[cfg(feature = "stripe-sim")]
mod demo;
mod docs;
mod email;
mod errors;
mod experience;
mod forms;
mod headers;
mod instances;
mod internal_api_docs;
mod invoices;
mod layout;
mod lease;
mod metered_plans;
mod metrics;
mod notifications;
mod operations;
mod pepper_rotation;
mod plan_changes;
mod pricing;
mod promotions;
mod quotas;
mod rate_limits;
mod reconciliation;
mod request_ids;
mod roles;
mod scale;
mod security_dashboard;
mod sessions;
mod shared_limits;
mod shutdown;
mod subscriptions;
mod trials;
mod two_factor;
mod usage_api;
mod usage_page;
mod vault;
mod webhooks;
