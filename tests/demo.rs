//! The offline demo (`tollgate serve --with-stripe-sim`), run as a person would from a fresh
//! directory: sign up, choose a plan, pay with 4242… on the simulated checkout page, see the
//! subscription active, change it in the Billing Portal and see the webhook arrive; restart it,
//! start it over. And the simulator is refused in production.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate::secret::encode_base64;

use crate::common::{Browser, PASSWORD, location, serve_command, switch_plan_in_the_portal};

/// A running `tollgate serve --with-stripe-sim` in `dir`, with everything it wrote to stderr.
struct Demo {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo in `dir` as a person would (nothing inherited from the test's shell).
    async fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = serve_command(dir)
            .args(["--with-stripe-sim", "--stripe-sim-port", "0"])
            .args(extra)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = Arc::clone(&stderr);
        // Drained to the end on a thread: the demo keeps logging.
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut demo = Self {
            child,
            base: String::new(),
            stderr,
        };
        demo.base = demo
            .wait_for(|log| {
                let rest = log.split("tollgate: open ").nth(1)?;
                Some(
                    rest.split_whitespace()
                        .next()?
                        .trim_end_matches('/')
                        .to_owned(),
                )
            })
            .await;
        demo
    }

    async fn wait_for<T>(&self, found: impl Fn(&str) -> Option<T>) -> T {
        eventually(|| async { found(&self.stderr.lock().unwrap()) }).await
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log()
    }
}

/// Polls `check` until it yields a value (ten seconds at most: deliveries take milliseconds).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(check: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Chooses `plan` on the pricing page and pays on the simulator's checkout page.
async fn subscribe(browser: &Browser, sim: &reqwest::Client, plan: &str, name: &str) {
    let base = &browser.base;
    let res = browser.choose_plan(plan).await;
    assert_eq!(res.status(), 303);
    let checkout = location(&res);
    assert!(checkout.contains("/checkout/cs_test_"), "{checkout}");
    let page = sim
        .get(&checkout)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("Subscribe to {name}")), "{page}");
    assert!(
        page.contains(r#"<span class="merchant-name">Acme Demo Co</span>"#),
        "the merchant is STRIPE_SIM_BUSINESS_NAME from .env: {page}"
    );
    let paid = sim
        .post(&checkout)
        .form(&crate::common::card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let success = location(&paid);
    assert!(
        success.starts_with(&format!("{base}/billing/success")),
        "{success}"
    );
    let thanks = browser
        .get_text(success.trim_start_matches(base.as_str()))
        .await;
    assert!(thanks.contains("Thank you"));
}

/// Runs the create-admin command the demo printed, word for word, from another directory.
fn run_printed_admin_command(log: &str, email: &str) {
    let line = log
        .lines()
        .find_map(|l| l.split("from any directory: ").nth(1))
        .expect("the demo says how to become an admin");
    let mut words = line.split_whitespace();
    let (var, url) = words.next().unwrap().split_once('=').unwrap();
    assert_eq!(var, "DATABASE_URL");
    let program = words.next().unwrap();
    let args: Vec<&str> = words
        .map(|w| if w == "you@example.com" { email } else { w })
        .collect();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = crate::common::output_with_stdin(
        Command::new(program)
            .args(&args)
            .env_clear()
            .env(var, url)
            .current_dir(elsewhere.path()),
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !elsewhere.path().join("tollgate-demo.db").exists(),
        "no second database where the command ran"
    );
}

/// The offline demo, run as a person would from a fresh directory: subscribe, switch plans in
/// the simulator's Billing Portal and see the change arrive by signed webhook (account page and
/// `/admin/webhooks`, through the admin command the demo prints); a restart keeps the account,
/// `--fresh` starts over.
#[actix_web::test]
async fn the_offline_demo_round_trips_webhooks_and_keeps_its_database_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, "STRIPE_SIM_BUSINESS_NAME=\"Acme Demo Co\"\n").unwrap();
    std::fs::set_permissions(
        &env_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sim = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let demo = Demo::start(dir.path(), &[]).await;
    subscribe_and_switch_plans_in_the_portal(&demo, &sim).await;
    let log = demo.stop();
    assert!(
        !log.contains("whsec_"),
        "the endpoint secret is never printed: {log}"
    );
    let demo = Demo::start(dir.path(), &[]).await;
    a_restart_keeps_the_account(&demo, &sim).await;
    demo.stop();

    let demo = Demo::start(dir.path(), &["--fresh"]).await;
    let browser = Browser::new(&demo.base);
    assert_eq!(
        browser.login("demo@example.com", PASSWORD).await.status(),
        401,
        "--fresh starts over"
    );
    assert_eq!(
        browser.signup("demo@example.com", PASSWORD).await.status(),
        303
    );
    demo.stop();
}

/// The first run: sign up, subscribe to Starter, switch to Pro in the simulator's portal and
/// see the change arrive by signed webhook (account page, and `/admin/webhooks` through the
/// admin command the demo printed).
async fn subscribe_and_switch_plans_in_the_portal(demo: &Demo, sim: &reqwest::Client) {
    let browser = Browser::new(&demo.base);
    assert_eq!(
        browser.signup("demo@example.com", PASSWORD).await.status(),
        303
    );
    let pricing = browser.get_text("/pricing").await;
    assert!(
        pricing.contains("Starter") && pricing.contains("Pro") && pricing.contains("$9.00 / month")
    );
    subscribe(&browser, sim, "starter", "Starter").await;
    let account = browser.get_text("/account").await;
    assert!(
        account.contains("Starter") && account.contains(">active<"),
        "{account}"
    );

    switch_plan_in_the_portal(&browser, sim, "Pro").await;
    let account = eventually(|| async {
        let page = browser.get_text("/account").await;
        page.contains("<dd>Pro</dd>").then_some(page)
    })
    .await;
    assert!(account.contains(">active<"), "{account}");

    run_printed_admin_command(&demo.log(), "admin@example.com");
    let admin = Browser::new(&demo.base);
    assert_eq!(
        admin.login("admin@example.com", PASSWORD).await.status(),
        303
    );
    eventually(|| async {
        let page = admin.get_text("/admin/webhooks").await;
        page.contains("customer.subscription.updated").then_some(())
    })
    .await;
}

/// A restart keeps the database (the account and its plan); the simulator starts empty and
/// the kept plans are published to it again, once.
async fn a_restart_keeps_the_account(demo: &Demo, sim: &reqwest::Client) {
    assert!(
        demo.log().contains("kept from the last run"),
        "{}",
        demo.log()
    );
    let browser = Browser::new(&demo.base);
    assert_eq!(
        browser.login("demo@example.com", PASSWORD).await.status(),
        303
    );
    let account = browser.get_text("/account").await;
    assert!(
        account.contains("<dd>Pro</dd>"),
        "the account survived: {account}"
    );
    let newcomer = Browser::new(&demo.base);
    assert_eq!(
        newcomer.signup("new@example.com", PASSWORD).await.status(),
        303
    );
    subscribe(&newcomer, sim, "starter", "Starter").await;
    let pricing = newcomer.get_text("/pricing").await;
    assert_eq!(
        pricing.matches("$9.00 / month").count(),
        1,
        "no duplicate plans: {pricing}"
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
