//! Usage-based billing: billing meters, metered tiered prices, Checkout and subscriptions with
//! metered items (no quantity), and the usage their invoices bill (preview and renewal).

use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula,
    CreateBillingMeterValueSettings, ListBillingMeter, RetrieveBillingMeter,
};
use stripe_billing::invoice::RetrieveInvoice;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
    CreatePriceTiers, CreatePriceTiersUpTo,
};
use stripe_product::product::CreateProduct;
use stripe_sim::state::MeterEvent;

use crate::harness::{Harness, harness};

async fn meter(h: &Harness, event_name: &str) -> String {
    let meter = CreateBillingMeter::new(
        CreateBillingMeterDefaultAggregation::new(CreateBillingMeterDefaultAggregationFormula::Sum),
        "Tokens",
        event_name,
    )
    .customer_mapping(CreateBillingMeterCustomerMapping::new(
        "stripe_customer_id",
        CreateBillingMeterCustomerMappingType::ById,
    ))
    .value_settings(CreateBillingMeterValueSettings::new("value"))
    .send(&h.client)
    .await
    .unwrap();
    assert_eq!(meter.event_name, event_name);
    meter.id.to_string()
}

/// A plan at $25/month and its tokens price: 10,000 included, then $2 per 1,000 (0.2¢ each).
async fn metered_plan(h: &Harness) -> (String, String, String) {
    let meter = meter(h, "tollgate_tokens").await;
    let product = CreateProduct::new("Pro").send(&h.client).await.unwrap();
    let base = CreatePrice::new(stripe_types::Currency::USD)
        .product(product.id.as_str())
        .unit_amount(2500)
        .recurring(CreatePriceRecurring::new(
            CreatePriceRecurringInterval::Month,
        ))
        .send(&h.client)
        .await
        .unwrap();
    let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
    recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
    recurring.meter = Some(meter.clone());
    let mut free = CreatePriceTiers::new(CreatePriceTiersUpTo::I64(10_000));
    free.unit_amount = Some(0);
    let mut above = CreatePriceTiers::new(CreatePriceTiersUpTo::Inf);
    above.unit_amount_decimal = Some("0.2".into());
    let tokens = CreatePrice::new(stripe_types::Currency::USD)
        .product(product.id.as_str())
        .recurring(recurring)
        .billing_scheme(stripe_shared::PriceBillingScheme::Tiered)
        .tiers_mode(stripe_shared::PriceTiersMode::Graduated)
        .tiers(vec![free, above])
        .send(&h.client)
        .await
        .unwrap();
    let recurring = tokens.recurring.as_ref().unwrap();
    assert_eq!(recurring.meter.as_deref(), Some(meter.as_str()));
    assert_eq!(recurring.usage_type.as_str(), "metered");
    assert_eq!(tokens.billing_scheme.as_str(), "tiered");
    (meter, base.id.to_string(), tokens.id.to_string())
}

#[actix_web::test]
async fn meters_are_created_listed_and_retrieved() {
    let h = harness().await;
    let id = meter(&h, "tollgate_runs").await;
    let found = RetrieveBillingMeter::new(id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(found.display_name, "Tokens");
    assert_eq!(
        found.customer_mapping.event_payload_key,
        "stripe_customer_id"
    );
    assert_eq!(found.value_settings.event_payload_key, "value");
    let listed = ListBillingMeter::new().send(&h.client).await.unwrap();
    assert_eq!(listed.data.len(), 1);
    // One active meter per event name, as Stripe has it.
    let again = reqwest::Client::new()
        .post(format!("{}/v1/billing/meters", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .form(&[
            ("display_name", "Runs"),
            ("event_name", "tollgate_runs"),
            ("default_aggregation[formula]", "sum"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
}

#[actix_web::test]
async fn metered_prices_render_their_tiers_and_refuse_a_quantity() {
    let h = harness().await;
    let (meter, base, tokens) = metered_plan(&h).await;
    let raw: serde_json::Value = h
        .browser
        .get(format!("{}/v1/prices/{tokens}", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["recurring"]["usage_type"], "metered");
    assert_eq!(raw["recurring"]["meter"], meter.as_str());
    assert_eq!(raw["tiers_mode"], "graduated");
    assert_eq!(raw["tiers"][0]["up_to"], 10_000);
    assert_eq!(raw["tiers"][0]["unit_amount"], 0);
    assert_eq!(raw["tiers"][1]["up_to"], serde_json::Value::Null);
    assert_eq!(raw["tiers"][1]["unit_amount_decimal"], "0.2");
    let with_quantity = CreateCheckoutSession::new()
        .mode(stripe_checkout::CheckoutSessionMode::Subscription)
        .line_items(vec![
            CreateCheckoutSessionLineItems {
                price: Some(base.clone()),
                quantity: Some(1),
                ..Default::default()
            },
            CreateCheckoutSessionLineItems {
                price: Some(tokens.clone()),
                quantity: Some(1),
                ..Default::default()
            },
        ])
        .success_url("http://merchant.example/success")
        .send(&h.client)
        .await;
    assert!(with_quantity.is_err(), "metered items carry no quantity");
}

#[actix_web::test]
async fn usage_is_previewed_and_billed_at_renewal_by_the_tiers() {
    let h = harness().await;
    let (_, base, tokens) = metered_plan(&h).await;
    let session = CreateCheckoutSession::new()
        .mode(stripe_checkout::CheckoutSessionMode::Subscription)
        .client_reference_id("1")
        .line_items(vec![
            CreateCheckoutSessionLineItems {
                price: Some(base.clone()),
                quantity: Some(1),
                ..Default::default()
            },
            CreateCheckoutSessionLineItems {
                price: Some(tokens.clone()),
                ..Default::default()
            },
        ])
        .success_url("http://merchant.example/success")
        .send(&h.client)
        .await
        .unwrap();
    let items: serde_json::Value = h
        .browser
        .get(format!(
            "{}/v1/checkout/sessions/{}/line_items",
            h.sim_url, session.id
        ))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items["data"][1]["price"]["id"], tokens.as_str());
    assert_eq!(items["data"][1]["quantity"], serde_json::Value::Null);
    assert_eq!(
        h.pay(session.url.as_deref().unwrap(), "4242424242424242")
            .await
            .status(),
        303
    );
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let customer = done.customer.unwrap().id().to_string();
    let sub_id = done.subscription.unwrap().id().to_string();
    let sub: serde_json::Value = h
        .browser
        .get(format!("{}/v1/subscriptions/{sub_id}", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = sub["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["price"]["id"], tokens.as_str());
    assert!(items[1].get("quantity").is_none());
    let start = items[0]["current_period_start"].as_i64().unwrap();
    // 12,500 tokens this period (10,000 included, then 0.2¢ each: $5.00), plus events that do
    // not count: another customer's, another meter's, and one before the period.
    h.sim.with_state(|state| {
        for (customer, event_name, value, at) in [
            (customer.as_str(), "tollgate_tokens", 7_000, start + 10),
            (customer.as_str(), "tollgate_tokens", 5_500, start + 20),
            ("cus_other", "tollgate_tokens", 99_000, start + 10),
            (customer.as_str(), "tollgate_runs", 99_000, start + 10),
            (customer.as_str(), "tollgate_tokens", 99_000, start - 10),
        ] {
            state.meter_events.push(MeterEvent {
                identifier: format!("e{}", state.meter_events.len()),
                event_name: event_name.into(),
                customer: customer.into(),
                value,
                timestamp: at,
                created: at,
            });
        }
    });
    let preview: serde_json::Value = h
        .browser
        .post(format!("{}/v1/invoices/create_preview", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .form(&[("subscription", sub_id.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usage = preview["lines"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{preview}"))
        .iter()
        .find(|l| l["pricing"]["price_details"]["price"] == tokens.as_str())
        .unwrap()
        .clone();
    assert_eq!(usage["quantity"], 12_500);
    assert_eq!(usage["amount"], 500);
    let renewed: serde_json::Value = h
        .browser
        .post(format!("{}/_sim/subscriptions/{sub_id}/renew", h.sim_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice_id = renewed["subscription"]["latest_invoice"].as_str().unwrap();
    let invoice = RetrieveInvoice::new(invoice_id)
        .send(&h.client)
        .await
        .unwrap();
    // The new period's $25.00 in advance, the ending period's usage in arrears.
    assert_eq!(invoice.amount_due, 2500 + 500);
    assert_eq!(invoice.lines.data.len(), 2);
    assert_eq!(invoice.lines.data[1].amount, 500);
    assert_eq!(invoice.lines.data[1].quantity, Some(12_500));
}
