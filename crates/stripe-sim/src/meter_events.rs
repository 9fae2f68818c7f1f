//! `POST /v1/billing/meter_events`: usage reported to a billing meter, deduplicated by its
//! `identifier` as Stripe does; and the test controls that make the endpoint fail (an outage
//! before the event is stored, a lost answer after) and list what it stored.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::api::{ApiError, authenticate, error_response, parse, respond};
use crate::state::{MeterEvent, SimState, new_id, unix_now};

/// Stripe refuses timestamps older than this (35 days) …
const MAX_AGE_SECS: i64 = 35 * 24 * 3600;
/// … or further ahead than this (5 minutes of clock drift).
const MAX_AHEAD_SECS: i64 = 5 * 60;

#[derive(Deserialize)]
struct CreateMeterEvent {
    event_name: String,
    #[serde(default)]
    payload: HashMap<String, String>,
    identifier: Option<String>,
    timestamp: Option<i64>,
}

fn render(event: &MeterEvent) -> Value {
    json!({
        "object": "billing.meter_event",
        "created": event.created,
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": false,
        "payload": {
            "stripe_customer_id": event.customer,
            "value": event.value.to_string(),
        },
        "timestamp": event.timestamp,
    })
}

/// Validates and stores one meter event. A second event with a stored identifier is refused
/// as Stripe refuses it (the first one counts, once).
fn create(state: &mut SimState, params: CreateMeterEvent) -> Result<Value, ApiError> {
    let now = unix_now();
    if params.event_name.is_empty() || params.event_name.len() > 100 {
        return Err(ApiError::invalid(
            "event_name",
            "Invalid event_name: must be 1 to 100 characters.",
        ));
    }
    let customer = params
        .payload
        .get("stripe_customer_id")
        .cloned()
        .ok_or_else(|| {
            ApiError::invalid(
                "payload",
                "Missing required payload key: stripe_customer_id.",
            )
        })?;
    if !state.customers.contains_key(&customer) {
        return Err(ApiError::invalid(
            "payload[stripe_customer_id]",
            format!("No such customer: '{customer}'"),
        ));
    }
    let value = params
        .payload
        .get("value")
        .ok_or_else(|| ApiError::invalid("payload", "Missing required payload key: value."))?
        .parse::<i64>()
        .map_err(|_| {
            ApiError::invalid(
                "payload[value]",
                "Invalid payload value: must be a whole number.",
            )
        })?;
    let timestamp = params.timestamp.unwrap_or(now);
    if timestamp < now - MAX_AGE_SECS || timestamp > now + MAX_AHEAD_SECS {
        return Err(ApiError::invalid(
            "timestamp",
            "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
        ));
    }
    let identifier = params.identifier.unwrap_or_else(|| new_id("mev"));
    if identifier.is_empty() || identifier.len() > 100 {
        return Err(ApiError::invalid(
            "identifier",
            "Invalid identifier: must be 1 to 100 characters.",
        ));
    }
    if state
        .meter_events
        .iter()
        .any(|event| event.identifier == identifier)
    {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("resource_already_exists"),
            message: format!("A meter event with identifier '{identifier}' already exists."),
            param: Some("identifier".into()),
        });
    }
    let event = MeterEvent {
        identifier,
        event_name: params.event_name,
        customer,
        value,
        timestamp,
        created: now,
    };
    let value = render(&event);
    state.meter_events.push(event);
    Ok(value)
}

fn server_error() -> HttpResponse {
    error_response(&ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "api_error",
        code: None,
        message: "An unknown error occurred (simulated).".into(),
        param: None,
    })
}

/// Not through `api::post`: a failed call must not be cached under its idempotency key (a
/// retry after an outage has to reach the meter), and identifiers are the deduplication here.
async fn create_route(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(err) = authenticate(&req) {
        return error_response(&err);
    }
    let mut state = sim.state();
    if state.meter_event_faults.outage > 0 {
        state.meter_event_faults.outage -= 1;
        return server_error();
    }
    let created = parse::<CreateMeterEvent>(&body).and_then(|params| create(&mut state, params));
    match created {
        Ok(_) if state.meter_event_faults.lost > 0 => {
            state.meter_event_faults.lost -= 1;
            server_error()
        }
        Ok(value) => respond(StatusCode::OK, &value),
        Err(err) => {
            if err.code == Some("resource_already_exists") {
                state.meter_event_faults.duplicates += 1;
            }
            error_response(&err)
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/billing/meter_events", web::post().to(create_route));
}

#[derive(Deserialize)]
struct FailParams {
    /// `outage` (fail before storing) or `lost` (store, then fail).
    mode: String,
    count: u32,
}

/// `POST /_sim/meter_events/fail?mode=outage|lost&count=N`: the next N calls fail with a 500.
async fn fail_route(sim: web::Data<Sim>, params: web::Query<FailParams>) -> HttpResponse {
    let mut state = sim.state();
    match params.mode.as_str() {
        "outage" => state.meter_event_faults.outage = params.count,
        "lost" => state.meter_event_faults.lost = params.count,
        _ => {
            return HttpResponse::BadRequest()
                .json(json!({ "error": { "message": "mode is outage or lost" } }));
        }
    }
    HttpResponse::NoContent().finish()
}

/// `GET /_sim/meter_events`: every stored meter event, oldest first.
async fn list_route(sim: web::Data<Sim>) -> HttpResponse {
    let events: Vec<Value> = sim.state().meter_events.iter().map(render).collect();
    HttpResponse::Ok().json(events)
}

/// `GET /_sim/meter_events/duplicates`: how many calls sent an identifier stored already.
async fn duplicates_route(sim: web::Data<Sim>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "duplicates": sim.state().meter_event_faults.duplicates }))
}

pub fn configure_controls(cfg: &mut web::ServiceConfig) {
    cfg.route("/meter_events", web::get().to(list_route))
        .route("/meter_events/duplicates", web::get().to(duplicates_route))
        .route("/meter_events/fail", web::post().to(fail_route));
}
