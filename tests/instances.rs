//! Background work on N instances sharing one database: the notification worker and the usage
//! sender of every instance claim rows (a claim is a lease), so each notification and each
//! usage record goes out exactly once, none skipped and none twice, whichever instance sends it.

use serde_json::Value;
use tollgate::notify::{self, AppEvent};

use crate::common::{AlertReceiver, Backend, TestApp, add_endpoint};
use crate::on_both_backends;
use crate::usage_api::{meter_events, metered_customer, outbox, record, report, wait_until};

on_both_backends!(
    two_instances_deliver_each_notification_once,
    two_instances_forward_each_usage_record_once,
);

/// Notifications for several customers, published while two instances' workers poll the one
/// outbox: the receiver gets each message id once, and every row ends `sent` after one attempt.
async fn two_instances_deliver_each_notification_once(backend: Backend) {
    const CUSTOMERS: usize = 8;
    const EACH: usize = 6;
    let receiver = AlertReceiver::start();
    let first = TestApp::spawn(backend).await;
    let second = TestApp::spawn_on(first.database_handle(), backend, |_| {}).await;
    let mut users = Vec::new();
    for n in 0..CUSTOMERS {
        let email = format!("instances-{n}@example.com");
        first.signed_in_customer(&email).await;
        users.push(first.user_id(&email));
    }
    first.query(|conn| {
        add_endpoint(conn, &receiver.url, &["invoice.paid"]);
        for step in 0..EACH {
            for user in &users {
                let cause = format!("{user}-{step}");
                let data = serde_json::json!({ "step": cause });
                notify::publish(conn, AppEvent::InvoicePaid, (*user).into(), data, &cause)?;
            }
        }
        Ok(())
    });
    let rows = second.settled_notifications("app_webhook").await;
    assert_eq!(rows.len(), CUSTOMERS * EACH);
    assert!(
        rows.iter().all(|r| r.status == "sent" && r.attempts == 1),
        "{rows:?}"
    );
    let received = receiver.wait_for(CUSTOMERS * EACH).await;
    let mut ids: Vec<&str> = received
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (received.len(), ids.len()),
        (CUSTOMERS * EACH, CUSTOMERS * EACH),
        "each notification once"
    );
    // Each customer's notifications still arrive in order, whichever instance sent them.
    for user in &users {
        let steps: Vec<String> = received
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
            .filter_map(|body| body["data"]["step"].as_str().map(str::to_owned))
            .filter(|step| step.starts_with(&format!("{user}-")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|step| format!("{user}-{step}")).collect();
        assert_eq!(steps, expected);
    }
}

/// Usage reported through both instances, whose senders both forward to one Stripe: every
/// record reaches the meter once, and no sender ever sent one another had sent (the simulator
/// counts identifiers sent twice).
async fn two_instances_forward_each_usage_record_once(backend: Backend) {
    const BATCHES: usize = 10;
    const EACH: usize = 30;
    let (first, user_id, token) = metered_customer(backend).await;
    let stripe = first.stripe.clone();
    let second = TestApp::spawn_on(first.database_handle(), backend, |config| {
        config.stripe.api_base = stripe;
        config.usage_sender.interval = std::time::Duration::from_millis(50);
        config.usage_sender.retry_base = std::time::Duration::from_millis(50);
    })
    .await;
    for batch in 0..BATCHES {
        let app = [&first, &second][batch % 2];
        let records = (0..EACH)
            .map(|n| record(user_id, &format!("run-{batch}-{n}"), 1))
            .collect();
        let (status, body) = report(app, &token, records).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_until("every record is forwarded", async || {
        outbox(&first).is_empty() && meter_events(&first).await.len() == BATCHES * EACH
    })
    .await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let events = meter_events(&first).await;
    assert_eq!(events.len(), BATCHES * EACH);
    let duplicates = first.stripe_get("/_sim/meter_events/duplicates").await;
    assert_eq!(duplicates["duplicates"], 0, "no record was sent twice");
}
