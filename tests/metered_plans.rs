//! Metered plans (issue 16, point 1): an admin adds metered components to a plan, synced to a
//! Stripe Billing Meter and a graduated metered Price; Checkout carries them; the pricing page
//! shows them; Stripe's invoices bill the usage by the tiers (preview and renewal).

use diesel::prelude::*;
use serde_json::Value;
use stripe_sim::state::MeterEvent;
use tollgate::db::schema::{plan_meters, plans, usage_meters};

use crate::common::{Backend, Browser, TestApp, location};
use crate::on_both_backends;

on_both_backends!(
    an_admin_adds_a_component_synced_to_a_meter_and_a_tiered_price,
    changing_a_components_price_makes_a_new_stripe_price_and_removing_stops_it,
    invalid_components_are_refused_with_a_message_per_field,
    only_admins_with_the_forms_token_change_metering,
    checkout_carries_the_metered_prices_and_the_pricing_page_shows_them,
    usage_is_previewed_and_billed_at_renewal_by_the_tiers,
    plan_changes_to_or_from_a_metered_plan_are_refused_not_billed_wrong,
);

fn plan_id(app: &TestApp, slug: &'static str) -> i64 {
    app.query(move |conn| {
        Ok(plans::table
            .filter(plans::slug.eq(slug))
            .select(plans::id)
            .first(conn)?)
    })
}

fn meters_page(id: i64) -> String {
    format!("/admin/plans/{id}/meters")
}

/// The tokens component: 10,000 included, then $2 per 1,000; quota 1,000,000.
const TOKENS: [(&str, &str); 7] = [
    ("feature", "tokens"),
    ("unit_name", "tokens"),
    ("included", "10,000"),
    ("price", "2.00"),
    ("package_size", "1000"),
    ("quota", "1000000"),
    ("undecided", "closed"),
];

async fn add(admin: &Browser, id: i64, fields: &[(&str, &str)]) -> reqwest::Response {
    let page = meters_page(id);
    admin.submit(&page, &page, fields).await
}

/// (stripe price id, included, package size, package amount, quota, fail open) of a component.
type Stored = (Option<String>, i64, i64, i64, Option<i64>, bool);

fn stored(app: &TestApp, id: i64, feature: &'static str) -> Option<Stored> {
    app.query(move |conn| {
        Ok(plan_meters::table
            .filter(plan_meters::plan_id.eq(id))
            .filter(plan_meters::feature.eq(feature))
            .select((
                plan_meters::stripe_price_id,
                plan_meters::included,
                plan_meters::package_size,
                plan_meters::package_amount,
                plan_meters::quota,
                plan_meters::fail_open,
            ))
            .first(conn)
            .optional()?)
    })
}

fn meter_id(app: &TestApp, feature: &'static str) -> Option<String> {
    app.query(move |conn| {
        Ok(usage_meters::table
            .find(feature)
            .select(usage_meters::stripe_meter_id)
            .first::<Option<String>>(conn)
            .optional()?
            .flatten())
    })
}

async fn an_admin_adds_a_component_synced_to_a_meter_and_a_tiered_price(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    let res = add(&admin, id, &TOKENS).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), meters_page(id));

    let (price, included, size, amount, quota, fail_open) = stored(&app, id, "tokens").unwrap();
    assert_eq!(
        (included, size, amount, quota, fail_open),
        (10_000, 1_000, 200, Some(1_000_000), false)
    );
    let meter = meter_id(&app, "tokens").expect("the meter is stored");
    let at_stripe = app.stripe_get(&format!("/v1/billing/meters/{meter}")).await;
    assert_eq!(at_stripe["event_name"], "tollgate_tokens");
    assert_eq!(at_stripe["default_aggregation"]["formula"], "sum");
    assert_eq!(
        at_stripe["customer_mapping"]["event_payload_key"],
        "stripe_customer_id"
    );
    assert_eq!(at_stripe["value_settings"]["event_payload_key"], "value");

    let price = app
        .stripe_get(&format!("/v1/prices/{}", price.unwrap()))
        .await;
    assert_eq!(price["recurring"]["usage_type"], "metered");
    assert_eq!(price["recurring"]["meter"], meter.as_str());
    assert_eq!(price["recurring"]["interval"], "month");
    assert_eq!(price["billing_scheme"], "tiered");
    assert_eq!(price["tiers_mode"], "graduated");
    assert_eq!(price["tiers"][0]["up_to"], 10_000);
    assert_eq!(price["tiers"][0]["unit_amount"], 0);
    assert_eq!(price["tiers"][1]["up_to"], Value::Null);
    assert_eq!(price["tiers"][1]["unit_amount_decimal"], "0.2");
    let pro_product = app.query(move |conn| {
        Ok(plans::table
            .find(id)
            .select(plans::stripe_product_id)
            .first::<Option<String>>(conn)?)
    });
    assert_eq!(price["product"].as_str(), pro_product.as_deref());

    let page = admin.get_text(&meters_page(id)).await;
    assert!(page.contains("10,000 tokens included, then $2 per 1,000 tokens"));
    let audit = app.events("plan_meter_changed");
    assert_eq!(audit.len(), 1);

    // A second plan billing tokens shares the meter: Stripe gets no second one.
    assert_eq!(
        admin.create_plan("Team", "team", "9900").await.status(),
        303
    );
    let team = plan_id(&app, "team");
    assert_eq!(add(&admin, team, &TOKENS).await.status(), 303);
    let meters = app.stripe_get("/v1/billing/meters").await;
    assert_eq!(meters["data"].as_array().unwrap().len(), 1);
}

async fn changing_a_components_price_makes_a_new_stripe_price_and_removing_stops_it(
    backend: Backend,
) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    assert_eq!(add(&admin, id, &TOKENS).await.status(), 303);
    let first = stored(&app, id, "tokens").unwrap().0.unwrap();

    // Only the quota changes: the same Stripe price.
    let mut fields = TOKENS.to_vec();
    fields[5] = ("quota", "");
    fields[6] = ("undecided", "open");
    assert_eq!(add(&admin, id, &fields).await.status(), 303);
    let (same, .., quota, fail_open) = stored(&app, id, "tokens").unwrap();
    assert_eq!(same.as_deref(), Some(first.as_str()));
    assert_eq!((quota, fail_open), (None, true));

    // A new price: a new Stripe price, the old one no longer sold.
    fields[3] = ("price", "3.00");
    assert_eq!(add(&admin, id, &fields).await.status(), 303);
    let second = stored(&app, id, "tokens").unwrap().0.unwrap();
    assert_ne!(second, first);
    let old = app.stripe_get(&format!("/v1/prices/{first}")).await;
    assert_eq!(old["active"], false);
    let new = app.stripe_get(&format!("/v1/prices/{second}")).await;
    assert_eq!(new["tiers"][1]["unit_amount_decimal"], "0.3");

    let page = meters_page(id);
    let res = admin
        .submit(&page, &format!("{page}/remove"), &[("feature", "tokens")])
        .await;
    assert_eq!(res.status(), 303);
    assert!(stored(&app, id, "tokens").is_none());
    let removed = app.stripe_get(&format!("/v1/prices/{second}")).await;
    assert_eq!(removed["active"], false);
    assert_eq!(app.count_events("plan_meter_changed"), 4);
    // Removing what is not there is not found.
    let again = admin
        .submit(&page, &format!("{page}/remove"), &[("feature", "tokens")])
        .await;
    assert_eq!(again.status(), 404);
}

async fn invalid_components_are_refused_with_a_message_per_field(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    let huge = "9".repeat(1_000);
    let res = add(
        &admin,
        id,
        &[
            ("feature", "Tokens!"),
            ("unit_name", ""),
            ("included", "-5"),
            ("price", "two dollars"),
            ("package_size", "0"),
            ("quota", huge.as_str()),
            ("undecided", "maybe"),
        ],
    )
    .await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    for message in [
        "The feature key is 1 to 40 lowercase letters",
        "The unit name is 1 to 40 characters",
        "The included quantity is a whole number",
        "Enter the price per package in USD",
        "The package size is a whole number from 1",
        "The quota is a whole number",
        "Choose what happens when Tollgate cannot decide",
    ] {
        assert!(page.contains(message), "{message}");
    }
    assert!(!page.contains(&huge), "the long value is not echoed back");
    // A body beyond the form limit is refused before anything reads it.
    let mut fields = TOKENS.to_vec();
    let flood = "x".repeat(100_000);
    fields[1] = ("unit_name", flood.as_str());
    assert_eq!(add(&admin, id, &fields).await.status(), 413);
    // A quota below what is included.
    let mut fields = TOKENS.to_vec();
    fields[5] = ("quota", "9999");
    let res = add(&admin, id, &fields).await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("The quota cannot be below the included quantity")
    );
    assert!(stored(&app, id, "tokens").is_none());
    assert!(meter_id(&app, "tokens").is_none());
    assert_eq!(app.count_events("plan_meter_changed"), 0);
}

async fn only_admins_with_the_forms_token_change_metering(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    let page = meters_page(id);
    let customer = app.signed_in_customer("customer@example.com").await;
    assert_eq!(customer.get(&page).await.status(), 403);
    let token = customer.csrf_token("/account").await;
    let mut forged = vec![("csrf_token", token.as_str())];
    forged.extend_from_slice(&TOKENS);
    assert_eq!(customer.post_form(&page, &forged).await.status(), 403);
    // The admin's own session without the form's token.
    let res = admin.post_form(&page, &TOKENS).await;
    assert_eq!(res.status(), 403);
    let mut wrong = vec![("csrf_token", "forged")];
    wrong.extend_from_slice(&TOKENS);
    assert_eq!(admin.post_form(&page, &wrong).await.status(), 403);
    // No such plan.
    let missing = meters_page(id + 999);
    assert_eq!(admin.get(&missing).await.status(), 404);
    let token = admin.csrf_token(&page).await;
    let mut elsewhere = vec![("csrf_token", token.as_str())];
    elsewhere.extend_from_slice(&TOKENS);
    assert_eq!(admin.post_form(&missing, &elsewhere).await.status(), 404);
    assert!(stored(&app, id, "tokens").is_none());
    assert!(
        app.stripe_get("/v1/billing/meters").await["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn checkout_carries_the_metered_prices_and_the_pricing_page_shows_them(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    assert_eq!(add(&admin, id, &TOKENS).await.status(), 303);
    let runs = [
        ("feature", "runs"),
        ("unit_name", "runs"),
        ("included", "0"),
        ("price", "0.05"),
        ("package_size", "1"),
        ("quota", ""),
        ("undecided", "open"),
    ];
    assert_eq!(add(&admin, id, &runs).await.status(), 303);

    let pricing = app.browser().get_text("/pricing").await;
    assert!(pricing.contains("10,000 tokens included, then $2 per 1,000 tokens"));
    assert!(pricing.contains("up to 1,000,000 tokens a month"));
    assert!(pricing.contains("$0.05 per run"));

    let customer = app.signed_in_customer("buyer@example.com").await;
    let res = customer.choose_plan("pro").await;
    assert_eq!(res.status(), 303);
    let url = location(&res);
    let session = url.rsplit('/').next().unwrap().to_owned();
    let items = app
        .stripe_get(&format!("/v1/checkout/sessions/{session}/line_items"))
        .await;
    let items = items["data"].as_array().unwrap();
    assert_eq!(items.len(), 3, "the base price and two metered prices");
    assert_eq!(items[0]["quantity"], 1);
    let mut metered: Vec<String> = items[1..]
        .iter()
        .map(|i| {
            assert_eq!(
                i["quantity"],
                Value::Null,
                "metered items carry no quantity"
            );
            assert_eq!(i["price"]["recurring"]["usage_type"], "metered");
            i["price"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    metered.sort();
    let mut expected = vec![
        stored(&app, id, "tokens").unwrap().0.unwrap(),
        stored(&app, id, "runs").unwrap().0.unwrap(),
    ];
    expected.sort();
    assert_eq!(metered, expected);
}

async fn usage_is_previewed_and_billed_at_renewal_by_the_tiers(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let id = plan_id(&app, "pro");
    assert_eq!(add(&admin, id, &TOKENS).await.status(), 303);
    let customer = app.signed_in_customer("metered@example.com").await;
    app.subscribe(&customer, "pro").await;
    let subs = app.stripe_get("/v1/subscriptions").await;
    let sub = &subs["data"][0];
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let stripe_customer = sub["customer"].as_str().unwrap().to_owned();
    let start = sub["items"]["data"][0]["current_period_start"]
        .as_i64()
        .unwrap();
    assert_eq!(sub["items"]["data"].as_array().unwrap().len(), 2);

    // 12,500 tokens this period: 2,500 above the 10,000 included at $2 per 1,000 = $5.00.
    app.sim.with_state(|state| {
        for (value, offset) in [(7_000, 10), (5_500, 20)] {
            state.meter_events.push(MeterEvent {
                identifier: format!("usage-{offset}"),
                event_name: "tollgate_tokens".into(),
                customer: stripe_customer.clone(),
                value,
                timestamp: start + offset,
                created: start + offset,
            });
        }
    });
    let preview: Value = reqwest::Client::new()
        .post(format!("{}/v1/invoices/create_preview", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .form(&[("subscription", sub_id.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usage = preview["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["quantity"] == 12_500)
        .expect("a usage line")
        .clone();
    assert_eq!(usage["amount"], 500);

    assert_eq!(
        app.sim_control(&format!("/_sim/subscriptions/{sub_id}/renew"))
            .await,
        200
    );
    let renewed = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    let invoice = renewed["latest_invoice"].as_str().unwrap();
    let invoice = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(invoice["amount_due"], 2500 + 500);
    assert_eq!(invoice["lines"]["data"][1]["amount"], 500);
}

/// Moving a subscription off a metered plan would have to swap its metered items too; until
/// Tollgate does, the change is refused (nothing at Stripe changes) rather than billing usage
/// at the old plan's rates.
async fn plan_changes_to_or_from_a_metered_plan_are_refused_not_billed_wrong(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    assert_eq!(admin.create_plan("Max", "max", "9900").await.status(), 303);
    let id = plan_id(&app, "pro");
    assert_eq!(add(&admin, id, &TOKENS).await.status(), 303);
    let customer = app.signed_in_customer("metered-change@example.com").await;
    app.subscribe(&customer, "pro").await;
    let res = customer
        .get("/billing/change?plan=max&interval=month")
        .await;
    assert_eq!(res.status(), 303, "no preview");
    let account = customer.get_text("/account").await;
    assert!(account.contains("Plans billed by usage can"), "{account}");
    let sub_id = app.subscription_id(app.user_id("metered-change@example.com"));
    let sub = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    let items = sub["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the plan and its metered item, unchanged");
    assert_eq!(app.count_events("plan_changed"), 0);

    // Nor may the admin change what the subscriber's metered price charges, or remove it:
    // Stripe would go on billing the old price while caps and estimates used the new one.
    let before = stored(&app, id, "tokens");
    let mut dearer = TOKENS;
    dearer[3] = ("price", "3.00");
    let res = add(&admin, id, &dearer).await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("1 customers are subscribed")
    );
    let page = meters_page(id);
    let res = admin
        .submit(&page, &format!("{page}/remove"), &[("feature", "tokens")])
        .await;
    assert_eq!(res.status(), 303);
    assert!(admin.get_text(&page).await.contains("cannot be removed"));
    assert_eq!(stored(&app, id, "tokens"), before, "unchanged");
    // The quota and the undecided policy may still change.
    let mut roomier = TOKENS;
    roomier[5] = ("quota", "2000000");
    assert_eq!(add(&admin, id, &roomier).await.status(), 303);
    assert_eq!(stored(&app, id, "tokens").unwrap().4, Some(2_000_000));
}
