//! The admin console's access rules.

use crate::common::{Backend, TestApp, captured_logs, location};
use crate::on_both_backends;

on_both_backends!(
    admin_console_is_for_admins_only,
    an_anonymous_visit_to_the_console_is_no_error,
    the_customer_list_shows_each_accounts_current_subscription,
);

async fn admin_console_is_for_admins_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let anonymous = app.browser().get("/admin").await;
    assert_eq!(anonymous.status(), 303);
    assert_eq!(location(&anonymous), "/login?next=%2Fadmin");

    let customer = app.signed_in_customer("customer@example.com").await;
    let res = customer.get("/admin").await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("You do not have access to this resource.")
    );

    let admin = app.signed_in_admin("boss@example.com").await;
    let res = admin.get("/admin").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Admin console"));
    assert!(
        html.contains("signup"),
        "the security events table lists the sign-ups"
    );
    // Details keep masked emails; the actor column names the account (an admin can look
    // anyone up under Customers anyway) and links to it.
    assert!(html.contains("<dd>c***r@example.com</dd>"), "{html}");
    assert!(!html.contains("<dd>customer@example.com</dd>"));
    assert!(html.contains(">customer@example.com</a>"));
}

/// Someone not signed in opens `/admin`: a sign-in redirect, logged in its request's span at
/// most at INFO, never at WARN or ERROR (nor is the refusal of a customer an error).
async fn an_anonymous_visit_to_the_console_is_no_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anonymous = app.browser().get("/admin").await;
    assert_eq!(anonymous.status(), 303);
    assert_eq!(location(&anonymous), "/login?next=%2Fadmin");
    let customer = app.signed_in_customer("curious@example.com").await;
    assert_eq!(customer.get("/admin").await.status(), 403);

    let logs = captured_logs();
    let console: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("http.route=/admin "))
        .collect();
    assert!(
        !console.is_empty(),
        "the visits are logged in their request's span"
    );
    let loud: Vec<&&str> = console
        .iter()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(
        loud.is_empty(),
        "a sign-in redirect is not an error: {loud:?}"
    );
}

/// Stores a subscription row for `user` directly (as the webhook path would have), `age_secs`
/// old, on the plan named `plan`.
fn store_subscription(
    app: &TestApp,
    user: i64,
    stripe_id: &str,
    status: &str,
    plan: i64,
    age_secs: i64,
) {
    use diesel::prelude::*;
    use tollgate::db::schema::subscriptions as s;
    let at = tollgate::db::now() - chrono::Duration::seconds(age_secs);
    app.query(|conn| {
        let insert = diesel::insert_into(s::table).values((
            s::user_id.eq(user),
            s::stripe_subscription_id.eq(stripe_id),
            s::plan_id.eq(Some(plan)),
            s::stripe_price_id.eq("price_dummy"),
            s::status.eq(status),
            s::cancel_at_period_end.eq(false),
            s::stripe_updated_at.eq(at),
            s::created_at.eq(at),
            s::updated_at.eq(at),
        ));
        match conn {
            tollgate::db::DbConnection::Sqlite(c) => insert.execute(c),
            tollgate::db::DbConnection::Postgresql(c) => insert.execute(c),
        }
        .map(|_| ())
        .map_err(Into::into)
    });
}

/// A plan row (not on Stripe: only its name matters here).
fn store_plan(app: &TestApp, slug: &str, name: &str) -> i64 {
    use tollgate::db::models::plan::{self, PlanFields};
    app.query(|conn| {
        let fields = PlanFields {
            slug,
            name,
            description: "",
            amount: 1000,
            currency: "usd",
            billing_interval: "month",
            trial_days: 0,
            features: "",
            feature_lines: "",
            highlighted: false,
            yearly_amount: None,
        };
        plan::insert(conn, &fields).map(|row| row.id)
    })
}

/// Each account shows its live subscription when it has one, even behind a newer ended one,
/// else its newest; accounts without one show "none"; the search narrows the list.
async fn the_customer_list_shows_each_accounts_current_subscription(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_customer("boss@example.com").await;
    app.promote_to_admin("boss@example.com");
    for email in [
        "renewed@example.com",
        "lapsed@example.com",
        "browsing@example.com",
    ] {
        app.browser()
            .signup(email, "correct horse battery staple")
            .await;
    }
    let (pro, basic) = (
        store_plan(&app, "pro", "Pro"),
        store_plan(&app, "basic", "Basic"),
    );
    let renewed = app.user_id("renewed@example.com");
    store_subscription(&app, renewed, "sub_old_live", "active", pro, 300);
    store_subscription(&app, renewed, "sub_new_ended", "canceled", basic, 10);
    let lapsed = app.user_id("lapsed@example.com");
    store_subscription(&app, lapsed, "sub_older", "canceled", pro, 300);
    store_subscription(&app, lapsed, "sub_newer", "incomplete_expired", basic, 10);

    let html = admin.get_text("/admin/customers").await;
    let rows: Vec<String> = scraper::Html::parse_document(&html)
        .select(&scraper::Selector::parse("tbody tr").unwrap())
        .map(|row| {
            row.text()
                .filter(|t| !t.trim().is_empty())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let row = |email: &str| {
        rows.iter()
            .find(|r| r.starts_with(email))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        row("renewed@example.com").contains("|Pro|active|—|Usage"),
        "{rows:?}"
    );
    assert!(
        row("lapsed@example.com").contains("|Basic|incomplete_expired|—|Usage"),
        "{rows:?}"
    );
    assert!(
        row("browsing@example.com").contains("|—|none|—|Usage"),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 4, "every account once: {rows:?}");

    let found = admin.get_text("/admin/customers?q=LAPSED").await;
    assert!(found.contains("lapsed@example.com") && !found.contains("renewed@example.com"));
}
