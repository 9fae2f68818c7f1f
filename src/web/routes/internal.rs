//! `/internal/v1/…`: the API for Tollgate's own services, authenticated by scoped service
//! tokens (`Authorization: Bearer tg_svc_…`). Every refusal and every lease is audited.

use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, Principal};
use crate::error::AppError;
use crate::limits::{KeyedLimiter, Limited};
use crate::metrics;
use crate::secret::mask_api_key;
use crate::service_tokens::{self, Scope, ServiceToken};
use crate::vault::{LeaseOutcome, Provider};
use crate::web::{AppState, client_ip};

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Audits a refused token: by its service when it authenticated (but lacks the scope), else by
/// nobody.
async fn reject(
    state: &AppState,
    req: &HttpRequest,
    service: Option<&str>,
    reason: &str,
    token: Option<&str>,
) {
    let principal = service.map_or(Principal::Anonymous, |name| {
        Principal::Service(name.to_owned())
    });
    let event = Actor::new(principal, Some(client_ip::of(req)))
        .in_request(crate::web::request_id::of(req))
        .event(Kind::ServiceTokenRejected)
        .details(serde_json::json!({
            "reason": reason,
            "path": req.path(),
            "token": token.map(mask_api_key),
        }))
        .aggregate(state.config.audit.aggregate_window, reason);
    if let Err(err) = audit::record(&state.db, event).await {
        tracing::error!(error = %err, "could not record service_token_rejected");
    }
}

/// Counts a request against its service token's limit (`limiter`, named in the audit row): a
/// refusal is audited (aggregated) and answered 429; a shared limit whose Redis cannot be
/// reached with `REDIS_FAIL=closed` is answered 503.
pub async fn within_limit(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    limiter: &KeyedLimiter<i64>,
    name: &'static str,
    token_id: i64,
    actor: &Actor,
) -> Result<(), AppError> {
    match limiter.check(&token_id).await {
        Ok(()) => Ok(()),
        Err(Limited::Unavailable) => Err(AppError::Unavailable),
        Err(Limited::Wait(retry_after)) => {
            let event = actor
                .event(Kind::RateLimited)
                .details(serde_json::json!({ "path": req.path(), "limiter": name }))
                .aggregate(state.config.audit.aggregate_window, name);
            let config = state.config.clone();
            state
                .db
                .run(move |conn| {
                    audit::alerts::record_rate_limit_refusal(conn, &config.alerts, &event)
                })
                .await?;
            Err(AppError::RateLimited { retry_after })
        }
    }
}

/// The live service token on the request, which must carry `scope`.
pub async fn authorize(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    scope: Scope,
) -> Result<ServiceToken, AppError> {
    let presented = bearer(req);
    // A key lease may take its token from the cache too: the lease desk checks, after the
    // lease was asked for, that the token is still live (see `vault::lease_desk`).
    let key = presented
        .as_deref()
        .and_then(|presented| state.token_cache.key(&state.token_hasher, presented));
    let cached = key.as_deref().map(|key| state.token_cache.get(key));
    let outcome = match cached {
        Some(Ok(token)) => Ok(token),
        _ => {
            let st = state.clone();
            let lookup = presented.clone();
            let outcome = state
                .db
                .run(move |conn| {
                    service_tokens::authenticate(conn, &st.token_hasher, lookup.as_deref())
                })
                .await?;
            if let (Ok(token), Some(key), Some(Err(miss))) = (&outcome, key, cached) {
                state.token_cache.remember(key, token, miss);
            }
            outcome
        }
    };
    match outcome {
        Err(rejection) => {
            reject(state, req, None, rejection.as_str(), presented.as_deref()).await;
            Err(AppError::Unauthorized)
        }
        Ok(token) if !token.allows(scope) => {
            let reason = format!("scope {scope} not granted");
            reject(state, req, Some(&token.name), &reason, presented.as_deref()).await;
            Err(AppError::Forbidden)
        }
        Ok(token) => Ok(token),
    }
}

#[derive(Deserialize)]
pub struct LeaseRequest {
    user_id: UserId,
    provider: String,
}

/// `POST /internal/v1/byok/lease`: the customer's plaintext key, for the execution engine.
/// Every request is counted as granted or refused (by reason) in the metrics.
pub async fn lease(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let leased = lease_key(&req, &state, body).await;
    let outcome = match &leased {
        Ok(_) => metrics::LeaseOutcome::Granted,
        Err(err) => metrics::LeaseOutcome::Refused(match err {
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden => "forbidden",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::BadRequest(_) => "bad_request",
            AppError::NotFound => "no_key",
            AppError::Unavailable => "disabled",
            _ => "error",
        }),
    };
    state.metrics.byok_lease(outcome);
    leased
}

async fn lease_key(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let token = authorize(req, state, Scope::ByokLease).await?;
    let actor = Actor::new(Principal::Service(token.name), Some(client_ip::of(req)))
        .in_request(crate::web::request_id::of(req));
    within_limit(req, state, &state.lease_limiter, "lease", token.id, &actor).await?;
    let LeaseRequest { user_id, provider } = serde_json::from_slice(&body).map_err(|_| {
        AppError::BadRequest("Send JSON {\"user_id\": 123, \"provider\": \"anthropic\"}.")
    })?;
    let provider = Provider::parse(&provider).ok_or(AppError::NotFound)?;
    // Recorded (audited) before the key leaves; if it cannot be, the key does not.
    let outcome = state
        .lease_desk
        .lease(actor, token.id, user_id, provider)
        .await
        .map_err(AppError::internal)?;
    let lease = match outcome {
        LeaseOutcome::Disabled => return Err(AppError::Unavailable),
        LeaseOutcome::NoKey => return Err(AppError::NotFound),
        LeaseOutcome::TokenRevoked => {
            // Revoked elsewhere while this instance still remembered it: forget it, and refuse
            // (and audit) the token as a fresh lookup does.
            let presented = bearer(req);
            let key = presented
                .as_deref()
                .and_then(|presented| state.token_cache.key(&state.token_hasher, presented));
            if let Some(key) = key {
                state.token_cache.forget(&key);
            }
            authorize(req, state, Scope::ByokLease).await?;
            return Err(AppError::Unauthorized);
        }
        LeaseOutcome::Leased(lease) => lease,
    };
    let body = lease_json(user_id, provider, lease.key.expose_secret())?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .content_type("application/json")
        // The body's bytes are the zeroizing buffer itself: wiped once actix has written them.
        .body(web::Bytes::from_owner(body)))
}

#[derive(serde::Serialize)]
struct LeaseBody<'a> {
    user_id: UserId,
    provider: &'a str,
    api_key: &'a str,
}

/// The lease's JSON, written straight from the secret into one zeroizing buffer, sized up
/// front so that no reallocation leaves an unwiped copy of the key behind.
fn lease_json(
    user_id: UserId,
    provider: Provider,
    api_key: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, AppError> {
    // Keys are printable ASCII without quotes (checked when saved), so JSON adds no escapes;
    // 6× covers the worst case of `\u00XX` for every byte anyway.
    let capacity = 96 + provider.as_str().len() + api_key.len() * 6;
    let mut buffer = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    let body = LeaseBody {
        user_id,
        provider: provider.as_str(),
        api_key,
    };
    serde_json::to_writer(&mut *buffer, &body).map_err(AppError::internal)?;
    Ok(buffer)
}

/// `GET /internal/v1/entitlements/{user_id}`: what a user's plan grants, for feature gates.
/// Answered from memory for `ENTITLEMENTS_CACHE_MS` ([`AppState::entitlements`]).
pub async fn entitlements(
    req: HttpRequest,
    state: web::Data<AppState>,
    user_id: web::Path<UserId>,
) -> Result<HttpResponse, AppError> {
    authorize(&req, &state, Scope::EntitlementsRead).await?;
    let user_id = *user_id;
    let body = match state.entitlements.get(&user_id) {
        Ok(body) => body,
        Err(miss) => {
            let entitlements = crate::billing::subscriptions::entitlements_of(&state.db, user_id)
                .await?
                .ok_or(AppError::NotFound)?;
            let body =
                web::Bytes::from(serde_json::to_vec(&entitlements).map_err(AppError::internal)?);
            state.entitlements.remember(user_id, body.clone(), miss);
            body
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(body))
}

/// The service API's routes, relative to `/internal/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/entitlements/{user_id}").route(web::get().to(entitlements)))
        .service(web::resource("/byok/lease").route(web::post().to(lease)))
        .configure(super::internal_usage::configure)
        .configure(super::internal_quota::configure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_body_is_written_once_into_a_buffer_that_never_reallocates() {
        let key = "sk-ant-api03-DUMMY-\"quoted\"-\u{1}-0000000000000000000000";
        let buffer = lease_json(UserId::from(i64::MAX), Provider::Anthropic, key).unwrap();
        let capacity = 96 + "anthropic".len() + key.len() * 6;
        assert_eq!(buffer.capacity(), capacity, "no reallocation");
        let parsed: serde_json::Value = serde_json::from_slice(&buffer).unwrap();
        assert_eq!(parsed["api_key"], key);
        assert_eq!(parsed["user_id"], i64::MAX);
        assert_eq!(parsed["provider"], "anthropic");
    }
}
