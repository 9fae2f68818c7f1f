//! CSRF: a POST without the session's token is refused with 403, audited, and changes nothing.

use crate::common::{Backend, PASSWORD, TestApp};
use crate::on_both_backends;

on_both_backends!(
    signup_without_or_with_a_wrong_token_is_refused,
    logout_without_a_token_keeps_the_session,
    a_token_from_another_session_is_refused,
);

async fn signup_without_or_with_a_wrong_token_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    browser.get("/signup").await; // the session now has a token
    let fields = [
        ("email", "csrf@example.com"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
    ];

    let missing = browser.post_form("/signup", &fields).await;
    assert_eq!(missing.status(), 403);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("This form has expired")
    );

    let mut wrong = vec![("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")];
    wrong.extend_from_slice(&fields);
    assert_eq!(browser.post_form("/signup", &wrong).await.status(), 403);

    assert_eq!(app.user_count(), 0, "nothing was created");
    let events = app.events("csrf_rejected");
    assert_eq!(
        events.len(),
        1,
        "the repeat is counted on the first refusal's row"
    );
    assert_eq!(events[0].count, 2);
    assert_eq!(events[0].severity, "HIGH");
    assert!(events[0].details.contains("/signup"));
}

async fn logout_without_a_token_keeps_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("stay@example.com").await;
    let res = browser.post_form("/logout", &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        browser.get("/account").await.status(),
        200,
        "still signed in"
    );
    assert_eq!(app.count_events("csrf_rejected"), 1);
    assert_eq!(app.count_events("logout"), 0);
}

async fn a_token_from_another_session_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let victim = app.signed_in_customer("victim@example.com").await;
    let attacker = app.browser();
    let attackers_token = attacker.csrf_token("/login").await;
    let res = victim
        .post_form("/logout", &[("csrf_token", &attackers_token)])
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(victim.get("/account").await.status(), 200);
}
