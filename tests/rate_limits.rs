//! Rate limits per client IP: headers, 429 with Retry-After, audit, and no bypass by spoofing
//! `X-Forwarded-For` (only a trusted proxy's forwarding header counts).

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use tollgate::config::RateLimit;

on_both_backends!(
    sign_in_is_limited_per_ip_with_headers_and_retry_after,
    spoofed_forwarded_for_does_not_bypass_the_limit,
    a_trusted_proxy_forwards_the_real_client_address,
    every_other_route_has_a_default_limit,
);

const STRICT: RateLimit = RateLimit {
    per_minute: 5,
    burst: 5,
};

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn attempt(
    browser: &crate::common::Browser,
    token: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = browser.client.post(browser.url("/login")).form(&[
        ("csrf_token", token),
        ("email", "who@example.com"),
        ("password", "wrong password!"),
    ]);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

async fn sign_in_is_limited_per_ip_with_headers_and_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.rate_limits.auth = STRICT).await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    for expected_remaining in (0..5).rev() {
        let res = attempt(&browser, &token, None).await;
        assert_eq!(res.status(), 401);
        assert_eq!(header(&res, "x-ratelimit-limit"), "5");
        assert_eq!(
            header(&res, "x-ratelimit-remaining"),
            expected_remaining.to_string()
        );
        let reset: u64 = header(&res, "x-ratelimit-reset").parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            reset >= now && reset <= now + 61,
            "reset is a near-future unix time: {reset}"
        );
    }
    let refused = attempt(&browser, &token, None).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(
        (1..=12).contains(&retry_after),
        "one slot refills every 12 s: {retry_after}"
    );
    assert_eq!(header(&refused, "x-ratelimit-limit"), "5");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert!(header(&refused, "x-ratelimit-reset").parse::<u64>().is_ok());
    assert!(refused.text().await.unwrap().contains("Too many requests"));

    assert_eq!(
        browser.get("/login").await.status(),
        200,
        "showing the form is not a sign-in attempt"
    );
    assert_eq!(
        app.count_events("login_failed"),
        5,
        "refused attempts never reach the handler"
    );
    let limited = app.events("rate_limited");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].ip.as_deref(), Some("127.0.0.1"));
    assert!(
        limited[0].details.contains(r#""limiter":"auth""#),
        "{}",
        limited[0].details
    );
}

async fn spoofed_forwarded_for_does_not_bypass_the_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.rate_limits.auth = STRICT).await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let spoofed = format!("198.51.100.{i}");
        statuses.push(
            attempt(&browser, &token, Some(&spoofed))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
}

async fn a_trusted_proxy_forwards_the_real_client_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.auth = STRICT;
        config.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    for i in 0..7 {
        let client = format!("203.0.113.{i}");
        assert_eq!(
            attempt(&browser, &token, Some(&client)).await.status(),
            401,
            "distinct clients behind the proxy"
        );
    }
    let mut last = 0;
    for _ in 0..6 {
        last = attempt(&browser, &token, Some("192.0.2.1, 203.0.113.200"))
            .await
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "one client behind the proxy is still limited");
    let limited = app.events("rate_limited");
    assert_eq!(
        limited[0].ip.as_deref(),
        Some("203.0.113.200"),
        "nearest untrusted hop, not the spoofable left-most one"
    );
}

async fn every_other_route_has_a_default_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.default = RateLimit {
            per_minute: 60,
            burst: 3,
        }
    })
    .await;
    let browser = app.browser();
    let statuses: Vec<u16> = [
        browser.get("/").await.status().as_u16(),
        browser.get("/healthz").await.status().as_u16(),
        browser.get("/nope").await.status().as_u16(),
        browser.get("/").await.status().as_u16(),
    ]
    .to_vec();
    assert_eq!(statuses, [200, 200, 404, 429]);
    assert_eq!(app.count_events("rate_limited"), 1);
    assert!(
        app.events("rate_limited")[0]
            .details
            .contains(r#""limiter":"default""#)
    );
}
