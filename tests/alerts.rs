//! Alert rules beyond webhooks (rate-limit refusals, all clients and per account; the 5xx rate)
//! and the webhook alert channel (`ALERT_WEBHOOK_URL`): one signed delivery per alert, retried
//! with backoff, never holding up the request that raised it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::config::{AlertLimit, AlertRule, RateLimit};

use crate::common::{
    ALERT_SECRET, AlertReceiver, Backend, Reply, TestApp, WEBHOOK_SECRET, alert_webhook_to,
    captured_logs, stripe_event, stripe_signature_header, verify_alert_signature,
};
use crate::on_both_backends;

on_both_backends!(
    rate_limit_refusals_raise_one_alert_at_the_configured_threshold,
    one_accounts_refusals_raise_the_per_user_alert,
    a_5xx_rate_over_the_threshold_raises_one_alert_given_enough_requests,
    each_alert_is_delivered_once_signed_and_without_secrets,
    a_failing_receiver_gets_the_alert_after_retries,
    a_slow_receiver_never_holds_up_the_request,
);

fn limit(threshold: u32, window_secs: u32) -> AlertLimit {
    AlertLimit {
        threshold,
        window_secs,
    }
}

fn details(row: &tollgate::db::models::security_event::SecurityEventRow) -> Value {
    serde_json::from_str(&row.details).unwrap()
}

/// One GET of `/healthz` by `client` (behind 127.0.0.1, a trusted proxy).
async fn get_as(app: &TestApp, client: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn rate_limit_refusals_raise_one_alert_at_the_configured_threshold(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        config.rate_limits.default = RateLimit {
            per_minute: 1,
            burst: 1,
        };
        let rule = AlertRule::RateLimitViolations;
        config.alerts.set_limit(rule, limit(3, 120));
    })
    .await;
    let refuse = |i: usize| {
        let app = &app;
        async move {
            let client = format!("203.0.113.{i}");
            assert_eq!(get_as(app, &client).await, 200);
            assert_eq!(get_as(app, &client).await, 429);
        }
    };
    for i in 0..2 {
        refuse(i).await;
    }
    assert!(app.alerts("rate_limit_violations").is_empty(), "2 < 3");
    for i in 2..6 {
        refuse(i).await;
    }
    let raised = app.alerts("rate_limit_violations");
    assert_eq!(raised.len(), 1, "once per window");
    let details = details(&raised[0]);
    assert_eq!(
        (
            &details["count"],
            &details["threshold"],
            &details["window_secs"]
        ),
        (&json!(3), &json!(3), &json!(120))
    );
    assert!(
        app.alerts("user_rate_limit_violations").is_empty(),
        "no account was refused"
    );
    // Active (for the security dashboard) while its window lasts.
    let at = tollgate::db::now();
    let active = app.query(move |conn| tollgate::audit::alerts::active(conn, at));
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].rule.as_str(), active[0].count),
        ("rate_limit_violations", 3)
    );
    let later = at + chrono::Duration::seconds(121);
    assert!(
        app.query(move |conn| tollgate::audit::alerts::active(conn, later))
            .is_empty()
    );
}

/// Stripe calls are limited per account (the billing gateway's throttle): the refusals of one
/// account raise the per-user alert; two accounts' refusals do not add up.
async fn one_accounts_refusals_raise_the_per_user_alert(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.throttle.default_per_minute = 2;
        let rule = AlertRule::UserRateLimitViolations;
        config.alerts.set_limit(rule, limit(3, 600));
    })
    .await;
    app.signed_in_admin("admin@example.com")
        .await
        .create_plan("Pro", "pro", "2500")
        .await;
    let hasty = app.signed_in_customer("hasty@example.com").await;
    let other = app.signed_in_customer("other@example.com").await;
    for customer in [&hasty, &other] {
        for _ in 0..2 {
            assert_eq!(customer.choose_plan("pro").await.status(), 303);
        }
        for _ in 0..2 {
            assert_eq!(customer.choose_plan("pro").await.status(), 429);
        }
    }
    assert_eq!(app.count_events("stripe_rate_limited"), 4);
    assert!(
        app.alerts("user_rate_limit_violations").is_empty(),
        "2 refusals each: neither account reached 3"
    );
    for _ in 0..3 {
        assert_eq!(hasty.choose_plan("pro").await.status(), 429);
    }
    let raised = app.alerts("user_rate_limit_violations");
    assert_eq!(raised.len(), 1, "once per window");
    let first = details(&raised[0]);
    let hasty_id = app.user_id("hasty@example.com");
    assert_eq!(first["account"], json!(format!("user:{hasty_id}")));
    assert_eq!(
        (&first["count"], &first["window_secs"]),
        (&json!(3), &json!(600))
    );
    // Another account reaching it in the same window has an alert of its own.
    assert_eq!(other.choose_plan("pro").await.status(), 429);
    let raised = app.alerts("user_rate_limit_violations");
    assert_eq!(raised.len(), 2, "one per account and window");
    let other_id = app.user_id("other@example.com");
    let mut accounts: Vec<Value> = raised
        .iter()
        .map(|row| details(row)["account"].clone())
        .collect();
    accounts.sort_by_key(ToString::to_string);
    let mut expected = [
        json!(format!("user:{hasty_id}")),
        json!(format!("user:{other_id}")),
    ];
    expected.sort_by_key(ToString::to_string);
    assert_eq!(accounts, expected);
    assert_eq!(hasty.choose_plan("pro").await.status(), 429);
    assert_eq!(app.alerts("user_rate_limit_violations").len(), 2);
}

async fn a_5xx_rate_over_the_threshold_raises_one_alert_given_enough_requests(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config
            .alerts
            .set_limit(AlertRule::ServerErrors, limit(50, 300));
        config.alerts.server_errors_min_requests = 4;
        // A bug in the webhook writer for some events: their deliveries are answered 500.
        config.faults.webhook_batch = Some(Arc::new(|ids: &[&str]| {
            assert!(
                !ids.iter().any(|id| id.contains("Boom")),
                "injected failure"
            );
        }));
    })
    .await;
    let deliver = |id: String| {
        let app = &app;
        async move {
            app.post_webhook(&stripe_event("payout.created", &id))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(deliver("evt_1Fine0".into()).await, 200);
    assert_eq!(deliver("evt_1Boom0".into()).await, 500);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.alerts("server_errors").is_empty(),
        "1 failure in 2 requests: under the minimum of 4"
    );
    assert_eq!(deliver("evt_1Fine1".into()).await, 200);
    assert_eq!(deliver("evt_1Boom1".into()).await, 500);
    let raised = app.wait_for_alerts("server_errors", 1).await;
    assert_eq!(raised.len(), 1, "2 of 4 is 50 %");
    let details = details(&raised[0]);
    assert_eq!(
        (
            &details["count"],
            &details["requests"],
            &details["threshold"]
        ),
        (&json!(2), &json!(4), &json!(50))
    );
    for i in 2..5 {
        assert_eq!(deliver(format!("evt_1Boom{i}")).await, 500);
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.alerts("server_errors").len(), 1, "once per window");
}

/// One stale but validly signed delivery: a replay attempt, which raises the replay alert
/// (threshold 1). Returns how long the request took.
async fn send_replay(app: &TestApp, id: &str) -> Duration {
    let body = serde_json::to_vec(&stripe_event("payout.created", id)).unwrap();
    let stale = chrono::Utc::now().timestamp() - 3600;
    let header = stripe_signature_header(WEBHOOK_SECRET, stale, &body);
    let started = Instant::now();
    let res = app.post_webhook_body(&body, Some(&header)).await;
    assert_eq!(res.status(), 400);
    started.elapsed()
}

async fn each_alert_is_delivered_once_signed_and_without_secrets(backend: Backend) {
    let receiver = AlertReceiver::start();
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.webhook = Some(alert_webhook_to(&receiver.url, 5, Duration::from_secs(5)));
        config.alerts.email_to = vec!["ops@example.com".into(), "oncall@example.com".into()];
    })
    .await;
    send_replay(&app, "evt_1ReplayOne").await;
    send_replay(&app, "evt_1ReplayTwo").await;
    // The same alert by e-mail to each ALERT_EMAIL_TO address, once (recorded as not sent
    // here: no SMTP).
    let emails = app.settled_notifications("email").await;
    let to: Vec<(&str, &str)> = emails
        .iter()
        .map(|r| (r.event_type.as_str(), r.recipient.as_str()))
        .collect();
    assert_eq!(
        to,
        [
            ("security_alert", "ops@example.com"),
            ("security_alert", "oncall@example.com")
        ]
    );
    let message: Value = serde_json::from_str(&emails[0].payload).unwrap();
    assert_eq!(message["rule"], "webhook_replays");
    assert!(
        message["summary"]
            .as_str()
            .unwrap()
            .contains("webhook_replays")
    );
    let received = receiver.wait_for(1).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "one alert in the window: one delivery"
    );
    let delivery = &received[0];
    assert!(
        verify_alert_signature(ALERT_SECRET, delivery),
        "{:?}",
        delivery.headers
    );
    assert!(!verify_alert_signature(
        "DUMMYsomeoneelsesecret-0123456789abcdef",
        delivery
    ));
    assert_eq!(delivery.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&delivery.body).unwrap();
    assert_eq!(body["alert"], "webhook_replays");
    assert_eq!((&body["count"], &body["threshold"]), (&json!(1), &json!(1)));
    assert_eq!(body["window_secs"], 3600);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("webhook_replays"),
        "Slack shows `text`: {text}"
    );
    for secret in [WEBHOOK_SECRET, ALERT_SECRET, "127.0.0.1", "evt_1Replay"] {
        assert!(
            !delivery.body.contains(secret),
            "{secret} in {}",
            delivery.body
        );
    }
    // The receiver has it before the worker, which marks it sent once it has the answer.
    let rows = app.settled_notifications("alert_webhook").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].status, "sent");
    assert!(!captured_logs().contains(ALERT_SECRET));
}

async fn a_failing_receiver_gets_the_alert_after_retries(backend: Backend) {
    let receiver = AlertReceiver::answering(Arc::new(|n| match n {
        0 | 1 => Reply::Status(500),
        _ => Reply::Status(200),
    }));
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.webhook = Some(alert_webhook_to(&receiver.url, 5, Duration::from_secs(5)));
    })
    .await;
    send_replay(&app, "evt_1ReplayRetried").await;
    let received = receiver.wait_for(3).await;
    assert_eq!(received.len(), 3, "two 500s, then delivered");
    assert!(
        received
            .iter()
            .all(|r| verify_alert_signature(ALERT_SECRET, r))
    );
    assert!(
        received.iter().all(|r| r.body == received[0].body),
        "the same alert"
    );
    let mut rows = app.alert_deliveries();
    for _ in 0..300 {
        if rows[0].status == "sent" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        rows = app.alert_deliveries();
    }
    assert_eq!((rows.len(), rows[0].attempts), (1, 3));
    assert_eq!(rows[0].status, "sent");
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 3, "nothing after the delivery");
}

async fn a_slow_receiver_never_holds_up_the_request(backend: Backend) {
    let receiver = AlertReceiver::answering(Arc::new(|_| Reply::Slow(Duration::from_secs(10))));
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.webhook = Some(alert_webhook_to(&receiver.url, 2, Duration::from_secs(3)));
    })
    .await;
    let took = send_replay(&app, "evt_1ReplaySlow").await;
    assert_eq!(app.alerts("webhook_replays").len(), 1);
    // Waiting for the delivery would take its two attempts of 3 s each.
    assert!(took < Duration::from_secs(5), "the request waited {took:?}");
    // Each attempt times out after 3 s; after 2 the delivery is given up, and said so.
    let mut rows = app.alert_deliveries();
    for _ in 0..600 {
        if rows[0].status == "dead" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        rows = app.alert_deliveries();
    }
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].status, "dead");
    assert_eq!(rows[0].last_error.as_deref(), Some("timed out"));
    assert!(captured_logs().contains("notification not delivered: dead"));
}
