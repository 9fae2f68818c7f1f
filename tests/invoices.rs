//! Invoices and past due, end to end against the Stripe simulator: the local invoice list kept
//! by `invoice.*` webhooks (the owner's alone, never moved back by a late event), the past-due
//! banner on every signed-in page, entitlements through the grace and after it, paying on
//! Stripe's hosted invoice page, and cancelling a past-due subscription.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::schema::{invoices, plan_past_due_grace, plans, subscriptions};
use tollgate::service_tokens::Scope;

use crate::common::{Backend, Browser, TestApp, card_form, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    invoices_are_listed_after_checkout_and_renewal,
    only_the_owner_sees_their_invoices,
    a_late_payment_failure_never_reopens_a_paid_invoice,
    a_failed_renewal_shows_a_banner_on_every_signed_in_page,
    entitlements_last_the_grace_then_report_past_due_and_paying_restores_them,
    the_grace_is_the_configured_default,
    an_admin_sets_a_plans_own_grace,
    cancelling_a_past_due_subscription_stops_payment_attempts,
    cancelling_after_paying_at_stripe_keeps_the_paid_period,
    past_due_without_a_known_failed_invoice_still_ends_after_the_grace,
    same_second_invoice_events_in_the_wrong_order_are_settled_by_stripe,
);

/// The invoices stored for `user_id`: (Stripe id, status).
fn stored(app: &TestApp, user_id: i64) -> Vec<(String, String)> {
    app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::user_id.eq(user_id))
            .order(invoices::id.asc())
            .select((invoices::stripe_invoice_id, invoices::status))
            .load(conn)?)
    })
}

/// Waits (up to 15 s) until `done` holds of the stored state.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A customer `email` subscribed to Pro; their user id and Stripe subscription id.
async fn subscribed(app: &TestApp, email: &str) -> (Browser, i64, String) {
    let customer = app.signed_in_customer(email).await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id(email);
    let sub: String = app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::user_id.eq(user_id))
            .select(subscriptions::stripe_subscription_id)
            .first(conn)?)
    });
    until("the first invoice", || stored(app, user_id).len() == 1).await;
    (customer, user_id, sub)
}

/// Renews the subscription at the simulator (`paid` or `failed`); the new invoice's id.
async fn renew(app: &TestApp, sub: &str, outcome: &str) -> String {
    let res: Value = reqwest::Client::new()
        .post(format!(
            "{}/_sim/subscriptions/{sub}/renew?outcome={outcome}",
            app.stripe
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["subscription"]["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A failed renewal, applied: the open invoice's id once its failure is stored.
async fn failed_renewal(app: &TestApp, user_id: i64, sub: &str) -> String {
    let invoice = renew(app, sub, "failed").await;
    let id = invoice.clone();
    until("the failed invoice and the past-due subscription", || {
        let id = id.clone();
        let (failed, status): (Option<NaiveDateTime>, String) = app.query(move |conn| {
            let failed = invoices::table
                .filter(invoices::stripe_invoice_id.eq(&id))
                .select(invoices::payment_failed_at)
                .first::<Option<NaiveDateTime>>(conn)
                .optional()?
                .flatten();
            let status = subscriptions::table
                .filter(subscriptions::user_id.eq(user_id))
                .select(subscriptions::status)
                .first(conn)?;
            Ok((failed, status))
        });
        failed.is_some() && status == "past_due"
    })
    .await;
    invoice
}

fn invoice_status(app: &TestApp, id: &str) -> String {
    let id = id.to_owned();
    app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::stripe_invoice_id.eq(id))
            .select(invoices::status)
            .first(conn)?)
    })
}

fn hosted_url(app: &TestApp, invoice: &str) -> String {
    format!("{}/i/{invoice}", app.stripe)
}

async fn entitlements(app: &TestApp, token: &str, user_id: i64) -> Value {
    app.internal_get(&format!("entitlements/{user_id}"), token)
        .await
        .json()
        .await
        .unwrap()
}

async fn invoices_are_listed_after_checkout_and_renewal(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (customer, user_id, sub) = subscribed(&app, "lister@example.com").await;
    let first = stored(&app, user_id)[0].0.clone();
    // One second on: the renewal's invoice is the newer by Stripe's clock.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let second = renew(&app, &sub, "paid").await;
    until("the renewal's invoice", || stored(&app, user_id).len() == 2).await;
    assert_eq!(invoice_status(&app, &second), "paid");

    let account = customer.get_text("/account").await;
    assert!(account.contains(r#"href="/account/invoices""#), "{account}");
    let page = customer.get_text("/account/invoices").await;
    let number = |id: &str| {
        let id = id.to_owned();
        app.query(move |conn| {
            Ok(invoices::table
                .filter(invoices::stripe_invoice_id.eq(id))
                .select(invoices::number)
                .first::<Option<String>>(conn)?)
        })
        .unwrap()
    };
    let (first_number, second_number) = (number(&first), number(&second));
    let newer = page.find(&second_number).expect("the renewal is listed");
    let older = page
        .find(&first_number)
        .expect("the first invoice is listed");
    assert!(newer < older, "newest first");
    assert!(page.contains("$25.00"), "{page}");
    assert!(page.contains("badge-paid"), "{page}");
    for id in [&first, &second] {
        assert!(page.contains(&format!(r#"href="{}""#, hosted_url(&app, id))));
        assert!(page.contains(&format!(r#"href="{}/pdf""#, hosted_url(&app, id))));
    }
    // The PDF link serves a PDF.
    let pdf = reqwest::get(format!("{}/pdf", hosted_url(&app, &second)))
        .await
        .unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-"));
}

async fn only_the_owner_sees_their_invoices(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (alice, alice_id, _) = subscribed(&app, "alice-inv@example.com").await;
    let (bob, bob_id, _) = subscribed(&app, "bob-inv@example.com").await;
    let alice_invoice = stored(&app, alice_id)[0].0.clone();
    let bob_invoice = stored(&app, bob_id)[0].0.clone();

    let alices = alice.get_text("/account/invoices").await;
    let bobs = bob.get_text("/account/invoices").await;
    assert!(alices.contains(&alice_invoice) && !alices.contains(&bob_invoice));
    assert!(bobs.contains(&bob_invoice) && !bobs.contains(&alice_invoice));
    // Another page of one's own list shows nobody else's either.
    let later = alice.get_text("/account/invoices?page=2").await;
    assert!(!later.contains(&bob_invoice) && !later.contains(&alice_invoice));
    assert!(later.contains("No more invoices"), "{later}");

    // Signed out: the sign-in page, nothing listed.
    let anonymous = app.browser().get("/account/invoices").await;
    assert_eq!(anonymous.status(), 303);
    // Malformed and huge page numbers are refused, never a query.
    for query in [
        "page=abc",
        "page=-1",
        "page=99999999999999999999",
        "page=1e3",
    ] {
        let res = alice.get(&format!("/account/invoices?{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
    }
}

async fn a_late_payment_failure_never_reopens_a_paid_invoice(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (_, user_id, _) = subscribed(&app, "late@example.com").await;
    let id = stored(&app, user_id)[0].0.clone();
    let object = app.stripe_get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(object["status"], "paid");
    let now = chrono::Utc::now().timestamp();

    // Stripe's invoice.paid, then an older payment_failed for the same invoice (still open
    // as of then) arrives late.
    let mut paid = stripe_event("invoice.paid", "evt_1LatePaid");
    paid["data"]["object"] = object.clone();
    paid["created"] = json!(now + 5);
    app.assert_webhook_accepted(&paid).await;
    let mut failed = stripe_event("invoice.payment_failed", "evt_1LateFailed");
    let mut open = object.clone();
    open["status"] = json!("open");
    open["amount_paid"] = json!(0);
    open["amount_remaining"] = open["amount_due"].clone();
    failed["data"]["object"] = open.clone();
    failed["created"] = json!(now);
    app.assert_webhook_accepted(&failed).await;
    assert_eq!(invoice_status(&app, &id), "paid");

    // Even a newer event cannot move a paid invoice back to open.
    let mut updated = stripe_event("invoice.payment_failed", "evt_1LaterOpen");
    updated["data"]["object"] = open;
    updated["created"] = json!(now + 60);
    app.assert_webhook_accepted(&updated).await;
    assert_eq!(invoice_status(&app, &id), "paid");
    let amount_paid: i64 = app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::stripe_invoice_id.eq(id))
            .select(invoices::amount_paid)
            .first(conn)?)
    });
    assert_eq!(amount_paid, 2500);
}

async fn a_failed_renewal_shows_a_banner_on_every_signed_in_page(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (customer, user_id, sub) = subscribed(&app, "banner@example.com").await;
    let (other, _, _) = subscribed(&app, "fine@example.com").await;
    assert!(
        !customer
            .get_text("/account")
            .await
            .contains("banner-past-due")
    );

    let invoice = failed_renewal(&app, user_id, &sub).await;
    let link = format!(r#"href="{}""#, hosted_url(&app, &invoice));
    for path in ["/account", "/account/keys", "/pricing", "/account/invoices"] {
        let page = customer.get_text(path).await;
        assert!(page.contains("banner-past-due"), "{path}: {page}");
        assert!(page.contains(&link), "{path} links to the open invoice");
    }
    for path in ["/account", "/pricing"] {
        let page = other.get_text(path).await;
        assert!(!page.contains("banner-past-due"), "{path} of another");
        assert!(!page.contains(&invoice), "{path} of another");
    }
    let anonymous = app.browser().get_text("/pricing").await;
    assert!(!anonymous.contains("banner-past-due"));
}

async fn entitlements_last_the_grace_then_report_past_due_and_paying_restores_them(
    backend: Backend,
) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let reader = app.service_token("gate", &[Scope::EntitlementsRead]);
    let nobody = app.signed_in_customer("nobody@example.com").await;
    drop(nobody);
    let none = entitlements(&app, &reader, app.user_id("nobody@example.com")).await;
    assert_eq!(none["active"], false);
    assert_eq!(none["reason"], "no_subscription");

    let (customer, user_id, sub) = subscribed(&app, "grace@example.com").await;
    let active = entitlements(&app, &reader, user_id).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["reason"], Value::Null);

    let invoice = failed_renewal(&app, user_id, &sub).await;
    let within = entitlements(&app, &reader, user_id).await;
    assert_eq!(within["status"], "past_due");
    assert_eq!(within["active"], true, "within the grace");
    assert_eq!(within["reason"], Value::Null);
    assert_eq!(within["entitlements"], json!(["agents:unlimited", "byok"]));

    // The grace is over (time travel: its end is stored).
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
    let id = invoice.clone();
    app.query(move |conn| {
        Ok(
            diesel::update(invoices::table.filter(invoices::stripe_invoice_id.eq(id)))
                .set(invoices::grace_ends_at.eq(past))
                .execute(conn)?,
        )
    });
    // Time passing is no write the app sees: the cached answer lasts its TTL.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = entitlements(&app, &reader, user_id).await;
    assert_eq!(after["active"], false);
    assert_eq!(after["reason"], "past_due");
    assert_eq!(after["status"], "past_due");
    assert_eq!(after["entitlements"], json!([]));

    // Paid on Stripe's hosted invoice page: a declined card first, then a good one.
    let page = reqwest::get(hosted_url(&app, &invoice)).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains(&format!(r#"action="/i/{invoice}""#)),
        "{page}"
    );
    let sim = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let declined = sim
        .post(hosted_url(&app, &invoice))
        .form(&card_form("4000 0000 0000 0002"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402);
    let paid = sim
        .post(hosted_url(&app, &invoice))
        .form(&card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let sim_invoice = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(sim_invoice["status"], "paid");
    assert_eq!(sim_invoice["next_payment_attempt"], Value::Null);
    until("the paid invoice and the active subscription", || {
        let status: String = app.query(move |conn| {
            Ok(subscriptions::table
                .filter(subscriptions::user_id.eq(user_id))
                .select(subscriptions::status)
                .first(conn)?)
        });
        status == "active" && invoice_status(&app, &invoice) == "paid"
    })
    .await;
    let restored = entitlements(&app, &reader, user_id).await;
    assert_eq!(restored["active"], true);
    assert_eq!(restored["reason"], Value::Null);
    assert!(
        !customer
            .get_text("/account")
            .await
            .contains("banner-past-due")
    );
    // Paid once: the page takes no second payment.
    let again = sim
        .post(hosted_url(&app, &invoice))
        .form(&card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

async fn the_grace_is_the_configured_default(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.stripe.past_due_grace_days = 3).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
    let (_, user_id, sub) = subscribed(&app, "three-days@example.com").await;
    let invoice = failed_renewal(&app, user_id, &sub).await;
    let (failed, ends): (Option<NaiveDateTime>, Option<NaiveDateTime>) = app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::stripe_invoice_id.eq(invoice))
            .select((invoices::payment_failed_at, invoices::grace_ends_at))
            .first(conn)?)
    });
    assert_eq!(ends.unwrap() - failed.unwrap(), chrono::Duration::days(3));
}

fn grace_of(app: &TestApp, invoice: String) -> chrono::Duration {
    let (failed, ends): (Option<NaiveDateTime>, Option<NaiveDateTime>) = app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::stripe_invoice_id.eq(invoice))
            .select((invoices::payment_failed_at, invoices::grace_ends_at))
            .first(conn)?)
    });
    ends.unwrap() - failed.unwrap()
}

async fn an_admin_sets_a_plans_own_grace(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let plan_id: i64 = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("pro"))
            .select(plans::id)
            .first(conn)?)
    });
    let path = format!("/admin/plans/{plan_id}/grace");
    assert!(
        admin
            .get_text("/admin/plans")
            .await
            .contains(&format!(r#"href="{path}""#))
    );
    let grace = || {
        app.query(move |conn| {
            Ok(plan_past_due_grace::table
                .filter(plan_past_due_grace::plan_id.eq(plan_id))
                .select(plan_past_due_grace::days)
                .first::<i64>(conn)
                .optional()?)
        })
    };
    // Malformed, out of range and huge values are refused with a message.
    for bad in ["0", "91", "abc", "-2", &"9".repeat(5000)] {
        let res = admin.submit(&path, &path, &[("days", bad)]).await;
        assert_eq!(res.status(), 422, "{}", &bad[..bad.len().min(8)]);
        assert!(res.text().await.unwrap().contains("from 1 to 90"));
    }
    // Without the CSRF token, or as a customer: refused.
    assert_eq!(admin.post_form(&path, &[("days", "2")]).await.status(), 403);
    let customer = app.signed_in_customer("grace-owner@example.com").await;
    assert_eq!(customer.get(&path).await.status(), 403);
    let token = customer.csrf_token("/account").await;
    let forged = customer
        .post_form(&path, &[("csrf_token", token.as_str()), ("days", "2")])
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(grace(), None);
    assert_eq!(admin.get("/admin/plans/999999/grace").await.status(), 404);

    let res = admin.submit(&path, &path, &[("days", "2")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(grace(), Some(2));
    assert!(admin.get_text(&path).await.contains(r#"value="2""#));
    assert_eq!(app.events("plan_grace_changed").len(), 1);

    customer.get("/account").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("grace-owner@example.com");
    until("the first invoice", || stored(&app, user_id).len() == 1).await;
    let sub: String = app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::user_id.eq(user_id))
            .select(subscriptions::stripe_subscription_id)
            .first(conn)?)
    });
    let invoice = failed_renewal(&app, user_id, &sub).await;
    assert_eq!(grace_of(&app, invoice), chrono::Duration::days(2));

    // Cleared: the default again.
    assert_eq!(
        admin.submit(&path, &path, &[("days", "")]).await.status(),
        303
    );
    assert_eq!(grace(), None);
}

async fn cancelling_a_past_due_subscription_stops_payment_attempts(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let reader = app.service_token("gate", &[Scope::EntitlementsRead]);
    let (customer, user_id, sub) = subscribed(&app, "quitter@example.com").await;
    let invoice = failed_renewal(&app, user_id, &sub).await;
    let open = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(open["status"], "open");
    assert!(open["next_payment_attempt"].is_i64(), "Stripe will retry");

    let confirm = customer.get_text("/billing/subscription/cancel").await;
    assert!(confirm.contains("will not be charged again"), "{confirm}");
    let res = customer
        .submit_operation(
            "/billing/subscription/cancel",
            "/billing/subscription/cancel",
            &[],
        )
        .await;
    assert_eq!(res.status(), 303);
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(at_stripe["status"], "canceled", "canceled at once");
    // Stripe leaves the invoice open and stops collecting it.
    let left = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(left["status"], "open");
    assert_eq!(left["next_payment_attempt"], Value::Null);
    assert_eq!(left["auto_advance"], false);
    assert_eq!(app.events("past_due_subscription_canceled").len(), 1);

    // No further attempt charges anything.
    let payments = |events: &[Value]| {
        events
            .iter()
            .filter(|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("payment_intent."))
            })
            .count()
    };
    let before = payments(&app.stripe_events().await);
    assert_eq!(
        app.sim_control(&format!("/_sim/invoices/{invoice}/retry"))
            .await,
        409
    );
    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub}/renew?outcome=failed"))
            .await,
        200
    );
    assert_eq!(payments(&app.stripe_events().await), before);

    until("the cancellation", || {
        app.subscription_status(user_id) == "canceled"
    })
    .await;
    app.settle().await;
    assert_eq!(invoice_status(&app, &invoice), "open");
    let after = entitlements(&app, &reader, user_id).await;
    assert_eq!(after["active"], false);
    assert_eq!(after["reason"], "canceled");
    assert!(
        !customer
            .get_text("/account")
            .await
            .contains("banner-past-due")
    );
}

async fn cancelling_after_paying_at_stripe_keeps_the_paid_period(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (customer, user_id, sub) = subscribed(&app, "paidjustnow@example.com").await;
    let invoice = failed_renewal(&app, user_id, &sub).await;
    // The customer pays the open invoice at Stripe; its webhooks have not arrived yet.
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=false").await,
        200
    );
    assert_eq!(
        app.sim_control(&format!("/_sim/invoices/{invoice}/retry?outcome=paid"))
            .await,
        200
    );
    assert_eq!(app.subscription_status(user_id), "past_due");

    let res = customer
        .submit_operation(
            "/billing/subscription/cancel",
            "/billing/subscription/cancel",
            &[],
        )
        .await;
    assert_eq!(res.status(), 303);
    // Stripe's state decides: the paid period is kept, the subscription ends with it.
    let at_stripe = app.stripe_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(at_stripe["status"], "active", "not ended at once");
    assert_eq!(at_stripe["cancel_at_period_end"], true);
    assert!(app.events("past_due_subscription_canceled").is_empty());
    assert_eq!(app.events("subscription_cancel_requested").len(), 1);
    let keys: Vec<String> = reqwest::get(format!("{}/_sim/idempotency-keys", app.stripe))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("user-{user_id}-subscription-cancel-"))),
        "{keys:?}"
    );
}

/// Attacker review, finding 11: a subscription reported past due with no failed invoice on
/// record (its `invoice.payment_failed` lost) does not keep its access forever: the grace runs
/// from when it was first seen past due.
async fn past_due_without_a_known_failed_invoice_still_ends_after_the_grace(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let reader = app.service_token("gate", &[Scope::EntitlementsRead]);
    let (_customer, user_id, sub) = subscribed(&app, "lost@example.com").await;
    // Eight days ago Stripe said past due; the invoice's failure never arrived.
    let nine_days_ago = chrono::Utc::now().naive_utc() - chrono::Duration::days(9);
    let id = sub.clone();
    app.query(move |conn| {
        Ok(diesel::update(
            subscriptions::table.filter(subscriptions::stripe_subscription_id.eq(id)),
        )
        .set(subscriptions::stripe_updated_at.eq(nine_days_ago))
        .execute(conn)?)
    });
    let mut object = app.stripe_get(&format!("/v1/subscriptions/{sub}")).await;
    object["status"] = json!("past_due");
    let mut event = stripe_event("customer.subscription.updated", "evt_lostFailure");
    event["created"] = json!((chrono::Utc::now() - chrono::Duration::days(8)).timestamp());
    event["data"]["object"] = object;
    app.assert_webhook_accepted(&event).await;
    let after = entitlements(&app, &reader, user_id).await;
    assert_eq!(after["status"], "past_due");
    assert_eq!(after["active"], false, "{after}");
    assert_eq!(after["reason"], "past_due");
}

fn invoice_number(app: &TestApp, id: &str) -> Option<String> {
    let id = id.to_owned();
    app.query(move |conn| {
        Ok(invoices::table
            .filter(invoices::stripe_invoice_id.eq(id))
            .select(invoices::number)
            .first(conn)?)
    })
}

/// Attacker review, finding 11 (issue 15, point 11): two events of one invoice in the same
/// second, the older arriving last, are settled by reading the invoice from Stripe.
async fn same_second_invoice_events_in_the_wrong_order_are_settled_by_stripe(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let (_customer, user_id, _sub) = subscribed(&app, "tie@example.com").await;
    let invoice = stored(&app, user_id)[0].0.clone();
    let truth = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    let number = truth["number"].as_str().unwrap().to_owned();
    let second = chrono::Utc::now().timestamp();
    let event = |id: &str, object: &Value| {
        let mut event = stripe_event("invoice.paid", id);
        event["type"] = json!("invoice.updated");
        event["created"] = json!(second);
        event["data"]["object"] = object.clone();
        event
    };
    let mut stale = truth.clone();
    stale["number"] = json!("STALE-0001");
    app.assert_webhook_accepted(&event("evt_invTieNewer", &truth))
        .await;
    app.assert_webhook_accepted(&event("evt_invTieOlder", &stale))
        .await;
    until("Stripe's invoice is stored", || {
        invoice_number(&app, &invoice).as_deref() == Some(number.as_str())
    })
    .await;
}
