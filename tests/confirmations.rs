//! Destructive actions ask first, without JavaScript: the page that offers one links to a
//! confirmation page (GET) saying what will happen, whose CSRF-protected button does it and
//! whose link leaves everything as it is. The POST handlers still refuse without a CSRF token,
//! check ownership and audit. Admins revoke service tokens the same way, from `/admin/tokens`.

use diesel::prelude::*;
use scraper::{Html, Selector};
use tollgate::db::schema::{service_tokens, subscriptions};
use tollgate::service_tokens::Scope;

use crate::common::{Backend, Browser, TestApp, csrf_token_in, hidden, location};
use crate::on_both_backends;
use crate::vault::OPENAI_KEY;

on_both_backends!(
    canceling_a_subscription_asks_first_and_says_until_when,
    deleting_a_key_asks_first_and_only_for_ones_own_key,
    archiving_a_plan_asks_first,
    admins_list_service_tokens_and_revoke_them_after_confirming,
    a_revocation_whose_audit_row_cannot_be_written_is_not_committed,
);

fn select<'a>(html: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    html.select(&Selector::parse(css).unwrap()).collect()
}

fn text(html: &Html) -> String {
    html.root_element().text().collect()
}

/// The page that offers the action links to `confirm` and holds no form that does it.
async fn offers_a_link(browser: &Browser, page: &str, confirm: &str) {
    let html = Html::parse_document(&browser.get_text(page).await);
    assert_eq!(
        select(&html, &format!(r#"a[href="{confirm}"]"#)).len(),
        1,
        "{page}"
    );
    assert!(
        select(&html, &format!(r#"form[action="{confirm}"]"#)).is_empty(),
        "{page}"
    );
}

/// The confirmation page: its text, after checking the form and the way back.
async fn confirmation(browser: &Browser, path: &str, button: &str, keep: (&str, &str)) -> String {
    let res = browser.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    let body = res.text().await.unwrap();
    let html = Html::parse_document(&body);
    let form = select(&html, &format!(r#"form[method="post"][action="{path}"]"#));
    assert_eq!(form.len(), 1, "a form that does it");
    assert!(csrf_token_in(&form[0].html()).is_some());
    let buttons = select(&html, r#"form[action] button[type="submit"]"#);
    assert!(
        buttons
            .iter()
            .any(|b| b.text().collect::<String>() == button)
    );
    let links = select(&html, &format!(r#"a[href="{}"]"#, keep.1));
    assert!(
        links.iter().any(|a| a.text().collect::<String>() == keep.0),
        "{keep:?}"
    );
    body
}

/// Posts the confirmation page's own form.
async fn confirm(browser: &Browser, path: &str, body: &str) -> reqwest::Response {
    let token = csrf_token_in(body).unwrap();
    let mut form = vec![("csrf_token", token)];
    if body.contains(r#"name="operation_id""#) {
        form.push(("operation_id", hidden(body, "operation_id")));
    }
    browser
        .client
        .post(browser.url(path))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn canceling_a_subscription_asks_first_and_says_until_when(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("leaving@example.com").await;
    app.subscribe(&customer, "pro").await;
    let path = "/billing/subscription/cancel";
    offers_a_link(&customer, "/account", path).await;
    let body = confirmation(
        &customer,
        path,
        "Cancel subscription",
        ("Keep my subscription", "/account"),
    )
    .await;
    let ends: chrono::NaiveDateTime = app.query(|conn| {
        Ok(subscriptions::table
            .select(subscriptions::current_period_end.assume_not_null())
            .first(conn)?)
    });
    let until = ends.format("%Y-%m-%d %H:%M UTC").to_string();
    assert!(
        text(&Html::parse_document(&body)).contains(&format!("Access continues until {until}."))
    );

    let op = hidden(&body, "operation_id");
    let forged = customer.post_form(path, &[("operation_id", &op)]).await;
    assert_eq!(forged.status(), 403);
    let canceling = || {
        app.query(|c| {
            Ok(subscriptions::table
                .select(subscriptions::cancel_at_period_end)
                .first::<bool>(c)?)
        })
    };
    assert!(!canceling());
    let res = confirm(&customer, path, &body).await;
    assert_eq!(
        (res.status().as_u16(), location(&res).as_str()),
        (303, "/account")
    );
    assert!(canceling());
    assert_eq!(app.count_events("subscription_cancel_requested"), 1);
    let again = customer.get(path).await;
    assert_eq!(location(&again), "/account", "nothing left to cancel");
}

async fn deleting_a_key_asks_first_and_only_for_ones_own_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.signed_in_customer("owner@example.com").await;
    assert_eq!(owner.add_key("openai", OPENAI_KEY).await.status(), 303);
    let path = "/account/keys/openai/delete";
    offers_a_link(&owner, "/account/keys", path).await;
    let body = confirmation(&owner, path, "Delete key", ("Keep my key", "/account/keys")).await;
    let said = text(&Html::parse_document(&body));
    assert!(
        said.contains("Your OpenAI key sk-proj-…xyz will be deleted"),
        "{said}"
    );

    let other = app.signed_in_customer("other@example.com").await;
    assert_eq!(other.get(path).await.status(), 404, "not their key");
    assert_eq!(
        owner.get("/account/keys/anthropic/delete").await.status(),
        404
    );
    assert_eq!(
        owner.post_form(path, &[]).await.status(),
        403,
        "no CSRF token"
    );
    assert!(
        owner
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz")
    );
    let res = confirm(&owner, path, &body).await;
    assert_eq!(
        (res.status().as_u16(), location(&res).as_str()),
        (303, "/account/keys")
    );
    assert!(
        !owner
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz")
    );
    assert_eq!(app.count_events("byok_key_deleted"), 1);
}

async fn archiving_a_plan_asks_first(backend: Backend) {
    let (app, browser) = TestApp::with_pro_plan(backend).await;
    let id: i64 = app.query(|c| {
        Ok(tollgate::db::schema::plans::table
            .select(tollgate::db::schema::plans::id)
            .first(c)?)
    });
    let path = format!("/admin/plans/{id}/archive");
    offers_a_link(&browser, "/admin/plans", &path).await;
    let body = confirmation(
        &browser,
        &path,
        "Archive plan",
        ("Keep the plan", "/admin/plans"),
    )
    .await;
    assert!(text(&Html::parse_document(&body)).contains("Existing subscribers keep it"));
    let customer = app.signed_in_customer("not-admin@example.com").await;
    assert_eq!(customer.get(&path).await.status(), 403);
    let forged = browser
        .post_form(&path, &[("operation_id", &hidden(&body, "operation_id"))])
        .await;
    assert_eq!(forged.status(), 403);
    assert!(app.browser().get_text("/pricing").await.contains("Pro"));
    let res = confirm(&browser, &path, &body).await;
    assert_eq!(
        (res.status().as_u16(), location(&res).as_str()),
        (303, "/admin/plans")
    );
    assert_eq!(app.count_events("plan_archived"), 1);
    assert_eq!(
        location(&browser.get(&path).await),
        "/admin/plans",
        "already archived"
    );
}

async fn admins_list_service_tokens_and_revoke_them_after_confirming(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.service_token("engine", &[Scope::ByokLease, Scope::EntitlementsRead]);
    let browser = app.signed_in_admin("admin@example.com").await;
    let customer = app.signed_in_customer("c@example.com").await;
    assert_eq!(customer.get("/admin/tokens").await.status(), 403);
    assert_eq!(
        location(&app.browser().get("/admin/tokens").await),
        "/login?next=%2Fadmin%2Ftokens"
    );
    let html = the_token_list_shows_no_secret(&app, &browser, &token).await;
    let id: i64 = app.query(|c| Ok(service_tokens::table.select(service_tokens::id).first(c)?));
    let path = format!("/admin/tokens/{id}/revoke");
    offers_a_link(&browser, "/admin/tokens", &path).await;
    assert_eq!(
        select(&html, r#"nav a[href="/admin/tokens"]"#).len(),
        1,
        "in the admin nav"
    );
    let keep = ("Keep the token", "/admin/tokens");
    let body = confirmation(&browser, &path, "Revoke token", keep).await;
    // In use a moment before (so the instance remembers it as authenticated).
    let customer_id = app.user_id("c@example.com");
    let entitlements = format!("entitlements/{customer_id}");
    assert_eq!(app.internal_get(&entitlements, &token).await.status(), 200);
    let revoked = || {
        app.query(|c| {
            Ok(service_tokens::table
                .select(service_tokens::revoked_at)
                .first::<Option<chrono::NaiveDateTime>>(c)?)
        })
        .is_some()
    };
    let res = browser.post_form(&path, &[]).await;
    assert_eq!(res.status(), 403, "no CSRF token");
    assert!(!revoked());
    let res = confirm(&browser, &path, &body).await;
    assert_eq!(
        (res.status().as_u16(), location(&res).as_str()),
        (303, "/admin/tokens")
    );
    assert!(revoked());
    assert_eq!(
        app.internal_get(&entitlements, &token).await.status(),
        401,
        "refused from the next request on, not after the token cache's TTL"
    );
    let events = app.events("service_token_revoked");
    assert_eq!(events.len(), 1);
    let admin_id = app.user_id("admin@example.com");
    assert_eq!(events[0].actor, Some(format!("admin:{admin_id}")));
    assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"));
    let list = browser.get_text("/admin/tokens").await;
    assert!(
        list.contains("revoked") && !list.contains(&path),
        "no revoke link any more"
    );
    let again = confirm(&browser, &path, &body).await;
    assert_eq!(again.status(), 303, "already revoked");
    assert_eq!(app.count_events("service_token_revoked"), 1);
    let unknown = browser.get("/admin/tokens/999999/revoke").await;
    assert_eq!(unknown.status(), 404);
}

/// The admin's token list (rate limited like every page) names the token, its scopes and
/// state, but shows no token, hash or prefix; the page, parsed.
async fn the_token_list_shows_no_secret(app: &TestApp, admin: &Browser, token: &str) -> Html {
    let res = admin.get("/admin/tokens").await;
    assert!(
        res.headers().contains_key("x-ratelimit-remaining"),
        "rate limited"
    );
    let list = res.text().await.unwrap();
    let (hash, display) = app.query(|c| {
        Ok(service_tokens::table
            .select((service_tokens::token_hash, service_tokens::display_id))
            .first::<(String, String)>(c)?)
    });
    for secret in [&token[7..], &hash, display.trim_end_matches('…')] {
        assert!(
            !list.contains(secret),
            "the list shows no token, hash or prefix"
        );
    }
    let html = Html::parse_document(&list);
    let row: String = select(&html, "tbody tr")[0].text().collect();
    for shown in [
        "engine",
        "byok:lease",
        "entitlements:read",
        "never",
        "active",
    ] {
        assert!(row.contains(shown), "{shown}: {row}");
    }
    html
}

/// A token is revoked with its `service_token_revoked` row or not at all: when the row cannot
/// be written the token stays live and keeps working.
async fn a_revocation_whose_audit_row_cannot_be_written_is_not_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.service_token("engine", &[Scope::EntitlementsRead]);
    let browser = app.signed_in_admin("admin@example.com").await;
    let id: i64 = app.query(|c| Ok(service_tokens::table.select(service_tokens::id).first(c)?));
    let path = format!("/admin/tokens/{id}/revoke");
    let body = confirmation(
        &browser,
        &path,
        "Revoke token",
        ("Keep the token", "/admin/tokens"),
    )
    .await;

    crate::audit::break_audit_log(&app);
    let res = confirm(&browser, &path, &body).await;
    crate::audit::restore_audit_log(&app);

    assert_eq!(res.status(), 500);
    let revoked_at = app.query(|c| {
        Ok(service_tokens::table
            .select(service_tokens::revoked_at)
            .first::<Option<chrono::NaiveDateTime>>(c)?)
    });
    assert_eq!(revoked_at, None, "still live");
    let user_id = app.user_id("admin@example.com");
    let entitlements = app
        .browser()
        .client
        .get(
            app.browser()
                .url(&format!("/internal/v1/entitlements/{user_id}")),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(entitlements.status(), 200, "the token still works");
    assert_eq!(app.count_events("service_token_revoked"), 0);
}
