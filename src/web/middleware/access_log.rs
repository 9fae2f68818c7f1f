//! One log line and one metric sample per answered request: method, route pattern (never the
//! raw path: `unmatched` for a path no route serves), status, latency and request id.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::web::AppState;

/// The route a request matched, as its pattern (known before routing: actix resolves it from
/// the route table).
pub fn route(req: &ServiceRequest) -> String {
    req.match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned())
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Read before the call: the request cannot be kept (or cloned) while it is routed.
    let route = route(&req);
    let method = req.method().clone();
    let request_id = crate::web::request_id::of(&req).unwrap_or_default();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let outcome = next.call(req).await;
    let elapsed = started.elapsed();
    let status = match &outcome {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    tracing::info!(
        target: "tollgate::http",
        request_id,
        method = method.as_str(),
        route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request completed"
    );
    if let Some(state) = state {
        state
            .metrics
            .http_request(method.as_str(), route, status.as_u16(), elapsed);
    }
    outcome
}
