//! The id of the request being served (`X-Request-Id`), which its log lines and audit rows carry.

use actix_web::HttpMessage;
use tracing_actix_web::RequestId;

/// The id of the request `req` (set by the request-span middleware), if it ran.
pub fn of(req: &impl HttpMessage) -> Option<String> {
    req.extensions().get::<RequestId>().map(ToString::to_string)
}
