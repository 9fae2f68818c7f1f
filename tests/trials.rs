//! Trials without a card, the card on file and cancellation reasons, end to end against the
//! Stripe simulator: a plan's trial taken without a card ends cleanly (cancelled, no payment
//! attempt) when no card was added, and one with a card is charged once; the trial-ending
//! notice is e-mailed once; the card on file is shown masked, stored sealed to its owner, kept
//! current from Stripe's events (an older one never wins); a cancellation's reason goes to
//! Stripe and to the console's counts, and the cancel form refuses what it should.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::schema::{cancellation_feedback, payment_cards};
use tollgate::service_tokens::Scope;

use crate::common::{
    Backend, Browser, TestApp, card_form, hidden, location, plan_fields, test_keyring,
};
use crate::on_both_backends;

on_both_backends!(
    a_card_free_trial_starts_without_a_card_and_ends_cleanly_without_one,
    a_trial_with_a_card_becomes_active_and_is_charged_once,
    a_card_added_during_a_card_free_trial_keeps_the_plan_and_is_charged_once,
    the_trial_ending_notice_is_e_mailed_once,
    a_trial_without_a_card_is_an_admin_switch_that_needs_trial_days,
    the_card_on_file_is_shown_masked_and_stored_sealed_to_its_owner,
    a_card_updated_in_the_portal_updates_the_account_page,
    rotate_key_re_seals_the_card_on_file,
    an_older_payment_method_event_never_overwrites_a_newer_card,
    a_cancellation_reason_goes_to_stripe_and_the_console_counts_it,
    the_cancel_form_refuses_bad_reasons_forged_requests_and_other_accounts,
    a_trial_is_offered_once_never_again_after_it_ended,
    a_removed_card_is_never_brought_back_by_an_older_event,
);

/// The admin creates `name` (`slug`) at $25.00 a month with a 14-day trial, taken without a
/// card when `without_card`.
async fn create_trial_plan(admin: &Browser, name: &str, slug: &str, without_card: bool) {
    let mut fields = plan_fields(name, slug, "2500");
    fields.retain(|(field, _)| *field != "trial_days");
    fields.push(("trial_days", "14"));
    if without_card {
        fields.push(("trial_without_card", "on"));
    }
    let res = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &fields)
        .await;
    assert_eq!(res.status(), 303, "the plan is created");
}

/// The customer chooses `slug`; the simulator's Checkout Session and its page's address.
async fn checkout(app: &TestApp, customer: &Browser, slug: &str) -> (Value, String) {
    let res = customer.choose_plan(slug).await;
    assert_eq!(res.status(), 303);
    let url = location(&res);
    let id = url.rsplit('/').next().unwrap().to_owned();
    let session = app.stripe_get(&format!("/v1/checkout/sessions/{id}")).await;
    (session, url)
}

/// Posts the hosted Checkout form with `form`, following Stripe's redirect back to the
/// success page.
async fn complete_checkout(customer: &Browser, url: &str, form: &[(&str, String)]) {
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "Checkout completes");
    let success = location(&res);
    let page = customer
        .get(success.trim_start_matches(&customer.base))
        .await;
    assert_eq!(page.status(), 200);
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

async fn entitlements(app: &TestApp, user_id: i64) -> Value {
    let name = format!(
        "gate-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let token = app.service_token(&name, &[Scope::EntitlementsRead]);
    app.internal_get(&format!("entitlements/{user_id}"), &token)
        .await
        .json()
        .await
        .unwrap()
}

async fn a_card_free_trial_starts_without_a_card_and_ends_cleanly_without_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    create_trial_plan(&admin, "Starter", "starter", true).await;
    let customer = app.signed_in_customer("cardless@example.com").await;
    let user_id = app.user_id("cardless@example.com");

    let (session, url) = checkout(&app, &customer, "starter").await;
    assert_eq!(session["payment_method_collection"], "if_required");
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(page.contains("No card needed"), "{page}");
    // Nothing typed in the card fields: the trial starts without a card.
    complete_checkout(&customer, &url, &[]).await;
    app.settle().await;

    let sub_id = app.subscription_id(user_id);
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["status"], "trialing");
    assert_eq!(
        at_stripe["trial_settings"]["end_behavior"]["missing_payment_method"],
        "cancel"
    );
    assert_eq!(app.subscription_status(user_id), "trialing");
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("Trial ends") && account.contains("No card on file"),
        "{account}"
    );
    assert_eq!(entitlements(&app, user_id).await["active"], true);

    // The trial ends with no card: Stripe cancels, never tries to charge.
    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub_id}/end_trial"))
            .await,
        200
    );
    app.settle().await;
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["status"], "canceled");
    assert!(at_stripe["cancellation_details"]["reason"].is_string());
    let events = app.stripe_events().await;
    for kind in [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
    ] {
        assert!(events_of(&events, kind).is_empty(), "no {kind}");
    }
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "invoice.paid")
            .all(|e| e["data"]["object"]["amount_paid"] == 0),
        "only the trial's $0 invoice"
    );
    assert_eq!(app.subscription_status(user_id), "canceled");
    let after = entitlements(&app, user_id).await;
    assert_eq!(after["active"], false);
    assert_eq!(after["entitlements"], json!([]));
    let emails = app.settled_notifications("email").await;
    let canceled: Vec<_> = emails
        .iter()
        .filter(|r| r.event_type == "subscription_canceled")
        .collect();
    assert_eq!(canceled.len(), 1, "{emails:#?}");
    // Delivered again, the end changes nothing and tells nobody twice.
    let deleted = events_of(&events, "customer.subscription.deleted")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.sim_control(&format!("/_sim/events/{deleted}/redeliver"))
        .await;
    app.settle().await;
    let emails = app.settled_notifications("email").await;
    assert_eq!(
        emails
            .iter()
            .filter(|r| r.event_type == "subscription_canceled")
            .count(),
        1
    );
}

async fn a_trial_with_a_card_becomes_active_and_is_charged_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    create_trial_plan(&admin, "Pro", "pro", false).await;
    let customer = app.signed_in_customer("carded@example.com").await;
    let user_id = app.user_id("carded@example.com");

    let (session, url) = checkout(&app, &customer, "pro").await;
    assert_eq!(session["payment_method_collection"], "always");
    // A plan whose trial needs a card refuses an empty card form.
    let refused = reqwest::Client::new()
        .post(&url)
        .form(&[("card_number", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    complete_checkout(&customer, &url, &card_form("4242 4242 4242 4242")).await;
    app.settle().await;
    assert_eq!(app.subscription_status(user_id), "trialing");

    let sub_id = app.subscription_id(user_id);
    for _ in 0..2 {
        assert_eq!(
            app.sim_control(&format!("/_sim/subscriptions/{sub_id}/end_trial"))
                .await,
            200
        );
    }
    app.settle().await;
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["status"], "active");
    let events = app.stripe_events().await;
    let charged = events_of(&events, "payment_intent.succeeded");
    assert_eq!(charged.len(), 1, "charged once");
    assert_eq!(charged[0]["data"]["object"]["amount"], 2500);
    assert!(events_of(&events, "payment_intent.payment_failed").is_empty());
    assert_eq!(app.subscription_status(user_id), "active");
    let after = entitlements(&app, user_id).await;
    assert_eq!(after["active"], true);
    assert_eq!(after["plan"], "pro");
}

async fn a_card_added_during_a_card_free_trial_keeps_the_plan_and_is_charged_once(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    create_trial_plan(&admin, "Starter", "starter", true).await;
    let customer = app.signed_in_customer("converts@example.com").await;
    let user_id = app.user_id("converts@example.com");
    let (_, url) = checkout(&app, &customer, "starter").await;
    complete_checkout(&customer, &url, &[]).await;
    app.settle().await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("Add one before your trial ends") && account.contains("Add a card"),
        "{account}"
    );

    // "Add a card" leads to the portal, where the customer saves one.
    let res = customer
        .submit_operation("/account", "/billing/portal", &[])
        .await;
    let portal = location(&res);
    let saved = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{portal}/card"))
        .form(&card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    app.settle().await;
    account_shows(&customer, "•••• 4242").await;

    let sub_id = app.subscription_id(user_id);
    app.sim_control(&format!("/_sim/subscriptions/{sub_id}/end_trial"))
        .await;
    app.settle().await;
    assert_eq!(app.subscription_status(user_id), "active");
    let events = app.stripe_events().await;
    assert_eq!(events_of(&events, "payment_intent.succeeded").len(), 1);
    assert_eq!(entitlements(&app, user_id).await["active"], true);
}

async fn the_trial_ending_notice_is_e_mailed_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    create_trial_plan(&admin, "Starter", "starter", true).await;
    let customer = app.signed_in_customer("notice@example.com").await;
    let user_id = app.user_id("notice@example.com");
    let (_, url) = checkout(&app, &customer, "starter").await;
    complete_checkout(&customer, &url, &[]).await;
    app.settle().await;
    let sub_id = app.subscription_id(user_id);

    let res = reqwest::Client::new()
        .post(format!(
            "{}/_sim/subscriptions/{sub_id}/trial_will_end",
            app.stripe
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let event: Value = res.json().await.unwrap();
    let event_id = event["event"].as_str().unwrap().to_owned();
    app.settle().await;
    // Stripe delivers at least once: a second delivery of the notice is no second e-mail.
    app.sim_control(&format!("/_sim/events/{event_id}/redeliver"))
        .await;
    app.settle().await;
    let emails = app.settled_notifications("email").await;
    let notices: Vec<_> = emails
        .iter()
        .filter(|r| r.event_type == "trial_ending")
        .collect();
    assert_eq!(notices.len(), 1, "{emails:#?}");
    assert_eq!(notices[0].recipient, "notice@example.com");
    let message: Value = serde_json::from_str(&notices[0].payload).unwrap();
    assert_eq!(message["plan"], "Starter");
    assert!(message["trial_end"].is_string());
}

async fn a_trial_without_a_card_is_an_admin_switch_that_needs_trial_days(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let form = admin.get_text("/admin/plans/new").await;
    assert!(form.contains("Trial without a card"), "{form}");
    let mut fields = plan_fields("Free trial", "free-trial", "2500");
    fields.push(("trial_without_card", "on"));
    let refused = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &fields)
        .await;
    assert_eq!(refused.status(), 422, "no trial days, no card-free trial");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("A trial without a card needs trial days")
    );

    create_trial_plan(&admin, "Starter", "starter", true).await;
    create_trial_plan(&admin, "Pro", "pro", false).await;
    let list = admin.get_text("/admin/plans").await;
    assert_eq!(list.matches("no card").count(), 1, "{list}");
    // The switch is shown on the edit form and can be turned off.
    let id: i64 = app.query(|conn| {
        use tollgate::db::schema::plans;
        Ok(plans::table
            .filter(plans::slug.eq("starter"))
            .select(plans::id)
            .first(conn)?)
    });
    let edit = admin.get_text(&format!("/admin/plans/{id}/edit")).await;
    assert!(
        edit.contains(r#"name="trial_without_card" type="checkbox" value="on" checked"#),
        "{edit}"
    );
    let mut fields = plan_fields("Starter", "starter", "2500");
    fields.retain(|(field, _)| *field != "trial_days");
    fields.push(("trial_days", "14"));
    let res = admin
        .submit_operation(
            &format!("/admin/plans/{id}/edit"),
            &format!("/admin/plans/{id}"),
            &fields,
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        admin
            .get_text("/admin/plans")
            .await
            .matches("no card")
            .count(),
        0
    );
    let customer = app.signed_in_customer("buyer@example.com").await;
    let (session, _) = checkout(&app, &customer, "starter").await;
    assert_eq!(session["payment_method_collection"], "always");
    // Customers cannot change plans.
    let res = customer
        .post_form(&format!("/admin/plans/{id}"), &fields)
        .await;
    assert_eq!(res.status(), 403);
}

fn sealed_card(app: &TestApp, user_id: i64) -> Vec<u8> {
    app.query(|conn| {
        Ok(payment_cards::table
            .find(user_id)
            .select(payment_cards::card_sealed)
            .first(conn)?)
    })
}

/// Waits (up to 10 s) until the account page contains `text`.
async fn account_shows(customer: &Browser, text: &str) -> String {
    let mut page = String::new();
    for _ in 0..200 {
        page = customer.get_text("/account").await;
        if page.contains(text) {
            return page;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the account page never showed {text}: {page}");
}

async fn the_card_on_file_is_shown_masked_and_stored_sealed_to_its_owner(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("owner@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("owner@example.com");
    let account = account_shows(&customer, "•••• 4242").await;
    assert!(
        account.contains("Visa") && account.contains("Expires 12/2034"),
        "{account}"
    );
    assert!(
        !account.contains("4242 4242") && !account.contains("424242"),
        "only the last 4"
    );
    assert!(account.contains("Update card"), "{account}");

    let sealed = sealed_card(&app, user_id);
    assert!(
        !sealed.windows(4).any(|w| w == b"4242"),
        "the last 4 are not stored in clear"
    );
    let keyring = test_keyring();
    let opened = keyring
        .open(&sealed, &tollgate::billing::cards::card_aad(user_id.into()))
        .unwrap();
    let card: Value = serde_json::from_slice(&opened).unwrap();
    let mut fields: Vec<&String> = card.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["brand", "exp_month", "exp_year", "last4", "payment_method"],
        "never more than Stripe's masked fields"
    );

    // The ciphertext copied to another account opens for nobody there.
    let other = app.signed_in_customer("other@example.com").await;
    let other_id = app.user_id("other@example.com");
    assert!(
        keyring
            .open(
                &sealed,
                &tollgate::billing::cards::card_aad(other_id.into())
            )
            .is_err()
    );
    app.query(|conn| {
        let row: (Vec<u8>, String) = payment_cards::table
            .find(user_id)
            .select((payment_cards::card_sealed, payment_cards::key_id))
            .first(conn)?;
        let now = chrono::Utc::now().naive_utc();
        diesel::insert_into(payment_cards::table)
            .values((
                payment_cards::user_id.eq(other_id),
                payment_cards::card_sealed.eq(row.0),
                payment_cards::key_id.eq(row.1),
                payment_cards::stripe_updated_at.eq(now),
                payment_cards::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    });
    let page = other.get_text("/account").await;
    assert!(!page.contains("4242"), "{page}");
}

async fn a_card_updated_in_the_portal_updates_the_account_page(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("updater@example.com").await;
    app.subscribe(&customer, "pro").await;
    account_shows(&customer, "•••• 4242").await;

    let res = customer
        .submit_operation("/account", "/billing/portal", &[])
        .await;
    assert_eq!(res.status(), 303);
    let portal = location(&res);
    let sim = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = sim.get(&portal).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Update card"), "{page}");
    let declined = sim
        .post(format!("{portal}/card"))
        .form(&card_form("4000 0000 0000 0002"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402, "a declined card is not saved");
    let saved = sim
        .post(format!("{portal}/card"))
        .form(&card_form("5555 5555 5555 4444"))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    app.settle().await;
    let account = account_shows(&customer, "•••• 4444").await;
    assert!(account.contains("Mastercard"), "{account}");
    assert!(!account.contains("•••• 4242"), "the old card is gone");
    let events = app.stripe_events().await;
    assert_eq!(events_of(&events, "payment_method.attached").len(), 2);
    assert_eq!(events_of(&events, "payment_method.detached").len(), 1);
}

/// A `payment_method.*` event as Stripe sends it, `created` at `created`.
fn card_event(id: &str, kind: &str, object: &Value, created: i64) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2026-09-30.endive", "created": created,
        "data": { "object": object }, "livemode": false, "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null }, "type": kind,
    })
}

async fn an_older_payment_method_event_never_overwrites_a_newer_card(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("ordered@example.com").await;
    app.subscribe(&customer, "pro").await;
    account_shows(&customer, "•••• 4242").await;
    app.settle().await;
    let events = app.stripe_events().await;
    let attached = events_of(&events, "payment_method.attached")[0];
    let created = attached["created"].as_i64().unwrap();
    let mut older = attached["data"]["object"].clone();
    older["id"] = json!("pm_1OlderCard");
    older["card"]["last4"] = json!("1881");
    older["card"]["brand"] = json!("amex");

    // An event from before the card on file: acknowledged, not applied.
    app.assert_webhook_accepted(&card_event(
        "evt_1OlderCardEvent",
        "payment_method.updated",
        &older,
        created - 60,
    ))
    .await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("•••• 4242") && !account.contains("1881"),
        "{account}"
    );
    // A detach of a card that is not the one on file removes nothing.
    app.assert_webhook_accepted(&card_event(
        "evt_1DetachOther",
        "payment_method.detached",
        &json!({ "id": "pm_1OlderCard", "object": "payment_method", "customer": null,
                 "card": older["card"].clone(), "type": "card" }),
        created + 30,
    ))
    .await;
    assert!(customer.get_text("/account").await.contains("•••• 4242"));
    // A newer one wins.
    app.assert_webhook_accepted(&card_event(
        "evt_1NewerCardEvent",
        "payment_method.updated",
        &older,
        created + 60,
    ))
    .await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("American Express") && account.contains("•••• 1881"),
        "{account}"
    );
    // Malformed card details are never stored or shown.
    let mut bad = older.clone();
    bad["card"]["last4"] = json!("<b>12345678</b>");
    app.assert_webhook_accepted(&card_event(
        "evt_1MalformedCard",
        "payment_method.updated",
        &bad,
        created + 120,
    ))
    .await;
    assert!(customer.get_text("/account").await.contains("•••• 1881"));
}

fn feedback_rows(app: &TestApp) -> Vec<(String, Option<String>, Option<String>)> {
    app.query(|conn| {
        Ok(cancellation_feedback::table
            .select((
                cancellation_feedback::stripe_subscription_id,
                cancellation_feedback::feedback,
                cancellation_feedback::comment,
            ))
            .load(conn)?)
    })
}

async fn a_cancellation_reason_goes_to_stripe_and_the_console_counts_it(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("leaver@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("leaver@example.com");
    let sub_id = app.subscription_id(user_id);

    let page = customer.get_text("/billing/subscription/cancel").await;
    for value in [
        "customer_service",
        "low_quality",
        "missing_features",
        "other",
        "switched_service",
        "too_complex",
        "too_expensive",
        "unused",
    ] {
        assert!(
            page.contains(&format!(r#"name="feedback" type="radio" value="{value}""#)),
            "{value}: {page}"
        );
    }
    let op = hidden(&page, "operation_id");
    let fields = [
        ("operation_id", op.as_str()),
        ("feedback", "too_expensive"),
        ("comment", "<script>alert(1)</script> cheaper elsewhere"),
    ];
    let res = customer
        .submit(
            "/billing/subscription/cancel",
            "/billing/subscription/cancel",
            &fields,
        )
        .await;
    assert_eq!(location(&res), "/account");
    // The same form again (a double submit) records the reason once.
    let again = customer
        .submit("/account", "/billing/subscription/cancel", &fields)
        .await;
    assert_eq!(again.status(), 303);

    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], true);
    assert_eq!(
        at_stripe["cancellation_details"]["feedback"],
        "too_expensive"
    );
    assert_eq!(
        at_stripe["cancellation_details"]["comment"],
        "<script>alert(1)</script> cheaper elsewhere"
    );
    assert_eq!(
        feedback_rows(&app),
        [(
            sub_id.clone(),
            Some("too_expensive".to_owned()),
            Some("<script>alert(1)</script> cheaper elsewhere".to_owned())
        )]
    );
    let audit = app.events("subscription_cancel_requested");
    assert_eq!(audit.len(), 1);
    assert!(
        audit[0].details.contains("too_expensive"),
        "{}",
        audit[0].details
    );

    // A second customer leaves without saying why.
    let quiet = app.signed_in_customer("quiet@example.com").await;
    app.subscribe(&quiet, "pro").await;
    let res = quiet
        .submit_operation("/account", "/billing/subscription/cancel", &[])
        .await;
    assert_eq!(location(&res), "/account");
    assert_eq!(feedback_rows(&app).len(), 1, "no reason, nothing to count");

    let console = admin.get_text("/admin/cancellations").await;
    assert!(
        console.contains("It&#39;s too expensive") || console.contains("It&#x27;s too expensive"),
        "{console}"
    );
    assert!(
        console.contains(r#"data-reason="too_expensive">1<"#),
        "{console}"
    );
    assert!(console.contains("leaver@example.com"), "{console}");
    assert!(
        (console.contains("&#60;script&#62;") || console.contains("&lt;script&gt;"))
            && !console.contains("<script>alert"),
        "comments are escaped: {console}"
    );
    assert_eq!(customer.get("/admin/cancellations").await.status(), 403);

    // Resume is possible until the period ends.
    let res = customer
        .submit_operation("/account", "/billing/subscription/resume", &[])
        .await;
    assert_eq!(location(&res), "/account");
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], false);
    assert_eq!(app.subscription_status(user_id), "active");
    assert!(
        customer
            .get_text("/account")
            .await
            .contains(r#"href="/billing/subscription/cancel">Cancel subscription</a>"#)
    );
}

async fn the_cancel_form_refuses_bad_reasons_forged_requests_and_other_accounts(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("target@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("target@example.com");
    let sub_id = app.subscription_id(user_id);
    let page = "/billing/subscription/cancel";

    let op = hidden(&customer.get_text(page).await, "operation_id");
    let res = customer
        .submit(
            page,
            page,
            &[("operation_id", &op), ("feedback", "because")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Choose one of the listed reasons")
    );
    let long = "x".repeat(501);
    let res = customer
        .submit(page, page, &[("operation_id", &op), ("comment", &long)])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("500 characters"));
    let huge = "x".repeat(200_000);
    let res = customer
        .submit(page, page, &[("operation_id", &op), ("comment", &huge)])
        .await;
    assert_eq!(res.status(), 413);
    // No CSRF token, or a forged one.
    let res = customer.post_form(page, &[("operation_id", &op)]).await;
    assert_eq!(res.status(), 403);
    let res = customer
        .post_form(page, &[("operation_id", &op), ("csrf_token", "forged")])
        .await;
    assert_eq!(res.status(), 403);
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(
        at_stripe["cancel_at_period_end"], false,
        "nothing was cancelled"
    );
    assert!(feedback_rows(&app).is_empty());

    // The owner cancels with this form's operation id; another account can only ever reach
    // its own subscription: the id is refused, and with its own it has nothing to cancel.
    let res = customer
        .submit(page, page, &[("operation_id", &op), ("feedback", "unused")])
        .await;
    assert_eq!(location(&res), "/account");
    let attacker = app.signed_in_customer("attacker@example.com").await;
    let stolen = attacker
        .submit(
            "/account",
            page,
            &[("operation_id", &op), ("feedback", "other")],
        )
        .await;
    assert_eq!(stolen.status(), 409, "another account's operation id");
    let mine = hidden(&attacker.get_text("/pricing").await, "operation_id");
    let res = attacker
        .submit(
            "/account",
            page,
            &[("operation_id", &mine), ("feedback", "other")],
        )
        .await;
    assert_eq!(location(&res), "/account");
    assert_eq!(
        attacker.get("/billing/subscription/cancel").await.status(),
        303,
        "nothing of theirs to cancel"
    );
    let rows = feedback_rows(&app);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, sub_id);
    assert_eq!(rows[0].1.as_deref(), Some("unused"));
}

async fn rotate_key_re_seals_the_card_on_file(backend: Backend) {
    use tollgate::secret::{decode_key, encode_base64};
    let old = encode_base64(&[0x22; 32]); // the test default ENCRYPTION_KEY
    let new = encode_base64(&[0x44; 32]);
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("rotated@example.com").await;
    app.subscribe(&customer, "pro").await;
    account_shows(&customer, "•••• 4242").await;
    let user_id = app.user_id("rotated@example.com");
    let before = sealed_card(&app, user_id);

    let env = [
        ("ENCRYPTION_KEY", new.clone()),
        ("ENCRYPTION_KEYS_OLD", old.clone()),
    ];
    let handle = app.database_handle();
    let (code, out, err) =
        crate::common::run(crate::operations::tollgate(&handle, &env).arg("rotate-key"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("payment_cards.card_sealed: re-sealed 1"),
        "{out}"
    );
    assert_ne!(sealed_card(&app, user_id), before);

    // A server with only the new key still shows the card.
    let after = TestApp::spawn_on(app.database_handle(), backend, |config| {
        config.secrets.encryption_key = decode_key::<32>(&new).unwrap();
    })
    .await;
    let browser = after.browser();
    assert_eq!(
        browser
            .login("rotated@example.com", crate::common::PASSWORD)
            .await
            .status(),
        303
    );
    account_shows(&browser, "•••• 4242").await;
}

async fn a_trial_is_offered_once_never_again_after_it_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    create_trial_plan(&admin, "Starter", "starter", true).await;
    let customer = app.signed_in_customer("again@example.com").await;
    let user_id = app.user_id("again@example.com");

    let confirm = customer
        .get_text("/billing/checkout?plan=starter&interval=month")
        .await;
    assert!(confirm.contains("14-day free trial"), "{confirm}");
    let (session, url) = checkout(&app, &customer, "starter").await;
    assert_eq!(session["payment_method_collection"], "if_required");
    complete_checkout(&customer, &url, &[]).await;
    app.settle().await;
    let sub_id = app.subscription_id(user_id);
    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub_id}/end_trial"))
            .await,
        200
    );
    app.settle().await;
    assert_eq!(app.subscription_status(user_id), "canceled");

    // Back for another free month: no trial is offered, Checkout asks for a card and charges
    // from the start.
    let confirm = customer
        .get_text("/billing/checkout?plan=starter&interval=month")
        .await;
    assert!(
        confirm.contains("Starter") && !confirm.contains("free trial"),
        "{confirm}"
    );
    let (session, url) = checkout(&app, &customer, "starter").await;
    assert_eq!(session["payment_method_collection"], "always");
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        !page.contains("days free") && !page.contains("No card needed"),
        "{page}"
    );
    assert!(page.contains("Pay with card"), "{page}");
}

async fn a_removed_card_is_never_brought_back_by_an_older_event(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("removed@example.com").await;
    app.subscribe(&customer, "pro").await;
    account_shows(&customer, "•••• 4242").await;
    app.settle().await;
    let events = app.stripe_events().await;
    let attached = events_of(&events, "payment_method.attached")[0].clone();
    let created = attached["created"].as_i64().unwrap();
    let card = attached["data"]["object"].clone();
    let customer_id = card["customer"].clone();

    // Removed at Stripe: the detached object no longer names its customer, the event does.
    let mut detached_card = card.clone();
    detached_card["customer"] = Value::Null;
    let mut detached = card_event(
        "evt_1CardDetached",
        "payment_method.detached",
        &detached_card,
        created + 60,
    );
    detached["data"]["previous_attributes"] = json!({ "customer": customer_id });
    app.assert_webhook_accepted(&detached).await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("No card on file") && !account.contains("4242"),
        "{account}"
    );

    // An update of that card from before its removal arrives late: it stays removed.
    app.assert_webhook_accepted(&card_event(
        "evt_1LateCardUpdate",
        "payment_method.updated",
        &card,
        created + 30,
    ))
    .await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("No card on file") && !account.contains("4242"),
        "{account}"
    );

    // A card added after the removal is shown.
    let mut newer = card.clone();
    newer["id"] = json!("pm_1NewCardAfter");
    newer["card"]["last4"] = json!("4444");
    newer["card"]["brand"] = json!("mastercard");
    app.assert_webhook_accepted(&card_event(
        "evt_1NewCardAfter",
        "payment_method.attached",
        &newer,
        created + 90,
    ))
    .await;
    let account = customer.get_text("/account").await;
    assert!(account.contains("•••• 4444"), "{account}");
}
