//! Security headers on every response — pages, redirects, errors, 404s and refusals.

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    every_kind_of_response_carries_the_security_headers,
    hsts_can_be_turned_off,
    pages_have_no_inline_scripts_or_styles_and_the_stylesheet_is_cached,
);

fn assert_security_headers(res: &reqwest::Response, what: &str) {
    let h = res.headers();
    let get = |name: &str| {
        h.get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
    };
    let csp = get("content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self' https://js.stripe.com",
        "frame-src 'self' https://js.stripe.com",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP lacks {part}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(
        get("referrer-policy"),
        "strict-origin-when-cross-origin",
        "{what}"
    );
    assert!(get("permissions-policy").contains("camera=()"), "{what}");
    assert!(
        get("strict-transport-security").starts_with("max-age=31536000"),
        "{what}"
    );
    assert!(h.get("server").is_none(), "{what}: server header leaks");
}

async fn every_kind_of_response_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.default = tollgate::config::RateLimit {
            per_minute: 60,
            burst: 8,
        };
    })
    .await;
    let anonymous = app.browser();
    let res = anonymous.get("/").await;
    assert_eq!(res.status(), 200);
    assert_security_headers(&res, "200 page");
    assert_eq!(res.headers()["cache-control"], "no-store");

    let res = anonymous.get("/no/such/page").await;
    assert_eq!(res.status(), 404);
    assert_security_headers(&res, "404");

    let res = anonymous.get("/account").await;
    assert_eq!(res.status(), 303);
    assert_security_headers(&res, "303 redirect");

    let res = anonymous.post_form("/logout", &[]).await;
    assert_eq!(res.status(), 403);
    assert_security_headers(&res, "403 CSRF refusal");

    let res = anonymous.get("/healthz").await;
    assert_security_headers(&res, "JSON health check");
    // The app talks to a simulator here: its hosted pages are a permitted form destination.
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&format!("form-action 'self' {}", app.stripe)),
        "{csp}"
    );

    let mut last = anonymous.get("/").await;
    for _ in 0..20 {
        if last.status() == 429 {
            break;
        }
        last = anonymous.get("/").await;
    }
    assert_eq!(last.status(), 429);
    assert_security_headers(&last, "429");
}

async fn hsts_can_be_turned_off(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.security.hsts_max_age = 0).await;
    let res = app.browser().get("/").await;
    assert!(res.headers().get("strict-transport-security").is_none());
    assert!(res.headers().get("content-security-policy").is_some());
}

async fn pages_have_no_inline_scripts_or_styles_and_the_stylesheet_is_cached(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_admin("csp@example.com").await;
    let mut stylesheet = None;
    for path in ["/", "/account", "/admin", "/nope"] {
        let html = browser.get_text(path).await;
        assert!(!html.contains("<script"), "{path} has a script tag");
        assert!(!html.contains(" style="), "{path} has an inline style");
        let document = scraper::Html::parse_document(&html);
        let link = scraper::Selector::parse(r#"link[rel="stylesheet"]"#).unwrap();
        stylesheet = document
            .select(&link)
            .next()
            .and_then(|l| l.value().attr("href"))
            .map(str::to_owned);
    }
    let href = stylesheet.expect("pages link the stylesheet");
    assert!(href.starts_with("/static/app.css?v="), "{href}");
    let res = browser.get(&href).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(res.text().await.unwrap().contains("--brand"));
}
