//! Pricing that reads like a product: feature lines (not entitlement keys), a "most popular"
//! badge, monthly and yearly prices behind a script-free switch, the current plan marked, a
//! plan chosen before signing up carried to its checkout confirmation, free plans without a
//! card, and the rename flash.

use diesel::prelude::*;
use tollgate::db::schema::{plans, subscriptions};

use crate::common::{Backend, Browser, PASSWORD, TestApp, hidden, location};
use crate::on_both_backends;

on_both_backends!(
    pricing_shows_feature_lines_not_entitlement_keys_and_one_popular_plan,
    feature_lines_are_validated_with_clear_messages,
    the_yearly_switch_needs_a_yearly_price_and_checkout_charges_it,
    yearly_prices_are_replaced_dropped_and_archived_at_stripe,
    forged_intervals_and_archived_plans_never_reach_stripe,
    a_plan_chosen_before_sign_up_lands_on_its_checkout_confirmation,
    a_plan_chosen_before_sign_in_lands_on_its_confirmation_but_admins_on_the_console,
    a_bogus_plan_choice_is_ignored_safely,
    a_free_plan_subscribes_without_checkout_or_a_card,
    the_flash_after_a_rename_names_the_plan_as_it_is_now,
    a_plan_an_admin_adds_on_one_instance_is_on_sale_on_another_within_a_second,
);

/// N instances as one: `/pricing` keeps the active plans in memory, for one second at most, so
/// a plan added (or changed) on one instance is on sale on every other within a second.
async fn a_plan_an_admin_adds_on_one_instance_is_on_sale_on_another_within_a_second(
    backend: Backend,
) {
    let first = TestApp::spawn(backend).await;
    let second = TestApp::spawn_on(first.database_handle(), backend, |_| {}).await;
    let visitor = second.browser();
    let page = visitor.get("/pricing").await.text().await.unwrap();
    assert!(
        !page.contains("Scale plan"),
        "nothing on sale yet, and now cached"
    );
    let admin = first.signed_in_admin("admin@example.com").await;
    assert_eq!(
        admin
            .create_plan("Scale plan", "scale", "9900")
            .await
            .status(),
        303
    );
    let changed = std::time::Instant::now();
    loop {
        let page = visitor.get("/pricing").await.text().await.unwrap();
        if page.contains("Scale plan") {
            break;
        }
        assert!(
            // A second of cache, and room for a slow request or two.
            changed.elapsed() < std::time::Duration::from_secs(3),
            "the other instance still shows its cached plans"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A plan form: the defaults (Pro, $25.00 a month) with `overrides` applied.
fn plan_form<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("name", "Pro"),
        ("slug", "pro"),
        ("description", "For teams that run agents all day"),
        ("amount", "2500"),
        ("currency", "usd"),
        ("interval", "month"),
        ("trial_days", "0"),
        ("features", "agents:unlimited\nsupport:priority"),
        ("feature_lines", "Unlimited agents\nPriority support"),
        ("yearly_amount", ""),
    ];
    for (name, value) in overrides {
        fields.retain(|(field, _)| field != name);
        fields.push((name, value));
    }
    fields
}

/// Submits the new-plan form (`id` None) or the edit form of plan `id`.
async fn save_plan(
    browser: &Browser,
    id: Option<i64>,
    overrides: &[(&str, &str)],
) -> reqwest::Response {
    let (page, action) = match id {
        Some(id) => (
            format!("/admin/plans/{id}/edit"),
            format!("/admin/plans/{id}"),
        ),
        None => ("/admin/plans/new".to_owned(), "/admin/plans".to_owned()),
    };
    let op = hidden(&browser.get_text(&page).await, "operation_id");
    let mut fields = plan_form(overrides);
    fields.push(("operation_id", &op));
    browser.submit(&page, &action, &fields).await
}

struct PlanIds {
    id: i64,
    price: Option<String>,
    yearly_price: Option<String>,
}

fn plan_ids(app: &TestApp, slug: &str) -> PlanIds {
    let slug = slug.to_owned();
    let (id, price, yearly_price) = app.query(move |conn| {
        Ok(plans::table
            .filter(plans::slug.eq(slug))
            .select((
                plans::id,
                plans::stripe_price_id,
                plans::stripe_yearly_price_id,
            ))
            .first::<(i64, Option<String>, Option<String>)>(conn)?)
    });
    PlanIds {
        id,
        price,
        yearly_price,
    }
}

/// The HTML of the pricing card whose heading is `name`.
fn card(html: &str, name: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let cards = scraper::Selector::parse("article.plan").unwrap();
    let heading = scraper::Selector::parse("h2").unwrap();
    document
        .select(&cards)
        .find(|card| {
            card.select(&heading)
                .next()
                .is_some_and(|h| h.text().collect::<String>() == name)
        })
        .map(|card| card.html())
        .unwrap_or_else(|| panic!("no card for {name}: {html}"))
}

/// Every link's target on a page, as a browser reads it.
fn links(html: &str) -> Vec<String> {
    let document = scraper::Html::parse_fragment(html);
    let anchors = scraper::Selector::parse("a[href]").unwrap();
    document
        .select(&anchors)
        .filter_map(|a| a.value().attr("href"))
        .map(str::to_owned)
        .collect()
}

/// Submits the pricing page's checkout form for `slug` billed per `interval`.
/// Pays at the simulator's Checkout and follows the redirect back.
async fn pay_and_return(app: &TestApp, browser: &Browser, checkout_url: &str) {
    let paid = app.pay(checkout_url, "4242 4242 4242 4242").await;
    assert_eq!(paid.status(), 303);
    let back = location(&paid);
    let res = browser.get(back.trim_start_matches(&browser.base)).await;
    assert_eq!(res.status(), 200);
}

fn subscription_price(app: &TestApp, email: &str) -> String {
    let user = app.user_id(email);
    app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::user_id.eq(user))
            .select(subscriptions::stripe_price_id)
            .first(conn)?)
    })
}

fn subscription_count(app: &TestApp, email: &str) -> i64 {
    let user = app.user_id(email);
    app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::user_id.eq(user))
            .count()
            .get_result(conn)?)
    })
}

async fn count_stripe_events(app: &TestApp, kind: &str) -> usize {
    let events = app.stripe_events().await;
    events.iter().filter(|e| e["type"] == kind).count()
}

async fn pricing_shows_feature_lines_not_entitlement_keys_and_one_popular_plan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let starter = [
        ("name", "Starter"),
        ("slug", "starter"),
        ("amount", "900"),
        ("features", "agents:3"),
        ("feature_lines", "3 agents"),
        ("highlighted", "on"),
    ];
    assert_eq!(save_plan(&admin, None, &starter).await.status(), 303);
    let pro = [("highlighted", "on"), ("trial_days", "14")];
    assert_eq!(save_plan(&admin, None, &pro).await.status(), 303);

    let html = app.browser().get_text("/pricing").await;
    let pro_card = card(&html, "Pro");
    assert!(
        pro_card.contains("<li>Unlimited agents</li>")
            && pro_card.contains("<li>Priority support</li>")
    );
    assert!(pro_card.contains("plan-highlighted") && pro_card.contains("Most popular"));
    assert!(pro_card.contains("14-day free trial"));
    for key in ["agents:unlimited", "support:priority", "agents:3", "<code>"] {
        assert!(!html.contains(key), "pricing shows {key}");
    }
    assert_eq!(
        html.matches("Most popular").count(),
        1,
        "marking Pro took the badge from Starter"
    );
    assert!(!card(&html, "Starter").contains("plan-highlighted"));
    let edit = admin
        .get_text(&format!("/admin/plans/{}/edit", plan_ids(&app, "pro").id))
        .await;
    assert!(edit.contains(r#"name="highlighted" type="checkbox" value="on" checked"#));
    assert!(edit.contains("Unlimited agents\nPriority support</textarea>"));

    // The current plan is marked for a signed-in customer, in the new layout too.
    let customer = app.signed_in_customer("current@example.com").await;
    let res = customer.choose_plan_billed("starter", "month").await;
    pay_and_return(&app, &customer, &location(&res)).await;
    let html = customer.get_text("/pricing").await;
    assert!(card(&html, "Starter").contains("Your current plan"));
    assert!(card(&html, "Starter").contains("Manage subscription"));
    assert!(!card(&html, "Pro").contains("Your current plan"));
    assert!(card(&html, "Pro").contains("Switch to Pro"));
}

async fn feature_lines_are_validated_with_clear_messages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let long = "x".repeat(81);
    let res = save_plan(&admin, None, &[("feature_lines", &format!("Fine\n{long}"))]).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Keep each feature to 80 characters or fewer (feature 2 is longer)."),
        "{html}"
    );
    assert!(html.contains(r#"id="feature_lines-error""#) && html.contains("aria-invalid"));
    let many = "A feature\n".repeat(13);
    let res = save_plan(&admin, None, &[("feature_lines", &many)]).await;
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("List at most 12 features, one per line.")
    );
    let res = save_plan(
        &admin,
        None,
        &[("interval", "year"), ("yearly_amount", "25000")],
    )
    .await;
    assert!(res.text().await.unwrap().contains("billed yearly already"));
    assert_eq!(count_stripe_events(&app, "product.created").await, 0);
}

async fn the_yearly_switch_needs_a_yearly_price_and_checkout_charges_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(save_plan(&admin, None, &[]).await.status(), 303);
    let html = app.browser().get_text("/pricing").await;
    assert!(
        !html.contains("period-year"),
        "no switch without a yearly price"
    );

    let ids = plan_ids(&app, "pro");
    let res = save_plan(&admin, Some(ids.id), &[("yearly_amount", "25000")]).await;
    assert_eq!(res.status(), 303);
    let after = plan_ids(&app, "pro");
    assert_eq!(after.price, ids.price, "the monthly price is kept");
    let yearly = after.yearly_price.expect("a yearly Stripe price");
    let at_stripe = app.stripe_get(&format!("/v1/prices/{yearly}")).await;
    assert_eq!(at_stripe["unit_amount"], 25000);
    assert_eq!(at_stripe["recurring"]["interval"], "year");
    let monthly = app
        .stripe_get(&format!("/v1/prices/{}", ids.price.unwrap()))
        .await;
    assert_eq!(at_stripe["product"], monthly["product"], "one Product");

    let solo = [("name", "Solo"), ("slug", "solo"), ("amount", "900")];
    assert_eq!(save_plan(&admin, None, &solo).await.status(), 303);
    the_pricing_page_offers_pro_both_ways(&app.browser().get_text("/pricing").await);
    assert!(
        app.browser()
            .get_text("/pricing?interval=year")
            .await
            .contains(r#"id="period-year" class="period-input visually-hidden" checked"#)
    );

    let customer = app.signed_in_customer("yearly@example.com").await;
    let res = customer.choose_plan_billed("pro", "year").await;
    assert_eq!(res.status(), 303);
    let checkout = location(&res);
    let session_id = checkout.rsplit('/').next().unwrap();
    let session = app
        .stripe_get(&format!("/v1/checkout/sessions/{session_id}"))
        .await;
    assert_eq!(
        session["amount_total"], 25000,
        "Checkout charges the yearly price"
    );
    pay_and_return(&app, &customer, &checkout).await;
    assert_eq!(subscription_price(&app, "yearly@example.com"), yearly);
    let html = customer.get_text("/pricing").await;
    assert!(
        card(&html, "Pro").contains("Your current plan"),
        "a yearly subscriber's plan is marked"
    );
}

/// Pro (monthly and yearly) has the period switch and both prices, Solo (monthly only) says
/// so; no script or inline style.
fn the_pricing_page_offers_pro_both_ways(html: &str) {
    let solo = card(html, "Solo");
    assert!(solo.contains("Billed monthly only.") && solo.matches("$9.00 / month").count() == 1);
    assert!(html.contains(r#"type="radio" name="period" id="period-month""#));
    assert!(html.contains(r#"<label for="period-year">Yearly</label>"#));
    let pro = card(html, "Pro");
    assert!(pro.contains("$25.00 / month") && pro.contains("$250.00 / year"));
    assert!(pro.contains("Save 16% with yearly billing"));
    assert!(!pro.contains("only."), "Pro is sold both ways");
    assert!(links(&pro).contains(&"/signup?plan=pro&interval=year".to_owned()));
    assert!(links(&pro).contains(&"/signup?plan=pro&interval=month".to_owned()));
    assert!(
        !html.contains("<script") && !html.contains("style="),
        "CSP-clean"
    );
}

async fn yearly_prices_are_replaced_dropped_and_archived_at_stripe(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(&admin, None, &[("yearly_amount", "25000")]).await;
    let first = plan_ids(&app, "pro");
    let old_yearly = first.yearly_price.clone().unwrap();
    save_plan(&admin, Some(first.id), &[("yearly_amount", "24000")]).await;
    let second = plan_ids(&app, "pro");
    let new_yearly = second.yearly_price.clone().unwrap();
    assert_ne!(new_yearly, old_yearly);
    assert_eq!(
        app.stripe_get(&format!("/v1/prices/{old_yearly}")).await["active"],
        false
    );
    assert_eq!(
        app.stripe_get(&format!("/v1/prices/{new_yearly}")).await["unit_amount"],
        24000
    );

    save_plan(&admin, Some(first.id), &[]).await;
    assert_eq!(plan_ids(&app, "pro").yearly_price, None);
    assert_eq!(
        app.stripe_get(&format!("/v1/prices/{new_yearly}")).await["active"],
        false
    );
    let html = app.browser().get_text("/pricing").await;
    assert!(!html.contains("period-year"), "{html}");

    save_plan(&admin, Some(first.id), &[("yearly_amount", "20000")]).await;
    let yearly = plan_ids(&app, "pro").yearly_price.unwrap();
    let archive = format!("/admin/plans/{}/archive", first.id);
    admin.submit_operation(&archive, &archive, &[]).await;
    assert_eq!(
        app.stripe_get(&format!("/v1/prices/{yearly}")).await["active"],
        false
    );
}

async fn forged_intervals_and_archived_plans_never_reach_stripe(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(&admin, None, &[]).await;
    save_plan(&admin, None, &[("name", "Old"), ("slug", "old")]).await;
    let old = plan_ids(&app, "old").id;
    let archive = format!("/admin/plans/{old}/archive");
    admin.submit_operation(&archive, &archive, &[]).await;

    let customer = app.signed_in_customer("forger@example.com").await;
    for (plan, interval, status) in [
        ("pro", "weekly", 400),
        ("pro", "year", 404),
        ("pro", "month\u{0}", 400),
        ("old", "month", 404),
        ("nope", "month", 404),
    ] {
        let res = customer.choose_plan_billed(plan, interval).await;
        assert_eq!(res.status(), status, "{plan} / {interval:?}");
    }
    let page = customer
        .get("/billing/checkout?plan=old&interval=month")
        .await;
    assert_eq!(
        location(&page),
        "/pricing",
        "an archived plan has no confirmation page"
    );
    assert!(
        customer
            .get_text("/pricing")
            .await
            .contains("That plan is not on offer.")
    );
    assert_eq!(
        count_stripe_events(&app, "customer.created").await,
        0,
        "nothing reached Stripe"
    );
}

async fn a_plan_chosen_before_sign_up_lands_on_its_checkout_confirmation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(
        &admin,
        None,
        &[("yearly_amount", "25000"), ("trial_days", "14")],
    )
    .await;

    let visitor = app.browser();
    let signup = visitor.get_text("/signup?plan=pro&interval=year").await;
    assert!(signup.contains("You chose <strong>Pro</strong> ($250.00 / year)"));
    assert_eq!(hidden(&signup, "plan"), "pro");
    assert_eq!(hidden(&signup, "interval"), "year");
    assert!(
        links(&signup).contains(&"/login?plan=pro&interval=year".to_owned()),
        "sign-in keeps it"
    );

    // A refused sign-up keeps the plan.
    let token = crate::common::csrf_token_in(&signup).unwrap();
    let mut form = vec![("csrf_token", token.as_str()), ("email", "not-an-email")];
    form.extend([("password", PASSWORD), ("password_confirm", PASSWORD)]);
    form.extend([("plan", "pro"), ("interval", "year")]);
    let refused = visitor.post_form("/signup", &form).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(hidden(&refused.text().await.unwrap(), "interval"), "year");

    form[1] = ("email", "chooser@example.com");
    let res = visitor.post_form("/signup", &form).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/billing/checkout?plan=pro&interval=year");
    let confirm = visitor.get_text(&location(&res)).await;
    assert!(confirm.contains("Confirm your plan") && confirm.contains("$250.00 / year"));
    assert!(confirm.contains("14-day free trial") && confirm.contains("Continue to payment"));
    assert!(confirm.contains("<li>Unlimited agents</li>"));
    assert_eq!(hidden(&confirm, "interval"), "year");
    let op = hidden(&confirm, "operation_id");
    let fields = [
        ("plan", "pro"),
        ("interval", "year"),
        ("operation_id", op.as_str()),
    ];
    let res = visitor
        .submit(&location(&res), "/billing/checkout", &fields)
        .await;
    assert!(location(&res).starts_with(&format!("{}/checkout/cs_test_", app.stripe)));
    pay_and_return(&app, &visitor, &location(&res)).await;
    let yearly = plan_ids(&app, "pro").yearly_price.unwrap();
    assert_eq!(subscription_price(&app, "chooser@example.com"), yearly);
}

async fn a_plan_chosen_before_sign_in_lands_on_its_confirmation_but_admins_on_the_console(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(&admin, None, &[]).await;
    app.signed_in_customer("returning@example.com").await;

    let visitor = app.browser();
    let login = visitor.get_text("/login?plan=pro&interval=month").await;
    assert_eq!(hidden(&login, "plan"), "pro");
    assert!(
        links(&login).contains(&"/signup?plan=pro&interval=month".to_owned()),
        "sign-up keeps it"
    );
    let with_plan = |email: &'static str| {
        [
            ("email", email),
            ("password", PASSWORD),
            ("plan", "pro"),
            ("interval", "month"),
        ]
    };
    let res = visitor
        .submit("/login", "/login", &with_plan("returning@example.com"))
        .await;
    assert_eq!(location(&res), "/billing/checkout?plan=pro&interval=month");
    assert_eq!(visitor.get(&location(&res)).await.status(), 200);
    // Signed in already: the link goes straight on.
    assert_eq!(
        location(&visitor.get("/signup?plan=pro&interval=month").await),
        "/billing/checkout?plan=pro&interval=month"
    );

    let wrong = [
        ("email", "returning@example.com"),
        ("password", "wrong password here"),
    ];
    let refused = app.browser();
    let mut fields = wrong.to_vec();
    fields.extend([("plan", "pro"), ("interval", "month")]);
    let res = refused
        .submit("/login?plan=pro&interval=month", "/login", &fields)
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        hidden(&res.text().await.unwrap(), "plan"),
        "pro",
        "a refusal keeps it"
    );

    let res = app
        .browser()
        .submit("/login", "/login", &with_plan("admin@example.com"))
        .await;
    assert_eq!(location(&res), "/admin", "admins still land on the console");
}

async fn a_bogus_plan_choice_is_ignored_safely(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(&admin, None, &[]).await;
    save_plan(&admin, None, &[("name", "Old"), ("slug", "old")]).await;
    let old = plan_ids(&app, "old").id;
    let archive = format!("/admin/plans/{old}/archive");
    admin.submit_operation(&archive, &archive, &[]).await;

    let long = format!("/signup?plan={}", "p".repeat(5000));
    for query in [
        "/signup?plan=nope",
        "/signup?plan=old&interval=month",
        "/signup?plan=pro&interval=weekly",
        "/signup?plan=pro&interval=year",
        "/signup?plan=..%2F..%2Fadmin",
        &long,
    ] {
        let res = app.browser().get(query).await;
        assert_eq!(res.status(), 200, "{query}");
        let html = res.text().await.unwrap();
        assert!(
            !html.contains("You chose") && !html.contains(r#"name="plan""#),
            "{query}"
        );
    }
    let visitor = app.browser();
    let fields = [
        ("email", "bogus@example.com"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
        ("plan", "old"),
        ("interval", "month"),
    ];
    let res = visitor.submit("/signup", "/signup", &fields).await;
    assert_eq!(
        location(&res),
        "/account",
        "an archived plan is not carried"
    );
    visitor.logout().await;
    let evil = [
        ("email", "bogus@example.com"),
        ("password", PASSWORD),
        ("next", "https://evil.example/phish"),
        ("plan", "https://evil.example"),
    ];
    let res = visitor.submit("/login", "/login", &evil).await;
    assert_eq!(location(&res), "/account", "never an off-site landing");
    visitor.logout().await;
    let res = visitor
        .submit(
            "/login",
            "/login",
            &[evil[0], evil[1], evil[2], ("plan", "pro")],
        )
        .await;
    assert_eq!(location(&res), "/billing/checkout?plan=pro&interval=month");
}

async fn a_free_plan_subscribes_without_checkout_or_a_card(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let free = [
        ("name", "Hobby"),
        ("slug", "hobby"),
        ("amount", "0"),
        ("feature_lines", "1 agent"),
    ];
    assert_eq!(
        save_plan(&admin, None, &free).await.status(),
        303,
        "amount 0 is allowed"
    );
    save_plan(&admin, None, &[]).await;
    let html = app.browser().get_text("/pricing").await;
    assert!(
        card(&html, "Hobby").contains("Free") && card(&html, "Hobby").contains("No card needed.")
    );

    let customer = app.signed_in_customer("free@example.com").await;
    let confirm = customer
        .get_text("/billing/checkout?plan=hobby&interval=month")
        .await;
    assert!(confirm.contains("Start the Hobby plan") && confirm.contains("no card needed"));
    two_tabs_start_one_subscription_without_checkout(&app, &customer).await;
    let user = app.user_id("free@example.com");
    assert_eq!(app.subscription_status(user), "active");
    let events = app.events("free_subscription_started");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].actor.as_deref(),
        Some(format!("user:{user}").as_str())
    );
    assert!(events[0].details.contains(r#""plan":"hobby""#));

    // On a plan already: another plan (paid or free) goes through the portal.
    for slug in ["pro", "hobby"] {
        let res = customer.choose_plan_billed(slug, "month").await;
        assert!(
            location(&res).contains("/portal/bps_"),
            "{slug}: {}",
            location(&res)
        );
    }
    assert_eq!(subscription_count(&app, "free@example.com"), 1);
}

/// Two tabs choosing the free plan at once still make one subscription, with no Checkout and
/// no payment at Stripe.
async fn two_tabs_start_one_subscription_without_checkout(app: &TestApp, customer: &Browser) {
    let (first, second) = futures_util::join!(
        customer.choose_plan_billed("hobby", ""),
        customer.choose_plan_billed("hobby", "month")
    );
    // Whichever finishes first started the plan (no Checkout); the other did too (the same
    // Stripe write, replayed) or found it and went to the portal.
    let landed = [location(&first), location(&second)];
    assert!(landed.contains(&"/account".to_owned()), "{landed:?}");
    assert!(
        landed
            .iter()
            .all(|l| l == "/account" || l.contains("/portal/bps_")),
        "{landed:?}"
    );
    assert!(customer.get_text("/account").await.contains("Hobby"));
    assert_eq!(subscription_count(app, "free@example.com"), 1);
    assert_eq!(
        count_stripe_events(app, "customer.subscription.created").await,
        1
    );
    assert_eq!(
        count_stripe_events(app, "checkout.session.completed").await,
        0
    );
    assert_eq!(
        count_stripe_events(app, "payment_intent.succeeded").await,
        0
    );
}

async fn the_flash_after_a_rename_names_the_plan_as_it_is_now(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    save_plan(&admin, None, &[]).await;
    let id = plan_ids(&app, "pro").id;
    let res = save_plan(&admin, Some(id), &[("name", "Pro Plus")]).await;
    assert_eq!(res.status(), 303);
    let listing = admin.get_text("/admin/plans").await;
    assert!(listing.contains("Plan “Pro Plus” is updated."), "{listing}");
    assert!(!listing.contains("Plan “Pro” is updated."));
}
