//! Error responses: generic pages for people, JSON for programs, nothing internal in either.

use crate::common::{Backend, TestApp, captured_logs};
use crate::on_both_backends;

on_both_backends!(
    unknown_pages_get_a_generic_html_404,
    api_paths_get_json_errors,
    wrong_methods_and_incomplete_forms_get_generic_errors,
    health_and_readiness,
    request_logs_name_the_route_and_the_resolved_client_only,
);

async fn unknown_pages_get_a_generic_html_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.browser().get("/definitely/not/here").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let html = res.text().await.unwrap();
    assert!(html.contains("Page not found"));
    assert!(
        html.contains("<html lang=\"en\">"),
        "rendered in the site layout"
    );
}

async fn api_paths_get_json_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in [
        "/api/v1/nothing",
        "/webhooks/unknown",
        "/internal/v1/nothing",
    ] {
        let res = app.browser().get(path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json", "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "There is nothing at this address." }),
            "{path}"
        );
    }
}

async fn wrong_methods_and_incomplete_forms_get_generic_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    let res = browser
        .client
        .delete(browser.url("/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.text().await.unwrap().contains("Method not allowed"));

    // A valid token but missing fields: a 400 page, not a serde message.
    let res = browser
        .submit("/signup", "/signup", &[("email", "x@example.com")])
        .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("The form was incomplete"));
    assert!(!html.contains("missing field"), "no deserializer internals");
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.browser().get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let res = app.browser().get("/readyz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

/// Request logs name the matched route (never the raw query, where admin searches put emails)
/// and the client address as Tollgate resolves it (a client's own `X-Forwarded-For` is not
/// believed unless it came through a trusted proxy).
async fn request_logs_name_the_route_and_the_resolved_client_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let marker = format!("probe{}x{}", std::process::id(), app.address.len() * 7919);
    let spoofed = "203.0.113.177";
    // A refused form (no CSRF token) is logged inside the request's span.
    let res = reqwest::Client::new()
        .post(format!(
            "{}/login?email={marker}%40example.com",
            app.address
        ))
        .header("x-forwarded-for", spoofed)
        .form(&[("email", "someone@example.com"), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = reqwest::Client::new()
        .get(format!("{}/no/such/{marker}/page?q={marker}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // An anonymous visit to an admin search: a sign-in redirect whose return path holds the
    // query. Nothing about it is logged at ERROR or WARN, and the query is logged nowhere.
    let res = app
        .browser()
        .get(&format!("/admin/customers?q={marker}%40example.com"))
        .await;
    assert_eq!(res.status(), 303);

    let logs = captured_logs();
    let spans: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("HTTP request{") && line.contains("request rejected"))
        .collect();
    assert!(
        spans
            .iter()
            .any(|l| l.contains("http.route=/login") && l.contains("http.client_ip=127.0.0.1")),
        "the refusal is logged in its request's span: {spans:?}"
    );
    assert!(
        spans.iter().any(|l| l.contains("http.route=unmatched")),
        "{spans:?}"
    );
    assert!(
        !logs.contains(&marker),
        "no query string or raw path is logged"
    );
    assert!(
        !logs.contains(spoofed),
        "a spoofed X-Forwarded-For is not logged as the client"
    );
    assert!(
        !logs
            .lines()
            .any(|l| (l.contains(" ERROR ") || l.contains(" WARN "))
                && l.contains("http.route=/admin/customers")),
        "a sign-in redirect is not an error"
    );
}
