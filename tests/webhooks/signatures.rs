//! Verification: signatures checked exactly as Stripe's libraries check them, headers bounded
//! before any work, two secrets during a rotation, bodies over the limit refused unread.

use serde_json::{Value, json};

use super::{SIGNATURE_FAILED, now, reasons, signed_now, stored_count};
use crate::common::{
    Backend, TestApp, WEBHOOK_SECRET, captured_logs, stripe_event, stripe_signature,
    stripe_signature_header,
};
use crate::on_both_backends;

on_both_backends!(
    signatures_are_verified_as_stripe_specifies,
    signature_headers_are_bounded_before_any_work,
    two_secrets_are_accepted_during_a_rotation,
    oversized_bodies_are_refused_unread,
);

/// The amplification a forged header could buy (thousands of `v1=` over a 500 KB body, each
/// once an HMAC over the whole body) is refused up front, with Stripe's usual answer. The cost
/// itself (no MAC computed) is pinned by `webhooks::verify`'s unit tests.
async fn signature_headers_are_bounded_before_any_work(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut event = stripe_event("payout.created", "evt_1BoundedHeader");
    event["data"]["object"]["description"] = json!("x".repeat(500 * 1024));
    let body = serde_json::to_vec(&event).unwrap();
    assert!(body.len() < 512 * 1024, "inside the body limit");
    let t = now();
    let good = stripe_signature(WEBHOOK_SECRET, t, &body);
    let many = ",v1=".repeat(4000);
    let cases = [
        ("4,000 empty v1", format!("t={t}{many}")),
        (
            "4,000 v1 then the good one",
            format!("t={t}{many},v1={good}"),
        ),
        (
            "nine entries",
            format!("t={t}{},v1={good}", ",v0=1".repeat(8)),
        ),
        (
            "over 1 KiB",
            format!("t={t},v0={},v1={good}", "0".repeat(1024)),
        ),
        ("signed timestamp", format!("t=+{t},v1={good}")),
        ("short v1", format!("t={t},v1={}", &good[..62])),
    ];
    for (case, header) in &cases {
        let res = app.post_webhook_body(&body, Some(header)).await;
        assert_eq!(res.status(), 400, "{case}");
        assert_eq!(res.text().await.unwrap(), SIGNATURE_FAILED, "{case}");
    }
    assert_eq!(stored_count(&app), 0);
    let reasons = reasons(&app.events("webhook_invalid_signature"));
    assert!(reasons.contains(&json!("too_large")), "{reasons:?}");
    // The same body with an ordinary header (a few empty entries included) is accepted.
    let header = format!("t={t},v1=,v1=00,v1={good}");
    let res = app.post_webhook_body(&body, Some(&header)).await;
    assert_eq!(res.status(), 200);
}

async fn signatures_are_verified_as_stripe_specifies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let good = serde_json::to_vec(&stripe_event("payout.created", "evt_1SignedGood")).unwrap();
    let t = now();

    // Refused: each exactly as Stripe's libraries would refuse it.
    let cases = refused_deliveries(&good, t);
    for (case, body, header) in &cases {
        let res = app.post_webhook_body(body, header.as_deref()).await;
        assert_eq!(res.status(), 400, "{case}");
        let content_type = res.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "application/json", "{case}");
        assert_eq!(res.text().await.unwrap(), SIGNATURE_FAILED, "{case}");
    }
    assert_eq!(stored_count(&app), 0, "nothing unverified is stored");
    assert_eq!(app.count_events("webhook_validated"), 0);
    assert_refusals_audited(&app, cases.len());

    // Accepted: inside the tolerance either way, and any matching v1 among several.
    let v1 = |secret| stripe_signature(secret, t, &good);
    let accepted = [
        stripe_signature_header(WEBHOOK_SECRET, now() - 298, &good),
        format!(
            "t={t},v1={},v1={}",
            v1("whsec_DUMMYsomeoneelse"),
            v1(WEBHOOK_SECRET)
        ),
        format!("t={t},v0=00,v1={}", v1(WEBHOOK_SECRET)),
    ];
    for (i, header) in accepted.iter().enumerate() {
        let res = app.post_webhook_body(&good, Some(header)).await;
        assert_eq!(res.status(), 200, "{header}");
        let body: Value = res.json().await.unwrap();
        let first = "the first stores, the others are duplicates";
        assert_eq!(body["duplicate"], i > 0, "{first}");
    }
    let ahead = serde_json::to_vec(&stripe_event("payout.created", "evt_1SignedAhead")).unwrap();
    let header = stripe_signature_header(WEBHOOK_SECRET, now() + 298, &ahead);
    let res = app.post_webhook_body(&ahead, Some(&header)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(stored_count(&app), 2);
    let validated = app.events("webhook_validated");
    assert_eq!(validated.len(), 2, "one per stored event");
    assert!(validated.iter().all(|e| e.severity == "LOW"));
    let secret_logged = captured_logs().contains(WEBHOOK_SECRET);
    assert!(!secret_logged, "the endpoint secret never reaches a log");
}

/// Deliveries of `good` (or of a body it was not signed for) at time `t` that Stripe's
/// libraries refuse, each named: (case, body, Stripe-Signature header).
fn refused_deliveries(good: &[u8], t: i64) -> Vec<(&'static str, Vec<u8>, Option<String>)> {
    let other = serde_json::to_vec(&stripe_event("payout.created", "evt_1SignedOther")).unwrap();
    let mut reformatted =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(good).unwrap()).unwrap();
    reformatted.push(b'\n');
    let v1 = stripe_signature(WEBHOOK_SECRET, t, good);
    let signed = |secret: &str, t: i64, body: &[u8]| Some(stripe_signature_header(secret, t, body));
    let headers = [
        ("no header", None),
        ("empty header", Some(String::new())),
        ("garbage", Some("not a signature".into())),
        ("no v1", Some(format!("t={t}"))),
        ("no timestamp", Some(format!("v1={v1}"))),
        ("bad timestamp", Some(format!("t=soon,v1={v1}"))),
        ("non-hex v1", Some(format!("t={t},v1=zz{}", &v1[2..]))),
        ("wrong secret", signed("whsec_DUMMYsomeoneelse", t, good)),
        (
            "another body's signature",
            signed(WEBHOOK_SECRET, t, &other),
        ),
        (
            "signed with another timestamp",
            Some(format!("t={},v1={v1}", t + 1)),
        ),
        ("only v0", Some(format!("t={t},v0={v1}"))),
        ("310 s old", signed(WEBHOOK_SECRET, t - 310, good)),
        ("310 s ahead", signed(WEBHOOK_SECRET, t + 310, good)),
    ];
    let mut cases: Vec<_> = headers
        .into_iter()
        .map(|(case, header)| (case, good.to_vec(), header))
        .collect();
    // The same event re-serialised (other bytes) under the original bytes' signature.
    let resigned = signed(WEBHOOK_SECRET, t, good);
    cases.insert(9, ("re-serialised body", reformatted, resigned));
    cases
}

/// Every refusal is audited (`n` in all, repeats of a reason counted on one row): one HIGH row
/// per reason, from Stripe.
fn assert_refusals_audited(app: &TestApp, n: usize) {
    let refusals = app.events("webhook_invalid_signature");
    let replays = app.events("webhook_replay");
    assert_eq!(
        refusals
            .iter()
            .chain(&replays)
            .map(|e| e.count)
            .sum::<i64>(),
        n as i64,
        "every refusal is audited (repeats of a reason counted on one row)"
    );
    assert_eq!(refusals.len(), 3, "one row per reason");
    // A valid signature whose timestamp is out of the tolerance is a replay attempt.
    assert_eq!(
        (replays.len(), replays[0].count),
        (1, 2),
        "310 s old and 310 s ahead"
    );
    assert_eq!(reasons(&replays), [json!("stale_timestamp")]);
    assert!(
        refusals
            .iter()
            .all(|e| e.severity == "HIGH" && e.actor.as_deref() == Some("stripe"))
    );
    let reasons = reasons(&refusals);
    for reason in ["missing", "malformed", "mismatch"] {
        assert!(reasons.contains(&json!(reason)), "{reason} in {reasons:?}");
    }
}

async fn two_secrets_are_accepted_during_a_rotation(backend: Backend) {
    let (old, new) = (
        "whsec_DUMMYoldendpointsecret",
        "whsec_DUMMYnewendpointsecret",
    );
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.webhook_secrets = vec![old.to_owned().into(), new.to_owned().into()];
        config.stripe.webhook_tolerance_secs = 10;
    })
    .await;
    for (i, secret) in [old, new].into_iter().enumerate() {
        let event = stripe_event("payout.updated", &format!("evt_1Rotation{i}"));
        let body = serde_json::to_vec(&event).unwrap();
        let header = stripe_signature_header(secret, now(), &body);
        let res = app.post_webhook_body(&body, Some(&header)).await;
        assert_eq!(res.status(), 200, "signed with secret {i}");
    }
    let body = serde_json::to_vec(&stripe_event("payout.updated", "evt_1RotationX")).unwrap();
    for header in [
        stripe_signature_header(WEBHOOK_SECRET, now(), &body),
        // The tolerance is configurable: 10 s here.
        stripe_signature_header(new, now() - 30, &body),
    ] {
        let res = app.post_webhook_body(&body, Some(&header)).await;
        assert_eq!(res.status(), 400);
    }
    assert_eq!(stored_count(&app), 2);
}

async fn oversized_bodies_are_refused_unread(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut big = stripe_event("payout.created", "evt_1TooBig");
    big["data"]["object"]["description"] = json!("x".repeat(600 * 1024));
    let body = serde_json::to_vec(&big).unwrap();
    let res = app.post_webhook_body(&body, Some(&signed_now(&body))).await;
    assert_eq!(res.status(), 413);
    assert_eq!(stored_count(&app), 0);

    // Just under the limit is fine.
    big["id"] = json!("evt_1JustFits");
    big["data"]["object"]["description"] = json!("x".repeat(500 * 1024));
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() < 512 * 1024);
    let res = app.post_webhook_body(&body, Some(&signed_now(&body))).await;
    assert_eq!(res.status(), 200);
}
