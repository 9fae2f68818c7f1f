//! Sign-in limits that don't punish people: sign-in and sign-up have budgets of their own,
//! showing a form costs nothing, and a refusal (a spent budget, or an account locked after
//! too many failures) is the form again — the email kept, never the password — saying how many
//! seconds to wait, with `Retry-After`.

use tollgate::config::RateLimit;

use crate::common::{Backend, Browser, PASSWORD, TestApp};
use crate::forms::FormReport;
use crate::on_both_backends;

on_both_backends!(
    a_sign_up_flood_does_not_block_sign_in,
    a_sign_in_flood_does_not_block_sign_up,
    a_spent_sign_in_budget_shows_the_form_with_the_email_and_the_wait,
    a_spent_sign_up_budget_shows_the_form_with_the_email_and_the_wait,
    a_locked_account_shows_the_form_with_its_seconds,
);

/// Two submissions at once, then one a minute.
const TIGHT: RateLimit = RateLimit {
    per_minute: 1,
    burst: 2,
};

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn too_many(secs: u64) -> Vec<(Option<String>, String)> {
    vec![(
        None,
        format!("Too many attempts. Please wait {secs} seconds and try again."),
    )]
}

async fn sign_up(browser: &Browser, email: &str) -> reqwest::Response {
    browser.signup(email, PASSWORD).await
}

async fn a_sign_up_flood_does_not_block_sign_in(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limits.sign_up = TIGHT).await;
    assert_eq!(
        sign_up(&app.browser(), "one@example.com").await.status(),
        303
    );
    assert_eq!(
        sign_up(&app.browser(), "two@example.com").await.status(),
        303
    );
    let refused = sign_up(&app.browser(), "three@example.com").await;
    assert_eq!(refused.status(), 429, "the sign-up budget is spent");
    assert_eq!(app.user_count(), 2);
    for _ in 0..3 {
        let res = app.browser().login("one@example.com", PASSWORD).await;
        assert_eq!(res.status(), 303, "signing in has a budget of its own");
    }
}

async fn a_sign_in_flood_does_not_block_sign_up(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limits.sign_in = TIGHT).await;
    let browser = app.browser();
    for expected in [401, 401, 429] {
        let res = browser.login("nobody@example.com", "a guess").await;
        assert_eq!(res.status(), expected);
    }
    assert_eq!(
        sign_up(&app.browser(), "new@example.com").await.status(),
        303
    );
    assert_eq!(
        sign_up(&app.browser(), "newer@example.com").await.status(),
        303
    );
}

async fn a_spent_sign_in_budget_shows_the_form_with_the_email_and_the_wait(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limits.sign_in = TIGHT).await;
    let browser = app.browser();
    for _ in 0..5 {
        assert_eq!(browser.get("/login?next=/account/keys").await.status(), 200);
    }
    let token = browser.csrf_token("/login?next=/account/keys").await;
    let attempt = |token: &str| {
        let form = [
            ("csrf_token", token.to_owned()),
            ("email", "ada@example.com".to_owned()),
            ("password", "a secret guess".to_owned()),
            ("next", "/account/keys".to_owned()),
        ];
        browser
            .client
            .post(browser.url("/login"))
            .form(&form)
            .send()
    };
    assert_eq!(
        attempt(&token).await.unwrap().status(),
        401,
        "reloads were free"
    );
    assert_eq!(attempt(&token).await.unwrap().status(), 401);
    // Over budget, not even the CSRF token is looked at: the form comes back all the same.
    let refused = attempt("not the token").await.unwrap();
    assert_eq!(refused.status(), 429);
    let secs = retry_after(&refused);
    assert!((1..=60).contains(&secs), "one a minute: {secs}");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    let body = refused.text().await.unwrap();
    assert!(!body.contains("a secret guess"), "never the password");
    let page = FormReport::parse(&body);
    assert_eq!(page.summary(), too_many(secs));
    assert_eq!(
        page.attr("email", "value").as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(page.attr("password", "value"), None);
    assert_eq!(crate::common::hidden(&body, "next"), "/account/keys");
    assert!(
        crate::common::csrf_token_in(&body).is_some(),
        "ready to resubmit"
    );
    assert_eq!(
        app.count_events("login_failed"),
        2,
        "the refused attempt is not checked"
    );
    assert_eq!(app.count_events("csrf_rejected"), 0);
    assert_eq!(app.count_events("rate_limited"), 1);
}

async fn a_spent_sign_up_budget_shows_the_form_with_the_email_and_the_wait(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limits.sign_up = RateLimit {
            per_minute: 2,
            burst: 1,
        }
    })
    .await;
    assert_eq!(
        sign_up(&app.browser(), "first@example.com").await.status(),
        303
    );
    let refused = sign_up(&app.browser(), "Second@Example.com").await;
    assert_eq!(refused.status(), 429);
    let secs = retry_after(&refused);
    assert!((1..=30).contains(&secs), "one every 30 s: {secs}");
    let body = refused.text().await.unwrap();
    assert!(!body.contains(PASSWORD), "never the password");
    let page = FormReport::parse(&body);
    assert_eq!(page.summary(), too_many(secs));
    assert_eq!(
        page.attr("email", "value").as_deref(),
        Some("Second@Example.com"),
        "as typed"
    );
    assert_eq!(app.user_count(), 1);
    let limited = app.events("rate_limited");
    assert!(limited[0].details.contains(r#""limiter":"sign_up""#));
}

async fn a_locked_account_shows_the_form_with_its_seconds(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limits.login_failures.per_account = 2;
    })
    .await;
    app.signed_in_customer("grace@example.com").await;
    let browser = app.browser();
    for _ in 0..2 {
        let res = browser.login("grace@example.com", "a wrong guess").await;
        assert_eq!(res.status(), 401);
    }
    let locked = browser.login("grace@example.com", PASSWORD).await;
    assert_eq!(locked.status(), 429, "locked: not even the right password");
    let secs = retry_after(&locked);
    assert!((1..=900).contains(&secs), "{secs}");
    let page = FormReport::parse(&locked.text().await.unwrap());
    assert_eq!(page.summary(), too_many(secs));
    assert_eq!(
        page.attr("email", "value").as_deref(),
        Some("grace@example.com")
    );
    assert_eq!(app.count_events("login_locked"), 1);
}
