//! Middleware. Around the whole app, outermost first: the request id (`web::request_id`), the
//! access log and HTTP metrics, security headers, error pages, request tracing, rate-limit
//! headers and audit, forgetting cached entitlements after a write, HEAD as GET. Around each
//! route area
//! (`web::routes::configure`): its form budget (sign-in, sign-up), its per-client limiter, then
//! sessions (none for `/internal/v1` and `/webhooks`).

pub mod access_log;
pub mod error_pages;
pub mod error_rate;
pub mod form_budget;
pub mod fresh_entitlements;
pub mod head;
pub mod rate_limit;
pub mod request_span;
pub mod security_headers;
pub mod session_store;
