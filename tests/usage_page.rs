//! The usage page (issue 16, points 4 and 5): `/account/usage` shows the current period's usage
//! per metered feature against its included quantity and quota, the bill so far from Stripe's
//! invoice preview, a daily SVG chart, BYOK usage apart and a CSV export; the customer sets a
//! spend alert and cap there; admins set a cap per plan and see any customer's page.
//!
//! Until the metered-plan form and the usage API are merged, the fixtures below seed their rows
//! directly (a meter on a plan, usage through the one write path `usage::records::store`).

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tollgate::db::schema::{plan_meters, plans, subscriptions, usage_meters};
use tollgate::usage::records::{self, Destination, NewUsage};

use crate::common::{Backend, Browser, TestApp};
use crate::on_both_backends;

on_both_backends!(
    the_page_shows_usage_against_included_and_quota_with_byok_apart,
    the_estimate_is_stripes_invoice_preview_and_its_absence_is_calm,
    the_daily_chart_draws_one_bar_per_day_with_usage,
    the_csv_holds_exactly_this_users_period_defused,
    customers_without_metered_usage_are_led_to_pricing,
    the_spend_form_validates_saves_and_audits,
    admins_cap_a_plan_and_the_page_shows_the_effective_cap,
    the_console_sees_any_customers_usage_and_customers_see_only_their_own,
);

// --- fixtures (to be swapped for the meters form and the usage API) -----------------------

/// Plan `slug` meters `tokens`: 10,000 included, then $2.00 per 1,000, quota `quota`.
fn meter_tokens(app: &TestApp, slug: &'static str, quota: Option<i64>) {
    app.query(move |conn| {
        let now = Utc::now().naive_utc();
        let plan_id: i64 = plans::table
            .filter(plans::slug.eq(slug))
            .select(plans::id)
            .first(conn)?;
        diesel::insert_into(usage_meters::table)
            .values((
                usage_meters::feature.eq("tokens"),
                usage_meters::unit_name.eq("tokens"),
                usage_meters::event_name.eq("tollgate_tokens"),
                usage_meters::created_at.eq(now),
                usage_meters::updated_at.eq(now),
            ))
            .execute(conn)?;
        diesel::insert_into(plan_meters::table)
            .values((
                plan_meters::plan_id.eq(plan_id),
                plan_meters::feature.eq("tokens"),
                plan_meters::included.eq(10_000_i64),
                plan_meters::package_size.eq(1_000_i64),
                plan_meters::package_amount.eq(200_i64),
                plan_meters::quota.eq(quota),
                plan_meters::fail_open.eq(false),
                plan_meters::created_at.eq(now),
                plan_meters::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(())
    });
}

/// A subscribed customer on "pro" (metered), whose local period is moved so it started 20
/// days ago (Stripe's period just began; the page reads Tollgate's copy). Their user id.
async fn metered_customer(app: &TestApp, email: &str) -> (Browser, i64) {
    let customer = app.signed_in_customer(email).await;
    app.subscribe(&customer, "pro").await;
    app.settle().await;
    let user_id = app.user_id(email);
    let end = Utc::now().naive_utc() + chrono::Duration::days(10);
    app.query(move |conn| {
        diesel::update(subscriptions::table.filter(subscriptions::user_id.eq(user_id)))
            .set(subscriptions::current_period_end.eq(end))
            .execute(conn)?;
        Ok(())
    });
    (customer, user_id)
}

/// Usage of `user_id` stored the way the usage API stores it.
fn record(app: &TestApp, user_id: i64, quantity: i64, key: &str, days_ago: i64, byok: bool) {
    let key = key.to_owned();
    app.query(move |conn| {
        let user = tollgate::accounts::UserId::from(user_id);
        let period = tollgate::usage::period::current(conn, user)?;
        let usage = NewUsage {
            user_id: user,
            feature: "tokens".into(),
            quantity,
            idempotency_key: key,
            occurred_at: ago(days_ago),
            byok,
            reservation_id: None,
            service: "agents".into(),
        };
        let destination = Destination {
            period,
            has_customer: false,
        };
        records::store(conn, &usage, &destination)?;
        Ok(())
    });
}

fn ago(days: i64) -> NaiveDateTime {
    Utc::now().naive_utc() - chrono::Duration::days(days)
}

/// The simulator's preview of `user_id`'s subscription's upcoming invoice: its total.
async fn preview_total(app: &TestApp, user_id: i64) -> i64 {
    let sub = app.subscription_id(user_id);
    let preview: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/invoices/create_preview", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .form(&[("subscription", sub.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    preview["total"].as_i64().unwrap()
}

fn stat(page: &str, label: &str) -> String {
    let end = page
        .find(&format!("<span class=\"stat-label\">{label}"))
        .unwrap_or_else(|| panic!("no {label} stat"));
    let start = page[..end].rfind("<span class=\"stat-value\">").unwrap() + 25;
    page[start..end].trim_end_matches("</span>").to_owned()
}

// --- tests -----------------------------------------------------------------------------------

async fn the_page_shows_usage_against_included_and_quota_with_byok_apart(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", Some(50_000));
    let (customer, user_id) = metered_customer(&app, "meter@example.com").await;
    record(&app, user_id, 12_000, "run-1", 0, false);
    record(&app, user_id, 1_000, "run-2", 2, false);
    record(&app, user_id, 7_777, "byok-1", 1, true);

    let res = customer.get("/account/usage").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("<strong>13,000</strong> tokens used · 10,000 included · quota 50,000"),
        "platform usage only, against included and quota"
    );
    assert!(
        page.contains(
            r#"<progress class="usage-meter usage-meter-over" max="50000" value="13000""#
        )
    );
    assert!(page.contains("26 % of the quota"));
    // 3,000 tokens over the included 10,000 at $2.00 per 1,000.
    assert!(page.contains("Overage so far: <strong>$6.00</strong>"));
    assert_eq!(stat(&page, "usage beyond what is included"), "$6.00");
    assert!(page.contains("10,000 tokens included, then $2.00 per 1,000 tokens"));
    let byok = &page[page.find("With your own key — not billed").unwrap()..];
    assert!(byok.contains("<dd>7,777 tokens</dd>"), "BYOK shown apart");
    assert!(
        !page.contains("20,777"),
        "BYOK never added to the platform's count"
    );
    // Linked from the account page and the navigation.
    assert!(
        customer
            .get_text("/account")
            .await
            .contains(r#"href="/account/usage""#)
    );
    assert!(page.contains(r#"<li><a href="/account/usage">Usage</a></li>"#));
}

async fn the_estimate_is_stripes_invoice_preview_and_its_absence_is_calm(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, user_id) = metered_customer(&app, "estimate@example.com").await;
    record(&app, user_id, 500, "run-1", 0, false);

    // The page shows what Stripe previews (the simulator previews the base price).
    let total = preview_total(&app, user_id).await;
    assert_eq!(total, 2500);
    let page = customer.get_text("/account/usage").await;
    assert_eq!(stat(&page, "estimated bill so far"), "$25.00");
    assert!(!page.contains("usage-estimate-note"));

    // Stripe unreachable for this customer (no Stripe customer on record): the page still
    // answers, calmly, without the estimate and with the usage.
    app.query(move |conn| {
        use tollgate::db::schema::billing_customers;
        diesel::delete(billing_customers::table.filter(billing_customers::user_id.eq(user_id)))
            .execute(conn)?;
        Ok(())
    });
    let res = customer.get("/account/usage").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert_eq!(stat(&page, "estimated bill so far"), "—");
    assert!(page.contains("<strong>500</strong> tokens used"));
    assert!(page.contains("not available right now"));
}

async fn the_daily_chart_draws_one_bar_per_day_with_usage(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, user_id) = metered_customer(&app, "chart@example.com").await;
    record(&app, user_id, 300, "a", 0, false);
    record(&app, user_id, 200, "b", 0, false);
    record(&app, user_id, 900, "c", 3, false);
    record(&app, user_id, 50, "d", 7, false);
    record(&app, user_id, 4_000, "e", 5, true); // BYOK: not drawn
    record(&app, user_id, 10, "f", 40, false); // before the period

    let page = customer.get_text("/account/usage").await;
    let svg_start = page.find("<svg class=\"chart usage-chart\"").unwrap();
    let svg = &page[svg_start..svg_start + page[svg_start..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("<rect class=\"usage-bar\"").count(), 3, "{svg}");
    assert!(
        svg.contains("role=\"img\"")
            && svg.contains("<title id=\"usage-chart-1-title\">Tokens per day</title>")
    );
    assert!(
        svg.contains("viewBox=") && !svg.contains(" width=\"720"),
        "scales with the page"
    );
    let today = Utc::now().format("%b %-d").to_string();
    assert!(
        svg.contains(&format!("<title>{today}: 500 tokens</title>")),
        "{svg}"
    );
    // The numbers, for screen readers, in a visually hidden table.
    let table = &page[page.find("<figcaption class=\"visually-hidden\">").unwrap()..];
    assert!(table.contains(&format!("<tr><td>{today}</td><td>500</td></tr>")));
    assert_eq!(
        table[..table.find("</figcaption>").unwrap()]
            .matches("<tr><td>")
            .count(),
        3
    );
}

async fn the_csv_holds_exactly_this_users_period_defused(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, user_id) = metered_customer(&app, "csv@example.com").await;
    let (_other, other_id) = metered_customer(&app, "other@example.com").await;
    record(&app, user_id, 120, "=HYPERLINK(\"http://evil\")", 1, false);
    record(&app, user_id, 5, "run-2", 0, true);
    record(&app, user_id, 9, "old-run", 45, false);
    record(&app, other_id, 777, "other-secret-run", 0, false);

    let res = customer.get("/account/usage.csv").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let disposition = res.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let body = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        ["date", "feature", "quantity", "byok", "idempotency_key"]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "this period's records of this user only: {body}"
    );
    assert_eq!(
        rows[0][1..],
        ["tokens", "120", "false", "'=HYPERLINK(\"http://evil\")"]
    );
    assert_eq!(rows[1][1..], ["tokens", "5", "true", "run-2"]);
    assert!(!body.contains("other-secret-run") && !body.contains("old-run"));
    // No id in a customer's route: there is nothing to point at someone else's.
    assert_eq!(
        customer
            .get("/account/usage.csv?user_id=2")
            .await
            .text()
            .await
            .unwrap(),
        body
    );
    assert_eq!(app.browser().get("/account/usage.csv").await.status(), 303);
}

async fn customers_without_metered_usage_are_led_to_pricing(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    let newcomer = app.signed_in_customer("new@example.com").await;
    let page = newcomer.get_text("/account/usage").await;
    assert!(page.contains("You have no subscription yet"));
    assert!(page.contains(r#"href="/pricing""#));
    assert!(!page.contains("<svg"));
    let csv = newcomer.get_text("/account/usage.csv").await;
    assert_eq!(csv.trim(), "date,feature,quantity,byok,idempotency_key");

    // Subscribed to a plan without metered features.
    let flat = app.signed_in_customer("flat@example.com").await;
    app.subscribe(&flat, "pro").await;
    let page = flat.get_text("/account/usage").await;
    assert!(page.contains("no usage-based features"), "{page}");
    assert!(page.contains(r#"href="/pricing""#));
    let res = flat
        .submit(
            "/account/usage",
            "/account/usage/limits",
            &[("alert", "50"), ("cap", "")],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app.count_events("usage_spend_limits_changed"), 0);
}

async fn the_spend_form_validates_saves_and_audits(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, user_id) = metered_customer(&app, "limits@example.com").await;
    let limits = || {
        app.query(move |conn| {
            use tollgate::db::schema::usage_spend_limits as l;
            Ok(l::table
                .filter(l::user_id.eq(user_id))
                .select((l::alert_amount, l::cap_amount))
                .first::<(Option<i64>, Option<i64>)>(conn)
                .optional()?)
        })
    };
    let action = "/account/usage/limits";
    // No CSRF token, or another session's: refused, nothing stored.
    assert_eq!(
        customer
            .post_form(action, &[("alert", "50")])
            .await
            .status(),
        403
    );
    let stranger = app.signed_in_customer("stranger@example.com").await;
    let foreign = stranger.csrf_token("/account").await;
    let forged = customer
        .post_form(action, &[("csrf_token", foreign.as_str()), ("alert", "50")])
        .await;
    assert_eq!(forged.status(), 403);
    // Invalid amounts come back with a message and the typed value.
    for bad in ["0", "-5", "abc", "1000000.01", "5.001", &"9".repeat(5000)] {
        let res = customer
            .submit("/account/usage", action, &[("alert", bad), ("cap", "")])
            .await;
        assert_eq!(res.status(), 422, "{}", &bad[..bad.len().min(10)]);
        let page = res.text().await.unwrap();
        assert!(
            page.contains("Enter an amount above 0"),
            "{}",
            &bad[..bad.len().min(10)]
        );
        assert!(page.contains(r#"id="alert-error""#));
    }
    let res = customer
        .submit("/account/usage", action, &[("alert", "100"), ("cap", "x")])
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text().await.unwrap().contains(r#"value="100""#),
        "typed values kept"
    );
    assert_eq!(limits(), None);
    assert_eq!(app.count_events("usage_spend_limits_changed"), 0);

    // Saved: shown on the page, a cap below the alert gets a hint, one audit row.
    let res = customer
        .submit(
            "/account/usage",
            action,
            &[("alert", "50.5"), ("cap", "40")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(limits(), Some((Some(5_050), Some(4_000))));
    let page = customer.get_text("/account/usage").await;
    assert!(page.contains(r#"value="50.50""#) && page.contains(r#"value="40.00""#));
    assert_eq!(stat(&page, "spend alert"), "$50.50");
    assert_eq!(stat(&page, "hard cap"), "$40.00");
    assert!(page.contains("Usage stops at <strong>$40.00</strong> a period — your cap."));
    assert!(page.contains("Your cap is below your alert"));
    let events = app.events("usage_spend_limits_changed");
    assert_eq!(events.len(), 1);
    // Cleared: empty fields remove them.
    let res = customer
        .submit("/account/usage", action, &[("alert", ""), ("cap", "")])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(limits(), None);
    assert_eq!(app.count_events("usage_spend_limits_changed"), 2);
    // The stranger's own settings are untouched by all this (and theirs are their own).
    let stranger_id = app.user_id("stranger@example.com");
    assert!(app.query(move |conn| {
        use tollgate::db::schema::usage_spend_limits as l;
        Ok(l::table
            .filter(l::user_id.eq(stranger_id))
            .count()
            .get_result::<i64>(conn)?
            == 0)
    }));
}

async fn admins_cap_a_plan_and_the_page_shows_the_effective_cap(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, _user_id) = metered_customer(&app, "capped@example.com").await;
    let plan_id: i64 = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("pro"))
            .select(plans::id)
            .first(conn)?)
    });
    let path = format!("/admin/plans/{plan_id}/spend-cap");
    assert!(
        admin
            .get_text("/admin/plans")
            .await
            .contains(&format!(r#"href="{path}""#))
    );
    // Refused: without the token, as a customer, for a plan that does not exist, bad amounts.
    assert_eq!(admin.post_form(&path, &[("cap", "30")]).await.status(), 403);
    assert_eq!(customer.get(&path).await.status(), 403);
    let token = customer.csrf_token("/account").await;
    let forged = customer
        .post_form(&path, &[("csrf_token", token.as_str()), ("cap", "1")])
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        admin.get("/admin/plans/999999/spend-cap").await.status(),
        404
    );
    for bad in ["0", "2000000", "ten"] {
        let res = admin.submit(&path, &path, &[("cap", bad)]).await;
        assert_eq!(res.status(), 422, "{bad}");
    }
    assert_eq!(app.count_events("plan_spend_cap_changed"), 0);

    let res = admin.submit(&path, &path, &[("cap", "30")]).await;
    assert_eq!(res.status(), 303);
    assert!(admin.get_text(&path).await.contains(r#"value="30.00""#));
    assert_eq!(app.count_events("plan_spend_cap_changed"), 1);
    let page = customer.get_text("/account/usage").await;
    assert_eq!(stat(&page, "hard cap"), "$30.00");
    assert!(page.contains("Usage stops at <strong>$30.00</strong> a period — your plan"));

    // The customer's own higher cap: the plan's still applies; a lower one is theirs.
    let action = "/account/usage/limits";
    let res = customer
        .submit("/account/usage", action, &[("alert", ""), ("cap", "45")])
        .await;
    assert_eq!(res.status(), 303);
    let page = customer.get_text("/account/usage").await;
    assert!(
        page.contains("Usage stops at <strong>$30.00</strong> a period — your plan"),
        "{page}"
    );
    customer
        .submit("/account/usage", action, &[("alert", ""), ("cap", "12")])
        .await;
    let page = customer.get_text("/account/usage").await;
    assert!(page.contains("Usage stops at <strong>$12.00</strong> a period — your cap."));

    // Empty removes the plan's cap.
    assert_eq!(
        admin.submit(&path, &path, &[("cap", "")]).await.status(),
        303
    );
    assert_eq!(app.count_events("plan_spend_cap_changed"), 2);
    let page = customer.get_text("/account/usage").await;
    assert!(!page.contains("Your plan caps usage"));
}

async fn the_console_sees_any_customers_usage_and_customers_see_only_their_own(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    meter_tokens(&app, "pro", None);
    let (customer, user_id) = metered_customer(&app, "watched@example.com").await;
    let (other, _other_id) = metered_customer(&app, "nosy@example.com").await;
    record(&app, user_id, 4_321, "run-7", 0, false);
    let support = app.signed_in_support("support@example.com").await;
    let path = format!("/admin/customers/{user_id}/usage");

    assert!(
        admin
            .get_text("/admin/customers")
            .await
            .contains(&format!(r#"href="{path}""#))
    );
    for viewer in [&admin, &support] {
        let res = viewer.get(&path).await;
        assert_eq!(res.status(), 200);
        let page = res.text().await.unwrap();
        assert!(page.contains("Usage of watched@example.com"));
        assert!(page.contains("<strong>4,321</strong> tokens used"));
        assert!(
            !page.contains(r#"action="/account/usage/limits""#),
            "no customer form"
        );
    }
    let csv = admin.get_text(&format!("{path}.csv")).await;
    assert!(csv.contains("run-7"));
    assert_eq!(support.get(&format!("{path}.csv")).await.status(), 403);
    assert_eq!(
        admin.get("/admin/customers/999999/usage").await.status(),
        404
    );
    assert_eq!(
        admin
            .get("/admin/customers/999999/usage.csv")
            .await
            .status(),
        404
    );

    // Customers: the console's routes refuse them; their own page shows only their own.
    assert_eq!(other.get(&path).await.status(), 403);
    assert_eq!(other.get(&format!("{path}.csv")).await.status(), 403);
    let page = other.get_text("/account/usage").await;
    assert!(page.contains("<strong>0</strong> tokens used") && !page.contains("4,321"));
    assert!(!other.get_text("/account/usage.csv").await.contains("run-7"));
    assert!(customer.get_text("/account/usage").await.contains("4,321"));
}
