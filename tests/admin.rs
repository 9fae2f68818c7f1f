//! The admin console's access rules.

use crate::common::{Backend, TestApp, captured_logs, location};
use crate::on_both_backends;

on_both_backends!(
    admin_console_is_for_admins_only,
    an_anonymous_visit_to_the_console_is_no_error,
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
