//! The root `tracing` span of every request. It records what an operator needs and nothing a
//! client can forge or that holds personal data: the client address as Tollgate resolves it
//! (`X-Forwarded-For` believed only from `TRUSTED_PROXIES`), the matched route pattern
//! (`/admin/customers`, never `?q=someone@example.com`), method, status and request id.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, web};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

use crate::web::{AppState, client_ip};

/// The route a request matched, as its pattern; `unmatched` for a path no route serves (a
/// scanner's probe must not put its raw path in the logs either).
fn route(req: &ServiceRequest) -> String {
    req.match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned())
}

fn client_address(req: &ServiceRequest) -> std::net::IpAddr {
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.config.security.trusted_proxies.as_slice())
        .unwrap_or_default();
    client_ip::resolve(req.peer_addr().map(|a| a.ip()), req.headers(), trusted)
}

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(req: &ServiceRequest) -> Span {
        let request_id = crate::web::request_id::of(req).unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %req.method(),
            http.route = %route(req),
            http.client_ip = %client_address(req),
            http.status_code = tracing::field::Empty,
            request_id = %request_id,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
        )
    }

    /// Records the status, and for a failure the error's short message (its `Display`, as
    /// `AppError` words it; never its `Debug`, which may hold a return path with a query).
    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(response) => (
                response.status(),
                response.response().error().map(ToString::to_string),
            ),
            Err(error) => (
                error.as_response_error().status_code(),
                Some(error.to_string()),
            ),
        };
        span.record("http.status_code", status.as_u16());
        span.record(
            "otel.status_code",
            if status.is_server_error() {
                "ERROR"
            } else {
                "OK"
            },
        );
        if let Some(message) = error {
            span.record("exception.message", message.as_str());
        }
    }
}
