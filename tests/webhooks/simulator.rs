//! The simulator's own signed deliveries, end to end: a checkout, a failed renewal, a
//! cancellation in the Billing Portal, a dispute and the period's end reach Tollgate only as
//! webhooks, and Stripe re-delivering everything takes effect once.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::Value;
use tollgate::db::schema::webhook_events;

use super::{eventually, stored_count, subscription};
use crate::common::{Backend, Browser, TestApp, location};
use crate::on_both_backends;

on_both_backends!(the_simulators_signed_deliveries_drive_billing_end_to_end);

async fn the_simulators_signed_deliveries_drive_billing_end_to_end(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("buyer@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("buyer@example.com");
    let sub_id = app.subscription_id(user_id);
    eventually("the checkout's events are applied", || {
        [
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.paid",
            "payment_intent.succeeded",
        ]
        .iter()
        .all(|kind| applied_of_type(&app, kind).len() == 1)
    })
    .await;

    // A renewal whose payment fails: past due, audited.
    let renew = format!("/_sim/subscriptions/{sub_id}/renew");
    let failed_renewal = format!("{renew}?outcome=failed");
    assert_eq!(app.sim_control(&failed_renewal).await, 200);
    eventually("the failed renewal arrives", || {
        subscription(&app, &sub_id).is_some_and(|s| s.0 == "past_due")
            && app.count_events("payment_failed") == 1
    })
    .await;
    cancelled_in_the_portal(&app, &customer, &sub_id).await;
    a_dispute_is_audited(&app).await;

    // The period ends with cancel-at-period-end set: Stripe deletes the subscription.
    assert_eq!(app.sim_control(&renew).await, 200);
    eventually("the cancellation takes effect", || {
        subscription(&app, &sub_id).is_some_and(|s| s.0 == "canceled")
    })
    .await;
    let pricing = customer.get_text("/pricing").await;
    assert!(pricing.contains("Choose Pro"), "no longer subscribed");
    redelivered_events_take_effect_once(&app, &sub_id).await;
}

/// The ids of the applied events of type `kind`.
fn applied_of_type(app: &TestApp, kind: &str) -> Vec<String> {
    let kind = kind.to_owned();
    app.query(move |conn| {
        Ok(webhook_events::table
            .filter(webhook_events::event_type.eq(kind))
            .filter(webhook_events::status.eq("applied"))
            .select(webhook_events::stripe_event_id)
            .load(conn)?)
    })
}

/// Cancelled in the Billing Portal (Stripe's page): only the webhook tells Tollgate.
async fn cancelled_in_the_portal(app: &TestApp, customer: &Browser, sub_id: &str) {
    let portal = customer
        .submit_operation("/account", "/billing/portal", &[])
        .await;
    assert_eq!(portal.status(), 303);
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!(
            "{}/subscriptions/{sub_id}/cancel",
            location(&portal)
        ))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    eventually("the portal cancellation arrives", || {
        subscription(app, sub_id).is_some_and(|s| s.1)
    })
    .await;
    assert_eq!(subscription(app, sub_id).unwrap().0, "past_due");
    let account = customer.get_text("/account").await;
    assert!(account.contains("ends at the close of this period"));
}

/// A dispute on the first payment: a HIGH audit event.
async fn a_dispute_is_audited(app: &TestApp) {
    let payment_intent = app.stripe_object_id("payment_intent.succeeded").await;
    let dispute = format!("/_sim/disputes?payment_intent={payment_intent}");
    assert_eq!(app.sim_control(&dispute).await, 200);
    eventually("the dispute arrives", || {
        app.count_events("charge_dispute_created") == 1
    })
    .await;
}

/// Stripe re-delivering everything, in reverse order: nothing takes effect twice.
async fn redelivered_events_take_effect_once(app: &TestApp, sub_id: &str) {
    let all: Vec<String> = app
        .stripe_events()
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    eventually("Tollgate has stored every event Stripe sent", || {
        stored_count(app) as usize == all.len()
    })
    .await;
    let stored_before = stored_count(app);
    let acknowledged_before = acknowledged_deliveries(app).await;
    let redeliver = format!("/_sim/events/deliver?ids={}", all.join(","));
    assert_eq!(app.sim_control(&redeliver).await, 202);
    for _ in 0..300 {
        if acknowledged_deliveries(app).await >= acknowledged_before + all.len() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        acknowledged_deliveries(app).await,
        acknowledged_before + all.len()
    );
    assert_eq!(stored_count(app), stored_before);
    assert_eq!(app.count_events("payment_failed"), 1);
    assert_eq!(app.count_events("charge_dispute_created"), 1);
    assert_eq!(subscription(app, sub_id).unwrap().0, "canceled");
    assert_eq!(app.count_events("webhook_invalid_signature"), 0);
}

/// How many of the simulator's deliveries Tollgate has answered with a 200.
async fn acknowledged_deliveries(app: &TestApp) -> usize {
    let attempts: Vec<Value> = reqwest::get(format!("{}/_sim/deliveries", app.stripe))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    attempts.iter().filter(|a| a["status"] == 200).count()
}
