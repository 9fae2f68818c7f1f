//! Stripe's side of the tests: events (the fixtures) and their signatures made as Stripe makes
//! them, and the simulator each app talks to — its API (what Stripe has recorded), its `/_sim/…`
//! test controls and its hosted pages (Checkout, the Billing Portal) filled in as a person would.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::app::TestApp;

/// Stripe's v1 signature: hex HMAC-SHA256 of `"{timestamp}.{body}"` with the endpoint secret.
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A `Stripe-Signature` header as Stripe sends it: `t={timestamp},v1={signature}`.
pub fn stripe_signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        stripe_signature(secret, timestamp, body)
    )
}

/// A real-shaped event of `kind` from the fixtures in `tests/fixtures/webhooks/`, as a new
/// event: its own `id`, created now.
pub fn stripe_event(kind: &str, id: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/webhooks/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    event["id"] = serde_json::json!(id);
    event["created"] = serde_json::json!(chrono::Utc::now().timestamp());
    event
}

/// A `GET` on the API of the simulator at `base`, as Tollgate's secret key.
pub async fn stripe_sim_get(base: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth("sk_test_DUMMYtollgate")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

impl TestApp {
    /// Every event the simulator has recorded (`GET /v1/events`, newest first).
    pub async fn stripe_events(&self) -> Vec<serde_json::Value> {
        self.stripe_get("/v1/events?limit=100").await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits (up to 15 s or so) until every event the simulator made has been applied (its
    /// deliveries run in the background: a page may answer before they arrive).
    pub async fn settle(&self) {
        use diesel::prelude::*;
        use tollgate::db::schema::webhook_events;
        for _ in 0..300 {
            let made = self.stripe_events().await.len() as i64;
            let processed: i64 = self.query(|conn| {
                Ok(webhook_events::table
                    .filter(webhook_events::status.ne("received"))
                    .count()
                    .get_result(conn)?)
            });
            if processed == made {
                return;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the simulator's events were not all applied");
    }

    /// The id of the object the newest recorded event of type `kind` is about (the customer of
    /// `customer.created`, the payment of `payment_intent.succeeded`, …).
    pub async fn stripe_object_id(&self, kind: &str) -> String {
        self.stripe_events()
            .await
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event at Stripe"))["data"]["object"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A `GET` on the simulator's API, as Tollgate's secret key.
    pub async fn stripe_get(&self, path: &str) -> serde_json::Value {
        stripe_sim_get(&self.stripe, path).await
    }

    /// Posts to one of the simulator's `/_sim/…` test controls; returns the status.
    pub async fn sim_control(&self, path: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}{path}", self.stripe))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The simulator's card form and portal confirmation, as its own tests use them.
pub use stripe_sim::testing::{card_form, confirm_portal_change};
