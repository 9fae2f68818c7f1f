//! `/v1/…` as async-stripe reads it: every endpoint Tollgate uses deserializes, API-created
//! subscriptions, Stripe's errors for missing keys and objects, idempotency keys.

use stripe::{ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest as _};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems,
    CreateSubscriptionPaymentBehavior, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems,
};
use stripe_checkout::checkout_session::RetrieveCheckoutSession;
use stripe_core::customer::CreateCustomer;
use stripe_core::event::ListEvent;
use stripe_product::price::{CreatePrice, UpdatePrice};
use stripe_product::product::CreateProduct;

use crate::harness::harness;

#[actix_web::test]
async fn every_endpoint_tollgate_uses_deserializes_with_async_stripe() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let inactive = UpdatePrice::new(price.as_str())
        .active(false)
        .send(&h.client)
        .await
        .unwrap();
    assert!(!inactive.active);
    UpdatePrice::new(price.as_str())
        .active(true)
        .send(&h.client)
        .await
        .unwrap();

    let customer = CreateCustomer::new()
        .email("ada@example.com")
        .send(&h.client)
        .await
        .unwrap();
    assert!(customer.id.as_str().starts_with("cus_"));

    let session = h.checkout(&price, "42").await;
    assert!(session.id.as_str().starts_with("cs_test_"));
    assert_eq!(session.client_reference_id.as_deref(), Some("42"));
    let url = session.url.clone().unwrap();
    assert!(url.starts_with(&h.sim_url));

    let res = h.pay(&url, "4242 4242 4242 4242").await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("http://merchant.example/success?session={}", session.id)
    );

    let done = RetrieveCheckoutSession::new(session.id.clone())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        done.status,
        Some(stripe_checkout::CheckoutSessionStatus::Complete)
    );
    let subscription_id = done.subscription.as_ref().unwrap().id().clone();
    let sub = RetrieveSubscription::new(subscription_id.clone())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.status, stripe_billing::SubscriptionStatus::Active);
    assert!(!sub.cancel_at_period_end);
    assert!(sub.items.data[0].current_period_end > sub.items.data[0].current_period_start);
    let customer_id = sub.customer.id().to_string();

    let canceling = UpdateSubscription::new(subscription_id.clone())
        .cancel_at_period_end(true)
        .send(&h.client)
        .await
        .unwrap();
    assert!(canceling.cancel_at_period_end);
    let bigger = h.plan("Team", 9_900).await;
    let item = sub.items.data[0].id.to_string();
    let switched = UpdateSubscription::new(subscription_id.clone())
        .cancel_at_period_end(false)
        .items(vec![UpdateSubscriptionItems {
            id: Some(item),
            price: Some(bigger.clone()),
            ..Default::default()
        }])
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(switched.items.data[0].price.id.as_str(), bigger);

    let invoice_id = sub.latest_invoice.as_ref().unwrap().id().clone().unwrap();
    let invoice = stripe_billing::invoice::RetrieveInvoice::new(invoice_id)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(invoice.status, Some(stripe_billing::InvoiceStatus::Paid));
    assert_eq!(invoice.amount_paid, 2_500);

    let portal = CreateBillingPortalSession::new()
        .customer(customer_id.as_str())
        .return_url("http://merchant.example/account")
        .send(&h.client)
        .await
        .unwrap();
    assert!(portal.id.as_str().starts_with("bps_") && portal.url.starts_with(&h.sim_url));

    let canceled = CancelSubscription::new(subscription_id)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        canceled.status,
        stripe_billing::SubscriptionStatus::Canceled
    );

    let events = ListEvent::new().limit(3).send(&h.client).await.unwrap();
    assert_eq!(events.data.len(), 3);
    assert!(events.has_more);
    assert_eq!(
        events.data[0].type_.as_str(),
        "customer.subscription.deleted",
        "newest first"
    );
    let all = ListEvent::new().limit(100).send(&h.client).await.unwrap();
    let kinds: Vec<&str> = all.data.iter().map(|e| e.type_.as_str()).collect();
    for kind in [
        "product.created",
        "price.created",
        "price.updated",
        "customer.created",
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.paid",
        "payment_intent.succeeded",
        "billing_portal.session.created",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

/// A subscription created through the API (no Checkout) on a zero price: active at once, its
/// zero invoice paid, no payment intent. A paid price without a trial is refused, as Stripe
/// refuses a customer with no payment method.
#[actix_web::test]
async fn api_subscriptions_start_on_a_zero_price_without_a_payment_method() {
    let h = harness().await;
    let free = h.plan("Hobby", 0).await;
    let paid = h.plan("Pro", 2_500).await;
    let customer = CreateCustomer::new().send(&h.client).await.unwrap();
    let create = |price: &str| {
        CreateSubscription::new()
            .customer(customer.id.as_str())
            .items(vec![CreateSubscriptionItems {
                price: Some(price.to_owned()),
                quantity: Some(1),
                ..CreateSubscriptionItems::new()
            }])
            .payment_behavior(CreateSubscriptionPaymentBehavior::ErrorIfIncomplete)
    };
    let sub = create(&free).send(&h.client).await.unwrap();
    assert_eq!(sub.status, stripe_billing::SubscriptionStatus::Active);
    assert_eq!(sub.items.data[0].price.id.as_str(), free);
    let created = h.wait_for("customer.subscription.created").await;
    assert_eq!(created[0].1["data"]["object"]["id"], sub.id.as_str());
    let invoice = h.wait_for("invoice.paid").await;
    assert_eq!(invoice[0].1["data"]["object"]["amount_paid"], 0);
    assert!(h.delivered("payment_intent.succeeded").is_empty());

    match create(&paid).send(&h.client).await {
        Err(StripeError::Stripe(error, 400)) => assert!(
            error
                .message
                .unwrap()
                .contains("no attached payment source"),
            "refused as Stripe refuses"
        ),
        other => panic!("a paid price without a payment method: {other:?}"),
    }
    let trial = create(&paid)
        .trial_period_days(14u32)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(trial.status, stripe_billing::SubscriptionStatus::Trialing);
}

#[actix_web::test]
async fn requests_without_a_test_key_get_stripe_errors() {
    let h = harness().await;
    let anonymous = ClientBuilder::new("sk_live_DUMMY")
        .url(format!("{}/", h.sim_url))
        .build()
        .unwrap();
    match CreateProduct::new("X").send(&anonymous).await {
        Err(StripeError::Stripe(error, 401)) => {
            assert_eq!(error.type_, stripe::ApiErrorsType::InvalidRequestError);
            assert!(error.message.unwrap().contains("Invalid API Key"));
        }
        other => panic!("expected a 401 Stripe error, got {other:?}"),
    }
    let res = h
        .browser
        .post(format!("{}/v1/products", h.sim_url))
        .form(&[("name", "X")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not provide an API key")
    );

    match CreatePrice::new(stripe_types::Currency::USD)
        .product("prod_missing")
        .unit_amount(100)
        .send(&h.client)
        .await
    {
        Err(StripeError::Stripe(error, 404)) => assert_eq!(error.param.as_deref(), Some("id")),
        other => panic!("expected resource_missing, got {other:?}"),
    }
    match stripe_billing::subscription::RetrieveSubscription::new("sub_nope")
        .send(&h.client)
        .await
    {
        Err(StripeError::Stripe(_, 404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
}

#[actix_web::test]
async fn idempotency_keys_replay_and_refuse_changed_parameters() {
    let h = harness().await;
    let key = IdempotencyKey::new("create-pro-plan-1").unwrap();
    let first = CreateProduct::new("Pro")
        .customize()
        .request_strategy(RequestStrategy::Idempotent(key.clone()))
        .send(&h.client)
        .await
        .unwrap();
    let again = CreateProduct::new("Pro")
        .customize()
        .request_strategy(RequestStrategy::Idempotent(key.clone()))
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(first.id, again.id, "replayed, not created twice");
    let created = ListEvent::new()
        .send(&h.client)
        .await
        .unwrap()
        .data
        .iter()
        .filter(|e| e.type_.as_str() == "product.created")
        .count();
    assert_eq!(created, 1);
    match CreateProduct::new("Other")
        .customize()
        .request_strategy(RequestStrategy::Idempotent(key))
        .send(&h.client)
        .await
    {
        Err(StripeError::Stripe(error, 400)) => {
            assert_eq!(error.type_, stripe::ApiErrorsType::IdempotencyError)
        }
        other => panic!("expected idempotency_error, got {other:?}"),
    }
}
