//! `docs/internal-api.md` is true: every `curl` example on it runs against a real Tollgate
//! (a customer subscribed to a metered plan, with a BYOK key) and answers `2xx` with the fields
//! the page's response example shows; every endpoint of the service API has its example.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use tollgate::service_tokens::Scope;

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(every_curl_example_in_the_internal_api_guide_runs_as_documented);

const GUIDE: &str = include_str!("../docs/internal-api.md");

/// A fenced block: its info string and its text.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Each `curl` example with the response example that follows it.
fn examples() -> Vec<(String, (String, String))> {
    let blocks = blocks(GUIDE);
    blocks
        .iter()
        .enumerate()
        .filter(|(_, (info, text))| info == "sh" && text.trim_start().starts_with("curl "))
        .map(|(i, (_, curl))| {
            let response = blocks[i + 1..]
                .iter()
                .find(|(info, _)| info != "sh")
                .cloned()
                .unwrap_or_default();
            (curl.clone(), response)
        })
        .collect()
}

/// The keys of an object (and of the first element of each array of objects in it).
fn shape(value: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Value::Object(map) = value {
        for (key, inner) in map {
            keys.insert(key.clone());
            if let Some(Value::Object(first)) = inner.as_array().and_then(|a| a.first()) {
                keys.extend(first.keys().map(|k| format!("{key}[].{k}")));
            }
        }
    }
    keys
}

#[test]
fn the_guide_has_an_example_for_every_endpoint() {
    let curls: Vec<String> = examples().into_iter().map(|(curl, _)| curl).collect();
    for path in [
        "/internal/v1/entitlements/$USER_ID\"",
        "/internal/v1/entitlements/$USER_ID/reserve",
        "/internal/v1/entitlements/$USER_ID/commit",
        "/internal/v1/entitlements/$USER_ID/release",
        "/internal/v1/usage",
        "/internal/v1/byok/lease",
        "/metrics",
    ] {
        assert!(
            curls.iter().any(|c| c.contains(path)),
            "no curl example for {path}"
        );
    }
}

/// A reservation of 2,000 tokens for `user_id`, made over HTTP: the id the next example uses.
async fn reservation(app: &TestApp, token: &str, user_id: i64) -> String {
    let res = app
        .internal_post(
            &format!("entitlements/{user_id}/reserve"),
            Some(token),
            &serde_json::json!({ "feature": "tokens", "quantity": 2000 }),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    body["reservation_id"].as_str().unwrap().to_owned()
}

async fn every_curl_example_in_the_internal_api_guide_runs_as_documented(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let plan = app.query(|conn| {
        Ok(tollgate::db::models::plan::find_by_slug(conn, "pro")?
            .unwrap()
            .id)
    });
    let page = format!("/admin/plans/{plan}/meters");
    let tokens = [
        ("feature", "tokens"),
        ("unit_name", "tokens"),
        ("included", "10000"),
        ("price", "2.00"),
        ("package_size", "1000"),
        ("quota", "1000000"),
        ("undecided", "closed"),
    ];
    assert_eq!(admin.submit(&page, &page, &tokens).await.status(), 303);
    let email = "documented@example.com";
    let customer = app.signed_in_customer(email).await;
    app.subscribe(&customer, "pro").await;
    assert_eq!(
        customer
            .add_key("anthropic", crate::vault::ANTHROPIC_KEY)
            .await
            .status(),
        303
    );
    let user_id = app.user_id(email);
    let token = app.service_token("docs", &Scope::ALL);

    let examples = examples();
    assert!(examples.len() >= 7, "{}", examples.len());
    let mut reservation_id = String::new();
    for (curl, (kind, documented)) in examples {
        if curl.contains("/commit") || curl.contains("/release") {
            reservation_id = reservation(&app, &token, user_id).await;
        }
        let output = Command::new("sh")
            .arg("-c")
            .arg(&curl)
            .env("TOLLGATE", &app.address)
            .env("TOLLGATE_TOKEN", &token)
            .env("USER_ID", user_id.to_string())
            .env("RESERVATION_ID", &reservation_id)
            .output()
            .expect("sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{curl}\n→ {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        if kind == "json" {
            let answered: Value =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{curl}: {e}: {stdout}"));
            let shown: Value = serde_json::from_str(&documented)
                .unwrap_or_else(|e| panic!("the example after {curl} is not JSON: {e}"));
            assert_eq!(shape(&answered), shape(&shown), "{curl}\n{stdout}");
        } else {
            // The lease example just before counts one granted lease.
            assert!(
                stdout.contains(r#"tollgate_byok_leases_total{outcome="granted",reason="none"} 1"#),
                "{stdout}"
            );
        }
    }
    // The examples did what they say: a commit of 1,500 tokens and two reported records, one
    // of them BYOK (not counted).
    let entitlements: Value = app
        .internal_get(&format!("entitlements/{user_id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(entitlements["limits"][0]["used"], 1500 + 1200);
}
