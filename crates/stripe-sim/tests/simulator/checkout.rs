//! The hosted Checkout page: the order summary, Stripe's card messages, declined cards, and
//! the favicon browsers ask for.

use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    RetrieveCheckoutSession,
};
use stripe_core::event::ListEvent;
use stripe_sim::{SimConfig, StripeSim};

use crate::harness::{card_form, harness, harness_with, texts};

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
    let text = |css: &str| texts(&page, css);
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
    let text = |css: &str| texts(&page, css);
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

/// Browsers ask every origin for `/favicon.ico`; the simulator's hosted pages answer too, so a
/// checkout page logs no 404 in the console.
#[actix_web::test]
async fn the_simulator_serves_a_favicon() {
    let (server, sim_url, _) = StripeSim::start(SimConfig::local(None))
        .unwrap()
        .into_parts();
    actix_web::rt::spawn(server);
    for path in ["/favicon.ico", "/favicon.svg"] {
        let res = reqwest::get(format!("{sim_url}{path}")).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "image/svg+xml", "{path}");
        assert!(res.text().await.unwrap().starts_with("<svg"), "{path}");
    }
}
