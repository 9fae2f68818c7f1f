//! `/internal/v1/entitlements/{user_id}/reserve|commit|release`: quotas held by reservations,
//! for services on the hot path of every AI call (scope `usage:write`, limited per token by
//! the usage limiter). The rules live in `crate::usage::quota`.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::accounts::UserId;
use crate::audit::{Actor, Principal};
use crate::error::AppError;
use crate::service_tokens::Scope;
use crate::usage::quota::{
    self, DEFAULT_TTL_SECS, Limit, MAX_QUANTITY, MAX_TTL_SECS, Reserved, Settled,
};
use crate::web::{AppState, client_ip};

use super::internal::{authorize, within_limit};

/// Largest request body: a reserve or commit is a few dozen bytes.
const BODY_LIMIT: usize = 4 * 1024;
/// Longest feature key and reservation id accepted.
const MAX_KEY_LEN: usize = 100;

/// The service token, authorised for `usage:write` and within its rate limit, as the actor.
async fn service(req: &HttpRequest, state: &web::Data<AppState>) -> Result<Actor, AppError> {
    let token = authorize(req, state, Scope::UsageWrite).await?;
    let actor = Actor::new(Principal::Service(token.name), Some(client_ip::of(req)))
        .in_request(crate::web::request_id::of(req));
    within_limit(req, state, &state.usage_limiter, "usage", token.id, &actor).await?;
    Ok(actor)
}

fn service_name(actor: &Actor) -> String {
    match &actor.principal {
        Principal::Service(name) => name.clone(),
        _ => String::new(),
    }
}

fn json(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(body)
}

fn conflict(state: &str) -> HttpResponse {
    HttpResponse::Conflict()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(
            serde_json::json!({ "error": format!("The reservation is {state}, no longer held.") }),
        )
}

/// `limit`, `used`, `reserved`, `remaining`, `resets_at` of `limit` into `body` (nulls when
/// unknown).
fn standing(body: &mut serde_json::Value, limit: Option<&Limit>) {
    let fields = serde_json::json!({
        "limit": limit.and_then(|l| l.limit),
        "used": limit.map(|l| l.used),
        "reserved": limit.map(|l| l.reserved),
        "remaining": limit.and_then(|l| l.remaining),
        "resets_at": limit.map(|l| l.resets_at),
    });
    if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
}

fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    feature: String,
    quantity: i64,
    ttl_secs: Option<i64>,
}

/// `POST /internal/v1/entitlements/{user_id}/reserve`
pub async fn reserve(
    req: HttpRequest,
    state: web::Data<AppState>,
    user_id: web::Path<UserId>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let actor = service(&req, &state).await?;
    let ReserveBody {
        feature,
        quantity,
        ttl_secs,
    } = serde_json::from_slice(&body).map_err(|_| {
        AppError::BadRequest(
            "Send JSON {\"feature\": \"tokens\", \"quantity\": 1000, \"ttl_secs\": 300}.",
        )
    })?;
    let ttl_secs = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !valid_key(&feature) {
        return Err(AppError::BadRequest(
            "feature must be a metered feature's key.",
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(AppError::BadRequest(
            "quantity must be a whole number from 1.",
        ));
    }
    if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
        return Err(AppError::BadRequest("ttl_secs must be from 1 to 3600."));
    }
    let request = quota::Reserve {
        user_id: *user_id,
        feature: feature.clone(),
        quantity,
        ttl_secs,
        service: service_name(&actor),
    };
    let deadline = state.config.quotas.reserve_deadline;
    let reserved =
        quota::reserve(&state.db, &state.quota_policies, &actor, request, deadline).await;
    // What the customer holds changed: their entitlements (`limits`) are read afresh.
    state.entitlements.forget(&user_id);
    let mut body = serde_json::json!({ "feature": feature, "quantity": quantity });
    let (allowed, fields) = match reserved {
        Reserved::UnknownUser => return Err(AppError::NotFound),
        Reserved::Allowed {
            id,
            expires_at,
            limit,
        } => {
            standing(&mut body, Some(&limit));
            let id = serde_json::json!({
                "reservation_id": id,
                "expires_at": expires_at.and_utc().timestamp(),
            });
            (true, id)
        }
        Reserved::Refused { reason, limit } => {
            standing(&mut body, limit.as_ref());
            (false, serde_json::json!({ "reason": reason.as_str() }))
        }
        Reserved::Undecided { allowed } => (allowed, serde_json::json!({ "reason": "undecided" })),
    };
    if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.insert("allowed".into(), allowed.into());
        body.extend(fields);
    }
    Ok(json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    reservation_id: String,
    quantity: Option<i64>,
}

/// `POST /internal/v1/entitlements/{user_id}/commit`
pub async fn commit(
    req: HttpRequest,
    state: web::Data<AppState>,
    user_id: web::Path<UserId>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let actor = service(&req, &state).await?;
    let CommitBody {
        reservation_id,
        quantity,
    } = serde_json::from_slice(&body).map_err(|_| {
        AppError::BadRequest("Send JSON {\"reservation_id\": \"rsv_…\", \"quantity\": 800}.")
    })?;
    if !valid_key(&reservation_id) {
        return Err(AppError::NotFound);
    }
    let settled = quota::commit(
        &state.db,
        *user_id,
        reservation_id.clone(),
        quantity,
        service_name(&actor),
    )
    .await?;
    state.entitlements.forget(&user_id);
    settled_response(settled, reservation_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    reservation_id: String,
}

/// `POST /internal/v1/entitlements/{user_id}/release`
pub async fn release(
    req: HttpRequest,
    state: web::Data<AppState>,
    user_id: web::Path<UserId>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    service(&req, &state).await?;
    let ReleaseBody { reservation_id } = serde_json::from_slice(&body)
        .map_err(|_| AppError::BadRequest("Send JSON {\"reservation_id\": \"rsv_…\"}."))?;
    if !valid_key(&reservation_id) {
        return Err(AppError::NotFound);
    }
    let settled = quota::release(&state.db, *user_id, reservation_id.clone()).await?;
    state.entitlements.forget(&user_id);
    settled_response(settled, reservation_id)
}

fn settled_response(settled: Settled, reservation_id: String) -> Result<HttpResponse, AppError> {
    let (mut body, limit) = match settled {
        Settled::NotFound => return Err(AppError::NotFound),
        Settled::BadQuantity => {
            return Err(AppError::BadRequest(
                "quantity must be from 1 to the reservation's quantity.",
            ));
        }
        Settled::NotHeld(state) => return Ok(conflict(state)),
        Settled::Committed { quantity, limit } => (
            serde_json::json!({ "committed": quantity, "reservation_id": reservation_id }),
            limit,
        ),
        Settled::Released { limit } => (
            serde_json::json!({ "released": true, "reservation_id": reservation_id }),
            limit,
        ),
    };
    if let Some(limit) = &limit {
        body["feature"] = limit.feature.clone().into();
    }
    standing(&mut body, limit.as_ref());
    Ok(json(body))
}

/// The quota routes, relative to `/internal/v1` (registered by `internal::configure`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let small = || web::PayloadConfig::new(BODY_LIMIT);
    cfg.service(
        web::resource("/entitlements/{user_id}/reserve")
            .app_data(small())
            .route(web::post().to(reserve)),
    )
    .service(
        web::resource("/entitlements/{user_id}/commit")
            .app_data(small())
            .route(web::post().to(commit)),
    )
    .service(
        web::resource("/entitlements/{user_id}/release")
            .app_data(small())
            .route(web::post().to(release)),
    );
}
