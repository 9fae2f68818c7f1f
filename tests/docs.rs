//! The operator docs only name commands that exist, and document every setting there is.

use std::process::Command;

use crate::common::{AlertReceiver, Backend, Received, TestApp, add_endpoint};
use crate::on_both_backends;

/// Every `tollgate …` command line in the fenced shell blocks and inline code of a document.
fn documented_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in markdown.lines() {
        for fragment in line.split('`') {
            let fragment = fragment.trim();
            let Some(rest) = fragment.strip_prefix("tollgate ") else {
                continue;
            };
            let words: Vec<String> = rest
                .split_whitespace()
                .take_while(|w| {
                    !w.starts_with('-') && !w.starts_with('>') && !w.starts_with('<') && *w != "—"
                })
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                commands.push(words);
            }
        }
    }
    commands.sort();
    commands.dedup();
    commands
}

fn guide(name: &str) -> String {
    std::fs::read_to_string(format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_command_in_the_operator_guides_exists() {
    let security = documented_commands(&guide("security.md"));
    assert!(security.len() >= 10, "{security:?}");
    let deployment = documented_commands(&guide("deployment.md"));
    assert!(deployment.len() >= 4, "{deployment:?}");
    for words in security.into_iter().chain(deployment) {
        // Positional values (token names) are not subcommands: keep the subcommand path only.
        let path: Vec<&String> = words
            .iter()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_clear()
            .args(path.iter().map(|s| s.as_str()))
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`tollgate {}` is documented but is not a command",
            words.join(" ")
        );
    }
}

/// The environment variables the configuration reads: the quoted SCREAMING_CASE names in
/// `src/config/`.
fn configuration_variables() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config");
    let source: String = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let mut names: Vec<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3
                && s.contains(|c: char| c.is_ascii_uppercase())
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_setting_is_documented_in_env_example_and_the_readme() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/.env.example")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let names = configuration_variables();
    assert!(names.len() >= 30, "{names:?}");
    for name in names {
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{name}="))),
            "{name} is not in .env.example"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README"
        );
    }
}

/// The deployment guide names only settings Tollgate reads: every `NAME=` its examples set and
/// every `SCREAMING_CASE` name it quotes.
#[test]
fn the_deployment_guide_names_only_real_settings() {
    let known = configuration_variables();
    let guide = guide("deployment.md");
    let assigned = guide
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()));
    let quoted = guide.split('`').skip(1).step_by(2);
    let names: Vec<&str> = assigned
        .chain(quoted)
        .filter(|name| {
            name.len() > 3
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        assert!(
            known.iter().any(|k| k == name),
            "docs/deployment.md names {name}, which Tollgate does not read"
        );
    }
}

/// The browser suite says loudly when it cannot run, and `REQUIRE_BROWSER=1` makes that a
/// failure instead of a skip.
#[test]
fn the_browser_suite_refuses_to_pass_silently_without_a_browser() {
    let run = |require: &str| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/e2e"))
            .env("CHROMIUM", "/nonexistent/chromium")
            .env("E2E_NO_INSTALL", "1")
            .env("REQUIRE_BROWSER", require)
            .output()
            .unwrap()
    };
    let required = run("1");
    let stderr = String::from_utf8_lossy(&required.stderr);
    assert_eq!(required.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BROWSER SUITE NOT RUN"), "{stderr}");
    assert!(stderr.contains("/nonexistent/chromium"), "{stderr}");
    let optional = run("0");
    let stderr = String::from_utf8_lossy(&optional.stderr);
    assert_eq!(optional.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("BROWSER SUITE NOT RUN"), "{stderr}");
    assert!(stderr.contains("REQUIRE_BROWSER=1"), "{stderr}");
}

/// Every source file docs/architecture.md names (`web/routes/billing.rs`, `db/models`, …)
/// exists, under `src/` or from the repository root: the diagram follows the tree.
#[test]
fn the_architecture_guide_names_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_-/.".contains(c);
    let mut named = Vec::new();
    for word in guide.split(|c: char| !is_path_char(c)) {
        let word = word.trim_end_matches('.');
        if word.ends_with(".rs") || word.starts_with("crates/") {
            named.push(word.to_owned());
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    for path in named {
        assert!(
            root.join("src").join(&path).exists() || root.join(&path).exists(),
            "docs/architecture.md names {path}, which is not in the tree"
        );
    }
}

mod verify_webhook;

/// The fenced block that follows the `<!-- snippet: NAME … -->` marker in docs/notifications.md.
fn snippet(name: &str) -> String {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/notifications.md"
    ))
    .unwrap();
    let marker = format!("<!-- snippet: {name} ");
    let after = &guide[guide.find(&marker).unwrap_or_else(|| panic!("no {marker}"))..];
    let fence = after.find("\n```").unwrap();
    let code = &after[fence + 4..];
    let code = &code[code.find('\n').unwrap() + 1..];
    code[..code.find("\n```").unwrap() + 1].to_owned()
}

/// A real delivery: an endpoint registered in a running app, an event published through the
/// outbox, and the request as the receiver got it. Returns it with the endpoint's secret.
async fn a_real_delivery(backend: Backend) -> (TestApp, Received, String) {
    let receiver = AlertReceiver::start();
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("snippet@example.com").await;
    let user_id = app.user_id("snippet@example.com");
    let (_, secret) = app.query(|conn| {
        let endpoint = add_endpoint(conn, &receiver.url, &["invoice.paid"]);
        tollgate::notify::publish(
            conn,
            tollgate::notify::AppEvent::InvoicePaid,
            user_id.into(),
            serde_json::json!({ "invoice": { "amount_paid": 2500, "currency": "usd" } }),
            "docs-snippet",
        )?;
        Ok(endpoint)
    });
    let received = receiver.wait_for(1).await;
    assert_eq!(received.len(), 1, "the delivery arrived");
    (app, received[0].clone(), secret)
}

/// Runs the documented Python snippet on one request: the secret and headers through the
/// environment (header names in mixed case, as frameworks hand them over), the body on stdin.
/// Returns whether it accepted it, and what it printed.
fn python_accepts(secret: &str, headers: [&str; 3], body: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let harness = r#"
import os, sys
headers = {
    "Webhook-Id": os.environ["WEBHOOK_ID"],
    "webhook-timestamp": os.environ["WEBHOOK_TIMESTAMP"],
    "WEBHOOK-SIGNATURE": os.environ["WEBHOOK_SIGNATURE"],
}
try:
    event = verify_webhook(os.environ["WEBHOOK_SECRET"], headers, sys.stdin.buffer.read())
except WebhookVerificationError as err:
    print(f"refused: {err}")
    sys.exit(1)
print(event["type"], event["data"]["user_id"])
"#;
    let program = format!("{}{harness}", snippet("verify_webhook.py"));
    let mut child = Command::new("python3")
        .args(["-I", "-c", &program])
        .env_clear()
        .env("WEBHOOK_SECRET", secret)
        .env("WEBHOOK_ID", headers[0])
        .env("WEBHOOK_TIMESTAMP", headers[1])
        .env("WEBHOOK_SIGNATURE", headers[2])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the documented snippet");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "the snippet raised: {stderr}");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

/// The request's three Standard Webhooks headers.
fn webhook_headers(received: &Received) -> [&str; 3] {
    ["webhook-id", "webhook-timestamp", "webhook-signature"].map(|h| received.headers[h].as_str())
}

/// A signature over `body` at `timestamp` with `secret`, as Tollgate makes them.
fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let secret = secrecy::SecretString::from(secret.to_owned());
    tollgate::notify::endpoints::sign(&secret, id, timestamp, body).unwrap()
}

on_both_backends!(
    the_documented_python_snippet_verifies_a_real_delivery,
    the_documented_rust_snippet_verifies_a_real_delivery,
);

/// docs/notifications.md's Python verification, copied as a reader would, accepts a real
/// delivery and refuses a tampered body, a wrong secret, a stale (replayed) signature and a
/// missing header; it accepts the second of two signatures (a rotation's overlap).
async fn the_documented_python_snippet_verifies_a_real_delivery(backend: Backend) {
    let code = snippet("verify_webhook.py");
    for line in code
        .lines()
        .filter(|l| l.starts_with("import ") || l.starts_with("from "))
    {
        let module = line.split_whitespace().nth(1).unwrap();
        assert!(
            ["base64", "hashlib", "hmac", "json", "time"].contains(&module),
            "standard library only: {line}"
        );
    }
    let (_app, received, secret) = a_real_delivery(backend).await;
    let body = received.body.as_bytes();
    let headers = webhook_headers(&received);
    let (accepted, printed) = python_accepts(&secret, headers, body);
    assert!(accepted, "a real delivery is accepted: {printed}");
    assert!(printed.starts_with("invoice.paid "), "{printed}");

    let tampered = received.body.replace("2500", "25000");
    assert_ne!(tampered, received.body);
    let (accepted, printed) = python_accepts(&secret, headers, tampered.as_bytes());
    assert!(!accepted, "a tampered body is refused: {printed}");
    assert_eq!(printed, "refused: no valid signature");

    let wrong = tollgate::notify::endpoints::generate_secret().unwrap();
    let (accepted, printed) =
        python_accepts(secrecy::ExposeSecret::expose_secret(&wrong), headers, body);
    assert!(!accepted, "another secret is refused: {printed}");

    // Signed with the right secret, but ten minutes ago: a replay.
    let old = chrono::Utc::now().timestamp() - 600;
    let stale = signed(&secret, headers[0], old, body);
    let old = old.to_string();
    let (accepted, printed) = python_accepts(&secret, [headers[0], &old, &stale], body);
    assert!(!accepted, "a stale timestamp is refused: {printed}");
    assert!(printed.contains("too old"), "{printed}");

    // During a rotation's overlap the matching signature may be the second of two.
    let other = signed(
        secrecy::ExposeSecret::expose_secret(&wrong),
        headers[0],
        headers[1].parse().unwrap(),
        body,
    );
    let both = format!("{other} {}", headers[2]);
    let (accepted, printed) = python_accepts(&secret, [headers[0], headers[1], &both], body);
    assert!(accepted, "either signature of two: {printed}");

    let (accepted, printed) = python_accepts(&secret, [headers[0], headers[1], ""], body);
    assert!(!accepted, "{printed}");
}

/// docs/notifications.md's dependency-light Rust verification is tests/docs/verify_webhook.rs
/// word for word, and that accepts a real delivery and refuses tampering, a wrong secret and a
/// stale signature.
async fn the_documented_rust_snippet_verifies_a_real_delivery(backend: Backend) {
    use verify_webhook::{WebhookError, verify_webhook};

    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/docs/verify_webhook.rs"
    ))
    .unwrap();
    assert_eq!(
        snippet("verify_webhook.rs"),
        file,
        "docs/notifications.md's Rust snippet and tests/docs/verify_webhook.rs differ"
    );
    let (_app, received, secret) = a_real_delivery(backend).await;
    let [id, timestamp, signature] = webhook_headers(&received);
    let body = received.body.as_bytes();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        verify_webhook(&secret, id, timestamp, signature, body, now),
        Ok(())
    );
    let tampered = received.body.replace("2500", "25000");
    assert_eq!(
        verify_webhook(&secret, id, timestamp, signature, tampered.as_bytes(), now),
        Err(WebhookError::BadSignature)
    );
    let wrong = tollgate::notify::endpoints::generate_secret().unwrap();
    let wrong = secrecy::ExposeSecret::expose_secret(&wrong);
    assert_eq!(
        verify_webhook(wrong, id, timestamp, signature, body, now),
        Err(WebhookError::BadSignature)
    );
    let both = format!(
        "{} {signature}",
        signed(wrong, id, timestamp.parse().unwrap(), body)
    );
    assert_eq!(
        verify_webhook(&secret, id, timestamp, &both, body, now),
        Ok(())
    );
    let old = now - 600;
    let stale = signed(&secret, id, old, body);
    assert_eq!(
        verify_webhook(&secret, id, &old.to_string(), &stale, body, now),
        Err(WebhookError::Stale)
    );
}
