//! Rate limits per client IP: headers, 429 with Retry-After, audit, and no bypass by spoofing
//! `X-Forwarded-For` (only a trusted proxy's forwarding header counts). Sign-in failures are
//! limited per account too, IPv6 clients count by their /64, argon2 work is capped, and idle
//! limiter keys are swept.

use crate::common::{Backend, PASSWORD, TestApp};
use crate::on_both_backends;
use tollgate::config::RateLimit;

on_both_backends!(
    sign_in_is_limited_per_ip_with_headers_and_retry_after,
    spoofed_forwarded_for_does_not_bypass_the_limit,
    a_trusted_proxy_forwards_the_real_client_address,
    every_other_route_has_a_default_limit,
    the_service_api_has_its_own_budget_per_address,
    failures_from_many_addresses_lock_the_account,
    ipv6_clients_are_limited_by_their_64,
    saturated_password_hashing_answers_503_and_then_recovers,
    idle_limiter_keys_are_swept,
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
    let app = TestApp::spawn_with(backend, |config| config.rate_limits.sign_in = STRICT).await;
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
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains(&format!("Please wait {retry_after} seconds")),
        "the sign-in form says how long to wait"
    );

    assert_eq!(
        browser.get("/login").await.status(),
        200,
        "showing the form is not a sign-in attempt"
    );
    assert_eq!(
        app.count_events("login_failed"),
        5,
        "refused attempts are never checked"
    );
    let limited = app.events("rate_limited");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].ip.as_deref(), Some("127.0.0.1"));
    assert!(
        limited[0].details.contains(r#""limiter":"sign_in""#),
        "{}",
        limited[0].details
    );
}

async fn spoofed_forwarded_for_does_not_bypass_the_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.rate_limits.sign_in = STRICT).await;
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
        config.rate_limits.sign_in = STRICT;
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
        // One more a minute: a slow machine never earns an extra slot within the test.
        config.rate_limits.default = RateLimit {
            per_minute: 1,
            burst: 3,
        }
    })
    .await;
    let browser = app.browser();
    let statuses: Vec<u16> = [
        browser.get("/").await.status().as_u16(),
        browser.get("/pricing").await.status().as_u16(),
        browser.get("/nope").await.status().as_u16(),
        browser.get("/").await.status().as_u16(),
    ]
    .to_vec();
    assert_eq!(statuses, [200, 200, 404, 429]);
    assert_eq!(
        browser.get("/healthz").await.status(),
        200,
        "the health checks have a budget of their own, never shared through Redis"
    );
    assert_eq!(app.count_events("rate_limited"), 1);
    assert!(
        app.events("rate_limited")[0]
            .details
            .contains(r#""limiter":"default""#)
    );
}

/// Services call `/internal/v1` on every AI request: the pages' small per-address budget must
/// not throttle them, and the service API's own budget still ends floods (before any token
/// check), audited as the `internal` limiter.
async fn the_service_api_has_its_own_budget_per_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.default = RateLimit {
            per_minute: 60,
            burst: 2,
        };
        // One more a minute: a slow machine never earns an extra slot within the test.
        config.rate_limits.internal = RateLimit {
            per_minute: 1,
            burst: 5,
        };
    })
    .await;
    let token = app.service_token("gate", &[tollgate::service_tokens::Scope::EntitlementsRead]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = app.internal_get("entitlements/1", &token).await;
        statuses.push(res.status().as_u16());
    }
    // No user 1: 404 five times (well past the default budget of 2), then the service budget.
    assert_eq!(statuses, [404, 404, 404, 404, 404, 429]);
    let forged = app.internal_get("entitlements/1", "tg_svc_forged").await;
    assert_eq!(
        forged.status(),
        429,
        "refused before the token is looked at"
    );
    assert!(
        app.events("rate_limited")
            .iter()
            .any(|e| e.details.contains(r#""limiter":"internal""#))
    );
    // The pages keep their own budget.
    assert_eq!(app.browser().get("/").await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Guessing across addresses, IPv6 networks, argon2 saturation, and limiter memory.

/// Allows sign-ins through 127.0.0.1 as a trusted proxy, so each request can claim a client.
fn behind_a_proxy(config: &mut tollgate::config::Config) {
    config.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn sign_in_from(
    browser: &crate::common::Browser,
    token: &str,
    client: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    browser
        .client
        .post(browser.url("/login"))
        .header("x-forwarded-for", client)
        .form(&[
            ("csrf_token", token),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn failures_from_many_addresses_lock_the_account(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        behind_a_proxy(config);
        config.rate_limits.sign_in = STRICT;
        config.rate_limits.login_failures.per_account = 10;
    })
    .await;
    app.signed_in_customer("victim@example.com").await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    let from = async |client: &str, email: &str, password: &str| {
        sign_in_from(&browser, &token, client, email, password).await
    };
    for i in 0..10 {
        let client = format!("198.51.100.{i}");
        let res = from(&client, "Victim@Example.com", "a wrong guess").await;
        let under = "each address is well under its own limit";
        assert_eq!(res.status(), 401, "guess {i}: {under}");
    }
    let locked = from("198.51.100.77", "victim@example.com", "guess 11").await;
    assert_eq!(
        locked.status(),
        429,
        "the account, not the address, is out of guesses"
    );
    let retry_after: u64 = header(&locked, "retry-after").parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert!(
        locked.text().await.unwrap().contains(&format!(
            "Too many attempts. Please wait {retry_after} seconds and try again."
        )),
        "the form says how long to wait"
    );
    let right = from("198.51.100.78", "victim@example.com", PASSWORD).await;
    assert_eq!(
        right.status(),
        429,
        "while locked, not even the right password is checked"
    );

    let other = from("198.51.100.79", "other@example.com", "guess").await;
    assert_eq!(other.status(), 401, "other accounts are unaffected");
    for i in 0..10 {
        from(&format!("203.0.113.{i}"), "nobody@example.com", "guess").await;
    }
    let unknown = from("203.0.113.99", "nobody@example.com", "guess").await;
    assert_eq!(
        unknown.status(),
        429,
        "an email without an account locks alike (no tell)"
    );

    assert_eq!(app.count_events("login_failed"), 21);
    assert_eq!(app.count_events("login_locked"), 3);
    let victim = format!("user:{}", app.user_id("victim@example.com"));
    let locks = app.events("login_locked");
    assert!(
        locks
            .iter()
            .any(|e| e.actor.as_deref() == Some(victim.as_str()) && e.severity == "HIGH")
    );
}

async fn ipv6_clients_are_limited_by_their_64(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        behind_a_proxy(config);
        config.rate_limits.sign_in = STRICT;
    })
    .await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    for i in 1..=5 {
        let client = format!("2001:db8:1:2::{i:x}");
        let res = sign_in_from(
            &browser,
            &token,
            &client,
            &format!("u{i}@example.com"),
            "guess",
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    let same_64 = sign_in_from(
        &browser,
        &token,
        "2001:db8:1:2:ffff:1:2:3",
        "u6@example.com",
        "guess",
    )
    .await;
    assert_eq!(
        same_64.status(),
        429,
        "a new address in the same /64 is the same client"
    );
    let next_64 = sign_in_from(
        &browser,
        &token,
        "2001:db8:1:3::1",
        "u7@example.com",
        "guess",
    )
    .await;
    assert_eq!(
        next_64.status(),
        401,
        "the neighbouring /64 is another client"
    );
}

async fn saturated_password_hashing_answers_503_and_then_recovers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.password_hashing.max_concurrent = 1;
        config.password_hashing.max_wait = std::time::Duration::from_millis(50);
        config.rate_limits.login_failures.per_account = 1;
    })
    .await;
    app.signed_in_customer("busy@example.com").await;
    let browser = app.browser();
    let held = app.password_work.slot().await.unwrap();
    let busy = browser
        .login("busy@example.com", crate::common::PASSWORD)
        .await;
    assert_eq!(busy.status(), 503);
    let page = busy.text().await.unwrap();
    assert!(page.contains("temporarily unavailable"), "{page}");
    let signup = browser
        .signup("new@example.com", crate::common::PASSWORD)
        .await;
    assert_eq!(signup.status(), 503, "sign-up hashes too");
    assert_eq!(app.user_count(), 1);
    drop(held);
    let ok = browser
        .login("busy@example.com", crate::common::PASSWORD)
        .await;
    assert_eq!(
        ok.status(),
        303,
        "the refused attempt did not count against the account's single allowed failure"
    );
    assert_eq!(app.password_work.free_slots(), 1);
}

async fn idle_limiter_keys_are_swept(backend: Backend) {
    use tollgate::limits::Sweep as _;
    let app = TestApp::spawn_with(backend, |config| {
        behind_a_proxy(config);
        // A slot every 10 µs: a client is idle again almost at once.
        config.rate_limits.default = RateLimit {
            per_minute: 6_000_000,
            burst: 1_000,
        };
    })
    .await;
    let mut names = app.limiters.names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "default",
            "health",
            "internal",
            "lease",
            "login_failures",
            "refusal_audit",
            "sign_in",
            "sign_up",
            "stripe_throttle",
            "two_factor_failures",
            "usage",
            "webhook"
        ]
    );
    let browser = app.browser();
    for i in 0..300u32 {
        let client = format!("10.{}.{}.1", i / 256, i % 256);
        let res = browser
            .client
            .get(browser.url("/healthz"))
            .header("x-forwarded-for", client)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let before = app.limiters.tracked_keys();
    assert!(before >= 300, "one key per client: {before}");
    app.limiters.sweep();
    let after = app.limiters.tracked_keys();
    assert!(
        after <= 2,
        "idle clients are forgotten: {after} of {before} left"
    );
}
