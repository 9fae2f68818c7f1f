//! Error responses: generic pages for people, JSON for programs, nothing internal in either.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    unknown_pages_get_a_generic_html_404,
    api_paths_get_json_errors,
    wrong_methods_and_incomplete_forms_get_generic_errors,
    health_and_readiness,
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
