//! What is let in besides a good signature: payloads of the right shape (checked after
//! verification, so unsigned junk costs nothing), sources on the allowlist (forwarded addresses
//! believed only from trusted proxies), and a rate of its own for the webhook route.

use serde_json::{Value, json};
use tollgate::config::RateLimit;

use super::{signed_now, stored_count};
use crate::common::{Backend, TestApp, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    payloads_are_validated_after_verification,
    the_source_allowlist_honours_trusted_proxies_only,
    the_webhook_route_is_rate_limited_and_audited,
);

const INVALID_PAYLOAD: &str = r#"{"error":"Invalid webhook payload"}"#;

/// A way to spoil a valid event.
type Mutation = fn(&mut Value);

/// Signed bodies that are not a valid event, each named: not JSON, not an object, or `valid`
/// with one thing spoiled.
fn invalid_payloads(valid: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{\"id\": \"evt_1".to_vec()),
        ("an array", b"[]".to_vec()),
        ("a string", b"\"evt_1\"".to_vec()),
    ];
    let mutations: [(&str, Mutation); 9] = [
        ("no id", |e| drop(e.as_object_mut().unwrap().remove("id"))),
        ("not an evt_ id", |e| e["id"] = json!("ch_1NotAnEvent")),
        ("a bare evt_", |e| e["id"] = json!("evt_")),
        ("no type", |e| {
            drop(e.as_object_mut().unwrap().remove("type"))
        }),
        ("no created", |e| {
            drop(e.as_object_mut().unwrap().remove("created"))
        }),
        ("created is text", |e| e["created"] = json!("yesterday")),
        ("no data.object", |e| e["data"] = json!({})),
        ("data.object is not an object", |e| {
            e["data"]["object"] = json!("po_1")
        }),
        ("livemode under a test key", |e| e["livemode"] = json!(true)),
    ];
    for (case, mutate) in mutations {
        let mut bad = valid.clone();
        mutate(&mut bad);
        cases.push((case, serde_json::to_vec(&bad).unwrap()));
    }
    cases
}

async fn payloads_are_validated_after_verification(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid = stripe_event("payout.created", "evt_1Valid");
    let cases = invalid_payloads(&valid);
    for (case, body) in &cases {
        let res = app.post_webhook_body(body, Some(&signed_now(body))).await;
        assert_eq!(res.status(), 400, "{case}");
        assert_eq!(res.text().await.unwrap(), INVALID_PAYLOAD, "{case}");
    }
    assert_eq!(stored_count(&app), 0);
    let refused = app.events("webhook_invalid_payload");
    assert_eq!(
        app.count_events("webhook_invalid_payload"),
        cases.len() as i64,
        "each is audited (counted on one row per source)"
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(
        app.count_events("webhook_invalid_signature"),
        0,
        "they were signed"
    );
    app.assert_webhook_accepted(&valid).await;
    assert_eq!(app.count_events("webhook_validated"), 1);

    // Under a live key it is the other way round.
    let live = TestApp::spawn_with(backend, |config| {
        config.stripe.secret_key =
            Some(tollgate::config::StripeSecretKey::parse("sk_live_DUMMYtollgate").unwrap());
    })
    .await;
    let res = live.post_webhook(&valid).await;
    assert_eq!(res.status(), 400);
    let mut live_event = valid.clone();
    live_event["livemode"] = json!(true);
    live.assert_webhook_accepted(&live_event).await;
}

async fn the_source_allowlist_honours_trusted_proxies_only(backend: Backend) {
    let stripe_net = || vec!["203.0.113.0/24".parse::<ipnet::IpNet>().unwrap()];
    let direct = TestApp::spawn_with(backend, |config| {
        config.stripe.webhook_allowed_ips = stripe_net();
    })
    .await;
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1FromWhere")).unwrap();
    let header = signed_now(&body);
    // From loopback, not allowed; a client's own X-Forwarded-For is not believed.
    for xff in [None, Some("203.0.113.7")] {
        let res = direct.post_webhook_from(&body, Some(&header), xff).await;
        assert_eq!(res.status(), 403, "{xff:?}");
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"error":"Webhook source not allowed"}"#
        );
    }
    assert_eq!(stored_count(&direct), 0);
    let refused = direct.events("webhook_invalid_ip");
    assert_eq!(refused.len(), 1, "one source, one row");
    assert_eq!(refused[0].count, 2);
    assert!(
        refused
            .iter()
            .all(|e| e.ip.as_deref() == Some("127.0.0.1") && e.severity == "HIGH")
    );

    // Behind a trusted proxy (loopback here), the forwarded address is the source.
    let proxied = TestApp::spawn_with(backend, |config| {
        config.stripe.webhook_allowed_ips = stripe_net();
        config.security.trusted_proxies = vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()];
    })
    .await;
    for xff in [
        None,
        Some("203.0.113.7, 198.51.100.9"),
        Some("198.51.100.9"),
    ] {
        let res = proxied.post_webhook_from(&body, Some(&header), xff).await;
        assert_eq!(res.status(), 403, "{xff:?}");
    }
    let res = proxied
        .post_webhook_from(&body, Some(&header), Some("203.0.113.7"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(stored_count(&proxied), 1);
    assert_eq!(
        proxied.events("webhook_validated")[0].ip.as_deref(),
        Some("203.0.113.7")
    );
}

async fn the_webhook_route_is_rate_limited_and_audited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.webhook = RateLimit {
            per_minute: 1,
            burst: 3,
        };
        // Tighter than the webhook's own: it must not govern the webhook route.
        config.rate_limits.default = RateLimit {
            per_minute: 1,
            burst: 2,
        };
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let res = app
            .post_webhook(&stripe_event("payout.created", &format!("evt_1Limited{i}")))
            .await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(
        stored_count(&app),
        3,
        "a refused delivery is not stored (Stripe retries it)"
    );
    let refused = app.events("webhook_rate_limit_exceeded");
    assert_eq!(
        refused.len(),
        1,
        "audited once a minute per source, not per request"
    );
    assert_eq!(refused[0].severity, "MEDIUM");
    assert_eq!(
        app.count_events("rate_limited"),
        0,
        "the webhook's limiter refused"
    );
    // The rest of the site has its own budget.
    assert_eq!(app.browser().get("/pricing").await.status(), 200);
}
