//! `GET /metrics`: Prometheus's scrape, in the text exposition format. On the main address it
//! needs a service token with the `metrics:read` scope (refusals audited as on `/internal/v1`);
//! on `METRICS_BIND`, a private address, it is served by [`serve_open`] without one.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::AppError;
use crate::service_tokens::Scope;
use crate::web::AppState;
use crate::web::routes::internal::authorize;

/// The exposition format's media type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn exposition(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(state.metrics.render(state.db.pool_state()))
}

/// `GET /metrics` on the main address: a `metrics:read` token required.
pub async fn scrape(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    authorize(&req, &state, Scope::MetricsRead).await?;
    Ok(exposition(&state))
}

/// `GET /metrics` on `METRICS_BIND`: no token (the address itself is the access control).
pub async fn serve_open(state: web::Data<AppState>) -> HttpResponse {
    exposition(&state)
}
