//! `POST /webhooks/stripe`: Stripe's (or `stripe listen`'s, or the simulator's) event deliveries.
//! Source checked, signature verified, payload validated (`webhooks::intake`), then stored and
//! applied exactly once before the 200; every refusal answered and audited here.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::audit::alerts::{self, AlertRule};
use crate::audit::{self, Actor, Kind, Principal};
use crate::error::AppError;
use crate::metrics::WebhookOutcome;
use crate::web::{AppState, client_ip};
use crate::webhooks::intake::{Arrival, Refusal, intake, signature_digest};
use crate::webhooks::{self, Ingested};

/// Largest event body accepted (Stripe's events are far smaller).
pub const BODY_LIMIT: usize = 512 * 1024;

pub const SIGNATURE_FAILED: &str = "Webhook signature verification failed";

/// Answers a refused delivery and audits it (repeats counted on one row), checking the alert
/// rule that counts its kind.
async fn refuse(
    state: &AppState,
    stripe: &Actor,
    refusal: Refusal,
) -> Result<HttpResponse, AppError> {
    let (status, message, outcome) = match refusal {
        Refusal::NoSecret => return Err(AppError::BillingOff),
        Refusal::Source => (
            StatusCode::FORBIDDEN,
            "Webhook source not allowed",
            WebhookOutcome::InvalidIp,
        ),
        // A replay is refused as any signature failure: the sender learns nothing more.
        Refusal::Signature { .. } | Refusal::Replay { .. } => (
            StatusCode::BAD_REQUEST,
            SIGNATURE_FAILED,
            WebhookOutcome::InvalidSignature,
        ),
        Refusal::Payload(_) => (
            StatusCode::BAD_REQUEST,
            "Invalid webhook payload",
            WebhookOutcome::InvalidPayload,
        ),
    };
    state.metrics.webhook(outcome, None);
    if let Some(event) = refusal.event(stripe, state.config.audit.aggregate_window) {
        let kind = event.kind;
        let rule = match kind {
            Kind::WebhookInvalidSignature => Some(AlertRule::WebhookSignatureFailures),
            Kind::WebhookInvalidIp => Some(AlertRule::WebhookInvalidSources),
            Kind::WebhookReplay => Some(AlertRule::WebhookReplays),
            _ => None,
        };
        let config = state.config.clone();
        let recorded = state
            .db
            .run(move |conn| {
                audit::write(conn, &event)?;
                rule.map_or(Ok(()), |rule| {
                    alerts::check(conn, &config.alerts, rule).map(|_| ())
                })
            })
            .await;
        if let Err(err) = recorded {
            tracing::error!(error = %err, kind = kind.as_str(), "could not record a webhook refusal");
        }
    }
    Ok(HttpResponse::build(status).json(json!({ "error": message })))
}

pub async fn stripe(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let from = client_ip::of(&req);
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let arrival = Arrival {
        from,
        signature,
        body: &body,
        now: chrono::Utc::now().timestamp(),
    };
    let stripe =
        Actor::new(Principal::Stripe, Some(from)).in_request(crate::web::request_id::of(&req));
    let event = match intake(&state.config.stripe, arrival) {
        Ok(event) => event,
        Err(refusal) => return refuse(&state, &stripe, refusal).await,
    };
    let event_id = event.id.clone();
    let event_type = event.kind.clone();
    let digest = signature_digest(signature);
    let outcome = state
        .webhook_writer
        .ingest(
            event,
            body,
            from.to_string(),
            digest.clone(),
            crate::web::request_id::of(&req),
        )
        .await
        .map_err(AppError::internal)?;
    let duplicate = outcome == Ingested::Duplicate;
    let counted = if duplicate {
        WebhookOutcome::Duplicate
    } else {
        WebhookOutcome::Verified
    };
    state.metrics.webhook(counted, Some(&event_type));
    if state.refetching.has_leftovers() {
        // A same-second tie this event (or an earlier one, whose own request may have gone)
        // committed, or one an earlier pass left: read the object again from Stripe, after the
        // commit, without holding up Stripe's delivery. Any other delivery costs one atomic
        // read here.
        read_ties_again(&state);
    }
    if duplicate {
        tracing::info!(event = %event_id, "duplicate webhook delivery acknowledged");
        let config = state.config.clone();
        let checked = state
            .db
            .run(move |conn| {
                let window = config.audit.aggregate_window;
                webhooks::check_redelivery(
                    conn,
                    &config.alerts,
                    &stripe,
                    &event_id,
                    &digest,
                    window,
                )
            })
            .await;
        if let Err(err) = checked {
            tracing::error!(error = %err, "could not check a redelivery for a replay");
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "received": true, "duplicate": duplicate })))
}

/// Starts a refetch pass (`reconcile::refetch`) in the background: the objects that
/// same-second ties left are read again from Stripe.
pub(crate) fn read_ties_again(state: &AppState) {
    let reconciler = reconciler(state, false);
    actix_web::rt::spawn(async move {
        if let Err(err) = crate::reconcile::refetch::run_pending(&reconciler).await {
            tracing::error!(error = %err, "could not read tied objects again from Stripe");
        }
    });
}

/// What reconciling with Stripe reaches, from the application's state.
pub(crate) fn reconciler(state: &AppState, patient: bool) -> crate::reconcile::Reconciler {
    crate::reconcile::Reconciler {
        config: state.config.clone(),
        db: state.db.clone(),
        gateway: state.gateway.clone(),
        patient,
        refetching: state.refetching.clone(),
    }
}

/// The webhook routes, relative to `/webhooks`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/stripe").route(web::post().to(stripe)));
}
