//! `/metrics`: Prometheus's scrape. Counters move by exactly what a scripted run did; the
//! endpoint refuses a missing, unscoped or forged token (audited) on the main address and is
//! open on `METRICS_BIND`; no label ever holds an id, an email or an address.

use tollgate::config::RateLimit;
use tollgate::service_tokens::Scope;

use crate::common::{Backend, TestApp, WEBHOOK_SECRET, stripe_event, stripe_signature_header};
use crate::on_both_backends;
use crate::vault::ANTHROPIC_KEY;

on_both_backends!(
    a_scripted_run_moves_each_counter_by_exactly_what_happened,
    metrics_refuse_missing_unscoped_and_forged_tokens_with_an_audit,
    refused_scrapes_are_rate_limited,
    metrics_bind_serves_without_a_token_while_the_main_port_still_requires_one,
    stripe_calls_and_throttle_refusals_are_counted_by_operation,
    webhooks_refused_by_the_rate_limiter_are_counted,
);

/// One series of a scrape: its name, its labels, its value.
#[derive(Debug)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// `a="x",b="y"` → pairs (values may hold commas and braces, e.g. a route pattern).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push((name.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    pairs
}

fn parse(scrape: &str) -> Vec<Series> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').unwrap())),
                None => (series, Vec::new()),
            };
            Series {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The sum of every series named `name` whose labels include `pairs`.
fn sum(scrape: &[Series], name: &str, pairs: &[(&str, &str)]) -> f64 {
    scrape
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            pairs
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

fn signed(body: &[u8]) -> String {
    stripe_signature_header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), body)
}

async fn get_metrics(base: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn scrape(app: &TestApp, token: &str) -> Vec<Series> {
    let res = get_metrics(&app.address, Some(token)).await;
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&res.text().await.unwrap())
}

/// N verified webhooks and a duplicate, M bad signatures, a signed non-event, K deliveries from
/// a refused address, one lease granted and one refused, some 404s: each counter moves by
/// exactly that.
async fn a_scripted_run_moves_each_counter_by_exactly_what_happened(backend: Backend) {
    let loopback = || vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()];
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.webhook_allowed_ips = loopback();
        config.security.trusted_proxies = loopback();
    })
    .await;
    let browser = app.signed_in_customer("leased@example.com").await;
    assert_eq!(
        browser.add_key("anthropic", ANTHROPIC_KEY).await.status(),
        303
    );
    let user_id = app.user_id("leased@example.com");
    let prometheus = app.service_token("prometheus", &[Scope::MetricsRead]);
    let engine = app.service_token("engine", &[Scope::ByokLease]);
    let before = scrape(&app, &prometheus).await;

    let (n, m, k) = (3, 2, 4);
    let mut first = None;
    for i in 0..n {
        let event = stripe_event("payout.created", &format!("evt_1Metrics{i}"));
        app.assert_webhook_accepted(&event).await;
        first.get_or_insert(event);
    }
    assert_eq!(
        app.post_webhook(&first.unwrap()).await.status(),
        200,
        "duplicate"
    );
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1Forged")).unwrap();
    for _ in 0..m {
        let res = app.post_webhook_body(&body, Some("t=1,v1=00")).await;
        assert_eq!(res.status(), 400);
    }
    let not_an_event = br#"{"object":"not an event"}"#;
    let res = app
        .post_webhook_body(not_an_event, Some(&signed(not_an_event)))
        .await;
    assert_eq!(res.status(), 400, "signed, but not an event");
    for _ in 0..k {
        let res = app
            .post_webhook_from(&body, Some(&signed(&body)), Some("198.51.100.9"))
            .await;
        assert_eq!(res.status(), 403);
    }
    let lease = |user: i64| {
        let body = serde_json::json!({ "user_id": user, "provider": "anthropic" });
        let (app, engine) = (&app, &engine);
        async move {
            app.internal_post("byok/lease", Some(engine), &body)
                .await
                .status()
        }
    };
    assert_eq!(lease(user_id).await, 200);
    assert_eq!(lease(user_id + 1000).await, 404);
    for path in ["/no-such-page", "/admin-secrets.php", "/cus_123/evt_456"] {
        assert_eq!(app.browser().get(path).await.status(), 404);
    }

    let after = scrape(&app, &prometheus).await;
    let moved =
        |name: &str, pairs: &[(&str, &str)]| sum(&after, name, pairs) - sum(&before, name, pairs);
    let webhooks = "tollgate_webhooks_total";
    assert_eq!(moved(webhooks, &[("outcome", "verified")]), n as f64);
    assert_eq!(moved(webhooks, &[("outcome", "duplicate")]), 1.0);
    assert_eq!(
        moved(webhooks, &[("outcome", "invalid_signature")]),
        m as f64
    );
    assert_eq!(moved(webhooks, &[("outcome", "invalid_ip")]), k as f64);
    assert_eq!(moved(webhooks, &[("outcome", "invalid_payload")]), 1.0);
    let types = "tollgate_webhook_event_types_total";
    assert_eq!(moved(types, &[("type", "payout.created")]), (n + 1) as f64);
    let processed = "tollgate_webhook_events_processed_total";
    assert_eq!(moved(processed, &[]), n as f64, "each new event once");
    assert_eq!(
        moved("tollgate_webhook_ingest_batch_size_sum", &[]),
        (n + 1) as f64
    );
    assert!(moved("tollgate_webhook_ingest_commit_seconds_count", &[]) >= 1.0);

    let leases = "tollgate_byok_leases_total";
    assert_eq!(moved(leases, &[("outcome", "granted")]), 1.0);
    assert_eq!(
        moved(leases, &[("outcome", "refused"), ("reason", "no_key")]),
        1.0
    );
    assert_eq!(moved(leases, &[("outcome", "refused")]), 1.0);

    let http = "tollgate_http_requests_total";
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(moved(http, &unmatched), 3.0);
    let webhook_route = |status| [("route", "/webhooks/stripe"), ("status", status)];
    assert_eq!(moved(http, &webhook_route("200")), (n + 1) as f64);
    assert_eq!(moved(http, &webhook_route("400")), (m + 1) as f64);
    assert_eq!(moved(http, &webhook_route("403")), k as f64);
    let lease_route = [("route", "/internal/v1/byok/lease")];
    assert_eq!(
        moved("tollgate_http_request_duration_seconds_count", &lease_route),
        2.0
    );

    let audit = "tollgate_audit_events_total";
    let kind = |kind| [("kind", kind)];
    assert_eq!(moved(audit, &kind("webhook_validated")), n as f64);
    assert_eq!(
        moved(
            audit,
            &[("kind", "webhook_invalid_signature"), ("severity", "HIGH")]
        ),
        m as f64
    );
    assert_eq!(moved(audit, &kind("webhook_invalid_ip")), k as f64);
    assert_eq!(moved(audit, &kind("byok_leased")), 1.0);

    assert_eq!(
        sum(&after, "tollgate_db_pool_connections", &[("state", "max")]),
        4.0
    );
    assert!(sum(&after, "tollgate_db_pool_connections", &[("state", "idle")]) >= 1.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sum(&after, "tollgate_build_info", &[("version", version)]),
        1.0
    );
    no_label_holds_an_id_an_email_or_an_address(&after);
}

fn no_label_holds_an_id_an_email_or_an_address(scrape: &[Series]) {
    let ip = |v: &str| {
        v.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|w| w.parse::<std::net::Ipv4Addr>().is_ok())
            || v.parse::<std::net::IpAddr>().is_ok()
    };
    assert!(scrape.len() > 20, "a real scrape");
    for series in scrape {
        for (name, value) in &series.labels {
            let bad = value.contains('@')
                || ["cus_", "sub_", "evt_", "tg_svc_", "sk_", "whsec_"]
                    .iter()
                    .any(|p| value.contains(p))
                || ip(value);
            assert!(!bad, "{}{{{name}={value:?}}}", series.name);
        }
    }
}

async fn metrics_refuse_missing_unscoped_and_forged_tokens_with_an_audit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unscoped = app.service_token("engine", &[Scope::ByokLease, Scope::EntitlementsRead]);
    let forged = format!("tg_svc_{}", "A".repeat(43));
    for (token, status) in [
        (None, 401),
        (Some("not-a-token"), 401),
        (Some(forged.as_str()), 401),
        (Some(unscoped.as_str()), 403),
    ] {
        let res = get_metrics(&app.address, token).await;
        assert_eq!(res.status(), status, "{token:?}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("tollgate_"), "{token:?}: {body}");
    }
    let rejected = app.events("service_token_rejected");
    let reasons: Vec<String> = rejected
        .iter()
        .map(|e| {
            let details: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            assert_eq!(details["path"], "/metrics");
            details["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    for reason in [
        "missing",
        "malformed",
        "unknown",
        "scope metrics:read not granted",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
    assert!(rejected.iter().all(|e| !e.details.contains(&forged)));
    let scoped = app.service_token("prometheus", &[Scope::MetricsRead]);
    assert_eq!(get_metrics(&app.address, Some(&scoped)).await.status(), 200);
}

async fn refused_scrapes_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.default = RateLimit {
            per_minute: 1,
            burst: 3,
        }
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get_metrics(&app.address, None).await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert_eq!(app.events("rate_limited").len(), 1);
}

async fn metrics_bind_serves_without_a_token_while_the_main_port_still_requires_one(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| {
        config.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let open = app.metrics_address.clone().expect("METRICS_BIND listens");
    assert_ne!(open, app.address);
    let res = get_metrics(&open, None).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("tollgate_build_info{"), "{body}");
    assert!(body.contains("tollgate_db_pool_connections{"), "{body}");
    // It serves nothing else, and the main address still wants a token.
    let other = reqwest::get(format!("{open}/healthz")).await.unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(get_metrics(&app.address, None).await.status(), 401);
    // Both count into the same registry: a request on the main port shows on the open one.
    app.browser().get("/healthz").await;
    let body = get_metrics(&open, None).await.text().await.unwrap();
    assert!(body.contains(r#"route="/healthz",status="200""#), "{body}");
}

/// `tollgate service-token create --scope metrics:read` makes a token the scrape accepts.
#[test]
fn the_token_command_accepts_the_metrics_scope() {
    let dir = tempfile::tempdir().unwrap();
    let database = crate::common::TestDatabase::new(Backend::Sqlite);
    let tollgate = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args)
            .env_clear()
            .current_dir(dir.path())
            .env("DATABASE_URL", &database.url_string)
            .envs(crate::common::secret_env());
        crate::common::run(&mut cmd)
    };
    assert_eq!(tollgate(&["migrate"]).0, 0);
    let create = ["service-token", "create", "--name", "prometheus"];
    let (code, stdout, stderr) = tollgate(&[&create[..], &["--scope", "metrics:read"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tg_svc_"), "{stdout}");
    let (code, stdout, _) = tollgate(&["service-token", "list"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("metrics:read"), "{stdout}");
}

/// Each request to Stripe is counted by operation (its request type) and status, with its
/// latency; a call Tollgate's own throttle refuses is counted as such, and sent to nobody.
async fn stripe_calls_and_throttle_refusals_are_counted_by_operation(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.throttle.default_per_minute = 2
    })
    .await;
    let prometheus = app.service_token("prometheus", &[Scope::MetricsRead]);
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
    let customer = app.signed_in_customer("hasty@example.com").await;
    let before = scrape(&app, &prometheus).await;
    assert_eq!(customer.choose_plan("pro").await.status(), 303);
    assert_eq!(customer.choose_plan("pro").await.status(), 303);
    assert_eq!(customer.choose_plan("pro").await.status(), 429);
    let after = scrape(&app, &prometheus).await;
    let moved =
        |name: &str, pairs: &[(&str, &str)]| sum(&after, name, pairs) - sum(&before, name, pairs);
    assert_eq!(
        moved("tollgate_stripe_throttled_total", &[("class", "default")]),
        1.0
    );
    let checkout = [("operation", "create_checkout_session"), ("status", "200")];
    assert_eq!(moved("tollgate_stripe_requests_total", &checkout), 2.0);
    assert_eq!(
        moved("tollgate_stripe_request_duration_seconds_count", &checkout),
        2.0
    );
    let plans = [("operation", "create_price"), ("status", "200")];
    assert!(sum(&after, "tollgate_stripe_requests_total", &plans) >= 1.0);
    for series in after
        .iter()
        .filter(|s| s.name.starts_with("tollgate_stripe_requests"))
    {
        for (_, value) in &series.labels {
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{series:?}"
            );
        }
    }
    no_label_holds_an_id_an_email_or_an_address(&after);
}

async fn webhooks_refused_by_the_rate_limiter_are_counted(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.webhook = RateLimit {
            per_minute: 1,
            burst: 1,
        }
    })
    .await;
    let prometheus = app.service_token("prometheus", &[Scope::MetricsRead]);
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1Flood")).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = app.post_webhook_body(&body, Some("t=1,v1=00")).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [400, 429, 429]);
    let after = scrape(&app, &prometheus).await;
    let webhooks = "tollgate_webhooks_total";
    assert_eq!(
        sum(&after, webhooks, &[("outcome", "invalid_signature")]),
        1.0
    );
    assert_eq!(sum(&after, webhooks, &[("outcome", "rate_limited")]), 2.0);
    let refusals = "tollgate_rate_limit_refusals_total";
    assert_eq!(sum(&after, refusals, &[("limiter", "webhook")]), 2.0);
    assert_eq!(sum(&after, refusals, &[("limiter", "default")]), 0.0);
}
