//! Webhooks to the product's own services (Standard Webhooks): endpoints registered by admins at
//! /admin/endpoints (secret shown once, stored sealed, rotated with an overlap, enabled and
//! disabled, deleted), refused to everyone else and to forged forms, and deliveries verified
//! with an independent implementation (the `standardwebhooks` crate), not Tollgate's own code.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;
use tollgate::db::models::notification::NotificationRow;
use tollgate::db::models::webhook_endpoint::{self, WebhookEndpointRow};
use tollgate::notify::AppEvent;

use crate::common::{AlertReceiver, Backend, Browser, Received, TestApp};
use crate::on_both_backends;

on_both_backends!(
    an_endpoint_gets_its_secret_once_and_deliveries_verify_independently,
    only_admins_with_the_forms_token_change_endpoints,
    malformed_endpoints_are_refused_with_clear_messages,
    a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends,
    disabled_endpoints_get_nothing_and_a_copied_secret_never_signs,
    rotate_key_reseals_endpoint_secrets,
);

const LIST: &str = "/admin/endpoints";

/// Adds an endpoint through the console as `admin` (the token from the list page's form).
async fn add_endpoint(admin: &Browser, url: &str, events: &[&str]) -> reqwest::Response {
    let mut fields = vec![("url", url), ("description", "entitlements service")];
    fields.extend(events.iter().map(|e| ("events", *e)));
    admin.submit(LIST, LIST, &fields).await
}

/// The secret shown on a page (the read-only `#new-secret` input), if any.
fn shown_secret(html: &str) -> Option<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("#new-secret").unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|input| input.value().attr("value"))
        .map(str::to_owned)
}

/// Adds an endpoint to `url` for `events`; returns its row and the secret shown once.
async fn registered(
    app: &TestApp,
    admin: &Browser,
    url: &str,
    events: &[&str],
) -> (WebhookEndpointRow, String) {
    let res = add_endpoint(admin, url, events).await;
    assert_eq!(res.status(), 200, "the endpoint's page, with its secret");
    let html = res.text().await.unwrap();
    let secret = shown_secret(&html).expect("the secret is shown");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let row = app.query(webhook_endpoint::all).into_iter().last().unwrap();
    assert!(html.contains(&row.public_id));
    (row, secret)
}

fn endpoint(app: &TestApp, public_id: &str) -> Option<WebhookEndpointRow> {
    let public_id = public_id.to_owned();
    app.query(move |conn| webhook_endpoint::find_by_public_id(conn, &public_id))
}

/// Publishes `invoice.paid` for `user_id`, caused by `cause`; returns the rows it added.
fn publish(app: &TestApp, user_id: i64, cause: &'static str) -> usize {
    app.query(move |conn| {
        tollgate::notify::publish(
            conn,
            AppEvent::InvoicePaid,
            user_id.into(),
            json!({ "invoice": "in_DUMMY1", "amount_paid": 2500, "currency": "usd" }),
            cause,
        )
    })
}

/// Waits (up to 10 s) until every app-webhook row is sent or dead, then returns them.
async fn settled(app: &TestApp) -> Vec<NotificationRow> {
    for _ in 0..200 {
        let rows = app.notifications("app_webhook");
        if rows
            .iter()
            .all(|r| r.status == "sent" || r.status == "dead")
        {
            return rows;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "deliveries did not settle: {:?}",
        app.notifications("app_webhook")
    );
}

/// The request's Standard Webhooks headers, with `signature` in place of the one received
/// when given.
fn headers(received: &Received, signature: Option<&str>) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(value) = received.headers.get(name) {
            map.insert(name, value.parse().unwrap());
        }
    }
    if let Some(signature) = signature {
        map.insert("webhook-signature", signature.parse().unwrap());
    }
    map
}

/// Verifies a delivery with the `standardwebhooks` crate, as a receiving service would.
fn verifies(secret: &str, body: &str, headers: &reqwest::header::HeaderMap) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body.as_bytes(), headers)
        .is_ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn an_endpoint_gets_its_secret_once_and_deliveries_verify_independently(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = AlertReceiver::start();
    let admin = app.signed_in_admin("admin@example.com").await;
    app.signed_in_customer("payer@example.com").await;
    let user_id = app.user_id("payer@example.com");
    let (row, secret) = registered(&app, &admin, &receiver.url, &["invoice.paid"]).await;

    // Shown once: not on the endpoint's page, the list, or in any row, sealed or audited.
    let page = admin.get_text(&format!("{LIST}/{}", row.public_id)).await;
    assert!(page.contains(&receiver.url) && page.contains("invoice.paid"));
    assert!(!page.contains(&secret) && shown_secret(&page).is_none());
    assert!(!admin.get_text(LIST).await.contains(&secret));
    assert!(!contains(&row.secret, secret.as_bytes()));
    assert!(!contains(&row.secret, &secret.as_bytes()["whsec_".len()..]));
    let created = app.events("webhook_endpoint_created");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].severity, "HIGH");
    assert!(created[0].details.contains(&row.public_id) && !created[0].details.contains(&secret));

    assert_eq!(publish(&app, user_id, "cause-1"), 1);
    assert_eq!(
        publish(&app, user_id, "cause-1"),
        0,
        "the same cause again adds nothing"
    );
    let rows = settled(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "sent", "{:?}", rows[0].last_error);
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered.len(), 1);
    let got = &delivered[0];
    assert_eq!(got.headers["webhook-id"], rows[0].message_id);
    let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(body["data"]["user_id"], user_id);
    assert_eq!(body["data"]["amount_paid"], 2500);

    let signed = headers(got, None);
    assert!(
        verifies(&secret, &got.body, &signed),
        "verifies independently"
    );
    let tampered = got.body.replace("2500", "25000");
    assert!(
        !verifies(&secret, &tampered, &signed),
        "a changed body fails"
    );
    let other = tollgate::notify::endpoints::generate_secret().unwrap();
    use secrecy::ExposeSecret as _;
    assert!(!verifies(other.expose_secret(), &got.body, &signed));
}

async fn only_admins_with_the_forms_token_change_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let (a, _) = registered(
        &app,
        &admin,
        "https://a.example.com/hooks",
        &["invoice.paid"],
    )
    .await;
    let (b, _) = registered(
        &app,
        &admin,
        "https://b.example.com/hooks",
        &["invoice.paid"],
    )
    .await;
    let actions =
        |id: &str| ["disable", "rotate", "delete"].map(|action| format!("{LIST}/{id}/{action}"));

    // A customer and a support account, each with its own valid token: refused.
    let customer = app.signed_in_customer("customer@example.com").await;
    let support = app.signed_in_support("support@example.com").await;
    for browser in [&customer, &support] {
        let token = browser.csrf_token("/account").await;
        let create = [
            ("csrf_token", token.as_str()),
            ("url", "https://evil.example.com/"),
            ("events", "invoice.paid"),
        ];
        assert_eq!(browser.post_form(LIST, &create).await.status(), 403);
        for path in actions(&a.public_id) {
            let res = browser
                .post_form(&path, &[("csrf_token", token.as_str())])
                .await;
            assert_eq!(res.status(), 403, "{path}");
        }
    }
    // Support reads the list and the endpoint, with no forms and no secret.
    let list = support.get_text(LIST).await;
    assert!(list.contains("https://a.example.com/hooks"));
    assert!(
        !list.contains("method=\"post\" action=\"/admin"),
        "no forms for support"
    );
    let page = support.get_text(&format!("{LIST}/{}", a.public_id)).await;
    assert!(page.contains("https://a.example.com/hooks") && !page.contains("whsec_"));
    assert!(!page.contains("/rotate\"") && !page.contains("/delete\""));

    // The admin with a forged or missing token: refused, audited.
    let rejected = app.count_events("csrf_rejected");
    for form in [vec![("csrf_token", "forged")], vec![]] {
        for path in actions(&a.public_id) {
            assert_eq!(admin.post_form(&path, &form).await.status(), 403, "{path}");
        }
        let mut create = form.clone();
        create.extend([
            ("url", "https://c.example.com/"),
            ("events", "invoice.paid"),
        ]);
        assert_eq!(admin.post_form(LIST, &create).await.status(), 403);
    }
    assert!(app.count_events("csrf_rejected") > rejected);
    assert_eq!(app.query(webhook_endpoint::all).len(), 2);
    let unchanged = endpoint(&app, &a.public_id).unwrap();
    assert!(unchanged.enabled && unchanged.secret == a.secret);
    assert!(unchanged.previous_secret.is_none());
    assert_eq!(app.count_events("webhook_endpoint_updated"), 0);
    assert_eq!(app.count_events("webhook_endpoint_secret_rotated"), 0);
    assert_eq!(app.count_events("webhook_endpoint_deleted"), 0);

    // The address names the endpoint; another one's id in the form changes nothing of it.
    let token = admin.csrf_token(LIST).await;
    let naming_b = [
        ("csrf_token", token.as_str()),
        ("id", b.public_id.as_str()),
        ("endpoint", b.public_id.as_str()),
        ("public_id", b.public_id.as_str()),
    ];
    let path = format!("{LIST}/{}/disable", a.public_id);
    assert_eq!(admin.post_form(&path, &naming_b).await.status(), 303);
    assert!(!endpoint(&app, &a.public_id).unwrap().enabled);
    assert!(endpoint(&app, &b.public_id).unwrap().enabled, "B untouched");
    let path = format!("{LIST}/{}/delete", a.public_id);
    assert_eq!(admin.post_form(&path, &naming_b).await.status(), 303);
    assert!(endpoint(&app, &a.public_id).is_none());
    assert!(endpoint(&app, &b.public_id).is_some(), "B untouched");
    let missing = format!("{LIST}/ep_00000000000000000000000000000000/rotate");
    assert_eq!(
        admin
            .post_form(&missing, &[("csrf_token", token.as_str())])
            .await
            .status(),
        404
    );
    assert_eq!(app.count_events("webhook_endpoint_updated"), 1);
    assert_eq!(app.count_events("webhook_endpoint_deleted"), 1);
}

async fn malformed_endpoints_are_refused_with_clear_messages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let long = format!("https://hooks.example.com/{}", "a".repeat(3000));
    let cases: [(&str, &[&str], &str); 7] = [
        (
            &long,
            &["invoice.paid"],
            "The URL is too long: at most 2048 characters.",
        ),
        (
            "ftp://hooks.example.com/",
            &["invoice.paid"],
            "must start with https://",
        ),
        (
            "javascript:alert(1)",
            &["invoice.paid"],
            "must start with https://",
        ),
        (
            "https://user:DUMMYpass@hooks.example.com/",
            &["invoice.paid"],
            "Leave credentials out",
        ),
        (
            "hooks.example.com/in",
            &["invoice.paid"],
            "Enter a full URL",
        ),
        (
            "https://hooks.example.com/",
            &["invoice.paid", "user.deleted"],
            "Unknown event type “user.deleted”",
        ),
        (
            "https://hooks.example.com/",
            &[],
            "Choose at least one event type",
        ),
    ];
    for (url, events, message) in cases {
        let res = add_endpoint(&admin, url, events).await;
        assert_eq!(res.status(), 422, "{message}");
        let html = res.text().await.unwrap();
        assert!(html.contains("There is a problem"), "{message}");
        assert!(html.contains(message), "{message}: {html}");
        assert!(!html.contains("whsec_"));
    }
    let res = admin
        .submit(
            LIST,
            LIST,
            &[
                ("url", "https://hooks.example.com/"),
                ("events", "invoice.paid"),
                ("description", &"x".repeat(201)),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("200 characters or fewer")
    );
    assert!(app.query(webhook_endpoint::all).is_empty());
    assert_eq!(app.count_events("webhook_endpoint_created"), 0);
}

/// Rotates `public_id`'s secret through the confirmation page; returns the new secret.
async fn rotate(admin: &Browser, public_id: &str) -> String {
    let path = format!("{LIST}/{public_id}/rotate");
    let confirm = admin.get_text(&path).await;
    assert!(confirm.contains("Rotate secret") && !confirm.contains("whsec_"));
    let res = admin.submit(&path, &path, &[]).await;
    assert_eq!(res.status(), 200);
    shown_secret(&res.text().await.unwrap()).expect("the new secret is shown")
}

async fn a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(backend: Backend) {
    // Long enough to outlast any slow delivery; ended below by moving its end into the past.
    let overlap = Duration::from_secs(600);
    let app = TestApp::spawn_with(backend, |config| config.notify.secret_overlap = overlap).await;
    let receiver = AlertReceiver::start();
    let admin = app.signed_in_admin("admin@example.com").await;
    let user_id = app.user_id("admin@example.com");
    let (row, old) = registered(&app, &admin, &receiver.url, &["invoice.paid"]).await;
    let asked = tollgate::db::now();
    let new = rotate(&admin, &row.public_id).await;
    let answered = tollgate::db::now();
    assert_ne!(old, new);
    let rotated = endpoint(&app, &row.public_id).unwrap();
    // The previous secret signs for the configured overlap from the rotation.
    let until = rotated.previous_expires_at.unwrap();
    let overlap_chrono = chrono::Duration::from_std(overlap).unwrap();
    assert!(
        asked + overlap_chrono <= until && until <= answered + overlap_chrono,
        "{until}"
    );
    let sealed_previous = rotated.previous_secret.clone().unwrap();
    assert!(
        !contains(&sealed_previous, old.as_bytes()) && !contains(&rotated.secret, new.as_bytes())
    );
    let event = &app.events("webhook_endpoint_secret_rotated")[0];
    assert!(!event.details.contains(&old) && !event.details.contains(&new));
    let page = admin.get_text(&format!("{LIST}/{}", row.public_id)).await;
    assert!(!page.contains(&new) && page.contains("the previous secret also signs until"));

    // During the overlap: two signatures, one per secret, each verified on its own.
    assert_eq!(publish(&app, user_id, "during-overlap"), 1);
    let got = receiver.wait_for(1).await.remove(0);
    let both = got.headers["webhook-signature"].clone();
    let signatures: Vec<&str> = both.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{both}");
    let alone = |i: usize| headers(&got, Some(signatures[i]));
    assert!(verifies(&new, &got.body, &alone(0)) && !verifies(&old, &got.body, &alone(0)));
    assert!(verifies(&old, &got.body, &alone(1)) && !verifies(&new, &got.body, &alone(1)));

    // After it: the new secret only.
    let public_id = row.public_id.clone();
    let ended = app.query(move |conn| {
        use tollgate::db::schema::webhook_endpoints;
        Ok(diesel::update(
            webhook_endpoints::table.filter(webhook_endpoints::public_id.eq(public_id)),
        )
        .set(
            webhook_endpoints::previous_expires_at
                .eq(tollgate::db::now() - chrono::Duration::seconds(1)),
        )
        .execute(conn)?)
    });
    assert_eq!(ended, 1);
    assert_eq!(publish(&app, user_id, "after-overlap"), 1);
    let got = receiver.wait_for(2).await.remove(1);
    assert!(!got.headers["webhook-signature"].contains(' '));
    let signed = headers(&got, None);
    assert!(verifies(&new, &got.body, &signed) && !verifies(&old, &got.body, &signed));
    assert!(settled(&app).await.iter().all(|r| r.status == "sent"));
}

async fn disabled_endpoints_get_nothing_and_a_copied_secret_never_signs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (to_a, to_b) = (AlertReceiver::start(), AlertReceiver::start());
    let admin = app.signed_in_admin("admin@example.com").await;
    let user_id = app.user_id("admin@example.com");
    let (a, _) = registered(&app, &admin, &to_a.url, &["invoice.paid"]).await;
    let (b, _) = registered(&app, &admin, &to_b.url, &["invoice.paid"]).await;

    let page = format!("{LIST}/{}", a.public_id);
    let res = admin.submit(&page, &format!("{page}/disable"), &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(publish(&app, user_id, "while-a-is-off"), 1, "B only");
    let rows = settled(&app).await;
    assert!(
        rows.iter()
            .all(|r| r.endpoint_id == Some(b.id) && r.status == "sent")
    );
    assert_eq!(to_b.wait_for(1).await.len(), 1);
    assert!(to_a.received().is_empty());
    assert_eq!(app.events("webhook_endpoint_updated")[0].severity, "MEDIUM");

    // A's sealed secret copied onto B's row does not open there: B's deliveries die unsigned.
    let (sealed, id) = (a.secret.clone(), b.id);
    app.query(move |conn| {
        use tollgate::db::schema::webhook_endpoints;
        diesel::update(webhook_endpoints::table.find(id))
            .set(webhook_endpoints::secret.eq(sealed))
            .execute(conn)?;
        Ok(())
    });
    assert_eq!(publish(&app, user_id, "after-the-copy"), 1);
    let rows = settled(&app).await;
    let last = rows.last().unwrap();
    assert_eq!(last.status, "dead");
    assert_eq!(
        last.last_error.as_deref(),
        Some("the endpoint's secret cannot be opened")
    );
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(to_b.received().len(), 1, "nothing more reached B");
    assert!(to_a.received().is_empty());
}

async fn rotate_key_reseals_endpoint_secrets(backend: Backend) {
    use secrecy::ExposeSecret as _;
    use tollgate::secret::{decode_key, encode_base64};
    let old_key = encode_base64(&[0x22; 32]); // the test default ENCRYPTION_KEY
    let new_key = encode_base64(&[0x44; 32]);
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let (row, first) = registered(
        &app,
        &admin,
        "https://hooks.example.com/",
        &["invoice.paid"],
    )
    .await;
    let second = rotate(&admin, &row.public_id).await;

    let env = [
        ("ENCRYPTION_KEY", new_key.clone()),
        ("ENCRYPTION_KEYS_OLD", old_key),
    ];
    let (code, out, stderr) = crate::common::run(
        crate::operations::tollgate(&app.database_handle(), &env).arg("rotate-key"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.contains("webhook_endpoints.secret: re-sealed 1"),
        "{out}"
    );
    assert!(
        out.contains("webhook_endpoints.previous_secret: re-sealed 1"),
        "{out}"
    );

    // Only the new key now: both secrets still open, each in its own column.
    let keyring = tollgate::crypto::Keyring::new(&decode_key::<32>(&new_key).unwrap(), &[]);
    let resealed = endpoint(&app, &row.public_id).unwrap();
    assert_eq!(resealed.key_id, keyring.primary_id().to_string());
    assert_eq!(
        resealed.previous_key_id,
        Some(keyring.primary_id().to_string())
    );
    let secrets =
        tollgate::notify::endpoints::secrets_in_force(&keyring, &resealed, tollgate::db::now())
            .unwrap();
    let secrets: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(secrets, [second.as_str(), first.as_str()]);
}
