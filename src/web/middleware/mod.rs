//! Middleware, outermost first: security headers, error pages, request tracing, rate-limit
//! headers and audit, the per-IP rate limiter, sessions, and the sign-in and sign-up budgets.

pub mod error_pages;
pub mod form_budget;
pub mod head;
pub mod rate_limit;
pub mod request_span;
pub mod security_headers;
pub mod session_store;
