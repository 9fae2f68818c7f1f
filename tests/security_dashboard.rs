//! The security dashboard (issue 13, point 9) and key age (point 10): `/admin/security/overview`
//! charts events per severity and shows webhook verification, refused sources, rate limiting
//! by route, active alerts, encryption keys and service tokens; a primary key older than
//! `KEY_ROTATION_DAYS`, or values still sealed by an old key, are warnings on the dashboard and
//! in `validate-secrets` (exit 0).

use std::time::Duration as StdDuration;

use chrono::Duration;
use diesel::prelude::*;
use tollgate::audit::{Kind, SecurityEvent};
use tollgate::db::schema::{alert_state, encryption_keys};
use tollgate::secret::{decode_key, encode_base64};

use crate::audit_queries::seed;
use crate::common::{Backend, Outcome, TestApp, TestDatabase, run};
use crate::on_both_backends;
use crate::operations::tollgate;
use crate::vault::ANTHROPIC_KEY;

on_both_backends!(
    the_dashboard_charts_and_ranks_what_happened,
    an_old_primary_key_is_a_warning_in_validate_secrets_and_on_the_dashboard,
    an_unfinished_rotation_is_a_warning_until_rotate_key_finishes,
);

/// An aggregated event, repeated `times` (one row, `count` = `times`).
fn repeated(app: &TestApp, event: SecurityEvent, times: usize, ago: Duration) {
    let event = event.aggregate(StdDuration::from_secs(3_153_600_000), "test");
    for _ in 0..times {
        seed(app, event.clone(), ago);
    }
}

/// The text of the element `selector` selects on `html` (the first one).
/// The cells of every row of the table in the section headed `heading_id`.
fn table_rows(html: &str, heading_id: &str) -> Vec<Vec<String>> {
    let document = scraper::Html::parse_document(html);
    let rows = scraper::Selector::parse(&format!("section[aria-labelledby={heading_id}] tbody tr"))
        .unwrap();
    let cells = scraper::Selector::parse("td").unwrap();
    document
        .select(&rows)
        .map(|row| {
            row.select(&cells)
                .map(|c| c.text().collect::<String>().trim().to_owned())
                .collect()
        })
        .collect()
}

fn text_of(html: &str, selector: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).unwrap();
    document
        .select(&selector)
        .next()
        .map(|e| e.text().collect::<String>())
        .unwrap_or_else(|| panic!("nothing matches {selector:?}"))
}

async fn the_dashboard_charts_and_ranks_what_happened(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("dash@example.com").await;
    for _ in 0..3 {
        seed(
            &app,
            SecurityEvent::new(Kind::WebhookValidated).actor("stripe"),
            Duration::minutes(10),
        );
    }
    seed(
        &app,
        SecurityEvent::new(Kind::WebhookInvalidSignature).ip("192.0.2.1"),
        Duration::minutes(20),
    );
    let limited = SecurityEvent::new(Kind::RateLimited)
        .ip("203.0.113.50")
        .details(serde_json::json!({ "path": "/login", "method": "POST", "limiter": "sign_in" }));
    repeated(&app, limited, 5, Duration::minutes(30));
    repeated(
        &app,
        SecurityEvent::new(Kind::WebhookInvalidIp).ip("198.51.100.77"),
        2,
        Duration::hours(2),
    );
    // Outside the last 24 hours: only in the 30-day chart.
    seed(
        &app,
        SecurityEvent::new(Kind::SessionsRevoked),
        Duration::days(10),
    );
    // One alert raised just now, one long ago.
    app.query(|conn| {
        for (name, ago) in [("webhook_signature_failures", 0), ("payment_failures", 3)] {
            diesel::insert_into(alert_state::table)
                .values((
                    alert_state::name.eq(name),
                    alert_state::last_raised_at.eq(tollgate::db::now() - Duration::hours(ago)),
                    // Each rule stays active for its own window: these, an hour.
                    alert_state::window_secs.eq(3600_i64),
                ))
                .execute(conn)?;
        }
        Ok(())
    });
    app.service_token("engine", &[tollgate::service_tokens::Scope::ByokLease]);

    let res = admin.get("/admin/security/overview").await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("style-src 'self';")
            && csp.contains("script-src 'self' https://js.stripe.com;"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "no inline script or style"
    );
    // Two charts, each with a title and a description, bars coloured by class, and a legend.
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2);
    let hourly = text_of(&html, "#chart-hourly-desc");
    // 3 verified webhooks and the admin's sign-up; 5 rate-limited requests; 1 bad signature and
    // 2 refused addresses; the CRITICAL event is ten days old.
    assert!(
        hourly.contains("4 LOW, 5 MEDIUM, 3 HIGH, 0 CRITICAL in all"),
        "{hourly}"
    );
    let daily = text_of(&html, "#chart-daily-desc");
    assert!(daily.contains("1 CRITICAL"), "{daily}");
    assert!(
        html.contains("<rect class=\"sev-high\""),
        "bars by severity"
    );
    assert!(html.contains("class=\"swatch sev-critical\""), "a legend");
    // Webhook verification: 3 verified of 6 deliveries (1 bad signature, 2 from a bad address).
    assert_eq!(
        text_of(&html, ".big-number").split_whitespace().next(),
        Some("50.0")
    );
    // Top refused sources count repeats; the rate-limited route too.
    assert_eq!(
        table_rows(&html, "sources-heading"),
        [["203.0.113.50", "5"], ["198.51.100.77", "2"]]
    );
    assert!(
        html.contains("href=\"/admin/security?ip=203.0.113.50\""),
        "each links to its events"
    );
    assert_eq!(
        table_rows(&html, "routes-heading"),
        [["/login", "sign_in", "5"]]
    );
    // The alert raised within its window, not the old one.
    let alerts = text_of(&html, "section[aria-labelledby=alerts-heading]");
    assert!(
        alerts.contains("webhook_signature_failures") && !alerts.contains("payment_failures"),
        "{alerts}"
    );
    // The primary key, recorded at start-up, and the service token, never used.
    let keys = table_rows(&html, "keys-heading");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let primary = primary_key_id(&encode_base64(&[0x22; 32]));
    assert_eq!(
        (
            keys[0][0].as_str(),
            keys[0][1].as_str(),
            keys[0][3].as_str()
        ),
        (primary.as_str(), "primary", "0 days")
    );
    let tokens = table_rows(&html, "tokens-heading");
    assert_eq!(
        (
            tokens[0][0].as_str(),
            tokens[0][3].as_str(),
            tokens[0][4].as_str()
        ),
        ("engine", "never", "active")
    );
    assert!(
        !html.contains("Key rotation:"),
        "a fresh key, nothing to rotate"
    );
    // The console links to it.
    assert!(
        admin
            .get_text("/admin")
            .await
            .contains("href=\"/admin/security/overview\"")
    );
    assert!(
        admin
            .get_text("/admin/security")
            .await
            .contains("href=\"/admin/security/overview\"")
    );
}

fn primary_key_id(key: &str) -> String {
    tollgate::crypto::Keyring::new(&decode_key::<32>(key).unwrap(), &[])
        .primary_id()
        .to_string()
}

fn stripe_env() -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", "sk_test_DUMMYkey0000000000".into()),
        (
            "STRIPE_PUBLISHABLE_KEY",
            "pk_test_DUMMYkey0000000000".into(),
        ),
        ("STRIPE_WEBHOOK_SECRET", "whsec_DUMMYsecret000000".into()),
    ]
}

/// `tollgate validate-secrets` on `database` with the test secrets and `env`.
fn validate(database: &TestDatabase, env: &[(&str, String)]) -> Outcome {
    let mut env = env.to_vec();
    env.extend(stripe_env());
    run(tollgate(database, &env).arg("validate-secrets"))
}

async fn an_old_primary_key_is_a_warning_in_validate_secrets_and_on_the_dashboard(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("keys@example.com").await;
    let database = app.database_handle();
    let primary = primary_key_id(&encode_base64(&[0x22; 32]));

    let (code, stdout, _) = validate(&database, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "ok       primary encryption key {primary}: first seen 0 day(s) ago"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("WARNING"), "a fresh key: {stdout}");

    let hundred_days_ago = tollgate::db::now() - Duration::days(100);
    app.query(move |conn| {
        diesel::update(encryption_keys::table)
            .set(encryption_keys::first_seen_at.eq(hundred_days_ago))
            .execute(conn)?;
        Ok(())
    });
    let warning =
        format!("the primary encryption key {primary} is 100 days old (KEY_ROTATION_DAYS is 90)");
    let (code, stdout, stderr) = validate(&database, &[]);
    assert_eq!(code, 0, "a warning, not a failure: {stdout}");
    assert!(stdout.contains(&format!("WARNING  {warning}")), "{stdout}");
    assert!(stderr.contains("WARNING"), "{stderr}");
    let (_, stdout, _) = validate(&database, &[("KEY_ROTATION_DAYS", "120".into())]);
    assert!(!stdout.contains("WARNING"), "within 120 days: {stdout}");
    let (code, stdout, _) = validate(&database, &[("KEY_ROTATION_DAYS", "0".into())]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("problem  KEY_ROTATION_DAYS must be at least 1"),
        "{stdout}"
    );

    let html = admin.get_text("/admin/security/overview").await;
    assert!(html.contains(&warning), "{html}");
    assert!(html.contains("100 days"));
    // A restart keeps the first-seen date (recorded once, never moved).
    let restarted = TestApp::spawn_on(app.database_handle(), backend, |_| {}).await;
    let first_seen = restarted.query(tollgate::db::models::encryption_key::all);
    assert_eq!(first_seen.len(), 1);
    assert_eq!(first_seen[0].1, hundred_days_ago);
}

async fn an_unfinished_rotation_is_a_warning_until_rotate_key_finishes(backend: Backend) {
    let old = encode_base64(&[0x22; 32]);
    let new = encode_base64(&[0x44; 32]);
    let before = TestApp::spawn(backend).await;
    let customer = before.signed_in_customer("sealed@example.com").await;
    assert_eq!(
        customer.add_key("anthropic", ANTHROPIC_KEY).await.status(),
        303
    );
    let after = TestApp::spawn_on(before.database_handle(), backend, |config| {
        config.secrets.encryption_key = decode_key::<32>(&new).unwrap();
        config.secrets.encryption_keys_old = vec![decode_key::<32>(&old).unwrap()];
    })
    .await;
    let admin = after.signed_in_admin("rotator@example.com").await;
    let old_id = primary_key_id(&old);
    let warning =
        format!("key rotation unfinished: 1 value(s) are still sealed by old key(s) {old_id}");

    let html = admin.get_text("/admin/security/overview").await;
    assert!(html.contains(&warning), "{html}");
    assert!(!html.contains("days old"), "the new primary is fresh");
    let database = after.database_handle();
    let env = [
        ("ENCRYPTION_KEY", new.clone()),
        ("ENCRYPTION_KEYS_OLD", old.clone()),
    ];
    let (code, stdout, _) = validate(&database, &env);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains(&format!("WARNING  {warning}")), "{stdout}");

    let (code, out, _) = run(tollgate(&database, &env).arg("rotate-key"));
    assert_eq!(code, 0, "{out}");
    let (_, stdout, _) = validate(&database, &env);
    assert!(!stdout.contains("WARNING"), "rotation finished: {stdout}");
    let html = admin.get_text("/admin/security/overview").await;
    assert!(!html.contains("Key rotation:"), "{html}");
}
