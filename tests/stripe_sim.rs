//! Tollgate's Stripe simulator, driven by `async-stripe` exactly as Tollgate drives Stripe:
//! every endpoint deserializes; idempotency, errors, hosted pages, signed webhooks with retries,
//! and the `/_sim` test controls behave as documented.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use stripe::{
    Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest as _,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems,
    CreateSubscriptionPaymentBehavior, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::event::ListEvent;
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::CreateProduct;
use tollgate::stripe_sim::webhooks::WebhookTarget;
use tollgate::stripe_sim::{SimConfig, StripeSim};

use crate::common::{card_form, confirm_portal_change};

const WEBHOOK_SECRET: &str = "whsec_DUMMYsimulatorsecret";

/// What the test webhook endpoint received.
#[derive(Clone, Default)]
struct Inbox {
    deliveries: Arc<Mutex<Vec<(String, String)>>>,
    /// Answer 500 to this many deliveries before accepting.
    fail_first: Arc<Mutex<usize>>,
}

async fn receive(inbox: web::Data<Inbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let signature = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    inbox
        .deliveries
        .lock()
        .unwrap()
        .push((signature, String::from_utf8(body.to_vec()).unwrap()));
    let mut fail = inbox.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().finish()
}

struct Harness {
    sim_url: String,
    client: Client,
    browser: reqwest::Client,
    inbox: Inbox,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_with(adjust: impl FnOnce(&mut SimConfig)) -> Harness {
    let inbox = Inbox::default();
    let data = web::Data::new(inbox.clone());
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let hook = format!("http://{}/hook", receiver.addrs()[0]);
    actix_web::rt::spawn(receiver.run());
    let mut config = SimConfig::local(Some(WebhookTarget {
        url: hook,
        secret: SecretString::from(WEBHOOK_SECRET.to_owned()),
    }));
    config.retry_base = Duration::from_millis(20);
    config.max_attempts = 4;
    adjust(&mut config);
    let (server, sim_url, _) = StripeSim::start(config).unwrap().into_parts();
    actix_web::rt::spawn(server);
    let client = ClientBuilder::new("sk_test_DUMMY")
        .url(format!("{sim_url}/"))
        .build()
        .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Harness {
        sim_url,
        client,
        browser,
        inbox,
    }
}

impl Harness {
    async fn plan(&self, name: &str, amount: i64) -> String {
        let product = CreateProduct::new(name).send(&self.client).await.unwrap();
        let price = CreatePrice::new(stripe_types::Currency::USD)
            .product(product.id.as_str())
            .unit_amount(amount)
            .recurring(CreatePriceRecurring::new(
                CreatePriceRecurringInterval::Month,
            ))
            .send(&self.client)
            .await
            .unwrap();
        assert_eq!(price.unit_amount, Some(amount));
        price.id.to_string()
    }

    async fn checkout(&self, price: &str, reference: &str) -> stripe_checkout::CheckoutSession {
        CreateCheckoutSession::new()
            .mode(stripe_checkout::CheckoutSessionMode::Subscription)
            .client_reference_id(reference)
            .line_items(vec![CreateCheckoutSessionLineItems {
                price: Some(price.to_owned()),
                quantity: Some(1),
                ..Default::default()
            }])
            .success_url("http://merchant.example/success?session={CHECKOUT_SESSION_ID}")
            .cancel_url("http://merchant.example/pricing")
            .send(&self.client)
            .await
            .unwrap()
    }

    async fn pay(&self, session_url: &str, card: &str) -> reqwest::Response {
        let mut form = card_form(card);
        form.push(("email", "payer@example.com".to_owned()));
        self.browser
            .post(session_url)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Pays a new session for `price` with `card`; the customer's and subscription's ids.
    async fn subscribed(&self, price: &str, card: &str) -> (String, String) {
        let session = self.checkout(price, "1").await;
        assert_eq!(
            self.pay(session.url.as_deref().unwrap(), card)
                .await
                .status(),
            303
        );
        let done = RetrieveCheckoutSession::new(session.id)
            .send(&self.client)
            .await
            .unwrap();
        (
            done.customer.unwrap().id().to_string(),
            done.subscription.unwrap().id().to_string(),
        )
    }

    async fn portal(&self, customer: &str) -> String {
        CreateBillingPortalSession::new()
            .customer(customer)
            .return_url("http://merchant.example/account")
            .send(&self.client)
            .await
            .unwrap()
            .url
    }

    async fn page(&self, url: &str) -> String {
        self.browser
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn event_kinds(&self) -> Vec<String> {
        ListEvent::new()
            .limit(100)
            .send(&self.client)
            .await
            .unwrap()
            .data
            .iter()
            .map(|e| e.type_.as_str().to_owned())
            .collect()
    }

    async fn wait_for(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        self.wait_for_count(kind, 1).await
    }

    /// Waits until at least `count` events of `kind` were delivered (up to 10 s).
    async fn wait_for_count(&self, kind: &str, count: usize) -> Vec<(String, serde_json::Value)> {
        for _ in 0..500 {
            let found = self.delivered(kind);
            if found.len() >= count {
                return found;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {kind} delivered; got {:?}",
            self.inbox
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .map(|(_, b)| b[..60].to_owned())
                .collect::<Vec<_>>()
        );
    }

    fn delivered(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        self.inbox
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|(sig, body)| {
                (
                    sig.clone(),
                    serde_json::from_str::<serde_json::Value>(body).unwrap(),
                )
            })
            .filter(|(_, event)| event["type"] == kind)
            .collect()
    }
}

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

#[actix_web::test]
async fn the_hosted_checkout_declines_4000_0000_0000_0002_and_completes_nothing() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "7").await;
    let url = session.url.clone().unwrap();
    let page = h
        .browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Pro") && page.contains("$25.00") && page.contains("card_number"),
        "{page}"
    );

    let res = h.pay(&url, "4000 0000 0000 0002").await;
    assert_eq!(res.status(), 402);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Your card was declined.")
    );
    let still = RetrieveCheckoutSession::new(session.id.clone())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        still.status,
        Some(stripe_checkout::CheckoutSessionStatus::Open)
    );
    assert!(still.subscription.is_none() && still.customer.is_none());
    let kinds: Vec<String> = ListEvent::new()
        .send(&h.client)
        .await
        .unwrap()
        .data
        .iter()
        .map(|e| e.type_.as_str().to_owned())
        .collect();
    assert!(
        !kinds.iter().any(|k| k.starts_with("customer.")
            || k.starts_with("checkout.")
            || k.starts_with("invoice.")),
        "{kinds:?}"
    );

    assert_eq!(
        h.pay(&url, "4242424242424242").await.status(),
        303,
        "a good card still works afterwards"
    );
    assert_eq!(
        h.pay(&url, "4242424242424242").await.status(),
        409,
        "but only once"
    );
    let cancel = h.browser.get(format!("{url}/cancel")).send().await.unwrap();
    assert_eq!(
        cancel.headers()["location"],
        "http://merchant.example/pricing"
    );
}

#[actix_web::test]
async fn the_checkout_page_summarises_the_order_beside_the_card_form() {
    let h = harness_with(|config| config.business_name = "Acme Robotics".into()).await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "3").await;
    let res = h
        .browser
        .get(session.url.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("style-src 'self'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    let page = res.text().await.unwrap();
    assert!(!page.contains("<style") && !page.contains(" style=") && !page.contains("<script"));
    let doc = scraper::Html::parse_document(&page);
    let text = |css: &str| {
        let selector = scraper::Selector::parse(css).unwrap();
        doc.select(&selector)
            .map(|e| {
                e.text()
                    .flat_map(str::split_whitespace)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert_eq!(text(".summary .merchant-name"), "Acme Robotics");
    assert_eq!(text(".summary h1"), "Subscribe to Pro");
    assert_eq!(text(".summary-price"), "$25.00 per month");
    assert_eq!(text(".line-item"), "Pro Billed monthly $25.00");
    assert_eq!(text(".totals-due"), "Total due today $25.00");
    for field in [
        "email",
        "card_number",
        "card_expiry",
        "card_cvc",
        "cardholder_name",
        "country",
    ] {
        assert!(
            text(&format!("form label[for={field}]")).len() > 3,
            "{field} has a label"
        );
        assert!(page.contains(&format!(r#"name="{field}""#)), "{field}");
    }
    assert!(page.contains(r#"placeholder="MM / YY""#) && page.contains(r#"placeholder="CVC""#));
    assert_eq!(text(".pay-button"), "Subscribe");
    assert!(page.contains("you allow Acme Robotics to charge your card"));
    let css = h
        .browser
        .get(format!("{}/static/hosted.css", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        css.text()
            .await
            .unwrap()
            .contains(".checkout { display: grid;")
    );

    // A trial: nothing due today, and the first charge said when.
    let mut data = CreateCheckoutSessionSubscriptionData::new();
    data.trial_period_days = Some(14);
    let trial = CreateCheckoutSession::new()
        .mode(stripe_checkout::CheckoutSessionMode::Subscription)
        .customer_email("known@example.com")
        .line_items(vec![CreateCheckoutSessionLineItems {
            price: Some(price.clone()),
            quantity: Some(1),
            ..Default::default()
        }])
        .subscription_data(data)
        .success_url("http://merchant.example/success")
        .send(&h.client)
        .await
        .unwrap();
    let page = h.page(trial.url.as_deref().unwrap()).await;
    let doc = scraper::Html::parse_document(&page);
    let text = |css: &str| {
        let selector = scraper::Selector::parse(css).unwrap();
        doc.select(&selector)
            .map(|e| {
                e.text()
                    .flat_map(str::split_whitespace)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert_eq!(text(".summary h1"), "Try Pro");
    assert_eq!(text(".summary-price"), "14 days free");
    assert!(text(".summary-then").starts_with("Then $25.00 per month starting "));
    assert!(text(".line-item").contains("14 days free, then $25.00/month"));
    assert_eq!(text(".totals-due"), "Total due today $0.00");
    assert_eq!(text(".pay-button"), "Start trial");
    assert!(
        page.contains(
            r#"<input id="email" name="email" type="email" value="known@example.com" readonly>"#
        ),
        "a known email is shown, not asked for: {page}"
    );
}

#[actix_web::test]
async fn incomplete_or_expired_card_details_get_stripes_messages_and_charge_nothing() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "4").await;
    let url = session.url.clone().unwrap();
    let submit = |form: Vec<(&'static str, String)>| h.browser.post(&url).form(&form).send();

    let res = submit(vec![
        ("email", "payer@example.com".into()),
        ("card_number", "4242 4242".into()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    for message in [
        "Your card number is incomplete.",
        "Your card&#39;s expiration date is incomplete.",
        "Your card&#39;s security code is incomplete.",
        "Enter the name on your card.",
    ] {
        assert!(page.contains(message), "{message}: {page}");
    }
    assert!(
        !page.contains(r#"value="4242 4242""#),
        "the card number is never echoed"
    );

    let mut expired = card_form("4242 4242 4242 4242");
    expired[1].1 = "01 / 21".into();
    expired.push(("email", "payer@example.com".into()));
    let page = submit(expired).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Your card&#39;s expiration date is in the past."),
        "{page}"
    );
    assert!(
        page.contains(r#"value="Ada Lovelace""#),
        "the name is kept for the retry"
    );

    let mut no_email = card_form("4242 4242 4242 4242");
    no_email.push(("email", "not an address".into()));
    let page = submit(no_email).await.unwrap().text().await.unwrap();
    assert!(page.contains("Your email address is invalid."), "{page}");

    let mut real = card_form("4111 1111 1111 1111");
    real.push(("email", "payer@example.com".into()));
    let res = submit(real).await.unwrap();
    assert_eq!(res.status(), 402);
    assert!(res.text().await.unwrap().contains("used a non test card"));

    let still = RetrieveCheckoutSession::new(session.id.clone())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        still.status,
        Some(stripe_checkout::CheckoutSessionStatus::Open)
    );
    assert!(
        !h.event_kinds()
            .await
            .iter()
            .any(|k| k.starts_with("customer.") || k.starts_with("invoice.")),
        "nothing was created or charged"
    );
    assert_eq!(h.pay(&url, "4242 4242 4242 4242").await.status(), 303);
}

#[actix_web::test]
async fn the_portal_confirms_each_change_before_applying_it() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let other = h.plan("Team", 9_900).await;
    let (customer, sub_id) = h.subscribed(&price, "4242424242424242").await;
    let portal = h.portal(&customer).await;
    let page = h.page(&portal).await;
    assert!(
        page.contains("Cancel plan") && page.contains("payer@example.com"),
        "{page}"
    );
    assert!(page.contains(r#"href="http://merchant.example/account">← Return to Tollgate</a>"#));
    let action = |what: &str| format!("{portal}/subscriptions/{sub_id}/{what}");
    let canceling = || async {
        RetrieveSubscription::new(sub_id.as_str())
            .send(&h.client)
            .await
            .unwrap()
            .cancel_at_period_end
    };
    let updates = || async {
        h.event_kinds()
            .await
            .iter()
            .filter(|k| *k == "customer.subscription.updated")
            .count()
    };

    // A post without the confirmation only shows what would happen.
    let review = h
        .browser
        .post(action("cancel"))
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 200);
    let html = review.text().await.unwrap();
    assert!(
        html.contains("Cancel your plan") && html.contains("stays available"),
        "{html}"
    );
    assert!(!canceling().await, "not applied before it is confirmed");
    assert_eq!(updates().await, 0);

    let done = confirm_portal_change(&h.browser, &action("cancel"), &[]).await;
    assert_eq!(done.status(), 303);
    let back = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.ends_with("?done=cancel"), "{back}");
    assert!(canceling().await);
    let page = h.page(&format!("{}{back}", h.sim_url)).await;
    assert!(
        page.contains("Your plan has been canceled") && page.contains("Renew plan"),
        "{page}"
    );

    let done = confirm_portal_change(&h.browser, &action("resume"), &[]).await;
    assert_eq!(done.status(), 303);
    assert!(!canceling().await);

    let review = h
        .browser
        .post(action("switch"))
        .form(&[("price", other.as_str())])
        .send()
        .await
        .unwrap();
    let html = review.text().await.unwrap();
    assert!(
        html.contains("Confirm your updates")
            && html.contains("Pro — $25.00 / month")
            && html.contains("Team — $99.00 / month"),
        "{html}"
    );
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        sub.items.data[0].price.id.as_str(),
        price,
        "not switched yet"
    );
    let done =
        confirm_portal_change(&h.browser, &action("switch"), &[("price", other.as_str())]).await;
    assert_eq!(done.status(), 303);
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.items.data[0].price.id.as_str(), other);
    assert_eq!(updates().await, 3, "one update per confirmed change");
    let same = h
        .browser
        .post(action("switch"))
        .form(&[("price", other.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        same.status(),
        400,
        "switching to the current plan is no change"
    );

    // Another customer's subscription cannot be changed through this portal.
    let (_, theirs) = h.subscribed(&price, "4242424242424242").await;
    let res = h
        .browser
        .post(format!("{portal}/subscriptions/{theirs}/cancel"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let updated = h.wait_for("customer.subscription.updated").await;
    assert!(
        updated
            .iter()
            .any(|(_, e)| e["data"]["previous_attributes"]["cancel_at_period_end"] == false)
    );
}

#[actix_web::test]
async fn the_portal_shows_the_card_on_file_and_the_invoice_history() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "5").await;
    let mut form = card_form("5555 5555 5555 4444");
    form[1].1 = "08 / 31".to_owned();
    form.push(("email", "card@example.com".to_owned()));
    let paid = h
        .browser
        .post(session.url.as_deref().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let customer = done.customer.unwrap().id().to_string();
    let sub_id = done.subscription.unwrap().id().to_string();
    let renew = format!("{}/_sim/subscriptions/{sub_id}/renew", h.sim_url);
    assert_eq!(h.browser.post(&renew).send().await.unwrap().status(), 200);

    let portal = h.portal(&customer).await;
    let page = h.page(&portal).await;
    assert!(
        page.contains(r#"<span class="card-brand">Mastercard</span> <span class="card-last4">•••• 4444</span>"#)
            && page.contains("Expires 08/2031"),
        "{page}"
    );
    assert!(
        page.contains("<dd>Ada Lovelace</dd>"),
        "the name on the card names the new customer"
    );
    let doc = scraper::Html::parse_document(&page);
    let rows = scraper::Selector::parse("tr.invoice-row").unwrap();
    let rows: Vec<String> = doc
        .select(&rows)
        .map(|r| r.text().collect::<String>())
        .collect();
    assert_eq!(rows.len(), 2, "the first period and the renewal: {rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.contains("$25.00") && r.contains("Paid") && r.contains("Pro")),
        "{rows:?}"
    );

    let link = scraper::Selector::parse("a.invoice-link").unwrap();
    let href = doc
        .select(&link)
        .next()
        .unwrap()
        .value()
        .attr("href")
        .unwrap()
        .to_owned();
    let invoice = h.page(&format!("{}{href}", h.sim_url)).await;
    assert!(
        invoice.contains("Invoice SIM-")
            && invoice.contains("$25.00")
            && invoice.contains("card@example.com"),
        "{invoice}"
    );
    // An invoice is shown only through its own customer's portal.
    let (stranger, _) = h.subscribed(&price, "4242424242424242").await;
    let elsewhere = h.portal(&stranger).await;
    let invoice_id = href.rsplit('/').next().unwrap();
    let res = h
        .browser
        .get(format!("{elsewhere}/invoices/{invoice_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn every_state_change_is_delivered_signed_and_retried() {
    let h = harness().await;
    *h.inbox.fail_first.lock().unwrap() = 2;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "11").await;
    h.pay(session.url.as_deref().unwrap(), "4242424242424242")
        .await;
    for kind in [
        "checkout.session.completed",
        "customer.created",
        "customer.subscription.created",
        "invoice.paid",
        "payment_intent.succeeded",
    ] {
        let delivered = h.wait_for(kind).await;
        for (signature, event) in &delivered {
            // Bodies are re-serialized here, so check against the raw bytes the receiver got.
            let raw = h
                .inbox
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| s == signature)
                .unwrap()
                .1
                .clone();
            let parsed: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(&parsed, event);
            assert!(verify_raw(signature, &raw), "{kind} signature");
        }
    }
    let completed = &h.delivered("checkout.session.completed")[0].1;
    assert_eq!(completed["data"]["object"]["client_reference_id"], "11");
    assert_eq!(completed["data"]["object"]["payment_status"], "paid");
    // The first two deliveries were refused with 500: each of those events is retried (after a
    // backoff, so possibly after the deliveries awaited above) until a 200.
    let mut attempts: Vec<serde_json::Value> = Vec::new();
    for _ in 0..500 {
        attempts = h
            .browser
            .get(format!("{}/_sim/deliveries", h.sim_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refused: Vec<_> = attempts.iter().filter(|a| a["status"] == 500).collect();
        let all_retried = refused.iter().all(|failure| {
            attempts.iter().any(|a| {
                a["event_id"] == failure["event_id"]
                    && a["status"] == 200
                    && a["attempt"].as_u64() > failure["attempt"].as_u64()
            })
        });
        if refused.len() == 2 && all_retried {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the two refused deliveries were not both retried to success: {attempts:?}");
}

fn verify_raw(signature: &str, raw: &str) -> bool {
    let (t, v1) = signature.split_once(',').unwrap();
    let (t, v1) = (
        t.strip_prefix("t=").unwrap(),
        v1.strip_prefix("v1=").unwrap(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{raw}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

#[actix_web::test]
async fn test_controls_renew_fail_dispute_and_redeliver_out_of_order() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "13").await;
    h.pay(session.url.as_deref().unwrap(), "4242424242424242")
        .await;
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let sub_id = done.subscription.unwrap().id().to_string();
    let before = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();

    let renew = |outcome: &str| {
        h.browser
            .post(format!(
                "{}/_sim/subscriptions/{sub_id}/renew?outcome={outcome}",
                h.sim_url
            ))
            .send()
    };
    assert_eq!(renew("paid").await.unwrap().status(), 200);
    let renewed = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        renewed.items.data[0].current_period_start,
        before.items.data[0].current_period_end
    );
    assert_eq!(
        h.wait_for_count("invoice.paid", 2).await.len(),
        2,
        "first period and renewal"
    );

    assert_eq!(renew("failed").await.unwrap().status(), 200);
    let failed = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(failed.status, stripe_billing::SubscriptionStatus::PastDue);
    let payment_failed = h.wait_for("invoice.payment_failed").await;
    assert_eq!(payment_failed[0].1["data"]["object"]["status"], "open");
    h.wait_for("payment_intent.payment_failed").await;

    let pi = h.delivered("payment_intent.succeeded")[0].1["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = h
        .browser
        .post(format!("{}/_sim/disputes?payment_intent={pi}", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dispute = h.wait_for("charge.dispute.created").await;
    assert_eq!(
        dispute[0].1["data"]["object"]["payment_intent"],
        pi.as_str()
    );

    // Re-deliver two events, newest first: the endpoint sees them in that order.
    let events = ListEvent::new().limit(2).send(&h.client).await.unwrap();
    let (newer, older) = (events.data[0].id.to_string(), events.data[1].id.to_string());
    let count = h.inbox.deliveries.lock().unwrap().len();
    let res = h
        .browser
        .post(format!(
            "{}/_sim/events/deliver?ids={newer},{older}",
            h.sim_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for _ in 0..500 {
        if h.inbox.deliveries.lock().unwrap().len() >= count + 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = h.inbox.deliveries.lock().unwrap().clone();
    let ids: Vec<String> = deliveries[count..]
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, [newer.clone(), older]);
    let res = h
        .browser
        .post(format!("{}/_sim/events/{newer}/redeliver", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}
