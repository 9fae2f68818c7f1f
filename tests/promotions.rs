//! Coupons and promotion codes: admins create them in the console (synced to Stripe, audited,
//! once per form), the console refuses bad input, non-admins and forged forms; a customer pays
//! with a code at Checkout and the account page shows the discount; discount events applied
//! out of order never bring back an older state.

use diesel::prelude::*;
use serde_json::json;
use tollgate::db::schema::{coupons, promotion_codes};

use crate::common::{Backend, Browser, TestApp, location};
use crate::on_both_backends;

on_both_backends!(
    admins_create_a_coupon_and_a_code_synced_to_stripe,
    the_console_refuses_bad_coupons_and_codes,
    coupon_forms_refuse_other_roles_forged_forms_and_replays,
    a_customer_pays_with_a_code_and_sees_the_discount,
    checkout_refuses_deactivated_and_expired_codes,
    discount_events_out_of_order_never_restore_an_older_state,
    an_old_discounts_deletion_never_hides_the_new_one,
);

/// A coupon form: 20% off for 3 months, with `changes`.
fn coupon_fields<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("name", ""),
        ("percent_off", "20"),
        ("amount_off", ""),
        ("currency", "usd"),
        ("duration", "repeating"),
        ("duration_in_months", "3"),
        ("redeem_by", ""),
        ("max_redemptions", ""),
    ];
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        fields.push((name, value));
    }
    fields
}

async fn create_coupon(admin: &Browser, changes: &[(&str, &str)]) -> reqwest::Response {
    admin
        .submit_operation(
            "/admin/coupons/new",
            "/admin/coupons",
            &coupon_fields(changes),
        )
        .await
}

fn coupon_ids(app: &TestApp) -> Vec<(i64, String)> {
    app.query(|conn| {
        Ok(coupons::table
            .select((coupons::id, coupons::stripe_coupon_id))
            .load(conn)?)
    })
}

async fn create_code(admin: &Browser, coupon: i64, code: &str) -> reqwest::Response {
    let coupon = coupon.to_string();
    let fields = [
        ("coupon_id", coupon.as_str()),
        ("code", code),
        ("expires_at", ""),
        ("max_redemptions", ""),
    ];
    admin
        .submit_operation(
            "/admin/promotion-codes/new",
            "/admin/promotion-codes",
            &fields,
        )
        .await
}

/// The app with the Pro plan and a 20%-for-3-months coupon whose code is SPRING20.
async fn with_code(backend: Backend) -> (TestApp, Browser, String) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    assert_eq!(create_coupon(&admin, &[]).await.status(), 303);
    let (coupon, stripe_coupon) = coupon_ids(&app)[0].clone();
    assert_eq!(create_code(&admin, coupon, "spring20").await.status(), 303);
    (app, admin, stripe_coupon)
}

async fn admins_create_a_coupon_and_a_code_synced_to_stripe(backend: Backend) {
    let (app, admin, stripe_coupon) = with_code(backend).await;
    let at_stripe = app
        .stripe_get(&format!("/v1/coupons/{stripe_coupon}"))
        .await;
    assert_eq!(at_stripe["percent_off"], 20.0);
    assert_eq!(at_stripe["duration"], "repeating");
    assert_eq!(at_stripe["duration_in_months"], 3);
    let code: (String, String, bool) = app.query(|conn| {
        Ok(promotion_codes::table
            .select((
                promotion_codes::code,
                promotion_codes::stripe_promotion_code_id,
                promotion_codes::active,
            ))
            .first(conn)?)
    });
    assert_eq!((code.0.as_str(), code.2), ("SPRING20", true));
    let promo = app
        .stripe_get(&format!("/v1/promotion_codes/{}", code.1))
        .await;
    assert_eq!(promo["code"], "SPRING20");
    assert_eq!(promo["promotion"]["coupon"], stripe_coupon.as_str());
    let page = admin.get_text("/admin/coupons").await;
    assert!(page.contains("20% off") && page.contains("SPRING20") && page.contains("3 months"));
    assert_eq!(app.count_events("coupon_created"), 1);
    assert_eq!(app.count_events("promotion_code_created"), 1);

    // Deactivated at Stripe and here, once.
    let id = app.query(|conn| {
        Ok(promotion_codes::table
            .select(promotion_codes::id)
            .first::<i64>(conn)?)
    });
    let fields = [("code_id", id.to_string())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = admin
        .submit_operation(
            "/admin/coupons",
            "/admin/promotion-codes/deactivate",
            &fields,
        )
        .await;
    assert_eq!(res.status(), 303);
    let promo = app
        .stripe_get(&format!("/v1/promotion_codes/{}", code.1))
        .await;
    assert_eq!(promo["active"], false);
    assert!(admin.get_text("/admin/coupons").await.contains("inactive"));
    assert_eq!(app.count_events("promotion_code_deactivated"), 1);
}

async fn the_console_refuses_bad_coupons_and_codes(backend: Backend) {
    let (app, admin, _) = with_code(backend).await;
    let huge = "9".repeat(30);
    let long = "x".repeat(500);
    for (changes, field) in [
        (vec![("percent_off", "0")], "percent_off"),
        (vec![("percent_off", "101")], "percent_off"),
        (vec![("percent_off", "-5")], "percent_off"),
        (vec![("percent_off", huge.as_str())], "percent_off"),
        (vec![("amount_off", "500")], "percent_off"),
        (vec![("percent_off", "")], "percent_off"),
        (
            vec![("percent_off", ""), ("amount_off", "-1")],
            "amount_off",
        ),
        (
            vec![
                ("percent_off", ""),
                ("amount_off", "500"),
                ("currency", "dollars"),
            ],
            "currency",
        ),
        (vec![("duration", "weekly")], "duration"),
        (vec![("duration_in_months", "0")], "duration_in_months"),
        (vec![("redeem_by", "2001-01-01")], "redeem_by"),
        (vec![("max_redemptions", "0")], "max_redemptions"),
        (vec![("name", long.as_str())], "name"),
    ] {
        let res = create_coupon(&admin, &changes).await;
        assert_eq!(res.status(), 422, "{changes:?}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains(&format!("id=\"{field}-error\"")),
            "{changes:?}: {page}"
        );
    }
    assert_eq!(coupon_ids(&app).len(), 1, "nothing was created");
    assert_eq!(
        app.stripe_get("/v1/coupons").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let coupon = coupon_ids(&app)[0].0;
    for bad in ["ab", "has space", "<b>x</b>", "TOO-LONG-FOR-A-CODE-XYZ"] {
        let res = create_code(&admin, coupon, bad).await;
        assert_eq!(res.status(), 422, "{bad}");
    }
    let res = create_code(&admin, coupon, "Spring20").await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Another promotion code already uses this code.")
    );
    assert_eq!(
        create_code(&admin, coupon + 100, "OTHER").await.status(),
        422
    );
    let codes = app.stripe_get("/v1/promotion_codes").await;
    assert_eq!(codes["data"].as_array().unwrap().len(), 1);
}

async fn coupon_forms_refuse_other_roles_forged_forms_and_replays(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("customer@example.com").await;
    assert_eq!(customer.get("/admin/coupons").await.status(), 403);
    assert_eq!(customer.get("/admin/coupons/new").await.status(), 403);
    let token = customer.csrf_token("/account").await;
    let mut fields = coupon_fields(&[]);
    fields.push(("csrf_token", &token));
    fields.push(("operation_id", "AAAAAAAAAAAAAAAAAAAAAA"));
    assert_eq!(
        customer.post_form("/admin/coupons", &fields).await.status(),
        403
    );
    // The admin's form without its CSRF token, or with another session's.
    let op = crate::common::hidden(&admin.get_text("/admin/coupons/new").await, "operation_id");
    let mut forged = coupon_fields(&[]);
    forged.push(("operation_id", &op));
    assert_eq!(
        admin.post_form("/admin/coupons", &forged).await.status(),
        403
    );
    forged.push(("csrf_token", &token));
    assert_eq!(
        admin.post_form("/admin/coupons", &forged).await.status(),
        403
    );
    assert!(coupon_ids(&app).is_empty());
    assert!(app.count_events("csrf_rejected") >= 2);

    // The same form sent twice creates one coupon, here and at Stripe.
    let admin_token = admin.csrf_token("/admin/coupons/new").await;
    let mut form = coupon_fields(&[]);
    form.push(("operation_id", &op));
    form.push(("csrf_token", &admin_token));
    assert_eq!(admin.post_form("/admin/coupons", &form).await.status(), 303);
    assert_eq!(admin.post_form("/admin/coupons", &form).await.status(), 303);
    assert_eq!(coupon_ids(&app).len(), 1);
    assert_eq!(
        app.stripe_get("/v1/coupons").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.count_events("coupon_created"), 1);
    // Another admin replaying the first one's operation id is refused.
    let other = app.signed_in_admin("other-admin@example.com").await;
    let other_token = other.csrf_token("/admin/coupons/new").await;
    let mut replay = coupon_fields(&[("percent_off", "50")]);
    replay.push(("operation_id", &op));
    replay.push(("csrf_token", &other_token));
    assert_eq!(
        other.post_form("/admin/coupons", &replay).await.status(),
        409
    );
    assert_eq!(coupon_ids(&app).len(), 1);
}

/// The customer's Checkout (for Pro), paid with `code`.
async fn pay_with_code(app: &TestApp, customer: &Browser, code: &str) -> reqwest::Response {
    let res = customer.choose_plan("pro").await;
    assert_eq!(res.status(), 303);
    let checkout = location(&res);
    let page = reqwest::get(&checkout).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("name=\"promotion_code\""),
        "Checkout offers a code field"
    );
    let mut form = crate::common::card_form("4242 4242 4242 4242");
    form.push(("promotion_code", code.to_owned()));
    let _ = app;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(&checkout)
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// The account page once it shows `text` (events arrive asynchronously; up to 10 s).
async fn account_showing(customer: &Browser, text: &str) -> String {
    let mut page = String::new();
    for _ in 0..200 {
        page = customer.get_text("/account").await;
        if page.contains(text) {
            return page;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the account page never showed {text:?}: {page}");
}

async fn a_customer_pays_with_a_code_and_sees_the_discount(backend: Backend) {
    let (app, _admin, _) = with_code(backend).await;
    let customer = app.signed_in_customer("saver@example.com").await;
    let paid = pay_with_code(&app, &customer, "spring20").await;
    assert_eq!(paid.status(), 303);
    let success = location(&paid);
    customer
        .get(success.trim_start_matches(&customer.base))
        .await;
    let page = account_showing(&customer, "20% off, 3 months left").await;
    assert!(
        page.contains("SPRING20") && page.contains("Ends on"),
        "{page}"
    );
    let invoice = app.stripe_object_id("invoice.paid").await;
    let invoice = app.stripe_get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(invoice["amount_due"], 2000);
    assert_eq!(invoice["total_discount_amounts"][0]["amount"], 500);
    let promo = app.stripe_get("/v1/promotion_codes?code=SPRING20").await;
    assert_eq!(promo["data"][0]["times_redeemed"], 1);
    // Another customer's account shows no discount.
    let other = app.signed_in_customer("other@example.com").await;
    assert!(!other.get_text("/account").await.contains("% off"));
}

async fn checkout_refuses_deactivated_and_expired_codes(backend: Backend) {
    let (app, admin, stripe_coupon) = with_code(backend).await;
    let id = app.query(|conn| {
        Ok(promotion_codes::table
            .select(promotion_codes::id)
            .first::<i64>(conn)?)
    });
    let fields = [("code_id", id.to_string())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = admin
        .submit_operation(
            "/admin/coupons",
            "/admin/promotion-codes/deactivate",
            &fields,
        )
        .await;
    assert_eq!(res.status(), 303);
    let customer = app.signed_in_customer("late@example.com").await;
    let res = pay_with_code(&app, &customer, "SPRING20").await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("This code is invalid."));
    // A code that expires in a few seconds (made at Stripe: the console asks for a future day).
    let expires = chrono::Utc::now().timestamp() + 3;
    let made = reqwest::Client::new()
        .post(format!("{}/v1/promotion_codes", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .form(&[
            ("promotion[type]", "coupon".to_owned()),
            ("promotion[coupon]", stripe_coupon),
            ("code", "FLASH".to_owned()),
            ("expires_at", expires.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    while chrono::Utc::now().timestamp() <= expires {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let res = pay_with_code(&app, &customer, "FLASH").await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("This code has expired."));
    let subscriptions: i64 = app.query(|conn| {
        use tollgate::db::schema::subscriptions;
        Ok(subscriptions::table.count().get_result(conn)?)
    });
    assert_eq!(subscriptions, 0, "no refused code led to a subscription");
}

/// A `customer.discount.*` event about `discount` on the customer's subscription.
fn discount_event(
    kind: &str,
    id: &str,
    created: i64,
    (discount, coupon): (&str, &str),
    (customer, subscription): (&str, &str),
) -> serde_json::Value {
    json!({
        "id": id, "object": "event", "api_version": "2026-09-30.endive", "created": created,
        "livemode": false, "pending_webhooks": 1, "type": kind,
        "request": { "id": null, "idempotency_key": null },
        "data": { "object": {
            "id": discount, "object": "discount", "checkout_session": null, "customer": customer,
            "customer_account": null, "end": null, "invoice": null, "invoice_item": null,
            "promotion_code": null, "source": { "coupon": coupon, "type": "coupon" },
            "start": created, "subscription": subscription, "subscription_item": null,
        }},
    })
}

async fn discount_events_out_of_order_never_restore_an_older_state(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let amount = [
        ("percent_off", ""),
        ("amount_off", "500"),
        ("duration", "forever"),
    ];
    assert_eq!(create_coupon(&admin, &amount).await.status(), 303);
    let coupon = coupon_ids(&app)[0].1.clone();
    let customer = app.signed_in_customer("ordered@example.com").await;
    app.subscribe(&customer, "pro").await;
    let stripe_customer = app.stripe_object_id("customer.created").await;
    let subscription = app.subscription_id(app.user_id("ordered@example.com"));
    let who = (stripe_customer.as_str(), subscription.as_str());
    let now = chrono::Utc::now().timestamp();
    let first = ("di_1First", coupon.as_str());
    let event = |kind: &str, id: &str, at: i64, d| discount_event(kind, id, at, d, who);

    app.assert_webhook_accepted(&event(
        "customer.discount.created",
        "evt_d1",
        now - 100,
        first,
    ))
    .await;
    account_showing(&customer, "$5.00 off forever").await;
    app.assert_webhook_accepted(&event(
        "customer.discount.deleted",
        "evt_d2",
        now - 50,
        first,
    ))
    .await;
    assert!(!customer.get_text("/account").await.contains("off forever"));
    // Older than the deletion, or at the same second: the deletion stands.
    app.assert_webhook_accepted(&event(
        "customer.discount.created",
        "evt_d3",
        now - 100,
        first,
    ))
    .await;
    app.assert_webhook_accepted(&event(
        "customer.discount.updated",
        "evt_d4",
        now - 50,
        first,
    ))
    .await;
    assert!(!customer.get_text("/account").await.contains("off forever"));
    // A newer discount shows; an older event about another one does not replace it.
    let second = ("di_2Second", coupon.as_str());
    app.assert_webhook_accepted(&event("customer.discount.created", "evt_d5", now, second))
        .await;
    account_showing(&customer, "$5.00 off forever").await;
    app.assert_webhook_accepted(&event(
        "customer.discount.deleted",
        "evt_d6",
        now - 10,
        second,
    ))
    .await;
    account_showing(&customer, "$5.00 off forever").await;
    let stored: String = app.query(|conn| {
        use tollgate::db::schema::subscription_discounts as d;
        Ok(d::table.select(d::stripe_discount_id).first(conn)?)
    });
    assert_eq!(stored, "di_2Second");
}

async fn an_old_discounts_deletion_never_hides_the_new_one(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let amount = [
        ("percent_off", ""),
        ("amount_off", "500"),
        ("duration", "forever"),
    ];
    assert_eq!(create_coupon(&admin, &amount).await.status(), 303);
    let coupon = coupon_ids(&app)[0].1.clone();
    let customer = app.signed_in_customer("replaced@example.com").await;
    app.subscribe(&customer, "pro").await;
    let stripe_customer = app.stripe_object_id("customer.created").await;
    let subscription = app.subscription_id(app.user_id("replaced@example.com"));
    let who = (stripe_customer.as_str(), subscription.as_str());
    let now = chrono::Utc::now().timestamp();
    let old = ("di_1Old", coupon.as_str());
    let new = ("di_2New", coupon.as_str());
    let event = |kind: &str, id: &str, at: i64, d| discount_event(kind, id, at, d, who);

    app.assert_webhook_accepted(&event(
        "customer.discount.created",
        "evt_o1",
        now - 100,
        old,
    ))
    .await;
    // The new discount replaces the old one; the old one's deletion, in the same second,
    // arrives last.
    app.assert_webhook_accepted(&event("customer.discount.created", "evt_o2", now, new))
        .await;
    app.assert_webhook_accepted(&event("customer.discount.deleted", "evt_o3", now, old))
        .await;
    account_showing(&customer, "$5.00 off forever").await;
    let (stored, removed): (String, bool) = app.query(|conn| {
        use tollgate::db::schema::subscription_discounts as d;
        Ok(d::table
            .select((d::stripe_discount_id, d::removed))
            .first(conn)?)
    });
    assert_eq!((stored.as_str(), removed), ("di_2New", false));
}
