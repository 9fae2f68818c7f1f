//! Alerts: repeated signature failures and payment failures each raise one CRITICAL alert per
//! window, with an ERROR log line.

use serde_json::{Value, json};
use tollgate::db::models::security_event::SecurityEventRow;

use super::{admin_and_customer, checkout_for, now};
use crate::common::{Backend, TestApp, captured_logs, stripe_event, stripe_signature_header};
use crate::on_both_backends;

on_both_backends!(repeated_failures_raise_one_critical_alert_per_window);

/// The alerts named `name` raised so far.
fn alerts(app: &TestApp, name: &str) -> Vec<SecurityEventRow> {
    app.events("alert")
        .into_iter()
        .filter(|e| serde_json::from_str::<Value>(&e.details).unwrap()["alert"] == name)
        .collect()
}

async fn repeated_failures_raise_one_critical_alert_per_window(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.alerts.payment_failures = 3).await;
    forged_signatures_raise_one_alert(&app).await;

    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1AlertCheckout"))
        .await;
    for i in 0..2 {
        let failed = stripe_event("invoice.payment_failed", &format!("evt_1AlertPay{i}"));
        app.assert_webhook_accepted(&failed).await;
    }
    assert!(alerts(&app, "payment_failures").is_empty());
    for i in 2..5 {
        let failed = stripe_event("invoice.payment_failed", &format!("evt_1AlertPay{i}"));
        app.assert_webhook_accepted(&failed).await;
    }
    assert_eq!(alerts(&app, "payment_failures").len(), 1);
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
        alerts(app, "webhook_signature_failures").is_empty(),
        "4 is under the threshold of 5"
    );
    for _ in 0..3 {
        let res = app.post_webhook_body(&forged, Some(&forge())).await;
        assert_eq!(res.status(), 400);
    }
    let raised = alerts(app, "webhook_signature_failures");
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
