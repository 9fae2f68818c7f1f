//! The secrets lifecycle commands, run as an operator would: service tokens, key rotation
//! (interrupted and resumed), emergency switches and secret validation.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tollgate::secret::{decode_key, encode_base64};

use crate::common::{
    Backend, Outcome, PASSWORD, TestApp, TestDatabase, run, secret_env, stripe_event,
};
use crate::on_both_backends;
use crate::vault::ANTHROPIC_KEY;

on_both_backends!(
    service_tokens_are_created_listed_and_revoked_from_the_cli,
    rotate_key_is_resumable_idempotent_and_safe_while_serving,
    a_rotation_batch_replaces_only_the_values_it_read,
    revoke_sessions_signs_everyone_out,
    leases_can_be_switched_off_and_on,
);

/// The binary on `database`, with the test secrets and `env` (nothing from the developer's shell).
pub(crate) fn tollgate(database: &TestDatabase, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear()
        .current_dir(std::env::temp_dir())
        .arg("--env-file=/nonexistent/.env")
        .env("DATABASE_URL", &database.url_string)
        .stdin(Stdio::null());
    for (k, v) in secret_env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn lease_status(
    app: &TestApp,
    token: &str,
    user_id: i64,
    provider: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "user_id": user_id, "provider": provider });
    let res = app.internal_post("byok/lease", Some(token), &body).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// `tollgate service-token {args}` on `database`.
fn service_token(database: &TestDatabase, args: &[&str]) -> Outcome {
    run(tollgate(database, &[]).arg("service-token").args(args))
}

/// `tollgate service-token create --name {name} --scope {scope}` on `database`.
fn create_service_token(database: &TestDatabase, name: &str, scope: &str) -> Outcome {
    service_token(database, &["create", "--name", name, "--scope", scope])
}

async fn service_tokens_are_created_listed_and_revoked_from_the_cli(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let (code, token, stderr) = create_service_token(&database, "engine", "byok:lease");
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("tg_svc_") && token.len() > 40, "{token}");
    assert!(stderr.contains("not shown again"));

    let (code, _, stderr) = create_service_token(&database, "engine", "byok:lease");
    assert_eq!(code, 2, "duplicate names are refused");
    assert!(stderr.contains("already exists"), "{stderr}");
    let (code, _, stderr) = create_service_token(&database, "x", "everything");
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown scope"), "{stderr}");

    let (code, list, _) = service_token(&database, &["list"]);
    assert_eq!(code, 0);
    assert!(
        list.contains("engine") && list.contains("byok:lease") && list.contains("active"),
        "{list}"
    );
    let masked = format!("{}…", &token[..13]);
    assert!(list.contains(&masked), "masked id: {list}");
    let shown = list.contains(&token[13..]);
    assert!(!shown, "the token itself is never listed");

    let app = TestApp::spawn_on(database, backend, |_| {}).await;
    let browser = app.signed_in_customer("cli-lease@example.com").await;
    browser.add_key("anthropic", ANTHROPIC_KEY).await;
    let user_id = app.user_id("cli-lease@example.com");
    let (status, _) = lease_status(&app, &token, user_id, "anthropic").await;
    assert_eq!(status, 200);

    let database = &app_database(&app);
    let (code, stdout, _) = service_token(database, &["revoke", "engine"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "revoked 1 service token(s)");
    assert_eq!(
        lease_status(&app, &token, user_id, "anthropic").await.0,
        401,
        "revoked at once"
    );
    let (code, _, stderr) = service_token(database, &["revoke", "engine"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no active token named `engine`"));
    let (code, _, _) = service_token(database, &["revoke"]);
    assert_eq!(code, 2, "a name or --all is required");

    create_service_token(database, "a", "byok:lease");
    create_service_token(database, "b", "entitlements:read");
    let (code, stdout, _) = service_token(database, &["revoke", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "revoked 2 service token(s)");
    assert_eq!(app.count_events("service_token_created"), 3);
    assert_eq!(app.count_events("service_token_revoked"), 2);
}

/// A `TestDatabase` handle on the database an app already runs on (for the CLI).
fn app_database(app: &TestApp) -> TestDatabase {
    app.database_handle()
}

const USERS: usize = 5;

fn key_for(i: usize) -> String {
    format!("sk-ant-api03-DUMMY-rotation-{i:02}-0000000000000000000000000000{i:03}")
}

async fn rotate_key_is_resumable_idempotent_and_safe_while_serving(backend: Backend) {
    let old = encode_base64(&[0x22; 32]); // the test default ENCRYPTION_KEY
    let new = encode_base64(&[0x44; 32]);
    let before = TestApp::spawn(backend).await;
    let (user_ids, customer_owner, webhook) = values_under_the_old_key(&before, &old).await;
    let handle = before.database_handle();
    let rotated_env = [
        ("ENCRYPTION_KEY", new.clone()),
        ("ENCRYPTION_KEYS_OLD", old.clone()),
    ];
    let rotate = |args: &[&str]| run(tollgate(&handle, &rotated_env).arg("rotate-key").args(args));
    let check = || rotate(&["--check"]);

    let (code, report, _) = check();
    assert_eq!(code, 0);
    assert!(
        report.contains(&format!("byok_keys.secret: {USERS} value(s) under key"))
            && report.contains("(old)"),
        "{report}"
    );
    assert!(report.contains("run `tollgate rotate-key`"));
    an_interrupted_rotation_is_rolled_back_then_resumed(&rotate);

    // Meanwhile a server with the new primary and the old key reads every value.
    let during = TestApp::spawn_on(before.database_handle(), backend, |config| {
        config.secrets.encryption_key = decode_key::<32>(&new).unwrap();
        config.secrets.encryption_keys_old = vec![decode_key::<32>(&old).unwrap()];
    })
    .await;
    let token = during.service_token("engine", &[tollgate::service_tokens::Scope::ByokLease]);
    every_key_leases(&during, &token, &user_ids).await;

    // The rerun finishes the job (the two keys left, the customer id and the webhook payload);
    // a second rerun has nothing to do.
    let (code, out, _) = rotate(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("re-sealed 4 value(s); 0 remain"), "{out}");
    let payloads = out.contains("webhook_events.payload_sealed: re-sealed 1");
    assert!(payloads, "{out}");
    let customers = out.contains("billing_customers.stripe_customer_sealed: re-sealed 1");
    assert!(customers, "{out}");
    let (code, out, _) = rotate(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("re-sealed 0 value(s); 0 remain"), "{out}");
    assert!(check().1.contains("old keys can be removed"));

    // The old key can go: a server with only the new key reads everything.
    let after = TestApp::spawn_on(before.database_handle(), backend, |config| {
        config.secrets.encryption_key = decode_key::<32>(&new).unwrap();
    })
    .await;
    every_key_leases(&after, &token, &user_ids).await;
    the_new_key_alone_opens_everything(&after, &new, customer_owner, &webhook).await;
    // And a keyring missing a key that still holds values says so (exit 1).
    let third = encode_base64(&[0x55; 32]);
    let (code, _, stderr) =
        run(tollgate(&handle, &[("ENCRYPTION_KEY", third)]).args(["rotate-key", "--check"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("not configured"), "{stderr}");
    assert!(after.count_events("encryption_key_rotated") >= 3);
}

/// Values sealed under `old`: a BYOK key for each of `USERS` customers, one Stripe customer id
/// (bound to the first) and one stored webhook payload. The users' ids, the customer id's
/// owner and the webhook event.
async fn values_under_the_old_key(app: &TestApp, old: &str) -> (Vec<i64>, i64, serde_json::Value) {
    let mut user_ids = Vec::new();
    for i in 0..USERS {
        let email = format!("rot{i}@example.com");
        let browser = app.signed_in_customer(&email).await;
        let res = browser.add_key("anthropic", &key_for(i)).await;
        assert_eq!(res.status(), 303);
        user_ids.push(app.user_id(&email));
    }
    let old_ring = tollgate::crypto::Keyring::new(&decode_key::<32>(old).unwrap(), &[]);
    let customer_owner = user_ids[0];
    let sealed = old_ring
        .seal(
            b"cus_DUMMYrotation",
            &tollgate::billing::customers::customer_aad(customer_owner.into()),
        )
        .unwrap();
    let row = tollgate::db::models::billing_customer::BillingCustomerRow {
        user_id: customer_owner.into(),
        stripe_customer_sealed: sealed,
        key_id: old_ring.primary_id().to_string(),
        stripe_customer_index: "index-DUMMY".into(),
        stripe_customer_masked: "cus_…ion".into(),
        created_at: tollgate::db::now(),
        index_key_id: None,
    };
    app.query(move |conn| tollgate::db::models::billing_customer::insert(conn, &row));
    let webhook = stripe_event("payout.created", "evt_1Rotation");
    app.assert_webhook_accepted(&webhook).await;
    (user_ids, customer_owner, webhook)
}

/// A crash in the middle of a batch rolls back (nothing is half-done); a run stopped after
/// part of the work leaves the rest under the old key.
fn an_interrupted_rotation_is_rolled_back_then_resumed(rotate: &dyn Fn(&[&str]) -> Outcome) {
    let (code, _, stderr) = rotate(&["--batch-size", "3", "--fail-after", "2"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("fault injection"), "{stderr}");
    let report = rotate(&["--check"]).1;
    let all_old = report.contains(&format!("{USERS} value(s) under key"));
    assert!(all_old, "rolled back");

    // Stopped after part of the work: 3 moved, 2 left.
    let (code, out, _) = rotate(&["--batch-size", "2", "--max-rows", "3"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("re-sealed 3 value(s); 4 remain"), "{out}");
    let report = rotate(&["--check"]).1;
    assert!(
        report.contains("3 value(s) under key") && report.contains("(primary)"),
        "{report}"
    );
    assert!(
        report.contains("2 value(s) under key") && report.contains("(old)"),
        "{report}"
    );
}

/// Every user's key leases (and is the one they saved) through `app`.
async fn every_key_leases(app: &TestApp, token: &str, user_ids: &[i64]) {
    for (i, user_id) in user_ids.iter().enumerate() {
        let (status, body) = lease_status(app, token, *user_id, "anthropic").await;
        assert_eq!(status, 200);
        assert_eq!(body["api_key"], key_for(i));
    }
}

/// With only the `new` key, the Stripe customer id and the webhook payload still open.
async fn the_new_key_alone_opens_everything(
    app: &TestApp,
    new: &str,
    customer_owner: i64,
    webhook: &serde_json::Value,
) {
    let new_ring = tollgate::crypto::Keyring::new(&decode_key::<32>(new).unwrap(), &[]);
    let customer =
        tollgate::billing::customers::customer_id(&app.db, &new_ring, customer_owner.into())
            .await
            .unwrap();
    assert_eq!(
        customer.as_ref().map(|c| c.expose()),
        Some("cus_DUMMYrotation")
    );
    let stored = app
        .query(|conn| tollgate::db::models::webhook_event::find(conn, "evt_1Rotation"))
        .unwrap();
    let payload = tollgate::webhooks::open_payload(&new_ring, &stored).unwrap();
    assert_eq!(
        &serde_json::from_slice::<serde_json::Value>(&payload).unwrap(),
        webhook
    );
}

async fn revoke_sessions_signs_everyone_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_in_customer("rs-a@example.com").await;
    let bob = app.signed_in_customer("rs-b@example.com").await;
    let (code, stdout, _) = run(tollgate(&app.database_handle(), &[]).arg("revoke-sessions"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "revoked 2 session(s): everyone must sign in again"
    );
    assert_eq!(alice.get("/account").await.status(), 303);
    assert_eq!(bob.get("/account").await.status(), 303);
    let events = app.events("sessions_revoked");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].severity, "CRITICAL");
    assert_eq!(
        alice.login("rs-a@example.com", PASSWORD).await.status(),
        303,
        "signing in again works"
    );
}

async fn leases_can_be_switched_off_and_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("switch@example.com").await;
    browser.add_key("anthropic", ANTHROPIC_KEY).await;
    let user_id = app.user_id("switch@example.com");
    let token = app.service_token("engine", &[tollgate::service_tokens::Scope::ByokLease]);
    let handle = app.database_handle();

    let (code, stdout, _) = run(tollgate(&handle, &[]).args(["byok", "disable-leases"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("DISABLED"));
    let (status, body) = lease_status(&app, &token, user_id, "anthropic").await;
    assert_eq!(status, 503);
    assert!(body.get("api_key").is_none());

    assert_eq!(
        run(tollgate(&handle, &[]).args(["byok", "enable-leases"])).0,
        0
    );
    assert_eq!(
        lease_status(&app, &token, user_id, "anthropic").await.0,
        200
    );
    for kind in ["byok_leases_disabled", "byok_leases_enabled"] {
        let events = app.events(kind);
        assert_eq!(events.len(), 1, "{kind}");
        assert_eq!(events[0].severity, "CRITICAL");
    }
}

// --- validate-secrets ---------------------------------------------------------------------------

fn stripe_env() -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", "sk_test_DUMMYkey0000000000".into()),
        (
            "STRIPE_PUBLISHABLE_KEY",
            "pk_test_DUMMYkey0000000000".into(),
        ),
        ("STRIPE_WEBHOOK_SECRET", "whsec_DUMMYsecret000000".into()),
    ]
}

fn validate(dir: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear()
        .current_dir(dir)
        .arg("validate-secrets")
        .args(args);
    for (k, v) in secret_env().into_iter().chain(stripe_env()) {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

#[test]
fn validate_secrets_passes_a_sound_configuration_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = validate(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("all secrets are present and well-formed"));
    assert!(stdout.contains("sk_test_…000"), "masked: {stdout}");
    for (_, value) in secret_env().into_iter().chain(stripe_env()) {
        assert!(!stdout.contains(&value), "printed a secret: {stdout}");
    }
}

#[test]
fn validate_secrets_reports_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SECRET_KEY", "c2hvcnQ=".to_owned()),
        ("STRIPE_SECRET_KEY", "sk_prod_DUMMY000000000".to_owned()),
        ("STRIPE_WEBHOOK_SECRET", "hook_DUMMY".to_owned()),
        ("TOKEN_PEPPER", String::new()),
        (
            "TOKEN_PEPPERS_OLD",
            format!("{},nope", encode_base64(&[7; 32])),
        ),
    ];
    let (code, stdout, _) = validate(dir.path(), &env, &[]);
    assert_eq!(code, 1);
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("problem"))
        .collect();
    assert_eq!(problems.len(), 5, "{stdout}");
    assert!(
        stdout.contains("TOKEN_PEPPERS_OLD has a bad entry: entry 2"),
        "{stdout}"
    );
    assert!(stdout.contains("SECRET_KEY must decode to 64 bytes (got 5)"));
    assert!(stdout.contains("TOKEN_PEPPER is not set"));
    assert!(stdout.contains("STRIPE_SECRET_KEY is malformed"));
    assert!(stdout.contains("STRIPE_WEBHOOK_SECRET is malformed"));
    assert!(!stdout.contains("sk_prod_DUMMY000000000") && !stdout.contains("c2hvcnQ="));
}

#[test]
fn validate_secrets_catches_mode_mismatches_live_keys_and_open_env_files() {
    let dir = tempfile::tempdir().unwrap();
    let mismatch = [(
        "STRIPE_PUBLISHABLE_KEY",
        "pk_live_DUMMYkey0000000000".to_owned(),
    )];
    let (code, stdout, _) = validate(dir.path(), &mismatch, &[]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("Test-mode key but STRIPE_PUBLISHABLE_KEY is Live-mode"),
        "{stdout}"
    );

    let live = [
        ("STRIPE_SECRET_KEY", "sk_live_DUMMYkey0000000000".to_owned()),
        (
            "STRIPE_PUBLISHABLE_KEY",
            "pk_live_DUMMYkey0000000000".to_owned(),
        ),
    ];
    // Live keys with TOLLGATE_ENV unset: `serve` refuses to start, so this is a problem.
    let (code, stdout, _) = validate(dir.path(), &live, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("problem  STRIPE_SECRET_KEY is a live key but TOLLGATE_ENV is not set: set TOLLGATE_ENV=production"),
        "{stdout}"
    );
    // Development chosen explicitly: allowed, with a warning.
    let mut development = live.to_vec();
    development.push(("TOLLGATE_ENV", "development".into()));
    let (code, stdout, stderr) = validate(dir.path(), &development, &[]);
    assert_eq!(code, 0, "a warning, not a failure");
    assert!(
        stdout.contains("WARNING  LIVE Stripe keys outside production")
            && stderr.contains("WARNING")
    );
    let mut production = live.to_vec();
    production.push(("TOLLGATE_ENV", "production".into()));
    assert!(!validate(dir.path(), &production, &[]).1.contains("WARNING"));

    let env_file = dir.path().join(".env");
    std::fs::File::create(&env_file)
        .unwrap()
        .write_all(b"# nothing\n")
        .unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, _) = validate(dir.path(), &[], &[]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(".env is readable by group or others (mode 644)"),
        "{stdout}"
    );
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(validate(dir.path(), &[], &[]).0, 0);
}

async fn fake_balance(req: HttpRequest) -> HttpResponse {
    let authorised = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some("Bearer sk_test_DUMMYkey0000000000");
    if authorised && req.method() == actix_web::http::Method::GET {
        HttpResponse::Ok().json(serde_json::json!({ "object": "balance", "available": [] }))
    } else {
        HttpResponse::Unauthorized()
            .json(serde_json::json!({ "error": { "type": "invalid_request_error" } }))
    }
}

#[actix_web::test]
async fn validate_secrets_can_make_one_read_only_call_to_stripe() {
    let server = HttpServer::new(|| App::new().route("/v1/balance", web::to(fake_balance)))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // The CLI blocks; run it off this thread so the fake Stripe keeps serving.
    let validate = move |env: Vec<(&'static str, String)>| {
        let path = path.clone();
        actix_web::rt::task::spawn_blocking(move || validate(&path, &env, &["--test-stripe"]))
    };

    let (code, stdout, _) = validate(vec![("STRIPE_API_BASE", base.clone())])
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("Stripe accepted STRIPE_SECRET_KEY"));

    let other = vec![
        ("STRIPE_API_BASE", base),
        (
            "STRIPE_SECRET_KEY",
            "sk_test_DUMMYother000000000".to_owned(),
        ),
    ];
    let (code, stdout, _) = validate(other).await.unwrap();
    assert_eq!(code, 1);
    assert!(
        stdout.contains("Stripe rejected STRIPE_SECRET_KEY: HTTP 401"),
        "{stdout}"
    );

    let closed = vec![("STRIPE_API_BASE", "http://127.0.0.1:9".to_owned())];
    let (code, stdout, _) = validate(closed).await.unwrap();
    assert_eq!(code, 1);
    assert!(stdout.contains("could not reach Stripe"), "{stdout}");
}

// --- secret scanning ----------------------------------------------------------------------------

fn scan(repo: &std::path::Path) -> Outcome {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/secret-scan");
    run(Command::new(script).arg(repo))
}

fn git_repo_with(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
            .status;
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
        git(&["add", name]);
    }
    dir
}

#[test]
fn secret_scan_fails_on_realistic_keys_and_allows_obvious_dummies() {
    // Assembled at run time so this file itself holds no realistic key.
    let realistic = [
        format!("sk_{}_{}", "live", "4eC39HqLyjWDarjtT1zdp7dc"),
        format!("whsec_{}", "Q8f3kLm29xVb7Rt5Yp1Nc4Hd6Wg0Js"),
        format!("sk-ant-api03-{}", "Zx9Lk3Qm7Vn2Bc5Rt8Yp1Wd4Hf6Gj0Ks3Lm9Qa"),
    ];
    for key in &realistic {
        let repo = git_repo_with(&[("config.py", format!("KEY = \"{key}\"\n"))]);
        let (code, stdout, _) = scan(repo.path());
        assert_eq!(code, 1, "{key} should be caught");
        assert!(
            stdout.contains("config.py:1: looks like a real"),
            "{stdout}"
        );
        assert!(
            !stdout.contains(&key[12..]),
            "the finding is masked: {stdout}"
        );
    }
    let dummies = [
        "sk_live_DUMMY000000000000000000000",
        "whsec_DUMMYsecretDUMMYsecret000000",
        "sk-ant-api03-DUMMY-test-key-not-real-000000000000000000002a1",
    ];
    let repo = git_repo_with(&[("fixtures.rs", dummies.join("\n"))]);
    let (code, stdout, _) = scan(repo.path());
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = scan(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(code, 0, "Tollgate's own tree is clean: {stdout}");
}

/// A batch of compare-and-swaps (one statement on PostgreSQL) replaces each value only if the
/// row still holds what was read: a value the application replaced in between stays, with its
/// key id, and is not counted.
async fn a_rotation_batch_replaces_only_the_values_it_read(backend: Backend) {
    use tollgate::db::models::Swap;
    use tollgate::db::models::billing_customer::{self, BillingCustomerRow};
    use tollgate::db::models::user::{self, NewUser, Role};

    let app = TestApp::spawn(backend).await;
    let now = tollgate::db::now();
    let emails = ["cas1@example.com", "cas2@example.com", "cas3@example.com"];
    let ids: Vec<i64> = app.query(|conn| {
        let new: Vec<NewUser<'_>> = emails
            .iter()
            .map(|email| NewUser {
                email,
                password_hash: "not-a-hash",
                role: Role::Customer,
                created_at: now,
                updated_at: now,
            })
            .collect();
        Ok(user::insert_many(conn, &new)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    });
    let rows: Vec<BillingCustomerRow> = ids
        .iter()
        .map(|id| BillingCustomerRow {
            user_id: (*id).into(),
            stripe_customer_sealed: format!("old-{id}").into_bytes(),
            key_id: "old".into(),
            stripe_customer_index: format!("index-old-{id}"),
            stripe_customer_masked: "cus_…DUMMY".into(),
            created_at: now,
            index_key_id: Some("old-pepper".into()),
        })
        .collect();
    app.query(|conn| billing_customer::insert_many(conn, &rows));

    // What rotate-key read, and what it computed; the second row changed in between.
    let (old, new): (Vec<Vec<u8>>, Vec<Vec<u8>>) = ids
        .iter()
        .map(|id| {
            (
                format!("old-{id}").into_bytes(),
                format!("new-{id}").into_bytes(),
            )
        })
        .unzip();
    let (old_index, new_index): (Vec<String>, Vec<String>) = ids
        .iter()
        .map(|id| (format!("index-old-{id}"), format!("index-new-{id}")))
        .unzip();
    let (first, second, third) = (ids[0], ids[1], ids[2]);
    app.query(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::billing_customers as t;
        diesel::update(t::table.find(second))
            .set((
                t::stripe_customer_sealed.eq(b"written".to_vec()),
                t::stripe_customer_index.eq("index-app"),
            ))
            .execute(conn)?;
        Ok(())
    });
    let sealed: Vec<Swap<'_, [u8]>> = ids
        .iter()
        .zip(old.iter().zip(&new))
        .map(|(id, (old, new))| Swap {
            id: *id,
            old: old.as_slice(),
            new: new.as_slice(),
        })
        .collect();
    let indexes: Vec<Swap<'_, str>> = ids
        .iter()
        .zip(old_index.iter().zip(&new_index))
        .map(|(id, (old, new))| Swap {
            id: *id,
            old: old.as_str(),
            new: new.as_str(),
        })
        .collect();
    let (replaced, reindexed) = app.query(|conn| {
        Ok((
            billing_customer::replace_sealed(conn, &sealed, "new")?,
            billing_customer::replace_index(conn, &indexes, "new-pepper")?,
        ))
    });
    assert_eq!((replaced, reindexed), (2, 2));
    for id in [first, second, third] {
        let row = app
            .query(move |conn| billing_customer::for_user(conn, id.into()))
            .expect("row");
        if id == second {
            assert_eq!(row.stripe_customer_sealed, b"written");
            assert_eq!(row.key_id, "old");
            assert_eq!(row.stripe_customer_index, "index-app");
            assert_eq!(row.index_key_id.as_deref(), Some("old-pepper"));
        } else {
            assert_eq!(row.stripe_customer_sealed, format!("new-{id}").into_bytes());
            assert_eq!(row.key_id, "new");
            assert_eq!(row.stripe_customer_index, format!("index-new-{id}"));
            assert_eq!(row.index_key_id.as_deref(), Some("new-pepper"));
        }
    }
}
