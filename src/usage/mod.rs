//! Usage-based billing (issue 16): metered plan components, usage reported by services,
//! quotas held by reservations, spend alerts and caps.
//!
//! Quantities are whole units of a feature's unit (tokens, runs, seat-hours); amounts are minor
//! units (cents) of the plan's currency. Platform usage counts against quotas and is billed
//! through Stripe's meters; BYOK usage (made with the customer's own provider key) is stored
//! for the customer to see and nothing else.

pub mod admin;
pub mod describe;
pub mod estimate;
pub mod meters;
pub mod period;
pub mod pricing;
pub mod quota;
pub mod records;
pub mod report;
pub mod sender;
pub mod settings;
pub mod spend;
pub mod summary;
pub mod thresholds;

pub use meters::Component;
pub use period::Period;
pub use pricing::Rate;
