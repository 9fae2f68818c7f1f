//! `POST /internal/v1/usage`: services report usage (scope `usage:write`), up to 1,000
//! records a call, stored all or nothing (see `usage::report`).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::audit::{Actor, Principal};
use crate::error::AppError;
use crate::service_tokens::Scope;
use crate::usage::records::Stored;
use crate::usage::report::{self, Invalid, Reported};
use crate::web::routes::internal::{authorize, within_limit};
use crate::web::{AppState, client_ip};

/// The largest body a usage report may have (1,000 records fit with room to spare).
pub const BODY_LIMIT: usize = 512 * 1024;

/// `POST /internal/v1/usage`.
pub async fn report_usage(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let token = authorize(&req, &state, Scope::UsageWrite).await?;
    let actor = Actor::new(
        Principal::Service(token.name.clone()),
        Some(client_ip::of(&req)),
    )
    .in_request(crate::web::request_id::of(&req));
    within_limit(
        &req,
        &state,
        &state.usage_limiter,
        "usage",
        token.id,
        &actor,
    )
    .await?;
    let records = match report::parse(&body, crate::db::now(), &token.name) {
        Ok(records) => records,
        Err(invalid) => return Ok(refused(&invalid)),
    };
    let keys: Vec<String> = records.iter().map(|r| r.key().to_owned()).collect();
    let customers: std::collections::BTreeSet<_> = records.iter().map(|r| r.user_id()).collect();
    let reported = state
        .db
        .write(None, move |conn| report::store(conn, records))
        .await?;
    // Their usage changed: their entitlements (`limits`) are read afresh.
    for customer in &customers {
        state.entitlements.forget(customer);
    }
    let stored = match reported {
        Reported::Stored(stored) => stored,
        Reported::Rejected(invalid) => return Ok(refused(&invalid)),
    };
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(summary(&keys, &stored)))
}

fn refused(invalid: &Invalid) -> HttpResponse {
    let body = match invalid.index {
        Some(index) => json!({ "error": invalid.message, "index": index }),
        None => json!({ "error": invalid.message }),
    };
    HttpResponse::BadRequest()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(body)
}

fn summary(keys: &[String], stored: &[Stored]) -> serde_json::Value {
    let status = |s: &Stored| match s {
        Stored::Accepted(_) => "accepted",
        Stored::Duplicate => "duplicate",
        Stored::Conflict => "conflict",
    };
    let count = |want: &str| stored.iter().filter(|s| status(s) == want).count();
    let results: Vec<_> = keys
        .iter()
        .zip(stored)
        .map(|(key, s)| json!({ "idempotency_key": key, "status": status(s) }))
        .collect();
    json!({
        "accepted": count("accepted"),
        "duplicates": count("duplicate"),
        "conflicts": count("conflict"),
        "results": results,
    })
}

/// The usage routes, relative to `/internal/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/usage")
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .route(web::post().to(report_usage)),
    );
}
