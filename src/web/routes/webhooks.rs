//! `POST /webhooks/stripe`: Stripe's (or `stripe listen`'s, or the simulator's) event deliveries.
//! Source checked, signature verified, payload validated, then stored and applied exactly once
//! before the 200; every refusal audited.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::audit::alerts::{self, Rule};
use crate::audit::{self, Kind, SecurityEvent};
use crate::error::AppError;
use crate::web::{AppState, client_ip};
use crate::webhooks::{Ingested, StripeEvent, verify};

/// Largest event body accepted (Stripe's events are far smaller).
pub const BODY_LIMIT: usize = 512 * 1024;

pub const SIGNATURE_FAILED: &str = "Webhook signature verification failed";

/// Why a delivery was refused: its audit kind, the reason repeats are grouped by, and details.
struct Refusal {
    kind: Kind,
    reason: &'static str,
    details: serde_json::Value,
}

/// Audits a refused delivery (repeats counted on one row; checks the alert that counts it),
/// then answers `status`.
async fn refuse(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    refusal: Refusal,
    message: &str,
) -> HttpResponse {
    let Refusal {
        kind,
        reason,
        details,
    } = refusal;
    let event = SecurityEvent::new(kind)
        .actor("stripe")
        .ip(client_ip::of(req))
        .details(details)
        .aggregate(state.config.audit.aggregate_window, reason);
    let rule = (kind == Kind::WebhookInvalidSignature)
        .then(|| Rule::webhook_signature_failures(&state.config.alerts));
    let recorded = state
        .db
        .run(move |conn| {
            audit::write(conn, &event)?;
            match rule {
                Some(rule) => alerts::check(conn, &rule).map(|_| ()),
                None => Ok(()),
            }
        })
        .await;
    if let Err(err) = recorded {
        tracing::error!(error = %err, kind = kind.as_str(), "could not record a webhook refusal");
    }
    HttpResponse::build(status).json(json!({ "error": message }))
}

pub async fn stripe(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let stripe = &state.config.stripe;
    let ip = client_ip::of(&req);
    if !stripe.webhook_allowed_ips.is_empty()
        && !stripe
            .webhook_allowed_ips
            .iter()
            .any(|net| net.contains(&ip))
    {
        let refusal = Refusal {
            kind: Kind::WebhookInvalidIp,
            reason: "source",
            details: json!({ "reason": "source address not in STRIPE_WEBHOOK_ALLOWED_IPS" }),
        };
        let message = "Webhook source not allowed";
        return Ok(refuse(&state, &req, StatusCode::FORBIDDEN, refusal, message).await);
    }
    if stripe.webhook_secrets.is_empty() {
        tracing::warn!("a webhook arrived but STRIPE_WEBHOOK_SECRET is not set");
        return Err(AppError::BillingOff);
    }
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(err) = verify::verify(
        header,
        &body,
        &stripe.webhook_secrets,
        stripe.webhook_tolerance_secs,
        now,
    ) {
        let refusal = Refusal {
            kind: Kind::WebhookInvalidSignature,
            reason: err.as_str(),
            details: json!({ "reason": err.as_str(), "bytes": body.len() }),
        };
        return Ok(refuse(
            &state,
            &req,
            StatusCode::BAD_REQUEST,
            refusal,
            SIGNATURE_FAILED,
        )
        .await);
    }
    let event = match StripeEvent::parse(&body, stripe.live()) {
        Ok(event) => event,
        Err(err) => {
            // Grouped as one reason: the parser's messages vary with the input.
            let refusal = Refusal {
                kind: Kind::WebhookInvalidPayload,
                reason: "payload",
                details: json!({ "reason": err.to_string() }),
            };
            let message = "Invalid webhook payload";
            return Ok(refuse(&state, &req, StatusCode::BAD_REQUEST, refusal, message).await);
        }
    };
    let event_id = event.id.clone();
    let outcome = state
        .webhook_writer
        .ingest(event, body, ip.to_string())
        .await
        .map_err(AppError::internal)?;
    let duplicate = outcome == Ingested::Duplicate;
    if duplicate {
        tracing::info!(event = %event_id, "duplicate webhook delivery acknowledged");
    }
    Ok(HttpResponse::Ok().json(json!({ "received": true, "duplicate": duplicate })))
}

/// The webhook routes, relative to `/webhooks`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/stripe").route(web::post().to(stripe)));
}
