//! Plan changes in the product (issue 15, points 1 and 2): the account page offers the other
//! plans, intervals and seats; a preview from Stripe's invoice preview comes before a confirm
//! button; upgrades apply now, prorated and charged; downgrades wait for the period's end in a
//! Stripe subscription schedule (or apply at once with `PLAN_CHANGE_DOWNGRADE=immediate`) and
//! can be called off; entitlements follow what Stripe confirms, with the quantity.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;
use tollgate::config::DowngradeTiming;
use tollgate::db::schema::{plan_changes, plan_seats, plans, subscriptions};
use tollgate::service_tokens::Scope;

use crate::common::hidden;
use crate::common::{Backend, Browser, TestApp, location, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    an_upgrade_is_previewed_then_applied_now_and_charged_prorated,
    a_downgrade_waits_for_the_renewal_and_stripe_applies_it,
    a_scheduled_downgrade_can_be_called_off,
    downgrades_apply_at_once_when_configured_so,
    switching_to_yearly_billing_restarts_the_cycle_and_bills_the_year,
    seats_change_within_the_plans_range_and_entitlements_carry_the_quantity,
    forged_and_foreign_plan_change_forms_change_nothing,
    an_older_subscription_event_never_undoes_a_newer_quantity,
    per_seat_plans_are_set_by_the_admin_and_bought_by_the_seat,
    cancelling_with_a_scheduled_downgrade_releases_the_schedule_first,
    a_confirm_charges_what_was_previewed_and_refuses_a_changed_price_or_timing,
    plan_changes_wait_until_a_past_due_invoice_is_paid,
    a_replayed_confirm_never_records_an_older_state_as_newest,
    a_downgrade_is_not_scheduled_over_a_trial,
);

/// Basic ($10 a month) and Pro ($25 a month or $250 a year), as the admin creates them.
async fn plans(app: &TestApp) -> Browser {
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(
        admin.create_plan("Basic", "basic", "1000").await.status(),
        303
    );
    let mut pro = crate::common::plan_fields("Pro", "pro", "2500");
    pro.push(("yearly_amount", "25000"));
    let res = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &pro)
        .await;
    assert_eq!(res.status(), 303);
    admin
}

/// A customer subscribed to `slug` (monthly), everything Stripe sent applied.
async fn subscribed(app: &TestApp, email: &str, slug: &str) -> Browser {
    let customer = app.signed_in_customer(email).await;
    app.subscribe(&customer, slug).await;
    app.settle().await;
    customer
}

fn plan_of(app: &TestApp, email: &str) -> String {
    let user_id = app.user_id(email);
    app.query(move |conn| {
        Ok(subscriptions::table
            .inner_join(plans::table)
            .filter(subscriptions::user_id.eq(user_id))
            .select(plans::slug)
            .first::<String>(conn)?)
    })
}

async fn entitlements(app: &TestApp, email: &str) -> serde_json::Value {
    static TOKENS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = TOKENS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let token = app.service_token(&format!("gate-{n}"), &[Scope::EntitlementsRead]);
    let user_id = app.user_id(email);
    app.internal_get(&format!("entitlements/{user_id}"), &token)
        .await
        .json()
        .await
        .unwrap()
}

/// The customer's subscription at the simulator.
async fn stripe_subscription(app: &TestApp, email: &str) -> serde_json::Value {
    let id = app.subscription_id(app.user_id(email));
    app.stripe_get(&format!("/v1/subscriptions/{id}")).await
}

/// The preview of a change (`fields`: plan, interval, quantity), its page and the confirm
/// form's fields.
async fn preview(customer: &Browser, query: &str) -> (String, Vec<(String, String)>) {
    let res = customer.get(&format!("/billing/change?{query}")).await;
    assert_eq!(res.status(), 200, "{query}");
    let page = res.text().await.unwrap();
    let fields = [
        "csrf_token",
        "operation_id",
        "plan",
        "interval",
        "quantity",
        "proration_date",
        "price_id",
        "timing",
    ]
    .iter()
    .map(|name| (name.to_string(), hidden(&page, name)))
    .collect();
    (page, fields)
}

async fn confirm(customer: &Browser, fields: &[(String, String)]) -> reqwest::Response {
    let form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    customer.post_form("/billing/change", &form).await
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(k, _)| k == name).unwrap().1
}

/// Stripe's proration of `amount` for the rest of the period (the simulator's formula).
fn prorate(amount: i64, remaining: i64, span: i64) -> i64 {
    (amount * remaining * 2 + span) / (2 * span)
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The invoices Stripe billed for subscription updates.
async fn update_invoices(app: &TestApp) -> Vec<serde_json::Value> {
    app.stripe_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "invoice.paid")
        .map(|e| e["data"]["object"].clone())
        .filter(|i| i["billing_reason"] == "subscription_update")
        .collect()
}

async fn an_upgrade_is_previewed_then_applied_now_and_charged_prorated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    let email = "upgrade@example.com";
    let customer = subscribed(&app, email, "basic").await;
    let account = customer.get_text("/account").await;
    assert!(account.contains("Change plan"), "{account}");
    assert!(
        account.contains(r#"value="pro""#),
        "the other plan is offered"
    );

    let (page, fields) = preview(&customer, "plan=pro&interval=month").await;
    let sub = stripe_subscription(&app, email).await;
    let item = &sub["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    );
    let at: i64 = field(&fields, "proration_date").parse().unwrap();
    let due = prorate(2500, end - at, end - start) - prorate(1000, end - at, end - start);
    assert!(0 < due && due < 2500, "{due}");
    assert!(page.contains(&money(due)), "due now {due}: {page}");
    assert!(page.contains("$25.00 on"), "the next invoice: {page}");

    // Nothing changes before the confirm, and nothing locally before Stripe says so.
    assert_eq!(plan_of(&app, email), "basic");
    assert_eq!(entitlements(&app, email).await["plan"], "basic");

    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 2500);
    assert_eq!(plan_of(&app, email), "pro");
    assert_eq!(entitlements(&app, email).await["plan"], "pro");
    app.settle().await;
    let invoices = update_invoices(&app).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["amount_due"], due, "charged what was previewed");

    // The same form again: one change, one charge, one audit row, one e-mail.
    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    app.settle().await;
    assert_eq!(update_invoices(&app).await.len(), 1);
    assert_eq!(app.count_events("plan_changed"), 1);
    let emails = app
        .notifications("email")
        .into_iter()
        .filter(|n| n.event_type == "plan_changed")
        .count();
    assert_eq!(emails, 1);
}

/// The customer on Pro schedules the move to Basic; its confirm's page and response.
async fn schedule_downgrade(app: &TestApp, email: &str) -> Browser {
    let customer = subscribed(app, email, "pro").await;
    let (page, fields) = preview(&customer, "plan=basic&interval=month").await;
    assert!(page.contains("when your current period ends"), "{page}");
    assert!(page.contains("$0.00"), "nothing is due now: {page}");
    assert!(page.contains("$10.00 on"), "the next invoice: {page}");
    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    app.settle().await;
    customer
}

async fn a_downgrade_waits_for_the_renewal_and_stripe_applies_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    let email = "downgrade@example.com";
    let customer = schedule_downgrade(&app, email).await;
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 2500);
    let schedule = sub["schedule"].as_str().expect("a subscription schedule");
    let phases = app
        .stripe_get(&format!("/v1/subscription_schedules/{schedule}"))
        .await["phases"]
        .clone();
    assert_eq!(phases[1]["items"][0]["quantity"], 1);
    assert_eq!(phases[1]["start_date"], phases[0]["end_date"]);
    assert_eq!(
        plan_of(&app, email),
        "pro",
        "nothing changes before the renewal"
    );
    assert_eq!(entitlements(&app, email).await["plan"], "pro");
    let account = customer.get_text("/account").await;
    assert!(
        account.contains("Changes to <strong>Basic</strong> on"),
        "{account}"
    );
    assert_eq!(app.count_events("plan_change_scheduled"), 1);
    let plan_emails = |app: &TestApp| {
        app.notifications("email")
            .into_iter()
            .filter(|n| n.event_type == "plan_changed")
            .count()
    };
    assert_eq!(plan_emails(&app), 0, "no e-mail before the change applies");

    let sub_id = sub["id"].as_str().unwrap();
    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub_id}/renew"))
            .await,
        200
    );
    app.settle().await;
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 1000);
    assert_eq!(plan_of(&app, email), "basic");
    assert_eq!(entitlements(&app, email).await["plan"], "basic");
    let status: String = app.query(|conn| {
        Ok(plan_changes::table
            .select(plan_changes::status)
            .first(conn)?)
    });
    assert_eq!(status, "applied");
    assert_eq!(app.count_events("plan_change_applied"), 1);
    assert_eq!(plan_emails(&app), 1, "one e-mail when Stripe applies it");
    assert!(!customer.get_text("/account").await.contains("Changes to"));
}

async fn a_scheduled_downgrade_can_be_called_off(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    let email = "called-off@example.com";
    let customer = schedule_downgrade(&app, email).await;
    // Another change waits until this one is called off.
    let res = customer.get("/billing/change?plan=pro&interval=year").await;
    assert_eq!(res.status(), 303);

    let res = customer
        .submit_operation("/account", "/billing/change/cancel", &[])
        .await;
    assert_eq!(res.status(), 303);
    app.settle().await;
    let sub = stripe_subscription(&app, email).await;
    assert!(sub["schedule"].is_null(), "released: {sub}");
    assert_eq!(app.count_events("plan_change_canceled"), 1);
    assert!(!customer.get_text("/account").await.contains("Changes to"));

    let sub_id = sub["id"].as_str().unwrap();
    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub_id}/renew"))
            .await,
        200
    );
    app.settle().await;
    assert_eq!(plan_of(&app, email), "pro", "the plan renews as it was");
}

async fn downgrades_apply_at_once_when_configured_so(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.plan_change_downgrade = DowngradeTiming::Immediate;
    })
    .await;
    plans(&app).await;
    let email = "immediate@example.com";
    let customer = subscribed(&app, email, "pro").await;
    let (page, fields) = preview(&customer, "plan=basic&interval=month").await;
    assert!(page.contains("Credit now"), "{page}");
    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 1000);
    assert!(sub["schedule"].is_null());
    assert_eq!(plan_of(&app, email), "basic");
}

async fn switching_to_yearly_billing_restarts_the_cycle_and_bills_the_year(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    let email = "yearly@example.com";
    let customer = subscribed(&app, email, "pro").await;
    let account = customer.get_text("/account").await;
    assert!(
        account.contains(r#"value="year""#),
        "the yearly price is offered"
    );
    let (page, fields) = preview(&customer, "plan=pro&interval=year").await;
    let sub = stripe_subscription(&app, email).await;
    let item = &sub["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    );
    let at: i64 = field(&fields, "proration_date").parse().unwrap();
    let due = 25000 - prorate(2500, end - at, end - start);
    assert!(
        page.contains(&money(due)),
        "the year less the unused month: {page}"
    );
    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    let sub = stripe_subscription(&app, email).await;
    let item = &sub["items"]["data"][0];
    assert_eq!(item["price"]["recurring"]["interval"], "year");
    assert!(item["current_period_end"].as_i64().unwrap() > at + 360 * 86_400);
    app.settle().await;
    assert_eq!(update_invoices(&app).await[0]["amount_due"], due);
}

fn make_per_seat(app: &TestApp, slug: &'static str, min: i64, max: i64) {
    app.query(move |conn| {
        let id: i64 = plans::table
            .filter(plans::slug.eq(slug))
            .select(plans::id)
            .first(conn)?;
        Ok(diesel::insert_into(plan_seats::table)
            .values((
                plan_seats::plan_id.eq(id),
                plan_seats::min_quantity.eq(min),
                plan_seats::max_quantity.eq(max),
            ))
            .execute(conn)?)
    });
}

async fn seats_change_within_the_plans_range_and_entitlements_carry_the_quantity(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    make_per_seat(&app, "pro", 1, 10);
    app.query(|conn| {
        Ok(crate::common::add_endpoint(
            conn,
            "https://hooks.example/billing",
            &["subscription.updated"],
        ))
    });
    let email = "seats@example.com";
    let customer = subscribed(&app, email, "pro").await;
    assert_eq!(entitlements(&app, email).await["quantity"], 1);
    let account = customer.get_text("/account").await;
    assert!(account.contains("Change seats"), "{account}");

    for bad in ["0", "-1", "1000000000000", "11", "abc", "2.5"] {
        let res = customer
            .get(&format!(
                "/billing/change?plan=pro&interval=month&quantity={bad}"
            ))
            .await;
        assert_eq!(res.status(), 400, "quantity {bad}");
    }
    let (page, fields) = preview(&customer, "plan=pro&interval=month&quantity=3").await;
    let sub = stripe_subscription(&app, email).await;
    let item = &sub["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    );
    let at: i64 = field(&fields, "proration_date").parse().unwrap();
    let due = prorate(7500, end - at, end - start) - prorate(2500, end - at, end - start);
    assert!(
        page.contains(&money(due)),
        "two more seats, prorated: {page}"
    );
    assert!(page.contains("$75.00 on"), "{page}");

    // A forged quantity on the confirm form is refused too.
    let mut forged = fields.clone();
    forged.retain(|(k, _)| k != "quantity");
    forged.push(("quantity".into(), "11".into()));
    assert_eq!(confirm(&customer, &forged).await.status(), 400);

    let res = confirm(&customer, &fields).await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        stripe_subscription(&app, email).await["items"]["data"][0]["quantity"],
        3
    );
    assert_eq!(entitlements(&app, email).await["quantity"], 3);
    app.settle().await;
    let updated: Vec<String> = app
        .notifications("app_webhook")
        .into_iter()
        .filter(|n| n.event_type == "subscription.updated")
        .map(|n| n.payload)
        .collect();
    assert!(
        updated.iter().any(|p| p.contains(r#""quantity":3"#)),
        "the product's services hear of the seats: {updated:?}"
    );
}

async fn forged_and_foreign_plan_change_forms_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = plans(&app).await;
    let email = "victim@example.com";
    let customer = subscribed(&app, email, "basic").await;
    let (_, fields) = preview(&customer, "plan=pro&interval=month").await;

    // Missing and forged CSRF tokens.
    let mut no_token = fields.clone();
    no_token.retain(|(k, _)| k != "csrf_token");
    assert_eq!(confirm(&customer, &no_token).await.status(), 403);
    let mut wrong = no_token.clone();
    wrong.push(("csrf_token".into(), "forged-token-value-0000000000".into()));
    assert_eq!(confirm(&customer, &wrong).await.status(), 403);

    // Another account replaying the victim's operation id (with its own token).
    let other = subscribed(&app, "attacker@example.com", "basic").await;
    let (_, mut theirs) = preview(&other, "plan=pro&interval=month").await;
    theirs.retain(|(k, _)| k != "operation_id");
    theirs.push((
        "operation_id".into(),
        field(&fields, "operation_id").to_owned(),
    ));
    assert_eq!(confirm(&customer, &fields).await.status(), 303);
    assert_eq!(confirm(&other, &theirs).await.status(), 409);
    assert_eq!(plan_of(&app, "attacker@example.com"), "basic");

    // Plans not on offer, bad intervals, stale previews.
    let fresh = subscribed(&app, "fresh@example.com", "basic").await;
    for (query, status) in [
        ("plan=nope&interval=month", 404),
        ("plan=pro&interval=week", 400),
        (&format!("plan={}&interval=month", "x".repeat(100)), 404),
    ] {
        assert_eq!(
            fresh
                .get(&format!("/billing/change?{query}"))
                .await
                .status(),
            status,
            "{query}"
        );
    }
    let (_, fields) = preview(&fresh, "plan=pro&interval=month").await;
    let mut stale = fields.clone();
    stale.retain(|(k, _)| k != "proration_date");
    stale.push(("proration_date".into(), "1000000000".into()));
    let res = confirm(&fresh, &stale).await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        plan_of(&app, "fresh@example.com"),
        "basic",
        "a stale preview is refused"
    );
    let mut junk = fields.clone();
    junk.retain(|(k, _)| k != "proration_date");
    junk.push(("proration_date".into(), "soon".into()));
    assert_eq!(confirm(&fresh, &junk).await.status(), 400);

    // A subscription set to end is resumed before it changes.
    let ending = subscribed(&app, "ending@example.com", "basic").await;
    let res = ending
        .submit_operation(
            "/billing/subscription/cancel",
            "/billing/subscription/cancel",
            &[],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(!ending.get_text("/account").await.contains("Change plan"));
    let res = ending.get("/billing/change?plan=pro&interval=month").await;
    assert_eq!(res.status(), 303);

    let id: i64 = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("pro"))
            .select(plans::id)
            .first(conn)?)
    });
    let archive = format!("/admin/plans/{id}/archive");
    assert_eq!(
        admin
            .submit_operation(&archive, &archive, &[])
            .await
            .status(),
        303
    );
    assert_eq!(
        confirm(&fresh, &fields).await.status(),
        404,
        "an archived plan"
    );
    assert_eq!(plan_of(&app, "fresh@example.com"), "basic");
    assert_eq!(
        app.count_events("plan_changed"),
        1,
        "the victim's own change only"
    );
}

async fn an_older_subscription_event_never_undoes_a_newer_quantity(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    make_per_seat(&app, "pro", 1, 10);
    let email = "ordered@example.com";
    let customer = subscribed(&app, email, "pro").await;
    let old_object = stripe_subscription(&app, email).await;
    let (_, fields) = preview(&customer, "plan=pro&interval=month&quantity=4").await;
    assert_eq!(confirm(&customer, &fields).await.status(), 303);
    app.settle().await;
    assert_eq!(entitlements(&app, email).await["quantity"], 4);

    // The update from before the change, delivered late.
    let mut late = stripe_event("customer.subscription.updated", "evt_1LateOldQuantity");
    late["data"]["object"] = old_object;
    late["created"] = json!(chrono::Utc::now().timestamp() - 3600);
    app.assert_webhook_accepted(&late).await;
    assert_eq!(entitlements(&app, email).await["quantity"], 4);
}

async fn per_seat_plans_are_set_by_the_admin_and_bought_by_the_seat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let mut team = crate::common::plan_fields("Team", "team", "800");
    let refused = [("seats_min", "5"), ("seats_max", "2")];
    let mut bad = team.clone();
    bad.extend(refused);
    let res = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &bad)
        .await;
    assert_eq!(res.status(), 422, "min above max is refused");
    team.extend([("seats_min", "2"), ("seats_max", "20")]);
    let res = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &team)
        .await;
    assert_eq!(res.status(), 303);
    let id: i64 = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("team"))
            .select(plans::id)
            .first(conn)?)
    });
    let edit = admin.get_text(&format!("/admin/plans/{id}/edit")).await;
    assert!(
        edit.contains(r#"value="20""#),
        "the edit form keeps the range"
    );

    let email = "team@example.com";
    let customer = app.signed_in_customer(email).await;
    let page = customer
        .get_text("/billing/checkout?plan=team&interval=month")
        .await;
    assert!(page.contains(r#"name="quantity""#), "{page}");
    for bad in ["0", "1", "21", "-1", "1000000000000", "abc"] {
        let res = customer
            .submit_operation(
                "/billing/checkout?plan=team&interval=month",
                "/billing/checkout",
                &[("plan", "team"), ("interval", "month"), ("quantity", bad)],
            )
            .await;
        assert_eq!(res.status(), 400, "quantity {bad}");
    }
    let res = customer
        .submit_operation(
            "/billing/checkout?plan=team&interval=month",
            "/billing/checkout",
            &[("plan", "team"), ("interval", "month"), ("quantity", "5")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let paid = app.pay(&location(&res), "4242 4242 4242 4242").await;
    assert_eq!(paid.status(), 303);
    app.settle().await;
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["quantity"], 5);
    assert_eq!(entitlements(&app, email).await["quantity"], 5);
    let paid: Vec<serde_json::Value> = app
        .stripe_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "invoice.paid")
        .collect();
    assert_eq!(
        paid[0]["data"]["object"]["amount_paid"], 4000,
        "5 seats × $8.00"
    );
}

async fn cancelling_with_a_scheduled_downgrade_releases_the_schedule_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plans(&app).await;
    let email = "cancel-scheduled@example.com";
    let customer = schedule_downgrade(&app, email).await;
    assert!(stripe_subscription(&app, email).await["schedule"].is_string());
    let res = customer
        .submit_operation(
            "/billing/subscription/cancel",
            "/billing/subscription/cancel",
            &[],
        )
        .await;
    assert_eq!(res.status(), 303);
    app.settle().await;
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["cancel_at_period_end"], true, "{sub}");
    assert!(sub["schedule"].is_null(), "released: {sub}");
    let status: String = app.query(|conn| {
        Ok(plan_changes::table
            .select(plan_changes::status)
            .first(conn)?)
    });
    assert_eq!(status, "canceled");
    assert_eq!(app.count_events("plan_change_canceled"), 1);
    let account = customer.get_text("/account").await;
    assert!(!account.contains("Changes to"), "{account}");
}

async fn a_confirm_charges_what_was_previewed_and_refuses_a_changed_price_or_timing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = plans(&app).await;
    // Dear enough that a second's proration is worth cents.
    assert_eq!(
        admin
            .create_plan("Enterprise", "enterprise", "99999999")
            .await
            .status(),
        303
    );
    let email = "exact@example.com";
    let customer = subscribed(&app, email, "basic").await;
    let (page, fields) = preview(&customer, "plan=enterprise&interval=month").await;
    assert_eq!(field(&fields, "timing"), "now");
    let sub = stripe_subscription(&app, email).await;
    let item = &sub["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    );
    let at: i64 = field(&fields, "proration_date").parse().unwrap();
    let due = prorate(99999999, end - at, end - start) - prorate(1000, end - at, end - start);
    assert!(page.contains(&money(due)), "{due}: {page}");
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(confirm(&customer, &fields).await.status(), 303);
    app.settle().await;
    let invoices = update_invoices(&app).await;
    assert_eq!(invoices[0]["amount_due"], due, "charged what was previewed");

    // The admin changes Pro's price between a preview and its confirm.
    let other = "moved@example.com";
    let moved = subscribed(&app, other, "basic").await;
    let (_, fields) = preview(&moved, "plan=pro&interval=month").await;
    let id: i64 = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("pro"))
            .select(plans::id)
            .first(conn)?)
    });
    let (edit, update) = (
        format!("/admin/plans/{id}/edit"),
        format!("/admin/plans/{id}"),
    );
    let mut pro = crate::common::plan_fields("Pro", "pro", "9900");
    pro.push(("yearly_amount", "25000"));
    assert_eq!(
        admin.submit_operation(&edit, &update, &pro).await.status(),
        303
    );
    let res = confirm(&moved, &fields).await;
    assert_eq!(res.status(), 303);
    assert_eq!(plan_of(&app, other), "basic", "a price not previewed");
    assert!(moved.get_text("/account").await.contains("Prices changed"));

    // A forged timing (a downgrade previewed for the period end, confirmed as now).
    let downgrader = subscribed(&app, "timing@example.com", "pro").await;
    let (_, fields) = preview(&downgrader, "plan=basic&interval=month").await;
    assert_eq!(field(&fields, "timing"), "period_end");
    let mut forged = fields.clone();
    forged.retain(|(k, _)| k != "timing");
    forged.push(("timing".into(), "now".into()));
    assert_eq!(confirm(&downgrader, &forged).await.status(), 303);
    assert_eq!(app.count_events("plan_change_scheduled"), 0);
    assert_eq!(
        app.count_events("plan_changed"),
        1,
        "the first customer's only"
    );
}

async fn plan_changes_wait_until_a_past_due_invoice_is_paid(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.plan_change_downgrade = DowngradeTiming::Immediate;
    })
    .await;
    plans(&app).await;
    let email = "late@example.com";
    let customer = subscribed(&app, email, "pro").await;
    let (_, fields) = preview(&customer, "plan=basic&interval=month").await;
    let sub_id = app.subscription_id(app.user_id(email));
    assert_eq!(
        app.sim_control(&format!(
            "/_sim/subscriptions/{sub_id}/renew?outcome=failed"
        ))
        .await,
        200
    );
    app.settle().await;
    assert_eq!(app.subscription_status(app.user_id(email)), "past_due");
    let account = customer.get_text("/account").await;
    assert!(
        !account.contains(r#"action="/billing/change""#),
        "no change is offered while past due: {account}"
    );
    let res = customer
        .get("/billing/change?plan=basic&interval=month")
        .await;
    assert_eq!(res.status(), 303, "no preview while past due");
    assert_eq!(confirm(&customer, &fields).await.status(), 303);
    assert!(
        customer
            .get_text("/account")
            .await
            .contains("pay your open invoice first")
    );
    assert_eq!(plan_of(&app, email), "pro");
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 2500);
    assert_eq!(app.count_events("plan_changed"), 0);
}

async fn a_replayed_confirm_never_records_an_older_state_as_newest(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.plan_change_downgrade = DowngradeTiming::Immediate;
    })
    .await;
    plans(&app).await;
    let email = "replay@example.com";
    let customer = subscribed(&app, email, "basic").await;
    let (_, upgrade) = preview(&customer, "plan=pro&interval=month").await;
    assert_eq!(confirm(&customer, &upgrade).await.status(), 303);
    app.settle().await;
    let (_, downgrade) = preview(&customer, "plan=basic&interval=month").await;
    assert_eq!(confirm(&customer, &downgrade).await.status(), 303);
    app.settle().await;
    assert_eq!(plan_of(&app, email), "basic");

    // The upgrade's form again: Stripe answers with its stored (older) response.
    assert_eq!(confirm(&customer, &upgrade).await.status(), 303);
    app.settle().await;
    let sub = stripe_subscription(&app, email).await;
    assert_eq!(sub["items"]["data"][0]["price"]["unit_amount"], 1000);
    assert_eq!(plan_of(&app, email), "basic", "what Stripe says now");
    assert_eq!(entitlements(&app, email).await["plan"], "basic");
}

async fn a_downgrade_is_not_scheduled_over_a_trial(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = plans(&app).await;
    let mut fields = crate::common::plan_fields("Team", "team", "5000");
    fields.retain(|(field, _)| *field != "trial_days");
    fields.push(("trial_days", "14"));
    let res = admin
        .submit_operation("/admin/plans/new", "/admin/plans", &fields)
        .await;
    assert_eq!(res.status(), 303);
    let email = "trialing@example.com";
    let customer = subscribed(&app, email, "team").await;
    assert_eq!(app.subscription_status(app.user_id(email)), "trialing");
    let res = customer
        .get("/billing/change?plan=basic&interval=month")
        .await;
    assert_eq!(res.status(), 303);
    assert!(
        customer
            .get_text("/account")
            .await
            .contains("would end your trial or discount")
    );
    assert!(stripe_subscription(&app, email).await["schedule"].is_null());
    assert_eq!(app.count_events("plan_change_scheduled"), 0);
}
