//! Coupons and promotion codes: created, read, listed and deactivated through async-stripe;
//! redeemed on the hosted Checkout page (with Stripe's refusals); the discount taken off the
//! subscription's invoices for as long as the coupon's duration lasts.

use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems};
use stripe_product::coupon::{CreateCoupon, RetrieveCoupon};
use stripe_product::promotion_code::{
    CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
    ListPromotionCode, RetrievePromotionCode, UpdatePromotionCode,
};
use stripe_shared::CouponDuration;

use crate::harness::{Harness, card_form, harness};

async fn coupon(
    h: &Harness,
    percent: f64,
    duration: CouponDuration,
    months: Option<i64>,
) -> String {
    let mut request = CreateCoupon::new().percent_off(percent).duration(duration);
    if let Some(months) = months {
        request = request.duration_in_months(months);
    }
    request.send(&h.client).await.unwrap().id.to_string()
}

async fn code(h: &Harness, coupon: &str, code: &str) -> stripe_shared::PromotionCode {
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(coupon.to_owned());
    CreatePromotionCode::new(promotion)
        .code(code)
        .send(&h.client)
        .await
        .unwrap()
}

/// A Checkout session for `price` that accepts promotion codes; its page's address.
async fn checkout(h: &Harness, price: &str) -> String {
    CreateCheckoutSession::new()
        .mode(stripe_checkout::CheckoutSessionMode::Subscription)
        .line_items(vec![CreateCheckoutSessionLineItems {
            price: Some(price.to_owned()),
            quantity: Some(1),
            ..Default::default()
        }])
        .allow_promotion_codes(true)
        .success_url("http://merchant.example/success")
        .send(&h.client)
        .await
        .unwrap()
        .url
        .unwrap()
}

async fn pay_with_code(h: &Harness, url: &str, code: &str) -> reqwest::Response {
    let mut form = card_form("4242 4242 4242 4242");
    form.push(("email", "payer@example.com".to_owned()));
    form.push(("promotion_code", code.to_owned()));
    h.browser.post(url).form(&form).send().await.unwrap()
}

async fn get(h: &Harness, path: &str) -> serde_json::Value {
    h.browser
        .get(format!("{}{path}", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Renews the subscription (paid); the invoice the renewal made.
async fn renew(h: &Harness, subscription: &str) -> serde_json::Value {
    let res: serde_json::Value = h
        .browser
        .post(format!(
            "{}/_sim/subscriptions/{subscription}/renew",
            h.sim_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice = res["subscription"]["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned();
    get(h, &format!("/v1/invoices/{invoice}")).await
}

#[actix_web::test]
async fn coupons_and_codes_are_created_read_listed_and_deactivated() {
    let h = harness().await;
    let id = coupon(&h, 20.0, CouponDuration::Repeating, Some(3)).await;
    let read = RetrieveCoupon::new(id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(read.percent_off, Some(20.0));
    assert_eq!(read.duration_in_months, Some(3));
    assert!(read.valid);
    let promo = code(&h, &id, "SPRING20").await;
    assert!(promo.active);
    assert_eq!(promo.promotion.coupon.as_ref().unwrap().id().as_str(), id);
    // One active code per text, whatever its case.
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(id.clone());
    let taken = CreatePromotionCode::new(promotion)
        .code("spring20")
        .send(&h.client)
        .await;
    assert!(taken.is_err());
    let bad = CreateCoupon::new()
        .duration(CouponDuration::Once)
        .send(&h.client)
        .await;
    assert!(bad.is_err(), "neither percent nor amount");
    let off = UpdatePromotionCode::new(promo.id.as_str())
        .active(false)
        .send(&h.client)
        .await
        .unwrap();
    assert!(!off.active);
    let again = RetrievePromotionCode::new(promo.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert!(!again.active);
    let listed = ListPromotionCode::new()
        .code("SPRING20")
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    assert_eq!(
        get(&h, "/v1/coupons").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[actix_web::test]
async fn a_code_at_checkout_discounts_the_invoices_for_the_coupons_duration() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let repeating = coupon(&h, 20.0, CouponDuration::Repeating, Some(2)).await;
    code(&h, &repeating, "TWOMONTHS").await;
    let url = checkout(&h, &price).await;
    let page = h.page(&url).await;
    assert!(page.contains("name=\"promotion_code\""), "{page}");
    assert_eq!(pay_with_code(&h, &url, "twomonths").await.status(), 303);
    let created = h.wait_for("customer.discount.created").await;
    let discount = &created[0].1["data"]["object"];
    assert_eq!(discount["source"]["coupon"], repeating.as_str());
    let subscription = discount["subscription"].as_str().unwrap().to_owned();
    let sub = get(&h, &format!("/v1/subscriptions/{subscription}")).await;
    assert_eq!(sub["discounts"][0], discount["id"]);
    let first = get(
        &h,
        &format!("/v1/invoices/{}", sub["latest_invoice"].as_str().unwrap()),
    )
    .await;
    assert_eq!(first["amount_due"], 2_000);
    assert_eq!(first["subtotal"], 2_500);
    assert_eq!(first["total_discount_amounts"][0]["amount"], 500);
    // Two months: the first renewal is discounted, the second is not (and the discount ends).
    assert_eq!(renew(&h, &subscription).await["amount_due"], 2_000);
    let third = renew(&h, &subscription).await;
    assert_eq!(third["amount_due"], 2_500);
    assert_eq!(third["total_discount_amounts"], serde_json::json!([]));
    h.wait_for("customer.discount.deleted").await;
    let promo = get(&h, "/v1/promotion_codes?code=TWOMONTHS").await;
    assert_eq!(promo["data"][0]["times_redeemed"], 1);

    // Once: the first invoice only. Forever: every one.
    let once = coupon(&h, 50.0, CouponDuration::Once, None).await;
    code(&h, &once, "HALFOFF").await;
    let url = checkout(&h, &price).await;
    assert_eq!(pay_with_code(&h, &url, "HALFOFF").await.status(), 303);
    let sub = h.wait_for_count("customer.discount.created", 2).await[1].1["data"]["object"]["subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(renew(&h, &sub).await["amount_due"], 2_500);
    let forever = coupon(&h, 10.0, CouponDuration::Forever, None).await;
    code(&h, &forever, "ALWAYS10").await;
    let url = checkout(&h, &price).await;
    assert_eq!(pay_with_code(&h, &url, "ALWAYS10").await.status(), 303);
    let sub = h.wait_for_count("customer.discount.created", 3).await[2].1["data"]["object"]["subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    renew(&h, &sub).await;
    assert_eq!(renew(&h, &sub).await["amount_due"], 2_250);
}

#[actix_web::test]
async fn checkout_refuses_unknown_inactive_expired_and_exhausted_codes() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let id = coupon(&h, 20.0, CouponDuration::Forever, None).await;
    let inactive = code(&h, &id, "GONE").await;
    UpdatePromotionCode::new(inactive.id.as_str())
        .active(false)
        .send(&h.client)
        .await
        .unwrap();
    let expires = chrono::Utc::now().timestamp() + 3;
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(id.clone());
    CreatePromotionCode::new(promotion.clone())
        .code("ONCEONLY")
        .max_redemptions(1)
        .send(&h.client)
        .await
        .unwrap();
    CreatePromotionCode::new(promotion)
        .code("SOON")
        .expires_at(expires)
        .send(&h.client)
        .await
        .unwrap();
    let url = checkout(&h, &price).await;
    assert_eq!(pay_with_code(&h, &url, "ONCEONLY").await.status(), 303);
    while chrono::Utc::now().timestamp() <= expires {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for (typed, message) in [
        ("NOSUCHCODE", "This code is invalid."),
        ("GONE", "This code is invalid."),
        ("SOON", "This code has expired."),
        (
            "ONCEONLY",
            "This code has reached its maximum number of redemptions.",
        ),
    ] {
        let url = checkout(&h, &price).await;
        let res = pay_with_code(&h, &url, typed).await;
        assert_eq!(res.status(), 422, "{typed}");
        assert!(res.text().await.unwrap().contains(message), "{typed}");
    }
    // Without allow_promotion_codes the page has no field, and a code sent anyway is refused.
    let plain = h.checkout(&price, "1").await.url.unwrap();
    assert!(!h.page(&plain).await.contains("promotion_code"));
    assert_eq!(pay_with_code(&h, &plain, "ONCEONLY").await.status(), 422);
}
