//! `POST /webhooks/stripe`: signatures verified exactly as Stripe specifies, sources and
//! payloads checked, every event stored once (even when duplicates race on two instances) and
//! applied once, older updates never overwriting newer state, alerts, the admin console, crash
//! safety, and the simulator's own signed deliveries driving billing end to end.
//!
//! Events are the real-shaped fixtures in `tests/fixtures/webhooks/`, signed here with Stripe's
//! scheme (`t=…,v1=HMAC-SHA256(secret, "{t}.{body}")`), as `stripe listen` would deliver them.
//! One module per capability; what they share (reading back what was stored, waiting for the
//! simulator) is here.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::models::security_event::SecurityEventRow;
use tollgate::db::schema::{subscriptions, webhook_events};

use crate::common::{Browser, TestApp, WEBHOOK_SECRET, stripe_event, stripe_signature_header};

mod admission;
mod alerts;
mod console;
mod crash;
mod handlers;
mod ingest;
mod signatures;
mod simulator;

const SIGNATURE_FAILED: &str = r#"{"error":"Webhook signature verification failed"}"#;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A `Stripe-Signature` header for `body` with the app's endpoint secret, now.
fn signed_now(body: &[u8]) -> String {
    stripe_signature_header(WEBHOOK_SECRET, now(), body)
}

/// The checkout that links the fixtures' customer (`cus_FixtureCustomer01`) to a user.
fn checkout_for(user_id: i64, id: &str) -> Value {
    let mut event = stripe_event("checkout.session.completed", id);
    event["data"]["object"]["client_reference_id"] = json!(user_id.to_string());
    event
}

/// The `reason` each audit row in `rows` gives.
fn reasons(rows: &[SecurityEventRow]) -> Vec<Value> {
    rows.iter()
        .map(|e| serde_json::from_str::<Value>(&e.details).unwrap()["reason"].clone())
        .collect()
}

struct Stored {
    id: i64,
    status: String,
    attempts: i64,
    last_error: Option<String>,
}

fn stored(app: &TestApp, event_id: &str) -> Option<Stored> {
    let event_id = event_id.to_owned();
    app.query(move |conn| {
        Ok(webhook_events::table
            .filter(webhook_events::stripe_event_id.eq(event_id))
            .select((
                webhook_events::id,
                webhook_events::status,
                webhook_events::attempts,
                webhook_events::last_error,
            ))
            .first::<(i64, String, i64, Option<String>)>(conn)
            .optional()?
            .map(|(id, status, attempts, last_error)| Stored {
                id,
                status,
                attempts,
                last_error,
            }))
    })
}

pub(crate) fn status_of(app: &TestApp, event_id: &str) -> String {
    stored(app, event_id)
        .unwrap_or_else(|| panic!("{event_id} is not stored"))
        .status
}

fn stored_count(app: &TestApp) -> i64 {
    app.query(tollgate::db::models::webhook_event::count)
}

/// The local subscription: (status, cancel_at_period_end, price).
fn subscription(app: &TestApp, stripe_id: &str) -> Option<(String, bool, String)> {
    let stripe_id = stripe_id.to_owned();
    app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq(stripe_id))
            .select((
                subscriptions::status,
                subscriptions::cancel_at_period_end,
                subscriptions::stripe_price_id,
            ))
            .first(conn)
            .optional()?)
    })
}

/// Waits (up to 15 s) until `check` holds: the simulator delivers asynchronously.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A signed-in admin and a customer whose id the fixtures' checkout will link.
async fn admin_and_customer(app: &TestApp) -> (Browser, i64) {
    let admin = app.signed_in_admin("admin@example.com").await;
    app.signed_in_customer("jenny@example.com").await;
    (admin, app.user_id("jenny@example.com"))
}
