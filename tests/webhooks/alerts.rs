//! Alerts on webhooks: repeated signature failures, refused source addresses, replay attempts
//! and payment failures each raise one CRITICAL alert per window, with an ERROR log line.

use serde_json::{Value, json};
use tollgate::config::{AlertLimit, AlertRule};

use super::{admin_and_customer, checkout_for, now};
use crate::common::{
    Backend, TestApp, WEBHOOK_SECRET, captured_logs, stripe_event, stripe_signature_header,
};
use crate::on_both_backends;

on_both_backends!(
    repeated_failures_raise_one_critical_alert_per_window,
    refused_sources_raise_one_alert_at_the_configured_threshold,
    replay_attempts_are_detected_and_raise_one_alert,
);

async fn repeated_failures_raise_one_critical_alert_per_window(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        let limit = AlertLimit {
            threshold: 3,
            window_secs: 300,
        };
        config.alerts.set_limit(AlertRule::PaymentFailures, limit)
    })
    .await;
    forged_signatures_raise_one_alert(&app).await;

    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1AlertCheckout"))
        .await;
    for i in 0..2 {
        let failed = stripe_event("invoice.payment_failed", &format!("evt_1AlertPay{i}"));
        app.assert_webhook_accepted(&failed).await;
    }
    assert!(app.alerts("payment_failures").is_empty());
    for i in 2..5 {
        let failed = stripe_event("invoice.payment_failed", &format!("evt_1AlertPay{i}"));
        app.assert_webhook_accepted(&failed).await;
    }
    assert_eq!(app.alerts("payment_failures").len(), 1);
    assert_eq!(app.count_events("payment_failed"), 5);
}

/// Seven forged deliveries: none alerts under the threshold of five, then one alert for the
/// window however many more fail.
async fn forged_signatures_raise_one_alert(app: &TestApp) {
    let forged = serde_json::to_vec(&stripe_event("payout.created", "evt_1Forged")).unwrap();
    let forge = || stripe_signature_header("whsec_DUMMYattacker", now(), &forged);
    for _ in 0..4 {
        let res = app.post_webhook_body(&forged, Some(&forge())).await;
        assert_eq!(res.status(), 400);
    }
    assert!(
        app.alerts("webhook_signature_failures").is_empty(),
        "4 is under the threshold of 5"
    );
    for _ in 0..3 {
        let res = app.post_webhook_body(&forged, Some(&forge())).await;
        assert_eq!(res.status(), 400);
    }
    let raised = app.alerts("webhook_signature_failures");
    assert_eq!(raised.len(), 1, "once per window, however many more fail");
    let failures = app.events("webhook_invalid_signature");
    assert_eq!(
        (failures.len(), failures[0].count),
        (1, 7),
        "the alert counted repeats aggregated on one row"
    );
    assert_eq!(raised[0].severity, "CRITICAL");
    let details: Value = serde_json::from_str(&raised[0].details).unwrap();
    assert_eq!(
        (
            details["count"].clone(),
            details["threshold"].clone(),
            details["window_secs"].clone()
        ),
        (json!(5), json!(5), json!(300))
    );
    let logs = captured_logs();
    assert!(
        logs.lines().any(|l| l.contains("ERROR")
            && l.contains("ALERT")
            && l.contains("webhook_signature_failures")),
        "an ERROR log line"
    );
}

fn limit(threshold: u32, window_secs: u32) -> AlertLimit {
    AlertLimit {
        threshold,
        window_secs,
    }
}

fn details(row: &tollgate::db::models::security_event::SecurityEventRow) -> Value {
    serde_json::from_str(&row.details).unwrap()
}

async fn refused_sources_raise_one_alert_at_the_configured_threshold(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.webhook_allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
        let rule = AlertRule::WebhookInvalidSources;
        config.alerts.set_limit(rule, limit(3, 60));
    })
    .await;
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1Stranger")).unwrap();
    let header = stripe_signature_header(WEBHOOK_SECRET, now(), &body);
    for _ in 0..2 {
        let res = app.post_webhook_body(&body, Some(&header)).await;
        assert_eq!(res.status(), 403);
    }
    assert!(
        app.alerts("webhook_invalid_sources").is_empty(),
        "2 is under the threshold of 3"
    );
    for _ in 0..4 {
        let res = app.post_webhook_body(&body, Some(&header)).await;
        assert_eq!(res.status(), 403);
    }
    let raised = app.alerts("webhook_invalid_sources");
    assert_eq!(raised.len(), 1, "once per window");
    assert_eq!(raised[0].severity, "CRITICAL");
    let details = details(&raised[0]);
    assert_eq!(
        (
            &details["count"],
            &details["threshold"],
            &details["window_secs"]
        ),
        (&json!(3), &json!(3), &json!(60)),
        "the configured threshold and window"
    );
    assert!(app.alerts("webhook_signature_failures").is_empty());
}

/// A plain re-delivery (same signature) is a duplicate; a stale timestamp under a valid
/// signature, and the same event id under another signature, are replay attempts.
async fn replay_attempts_are_detected_and_raise_one_alert(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config
            .alerts
            .set_limit(AlertRule::WebhookReplays, limit(2, 3600));
    })
    .await;
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1Replayed")).unwrap();
    let first = stripe_signature_header(WEBHOOK_SECRET, now() - 5, &body);
    for duplicate in [false, true, true] {
        let res = app.post_webhook_body(&body, Some(&first)).await;
        assert_eq!(res.status(), 200);
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["duplicate"], duplicate);
    }
    assert_eq!(
        app.count_events("webhook_replay"),
        0,
        "a re-delivery is no replay"
    );

    // A forged header with an old timestamp is a signature failure, not a replay.
    let forged = stripe_signature_header("whsec_DUMMYattacker", now() - 3600, &body);
    assert_eq!(
        app.post_webhook_body(&body, Some(&forged)).await.status(),
        400
    );
    assert_eq!(app.count_events("webhook_replay"), 0);

    // Stripe's own signature, an hour old: refused as any signature failure, recorded as a replay.
    let stale = stripe_signature_header(WEBHOOK_SECRET, now() - 3600, &body);
    let res = app.post_webhook_body(&body, Some(&stale)).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.text().await.unwrap(), super::SIGNATURE_FAILED);
    assert_eq!(app.count_events("webhook_replay"), 1);
    assert_eq!(
        app.count_events("webhook_invalid_signature"),
        1,
        "only the forged one"
    );
    assert!(app.alerts("webhook_replays").is_empty(), "1 is under 2");

    // The stored event re-sent under a fresh, valid signature: answered as a duplicate.
    for t in [now(), now() - 1] {
        let resent = stripe_signature_header(WEBHOOK_SECRET, t, &body);
        let res = app.post_webhook_body(&body, Some(&resent)).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["duplicate"], true);
    }
    let replays = app.events("webhook_replay");
    let reasons = super::reasons(&replays);
    assert!(
        reasons.contains(&json!("resent_with_other_signature")),
        "{reasons:?}"
    );
    assert!(replays.iter().all(|e| e.severity == "HIGH"));
    assert_eq!(app.count_events("webhook_replay"), 3);
    let raised = app.alerts("webhook_replays");
    assert_eq!(raised.len(), 1, "one alert per window");
    assert_eq!(details(&raised[0])["count"], json!(2));
    assert_eq!(super::stored_count(&app), 1);
}
