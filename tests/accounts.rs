//! Sign-up, sign-in, sign-out and the account page.

use crate::common::{Backend, PASSWORD, TestApp, csrf_token_in, location};
use crate::on_both_backends;

on_both_backends!(
    signup_creates_a_customer_with_an_argon2id_hash_and_signs_in,
    signup_rejects_bad_input_with_messages_and_creates_nothing,
    signup_with_a_taken_email_does_not_say_whether_it_exists,
    login_failures_are_identical_for_unknown_email_and_wrong_password,
    login_follows_only_local_next_paths,
    account_page_requires_sign_in_and_redirects_back,
    logout_ends_the_session,
    no_response_ever_contains_a_password_hash,
    a_sign_up_whose_audit_row_cannot_be_written_creates_no_account,
    a_sign_in_whose_audit_row_cannot_be_written_signs_nobody_in,
);

async fn signup_creates_a_customer_with_an_argon2id_hash_and_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();

    let res = browser
        .signup("  Ada.Lovelace@Example.COM ", PASSWORD)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");

    let (email, hash, role) = app.query(|conn| {
        let row =
            tollgate::db::models::user::find_by_email(conn, "ada.lovelace@example.com")?.unwrap();
        Ok((row.email, row.password_hash, row.role.as_str()))
    });
    assert_eq!(email, "ada.lovelace@example.com", "email is normalised");
    assert!(hash.starts_with("$argon2id$"), "argon2id hash, got {hash}");
    assert!(!hash.contains(PASSWORD));
    assert_eq!(role, "customer");

    let page = browser.get("/account").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("ada.lovelace@example.com"));
    assert!(
        html.contains("Welcome to Tollgate"),
        "flash message shown once"
    );
    assert!(
        !browser
            .get_text("/account")
            .await
            .contains("Welcome to Tollgate"),
        "flash is gone"
    );
    assert_eq!(app.count_events("signup"), 1);
}

async fn signup_rejects_bad_input_with_messages_and_creates_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "not-an-email",
            PASSWORD,
            PASSWORD,
            "Enter an email address in the form name@example.com.",
        ),
        (
            "ada@example.com",
            "too short",
            "too short",
            "Your password must be at least 12 characters long.",
        ),
        (
            "ada@example.com",
            &"x".repeat(129),
            &"x".repeat(129),
            "Your password must be at most 128 characters long.",
        ),
        (
            "ada@example.com",
            PASSWORD,
            "something else entirely",
            "The passwords do not match. Type the same password in both fields.",
        ),
    ];
    for (email, password, confirm, message) in cases {
        let res = browser
            .submit(
                "/signup",
                "/signup",
                &[
                    ("email", email),
                    ("password", password),
                    ("password_confirm", confirm),
                ],
            )
            .await;
        assert_eq!(res.status(), 422, "{message}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(message),
            "expected {message:?} in the re-rendered form"
        );
        assert!(html.contains(r#"aria-invalid="true""#));
        assert!(
            !html.contains(password) || password == PASSWORD,
            "password is never echoed back"
        );
    }
    assert_eq!(app.user_count(), 0);
}

async fn signup_with_a_taken_email_does_not_say_whether_it_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("taken@example.com").await;
    let res = app.browser().signup("TAKEN@example.com", PASSWORD).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("We could not create an account with these details"));
    assert!(!html.to_lowercase().contains("already exists"));
    assert_eq!(app.user_count(), 1);
}

/// The page minus its CSRF token, which differs per session.
fn without_token(html: &str) -> String {
    match csrf_token_in(html) {
        Some(token) => html.replace(&token, "TOKEN"),
        None => html.to_owned(),
    }
}

async fn login_failures_are_identical_for_unknown_email_and_wrong_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("grace@example.com").await;

    let wrong_password = app
        .browser()
        .login("grace@example.com", "not the right password")
        .await;
    let unknown_email = app
        .browser()
        .login("nobody@example.com", "not the right password")
        .await;
    assert_eq!(wrong_password.status(), 401);
    assert_eq!(unknown_email.status(), 401);
    let wrong_password = without_token(&wrong_password.text().await.unwrap());
    let unknown_email = without_token(&unknown_email.text().await.unwrap());
    assert!(wrong_password.contains("Invalid email or password."));
    // Same page, apart from the email typed back into the field.
    assert_eq!(
        wrong_password.replace("grace@example.com", "EMAIL"),
        unknown_email.replace("nobody@example.com", "EMAIL")
    );

    let failures = app.events("login_failed");
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|e| e.severity == "MEDIUM" && e.ip.as_deref() == Some("127.0.0.1"))
    );
    assert!(
        failures
            .iter()
            .any(|e| e.details.contains("g***e@example.com")),
        "emails are masked in audit details"
    );
    assert!(
        failures
            .iter()
            .all(|e| !e.details.contains("not the right password"))
    );

    let ok = app
        .browser()
        .login("Grace@Example.com", crate::common::PASSWORD)
        .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(app.count_events("login_succeeded"), 1);
}

async fn login_follows_only_local_next_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("next@example.com").await;
    for (next, expected) in [
        ("/account?tab=profile", "/account?tab=profile"),
        ("https://evil.example/phish", "/account"),
        ("//evil.example", "/account"),
    ] {
        let browser = app.browser();
        let res = browser
            .submit(
                "/login",
                "/login",
                &[
                    ("email", "next@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), expected, "next={next}");
    }
}

async fn account_page_requires_sign_in_and_redirects_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    let res = browser.get("/account").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?next=%2Faccount");

    let login_page = browser.get_text("/login?next=%2Faccount").await;
    assert!(login_page.contains(r#"name="next" value="/account""#));
    assert!(
        login_page.contains(r#"<label for="email">Email</label>"#),
        "labelled fields"
    );
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("bye@example.com").await;
    assert_eq!(app.session_count(), 1);
    let res = browser.logout().await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/?signed_out");
    assert_eq!(
        app.session_count(),
        0,
        "the server-side session is destroyed"
    );
    assert_eq!(browser.get("/account").await.status(), 303);
    assert_eq!(app.count_events("logout"), 1);
}

async fn no_response_ever_contains_a_password_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_admin("hash@example.com").await;
    for path in ["/", "/account", "/admin", "/login", "/signup", "/nope"] {
        let body = browser.get_text(path).await;
        assert!(!body.contains("$argon2"), "{path} leaks a password hash");
        assert!(!body.contains(PASSWORD), "{path} leaks a password");
    }
}

/// An account and its `signup` row commit together: when the row cannot be written there is no
/// account (before, the account was committed first), and the address is still free.
async fn a_sign_up_whose_audit_row_cannot_be_written_creates_no_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    crate::audit::break_audit_log(&app);
    let res = browser.signup("unaudited@example.com", PASSWORD).await;
    crate::audit::restore_audit_log(&app);
    assert_eq!(res.status(), 500);
    assert_eq!(app.user_count(), 0, "no account without its audit row");
    assert_eq!(
        browser.get("/account").await.status(),
        303,
        "nobody is signed in"
    );

    let res = browser.signup("unaudited@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303, "the address was never taken");
    assert_eq!(app.count_events("signup"), 1);
}

/// A sign-in is recorded on the account with its `login_succeeded` row, or not at all: when the
/// row cannot be written nobody is signed in and the account's last sign-in is unchanged
/// (before, the sign-in was recorded first).
async fn a_sign_in_whose_audit_row_cannot_be_written_signs_nobody_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("unaudited@example.com").await;
    let last_login = || {
        app.query(|conn| {
            Ok(
                tollgate::db::models::user::find_by_email(conn, "unaudited@example.com")?
                    .unwrap()
                    .last_login_at,
            )
        })
    };
    let before = last_login();
    let browser = app.browser();
    crate::audit::break_audit_log(&app);
    let res = browser.login("unaudited@example.com", PASSWORD).await;
    crate::audit::restore_audit_log(&app);
    assert_eq!(res.status(), 500);
    assert_eq!(last_login(), before, "the sign-in was not recorded");
    assert_eq!(browser.get("/account").await.status(), 303, "not signed in");
    assert_eq!(app.count_events("login_succeeded"), 0);
}
