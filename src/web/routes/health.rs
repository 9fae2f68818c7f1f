//! `/healthz` (the process is alive) and `/readyz` (and can reach its database, and its Redis
//! when the limits are shared with `REDIS_FAIL=closed`).

use actix_web::{HttpResponse, web};

use crate::config::RedisFail;
use crate::db;
use crate::web::AppState;

pub async fn alive() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if let Err(err) = state.db.run(db::ping).await {
        tracing::warn!(error = %err, "readiness check failed");
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "unavailable" }));
    }
    let Some(shared) = &state.shared_limits else {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }));
    };
    // With REDIS_FAIL=closed an instance without its Redis refuses limited requests: not
    // ready. With `open` it serves, limiting in memory: ready, and it says so.
    if shared.ping().await {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "redis": "reachable" }))
    } else if shared.fail() == RedisFail::Closed {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "unavailable", "redis": "unreachable" }))
    } else {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "redis": "unreachable" }))
    }
}
