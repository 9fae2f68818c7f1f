//! Request ids and structured logs: every response carries `X-Request-Id` (the caller's when
//! short and safe, a new UUID otherwise), the audit rows of the request store the same id, and
//! `LOG_FORMAT=json` writes one JSON object per line, the request's own line naming its id,
//! route, status and latency.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use crate::common::{
    Backend, PASSWORD, TestApp, TestDatabase, WEBHOOK_SECRET, run, secret_env, serve_command,
    stripe_event, stripe_signature_header,
};
use crate::on_both_backends;

on_both_backends!(
    every_response_carries_a_request_id,
    a_safe_incoming_id_is_echoed_and_an_unsafe_one_replaced,
    an_audited_request_stores_the_id_its_response_carries,
    a_verified_webhook_is_audited_under_the_id_of_its_delivery,
);

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .expect("X-Request-Id on every response")
        .to_str()
        .unwrap()
        .to_owned()
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4)
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::HashSet::new();
    for (method, path, status) in [
        ("GET", "/", 200),
        ("GET", "/healthz", 200),
        ("GET", "/no-such-page", 404),
        ("GET", "/metrics", 401),
        ("POST", "/webhooks/stripe", 400),
        ("GET", "/internal/v1/entitlements/1", 401),
    ] {
        let url = format!("{}{path}", app.address);
        let res = client
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        let id = request_id(&res);
        assert!(is_uuid(&id), "{path}: {id}");
        assert!(seen.insert(id), "a new id per request");
    }
}

async fn a_safe_incoming_id_is_echoed_and_an_unsafe_one_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |id: String| {
        let url = format!("{}/healthz", app.address);
        async move {
            let res = reqwest::Client::new()
                .get(url)
                .header("x-request-id", &id)
                .send()
                .await
                .unwrap();
            (id, request_id(&res))
        }
    };
    for safe in ["abc-123", "lb.7f3a_9", &"a".repeat(64)] {
        let (sent, got) = send(safe.to_owned()).await;
        assert_eq!(got, sent);
    }
    for unsafe_id in [
        "a".repeat(65),
        "two words".to_owned(),
        "x\"}{\"admin\":true".to_owned(),
        "id;rm".to_owned(),
        "<script>".to_owned(),
    ] {
        let (sent, got) = send(unsafe_id).await;
        assert_ne!(got, sent);
        assert!(is_uuid(&got), "{sent:?} replaced by a UUID: {got}");
    }
}

async fn an_audited_request_stores_the_id_its_response_carries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("someone@example.com").await;
    app.signed_in_customer("another@example.com").await;
    let browser = app.browser();
    // Two accounts: repeated failures for one account share a row (the first request's).
    let failed_sign_in = |email: &'static str, incoming: Option<&'static str>| {
        let browser = &browser;
        async move {
            let csrf = browser.csrf_token("/login").await;
            let form = [
                ("csrf_token", csrf.as_str()),
                ("email", email),
                ("password", "not the password"),
            ];
            let mut request = browser.client.post(browser.url("/login")).form(&form);
            if let Some(id) = incoming {
                request = request.header("x-request-id", id);
            }
            request_id(&request.send().await.unwrap())
        }
    };
    let given = failed_sign_in("someone@example.com", Some("signin-attempt-42")).await;
    assert_eq!(given, "signin-attempt-42");
    let generated = failed_sign_in("another@example.com", None).await;
    assert!(is_uuid(&generated));
    let stored: Vec<Option<String>> = app
        .events("login_failed")
        .into_iter()
        .map(|row| row.request_id)
        .collect();
    assert!(stored.contains(&Some(given)), "{stored:?}");
    assert!(stored.contains(&Some(generated)), "{stored:?}");
    assert_eq!(
        browser
            .login("someone@example.com", PASSWORD)
            .await
            .status(),
        303
    );
}

/// The `webhook_validated` row is written by a webhook writer thread, not the request's own:
/// it still carries the delivering request's id.
async fn a_verified_webhook_is_audited_under_the_id_of_its_delivery(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .post_webhook(&stripe_event("payout.created", "evt_1RequestId"))
        .await;
    assert_eq!(res.status(), 200);
    let delivered = request_id(&res);
    let stored: Vec<Option<String>> = app
        .events("webhook_validated")
        .into_iter()
        .map(|row| row.request_id)
        .collect();
    assert_eq!(stored, [Some(delivered)]);
}

/// `tollgate serve` with `LOG_FORMAT=json`: every stderr line is a JSON object, and the
/// request's line has its id, route, status and latency.
#[test]
fn json_logs_are_one_object_per_line_naming_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::new(Backend::Sqlite);
    let mut child = serve_command(dir.path())
        .envs(secret_env())
        .env("DATABASE_URL", &database.url_string)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(line) = received.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            seen.push(line.clone());
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && want(&value)
            {
                return value;
            }
        }
        panic!("not logged: {seen:#?}");
    };
    let listening = wait_for(&|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on "))
    });
    let address = listening["message"].as_str().unwrap()["listening on ".len()..].to_owned();

    let runtime = actix_web::rt::Runtime::new().unwrap();
    let res = runtime.block_on(
        reqwest::Client::new()
            .get(format!("{address}/healthz"))
            .header("x-request-id", "json-log-check-1")
            .send(),
    );
    assert_eq!(res.unwrap().status(), 200);
    let line = wait_for(&|v| v["request_id"] == "json-log-check-1");
    // A line written inside a request (a duplicate delivery's notice) names it too.
    let body = serde_json::to_vec(&stripe_event("payout.created", "evt_1JsonLog")).unwrap();
    for id in ["json-log-first", "json-log-duplicate"] {
        let signature =
            stripe_signature_header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
        let res = runtime.block_on(
            reqwest::Client::new()
                .post(format!("{address}/webhooks/stripe"))
                .header("stripe-signature", signature)
                .header("x-request-id", id)
                .body(body.clone())
                .send(),
        );
        assert_eq!(res.unwrap().status(), 200);
    }
    let inside = wait_for(&|v| v["message"] == "duplicate webhook delivery acknowledged");
    assert_eq!(
        inside["span"]["request_id"], "json-log-duplicate",
        "{inside}"
    );
    assert_eq!(inside["span"]["http.route"], "/webhooks/stripe", "{inside}");
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(line["message"], "request completed");
    assert_eq!(line["route"], "/healthz");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert!(
        line["timestamp"].is_string() && line["level"] == "INFO",
        "{line}"
    );
    for line in &seen {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_a_configuration_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(serve_command(dir.path()).env("LOG_FORMAT", "yaml"));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "tollgate: configuration error: LOG_FORMAT must be `text` or `json`"
    );
}
