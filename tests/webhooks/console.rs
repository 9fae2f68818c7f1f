//! The admin console: failed events listed and reprocessed once, by admins only; payloads
//! sealed at rest (bound to their row) and shown decrypted but masked.

use diesel::prelude::*;
use serde_json::Value;
use tollgate::db::schema::webhook_events;

use super::{admin_and_customer, checkout_for, status_of, stored, subscription};
use crate::common::{Backend, Browser, PASSWORD, TestApp, captured_logs, location, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    a_failed_event_is_reprocessed_once_by_an_admin,
    payloads_are_sealed_at_rest_and_shown_masked,
);

async fn a_failed_event_is_reprocessed_once_by_an_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (admin, user_id) = admin_and_customer(&app).await;
    // The subscription arrives before anything links its customer: stored, failed, kept.
    let early = stripe_event("customer.subscription.created", "evt_1EarlySub");
    app.assert_webhook_accepted(&early).await;
    let early = stored(&app, "evt_1EarlySub").unwrap();
    assert_eq!(early.status, "failed");
    let reason = early.last_error.unwrap();
    assert!(
        reason.contains("unknown customer") && !reason.contains("cus_FixtureCustomer01"),
        "{reason}"
    );
    assert!(subscription(&app, "sub_1FixtureSubscription").is_none());
    the_failed_list_shows_it(&admin).await;

    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1LateCheckout"))
        .await;
    let detail = format!("/admin/webhooks/{}", early.id);
    let action = format!("{detail}/reprocess");
    let page = admin.get_text(&detail).await;
    assert!(
        page.contains("Reprocess") && page.contains("unknown customer"),
        "{page}"
    );
    only_an_admin_with_a_token_reprocesses(&app, &admin, &action).await;

    let res = admin.submit(&detail, &action, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), detail);
    let after = stored(&app, "evt_1EarlySub").unwrap();
    assert_eq!(
        (after.status.as_str(), after.attempts, after.last_error),
        ("applied", 2, None)
    );
    let sub = subscription(&app, "sub_1FixtureSubscription").unwrap();
    assert_eq!(sub.0, "active");
    let page = admin.get_text(&detail).await;
    let said = page.contains("The event was reprocessed: applied.");
    assert!(said, "{page}");
    let button = page.contains(&format!("{action}\""));
    assert!(!button, "no button once applied");
    let audit = app.events("webhook_reprocessed");
    assert_eq!(audit.len(), 1);
    let admin_id = app.user_id("admin@example.com");
    let by = format!("admin:{admin_id}");
    assert_eq!(audit[0].actor.as_deref(), Some(by.as_str()));
    reprocessing_again_changes_nothing(&app, &admin, &detail, &action).await;
}

/// The failed event is listed under "failed", not under "applied"; a bogus filter is refused.
async fn the_failed_list_shows_it(admin: &Browser) {
    let list = admin.get_text("/admin/webhooks?status=failed").await;
    assert!(
        list.contains("customer.subscription.created") && list.contains("evt_1EarlySub"),
        "{list}"
    );
    let applied = admin.get_text("/admin/webhooks?status=applied").await;
    assert!(!applied.contains("evt_1EarlySub"));
    let bogus = admin.get("/admin/webhooks?status=bogus").await;
    assert_eq!(bogus.status(), 400);
}

/// Without the CSRF token, or as a customer (even with their own valid token): refused, and
/// nothing changes.
async fn only_an_admin_with_a_token_reprocesses(app: &TestApp, admin: &Browser, action: &str) {
    let res = admin.post_form(action, &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(status_of(app, "evt_1EarlySub"), "failed");
    let customer = app.browser();
    customer.login("jenny@example.com", PASSWORD).await;
    let token = customer.csrf_token("/account").await;
    let res = customer.post_form(action, &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(status_of(app, "evt_1EarlySub"), "failed");
}

/// Again (a double submit, or another admin): nothing happens twice; an unknown event is 404.
async fn reprocessing_again_changes_nothing(
    app: &TestApp,
    admin: &Browser,
    detail: &str,
    action: &str,
) {
    let token = admin.csrf_token(detail).await;
    let res = admin.post_form(action, &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 303);
    let page = admin.get_text(detail).await;
    assert!(page.contains("Only failed events are reprocessed"));
    assert_eq!(stored(app, "evt_1EarlySub").unwrap().attempts, 2);
    assert_eq!(app.count_events("webhook_reprocessed"), 1);
    let unknown = "/admin/webhooks/999999/reprocess";
    let res = admin.post_form(unknown, &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 404);
}

async fn payloads_are_sealed_at_rest_and_shown_masked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (admin, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1MaskCheckout"))
        .await;
    let payment = stripe_event("payment_intent.payment_failed", "evt_1MaskPayment");
    app.assert_webhook_accepted(&payment).await;

    let sealed: Vec<Vec<u8>> = app.query(|conn| {
        Ok(webhook_events::table
            .order(webhook_events::id.asc())
            .select(webhook_events::payload_sealed)
            .load(conn)?)
    });
    for payload in &sealed {
        let raw = String::from_utf8_lossy(payload);
        assert!(
            !raw.contains("jenny.rosen")
                && !raw.contains("evt_1Mask")
                && !raw.contains("Xt5EWLLDS7FJjR1c")
        );
    }

    let list = admin.get_text("/admin/webhooks").await;
    for shown in [
        "checkout.session.completed",
        "payment_intent.payment_failed",
        "applied",
        "evt_1MaskPayment",
    ] {
        assert!(list.contains(shown), "{shown} in {list}");
    }
    let checkout = stored(&app, "evt_1MaskCheckout").unwrap().id;
    let payment = stored(&app, "evt_1MaskPayment").unwrap().id;
    details_show_payloads_masked(&admin, checkout, payment).await;
    only_admins_see_payloads(&app, &admin, payment).await;
    a_payload_moved_to_another_row_does_not_open(&app, &admin, checkout, payment).await;
}

/// Each detail page shows the whole payload, decrypted, with personal data and secrets masked.
async fn details_show_payloads_masked(admin: &Browser, checkout: i64, payment: i64) {
    let page = admin.get_text(&format!("/admin/webhooks/{checkout}")).await;
    let shown = payload_shown(&page);
    assert_eq!(
        shown["id"], "evt_1MaskCheckout",
        "the whole payload, decrypted"
    );
    let details = &shown["data"]["object"]["customer_details"];
    assert_eq!(
        (details["email"].as_str(), details["phone"].as_str()),
        (Some("j***n@example.com"), Some("***"))
    );
    assert!(!page.contains("jenny.rosen@") && !page.contains("+15555550100"));
    let page = admin.get_text(&format!("/admin/webhooks/{payment}")).await;
    let text = payload_shown(&page).to_string();
    assert!(text.contains(r#""last4":"************0002""#), "{text}");
    assert!(
        text.contains(r#""exp_year":"***""#) && text.contains(r#""client_secret":"***""#),
        "{text}"
    );
    for hidden in ["Xt5EWLLDS7FJjR1c", "secret_DUMMYfixture", "jenny.rosen@"] {
        assert!(!page.contains(hidden), "{hidden} is shown");
    }
}

/// Not for customers; anonymous visitors are sent to sign in; an unknown event is 404.
async fn only_admins_see_payloads(app: &TestApp, admin: &Browser, payment: i64) {
    let customer = app.browser();
    customer.login("jenny@example.com", PASSWORD).await;
    assert_eq!(customer.get("/admin/webhooks").await.status(), 403);
    let detail = customer.get(&format!("/admin/webhooks/{payment}")).await;
    assert_eq!(detail.status(), 403);
    let res = app.browser().get("/admin/webhooks").await;
    assert!(
        location(&res).starts_with("/login?next="),
        "{}",
        location(&res)
    );
    assert_eq!(admin.get("/admin/webhooks/999999").await.status(), 404);
}

/// The payload is bound to its event: copied onto another row it no longer opens.
async fn a_payload_moved_to_another_row_does_not_open(
    app: &TestApp,
    admin: &Browser,
    from: i64,
    to: i64,
) {
    app.query(move |conn| {
        let payload: Vec<u8> = webhook_events::table
            .find(from)
            .select(webhook_events::payload_sealed)
            .first(conn)?;
        diesel::update(webhook_events::table.find(to))
            .set(webhook_events::payload_sealed.eq(payload))
            .execute(conn)?;
        Ok(())
    });
    let res = admin.get(&format!("/admin/webhooks/{to}")).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("cannot be decrypted") && !page.contains("j***n@example.com"),
        "{page}"
    );
    assert!(captured_logs().contains("a stored webhook payload cannot be opened"));
}

/// The payload a detail page shows, parsed back from its (HTML-escaped) `<pre>`.
fn payload_shown(html: &str) -> Value {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("pre.payload code").unwrap();
    let text: String = document
        .select(&selector)
        .next()
        .expect("a payload")
        .text()
        .collect();
    serde_json::from_str(&text).unwrap()
}
