//! One file per table: the row struct, a `New*` insert struct and the finder functions.

pub mod alert;
pub mod audit_chain;
pub mod billing_customer;
pub mod byok_key;
pub mod cancellation_feedback;
pub mod encryption_key;
pub mod invoice;
pub mod notification;
pub mod payment_card;
pub mod plan;
pub mod plan_change;
pub mod plan_trial_option;
pub mod promotion;
pub mod security_event;
pub mod security_event_search;
pub mod service_token;
pub mod session;
pub mod setting;
pub mod stripe_operation;
pub mod stripe_refetch;
pub mod subscription;
pub mod two_factor;
pub mod usage;
pub mod user;
pub mod webhook_endpoint;
pub mod webhook_event;
