//! The id of the request being served (`X-Request-Id`), which its log lines and audit rows
//! carry: [`assign`] gives every request one (the caller's, when it is short and safe, else a
//! new UUID) and puts it on the response; [`of`] is the one way to read it.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id honoured.
const MAX_LEN: usize = 64;

/// A request's id, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestId(String);

/// The id of the request `req` (set by [`assign`]), if it ran.
pub fn of(req: &impl HttpMessage) -> Option<String> {
    req.extensions().get::<RequestId>().map(|id| id.0.clone())
}

/// An incoming id worth keeping: 1 to 64 characters of `[A-Za-z0-9._-]` (nothing a log line
/// or a CSV export could be tricked by).
fn honoured(value: &HeaderValue) -> Option<String> {
    let id = value.to_str().ok()?;
    let safe = (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    safe.then(|| id.to_owned())
}

/// Gives the request its id (the caller's `X-Request-Id` if safe, else a new UUID) before
/// anything else runs, and sends it back on the response.
pub async fn assign(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(honoured)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // An error that no inner layer turned into a response (none does: handlers' errors are
    // responses by then) passes through without the header.
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_ids_are_honoured() {
        let id = |s: &str| honoured(&HeaderValue::from_str(s).unwrap());
        assert_eq!(id("abc-123_X.y"), Some("abc-123_X.y".to_owned()));
        assert_eq!(id(&"a".repeat(64)), Some("a".repeat(64)));
        assert_eq!(id(&"a".repeat(65)), None);
        assert_eq!(id(""), None);
        assert_eq!(id("a b"), None);
        assert_eq!(id("x\"}{"), None);
        assert_eq!(id("id;drop"), None);
    }
}
