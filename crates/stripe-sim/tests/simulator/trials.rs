//! Trials without a card, the card on file and cancellation reasons: Checkout's
//! `payment_method_collection=if_required` with its trial settings, the `/_sim` controls that
//! fire `trial_will_end` and end a trial now, `payment_method.*` events when a card is saved
//! at Checkout or in the portal, and `cancellation_details` on subscription updates.

use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionCancellationDetails,
    UpdateSubscriptionCancellationDetailsFeedback,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionPaymentMethodCollection, CreateCheckoutSessionSubscriptionData,
    CreateCheckoutSessionSubscriptionDataTrialSettings,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod,
    RetrieveCheckoutSession,
};

use crate::harness::{Harness, card_form, harness};

/// A Checkout Session for `price` with a 14-day trial; card-free when `without_card`.
async fn trial_session(
    h: &Harness,
    price: &str,
    without_card: bool,
) -> stripe_checkout::CheckoutSession {
    let request = CreateCheckoutSession::new()
        .mode(stripe_checkout::CheckoutSessionMode::Subscription)
        .client_reference_id("1")
        .line_items(vec![CreateCheckoutSessionLineItems {
            price: Some(price.to_owned()),
            quantity: Some(1),
            ..Default::default()
        }])
        .success_url("http://merchant.example/success?session={CHECKOUT_SESSION_ID}");
    let data = CreateCheckoutSessionSubscriptionData {
        trial_period_days: Some(14),
        ..Default::default()
    };
    let request = if without_card {
        request
            .payment_method_collection(CreateCheckoutSessionPaymentMethodCollection::IfRequired)
            .subscription_data(CreateCheckoutSessionSubscriptionData {
                trial_settings: Some(CreateCheckoutSessionSubscriptionDataTrialSettings {
                    end_behavior: CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior {
                        missing_payment_method: CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod::Cancel,
                    },
                }),
                ..data
            })
    } else {
        request.subscription_data(data)
    };
    request.send(&h.client).await.unwrap()
}

async fn control(h: &Harness, path: &str) -> (u16, serde_json::Value) {
    let res = h
        .browser
        .post(format!("{}{path}", h.sim_url))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[actix_web::test]
async fn a_card_free_trial_starts_without_a_card_and_is_cancelled_when_it_ends_without_one() {
    let h = harness().await;
    let price = h.plan("Starter", 2_500).await;
    let session = trial_session(&h, &price, true).await;
    let url = session.url.clone().unwrap();
    let page = h.page(&url).await;
    assert!(
        page.contains("No card needed") && page.contains("Card information (optional)"),
        "{page}"
    );
    let res = h
        .browser
        .post(&url)
        .form(&[("email", "trial@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "no card needed");
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let sub_id = done.subscription.unwrap().id().to_string();
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.status.as_str(), "trialing");
    h.wait_for("checkout.session.completed").await;
    assert!(h.delivered("payment_method.attached").is_empty());
    let raw = h
        .browser
        .get(format!("{}/v1/checkout/sessions/{}", h.sim_url, done.id))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(raw["payment_method_collection"], "if_required");

    let (status, body) = control(&h, &format!("/_sim/subscriptions/{sub_id}/end_trial")).await;
    assert_eq!(status, 200);
    assert_eq!(body["subscription"]["status"], "canceled");
    assert_eq!(
        body["subscription"]["cancellation_details"]["reason"],
        "cancellation_requested"
    );
    let deleted = h.wait_for("customer.subscription.deleted").await;
    assert_eq!(deleted[0].1["data"]["object"]["id"], sub_id.as_str());
    let kinds = h.event_kinds().await;
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("payment_intent.") || k == "invoice.payment_failed"),
        "no payment attempt: {kinds:?}"
    );
    let (status, _) = control(&h, &format!("/_sim/subscriptions/{sub_id}/trial_will_end")).await;
    assert_eq!(status, 400, "only a trialing subscription gets the notice");
    let (status, _) = control(&h, "/_sim/subscriptions/sub_nope/end_trial").await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn a_trial_with_a_card_sends_its_notice_and_is_charged_once_when_it_ends() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = trial_session(&h, &price, false).await;
    let url = session.url.clone().unwrap();
    let res = h
        .browser
        .post(&url)
        .form(&[("email", "trial@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "a card is required");
    assert_eq!(h.pay(&url, "4242 4242 4242 4242").await.status(), 303);
    let attached = h.wait_for("payment_method.attached").await;
    let card = &attached[0].1["data"]["object"];
    assert_eq!(card["type"], "card");
    assert_eq!(card["card"]["brand"], "visa");
    assert_eq!(card["card"]["last4"], "4242");
    assert_eq!(card["card"]["exp_month"], 12);
    assert_eq!(card["card"]["exp_year"], 2034);
    assert!(card["customer"].as_str().unwrap().starts_with("cus_"));
    assert!(!card.to_string().contains("4242424242424242"));

    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let sub_id = done.subscription.unwrap().id().to_string();
    let (status, body) = control(&h, &format!("/_sim/subscriptions/{sub_id}/trial_will_end")).await;
    assert_eq!(status, 200);
    assert!(body["event"].as_str().unwrap().starts_with("evt_"));
    let notice = h.wait_for("customer.subscription.trial_will_end").await;
    assert_eq!(notice[0].1["data"]["object"]["status"], "trialing");

    for _ in 0..2 {
        let (status, _) = control(&h, &format!("/_sim/subscriptions/{sub_id}/end_trial")).await;
        assert_eq!(status, 200);
    }
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.status.as_str(), "active");
    let charged = h.wait_for("payment_intent.succeeded").await;
    assert_eq!(charged[0].1["data"]["object"]["amount"], 2_500);
    let kinds = h.event_kinds().await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "payment_intent.succeeded")
            .count(),
        1,
        "charged once: {kinds:?}"
    );
}

#[actix_web::test]
async fn a_card_updated_in_the_portal_is_attached_and_the_old_one_detached() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let (customer, _) = h.subscribed(&price, "4242 4242 4242 4242").await;
    let portal = h.portal(&customer).await;
    let page = h.page(&portal).await;
    assert!(
        page.contains("Update card") && page.contains("•••• 4242"),
        "{page}"
    );

    let res = h
        .browser
        .post(format!("{portal}/card"))
        .form(&[("card_number", "4242")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "incomplete details are refused");
    let res = h
        .browser
        .post(format!("{portal}/card"))
        .form(&card_form("5555 5555 5555 4444"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let attached = h.wait_for_count("payment_method.attached", 2).await;
    let newest = attached
        .iter()
        .find(|(_, e)| e["data"]["object"]["card"]["last4"] == "4444")
        .expect("the new card is attached");
    assert_eq!(newest.1["data"]["object"]["card"]["brand"], "mastercard");
    let detached = h.wait_for("payment_method.detached").await;
    let event = &detached[0].1;
    assert_eq!(event["data"]["object"]["card"]["last4"], "4242");
    assert!(event["data"]["object"]["customer"].is_null());
    assert_eq!(
        event["data"]["previous_attributes"]["customer"],
        customer.as_str()
    );
    let page = h.page(&portal).await;
    assert!(
        page.contains("•••• 4444") && !page.contains("•••• 4242"),
        "{page}"
    );
}

#[actix_web::test]
async fn subscription_updates_keep_cancellation_details_and_refuse_unknown_feedback() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let (_, sub_id) = h.subscribed(&price, "4242 4242 4242 4242").await;
    let sub = UpdateSubscription::new(sub_id.as_str())
        .cancel_at_period_end(true)
        .cancellation_details(UpdateSubscriptionCancellationDetails {
            comment: Some("Too pricey for us".into()),
            feedback: Some(UpdateSubscriptionCancellationDetailsFeedback::TooExpensive),
            ..UpdateSubscriptionCancellationDetails::new()
        })
        .send(&h.client)
        .await
        .unwrap();
    assert!(sub.cancel_at_period_end);
    let details = sub.cancellation_details.unwrap();
    assert_eq!(
        details.feedback.map(|f| f.as_str().to_owned()).as_deref(),
        Some("too_expensive")
    );
    assert_eq!(details.comment.as_deref(), Some("Too pricey for us"));

    let res = h
        .browser
        .post(format!("{}/v1/subscriptions/{sub_id}", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .form(&[("cancellation_details[feedback]", "bored")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["param"], "cancellation_details[feedback]");
    let res = h
        .browser
        .post(format!("{}/v1/checkout/sessions", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .form(&[
            ("mode", "subscription"),
            ("line_items[0][price]", price.as_str()),
            ("success_url", "http://merchant.example/ok"),
            ("payment_method_collection", "never"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
