//! The offline demo (`tollgate serve --with-stripe-sim`), run as a person would from a fresh
//! directory: sign up, choose a plan, pay with 4242… on the simulated checkout page, see the
//! subscription active. And the simulator is refused in production.

use std::process::{Command, Stdio};

use tollgate::secret::encode_base64;

use crate::common::{Browser, PASSWORD, announced_address, hidden, location};

#[actix_web::test]
async fn the_offline_demo_runs_the_whole_billing_flow_from_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--with-stripe-sim", "--stripe-sim-port", "0"])
        .env_clear()
        .env("BIND", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stderr is drained to the end on a thread (the demo keeps logging).
    let address = announced_address(&mut child, "open ");
    let base = actix_web::rt::task::spawn_blocking(move || {
        address.recv_timeout(std::time::Duration::from_secs(60))
    })
    .await
    .unwrap()
    .expect("the demo prints where to open it");

    let browser = Browser::new(&base);
    assert_eq!(
        browser.signup("demo@example.com", PASSWORD).await.status(),
        303
    );
    let pricing = browser.get_text("/pricing").await;
    assert!(
        pricing.contains("Starter") && pricing.contains("Pro") && pricing.contains("$9.00 / month")
    );
    let op = hidden(&pricing, "operation_id");
    let res = browser
        .submit(
            "/pricing",
            "/billing/checkout",
            &[("plan", "starter"), ("operation_id", &op)],
        )
        .await;
    assert_eq!(res.status(), 303);
    let checkout = location(&res);
    assert!(checkout.contains("/checkout/cs_test_"), "{checkout}");

    let sim = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert!(
        sim.get(&checkout)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Subscribe to Starter")
    );
    let paid = sim
        .post(&checkout)
        .form(&[("card_number", "4242 4242 4242 4242")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let success = location(&paid);
    assert!(
        success.starts_with(&format!("{base}/billing/success")),
        "{success}"
    );
    assert!(
        browser
            .get_text(success.trim_start_matches(&base))
            .await
            .contains("Thank you")
    );
    let account = browser.get_text("/account").await;
    assert!(
        account.contains("Starter") && account.contains(">active<"),
        "{account}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dir.path().join("tollgate-demo.db").exists(),
        "the demo keeps its own database"
    );
}

fn production(args: &[&str], extra: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear()
        .current_dir(dir.path())
        .args(args)
        .env("TOLLGATE_ENV", "production")
        .env("BIND", "127.0.0.1:0")
        .env("SECRET_KEY", encode_base64(&[1; 64]))
        .env("ENCRYPTION_KEY", encode_base64(&[2; 32]))
        .env("TOKEN_PEPPER", encode_base64(&[3; 32]));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn production_refuses_the_simulator_and_pointing_tollgate_at_it() {
    let (code, stderr) = production(&["stripe-sim", "--port", "0"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused: TOLLGATE_ENV=production"),
        "{stderr}"
    );
    let (code, stderr) = production(
        &["serve", "--with-stripe-sim", "--stripe-sim-port", "0"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused: TOLLGATE_ENV=production"),
        "{stderr}"
    );
    let (code, stderr) = production(&["serve"], &[("STRIPE_API_BASE", "http://127.0.0.1:12111")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("STRIPE_API_BASE must be Stripe's https address"),
        "{stderr}"
    );
}
