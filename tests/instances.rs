//! Background work on N instances sharing one database: the notification worker and the usage
//! sender of every instance claim rows (a claim is a lease), so each notification and each
//! usage record goes out exactly once, none skipped and none twice, whichever instance sends it.

use std::time::Duration;

use serde_json::Value;
use tollgate::notify::{self, AppEvent};
use tollgate::service_tokens::Scope;

use crate::common::{
    AlertReceiver, Backend, TestApp, add_endpoint, meter_events, metered_app, report_usage,
    usage_outbox, usage_record, wait_until,
};
use crate::on_both_backends;

on_both_backends!(
    two_instances_deliver_each_notification_once,
    two_instances_forward_each_usage_record_once,
);

/// Between two rounds of work: longer than a worker's poll (50 ms in tests), so that each
/// round is likely claimed by whichever instance polls first, and both get some.
const ROUND_GAP: Duration = Duration::from_millis(70);

/// Notifications for several customers, published round after round while two instances'
/// workers poll the one outbox: the receiver gets each message id once and each customer's in
/// order, every row ends `sent` after one attempt, and both instances sent some.
async fn two_instances_deliver_each_notification_once(backend: Backend) {
    const CUSTOMERS: usize = 4;
    const ROUNDS: usize = 16;
    const ALL: usize = CUSTOMERS * ROUNDS;
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
        Ok(())
    });
    for round in 0..ROUNDS {
        let users = users.clone();
        first.query(move |conn| {
            for user in &users {
                let cause = format!("{user}-{round}");
                let data = serde_json::json!({ "step": cause });
                notify::publish(conn, AppEvent::InvoicePaid, (*user).into(), data, &cause)?;
            }
            Ok(())
        });
        actix_web::rt::time::sleep(ROUND_GAP).await;
    }
    let rows = second.settled_notifications("app_webhook").await;
    assert_eq!(rows.len(), ALL);
    assert!(
        rows.iter().all(|r| r.status == "sent" && r.attempts == 1),
        "{rows:?}"
    );
    let received = receiver.wait_for(ALL).await;
    let mut ids: Vec<&str> = received
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((received.len(), ids.len()), (ALL, ALL), "each one once");
    for user in &users {
        let steps: Vec<String> = received
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
            .filter_map(|body| body["data"]["step"].as_str().map(str::to_owned))
            .filter(|step| step.starts_with(&format!("{user}-")))
            .collect();
        let expected: Vec<String> = (0..ROUNDS).map(|round| format!("{user}-{round}")).collect();
        assert_eq!(steps, expected, "each customer's in order");
    }
    let token = first.service_token("prometheus", &[Scope::MetricsRead]);
    let labels = ["channel=\"app_webhook\"", "result=\"sent\""];
    let mut sent = Vec::new();
    for app in [&first, &second] {
        sent.push(
            app.metric_total(&token, "tollgate_notifications_total", &labels)
                .await,
        );
    }
    assert!(
        sent.iter().all(|n| *n > 0.0),
        "both instances sent: {sent:?}"
    );
    assert_eq!(sent.iter().sum::<f64>(), ALL as f64);
}

/// Usage reported through both instances, whose senders both forward to one Stripe: every
/// record reaches the meter once, no sender ever sent one another had sent (the simulator
/// counts identifiers sent twice), and both senders forwarded some.
async fn two_instances_forward_each_usage_record_once(backend: Backend) {
    const BATCHES: usize = 20;
    const EACH: usize = 15;
    const ALL: usize = BATCHES * EACH;
    let (first, user_id, token) = metered_app(backend).await;
    let stripe = first.stripe.clone();
    let second = TestApp::spawn_on(first.database_handle(), backend, |config| {
        config.stripe.api_base = stripe;
        config.usage_sender.interval = Duration::from_millis(50);
        config.usage_sender.retry_base = Duration::from_millis(50);
    })
    .await;
    for batch in 0..BATCHES {
        let app = [&first, &second][batch % 2];
        let records = (0..EACH)
            .map(|n| usage_record(user_id, &format!("run-{batch}-{n}"), 1))
            .collect();
        let (status, body) = report_usage(app, &token, records).await;
        assert_eq!(status, 200, "{body}");
        actix_web::rt::time::sleep(ROUND_GAP).await;
    }
    wait_until("every record is forwarded", async || {
        usage_outbox(&first).is_empty() && meter_events(&first).await.len() == ALL
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(meter_events(&first).await.len(), ALL);
    let duplicates = first.stripe_get("/_sim/meter_events/duplicates").await;
    assert_eq!(duplicates["duplicates"], 0, "no record was sent twice");
    let prometheus = first.service_token("prometheus", &[Scope::MetricsRead]);
    let mut sent = Vec::new();
    for app in [&first, &second] {
        let total = app
            .metric_total(
                &prometheus,
                "tollgate_usage_meter_events_total",
                &["result=\"sent\""],
            )
            .await;
        sent.push(total);
    }
    assert!(
        sent.iter().all(|n| *n > 0.0),
        "both senders forwarded: {sent:?}"
    );
    assert_eq!(sent.iter().sum::<f64>(), ALL as f64);
}
