//! Applying events: every handled type takes effect (linked to its user through the checkout),
//! unknown types are stored and ignored, and an older update never overwrites newer state.

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::schema::subscriptions;

use super::{admin_and_customer, checkout_for, now, status_of, stored_count, subscription};
use crate::common::{Backend, TestApp, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    an_older_subscription_update_never_overwrites_a_newer_one,
    every_handled_type_is_applied_and_unknown_types_are_ignored,
);

/// The fixtures' subscription, which the checkout links to the customer.
const SUB: &str = "sub_1FixtureSubscription";

async fn an_older_subscription_update_never_overwrites_a_newer_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1OrderCheckout"))
        .await;
    let base = now() - 100;
    let update = |id: &str, created: i64, status: &str, cancel: bool| {
        let mut e = stripe_event("customer.subscription.updated", id);
        e["created"] = json!(created);
        e["data"]["object"]["status"] = json!(status);
        e["data"]["object"]["cancel_at_period_end"] = json!(cancel);
        e
    };
    app.assert_webhook_accepted(&update("evt_1OrderNewer", base + 20, "past_due", true))
        .await;
    app.assert_webhook_accepted(&update("evt_1OrderOlder", base + 10, "active", false))
        .await;
    let sub = SUB;
    assert_eq!(
        subscription(&app, sub).unwrap(),
        ("past_due".into(), true, "price_1FixturePrice".into()),
        "the older event did not overwrite the newer state"
    );
    assert_eq!(
        status_of(&app, "evt_1OrderOlder"),
        "applied",
        "stored and acknowledged"
    );
    // A payment failure older than the state is ignored too; a newer update wins.
    app.assert_webhook_accepted(&update("evt_1OrderNewest", base + 30, "active", false))
        .await;
    let mut late_failure = stripe_event("invoice.payment_failed", "evt_1OrderLateFailure");
    late_failure["created"] = json!(base + 25);
    app.assert_webhook_accepted(&late_failure).await;
    assert_eq!(subscription(&app, sub).unwrap().0, "active");
}

/// `event`, created `secs` from now (so that it is newer than what came before).
fn created_in(mut event: Value, secs: i64) -> Value {
    event["created"] = json!(now() + secs);
    event
}

async fn every_handled_type_is_applied_and_unknown_types_are_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1AllCheckout"))
        .await;
    let created = stripe_event("customer.subscription.created", "evt_1AllCreated");
    app.assert_webhook_accepted(&created).await;
    let (status, cancel, price) = subscription(&app, SUB).unwrap();
    assert_eq!(
        (status.as_str(), cancel, price.as_str()),
        ("active", false, "price_1FixturePrice")
    );
    let owner: i64 = app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq(SUB))
            .select(subscriptions::user_id)
            .first(conn)?)
    });
    let linked = "linked through the checkout's client_reference_id";
    assert_eq!(owner, user_id, "{linked}");

    let mut cancelling = stripe_event("customer.subscription.updated", "evt_1AllUpdated");
    cancelling["data"]["object"]["cancel_at_period_end"] = json!(true);
    app.assert_webhook_accepted(&created_in(cancelling, 1))
        .await;
    let recorded = subscription(&app, SUB).unwrap().1;
    assert!(recorded, "cancel_at_period_end recorded");

    records_the_informational_types(&app).await;
    a_payment_failure_is_past_due_and_audited(&app, user_id).await;

    let dispute = stripe_event("charge.dispute.created", "evt_1AllDispute");
    app.assert_webhook_accepted(&dispute).await;
    let dispute = app.events("charge_dispute_created");
    assert_eq!(dispute.len(), 1);
    assert_eq!(dispute[0].severity, "HIGH");

    let deleted = stripe_event("customer.subscription.deleted", "evt_1AllDeleted");
    app.assert_webhook_accepted(&created_in(deleted, 3)).await;
    assert_eq!(subscription(&app, SUB).unwrap().0, "canceled");

    let mut unknown = stripe_event("payout.created", "evt_1AllUnknown");
    unknown["type"] = json!("customer.tax_id.created");
    app.assert_webhook_accepted(&unknown).await;
    assert_eq!(status_of(&app, "evt_1AllUnknown"), "ignored");
    every_delivery_is_stored_once(&app);
}

/// The types Tollgate only records are stored and applied.
async fn records_the_informational_types(app: &TestApp) {
    for kind in [
        "invoice.paid",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "account.updated",
        "payout.created",
        "payout.updated",
    ] {
        let id = format!("evt_1All{}", kind.replace(['.', '_'], ""));
        app.assert_webhook_accepted(&stripe_event(kind, &id)).await;
        assert_eq!(status_of(app, &id), "applied", "{kind} is recorded");
    }
}

/// A failed invoice makes the subscription past due and is audited with masked ids.
async fn a_payment_failure_is_past_due_and_audited(app: &TestApp, user_id: i64) {
    let failed = stripe_event("invoice.payment_failed", "evt_1AllPaymentFailed");
    app.assert_webhook_accepted(&created_in(failed, 2)).await;
    assert_eq!(subscription(app, SUB).unwrap().0, "past_due");
    let audit = app.events("payment_failed");
    assert_eq!(audit.len(), 1);
    let details: Value = serde_json::from_str(&audit[0].details).unwrap();
    assert_eq!(details["user_id"], user_id);
    assert_eq!(details["amount_due"], 2500);
    assert!(
        !audit[0].details.contains("cus_FixtureCustomer01"),
        "ids are masked"
    );
}

/// All 13 deliveries are stored, each once: applied, but the unknown type ignored.
fn every_delivery_is_stored_once(app: &TestApp) {
    assert_eq!(stored_count(app), 13, "every delivery is stored");
    for row in app.query(|conn| tollgate::db::models::webhook_event::recent(conn, 100)) {
        let expected = if row.stripe_event_id == "evt_1AllUnknown" {
            "ignored"
        } else {
            "applied"
        };
        assert_eq!(row.status.as_str(), expected, "{}", row.stripe_event_id);
        assert_eq!(row.attempts, 1);
    }
}
