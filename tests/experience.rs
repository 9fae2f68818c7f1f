//! What a person notices on first use: `HEAD` works wherever `GET` does, a favicon, landing
//! where they expect after signing in and out, no empty "Last sign-in", admin times to the
//! second, and a checkout that leaves no warning in the log.

use crate::common::{Backend, PASSWORD, TestApp, captured_logs, location};
use crate::on_both_backends;

on_both_backends!(
    head_gets_the_get_answer_without_a_body,
    a_favicon_is_served_and_linked,
    admins_land_on_the_console_and_customers_on_their_account,
    signing_out_says_so_and_ends_the_session,
    a_new_account_shows_no_empty_last_sign_in,
    admin_lists_show_times_to_the_second,
    the_audit_log_names_people_and_reads_as_fields,
    a_checkout_logs_no_unknown_stripe_enum_values,
);

async fn head_gets_the_get_answer_without_a_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let home = client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    let html = home.text().await.unwrap();
    let stylesheet = html
        .split("href=\"")
        .find_map(|rest| {
            rest.split('"')
                .next()
                .filter(|h| h.starts_with("/static/app.css"))
        })
        .unwrap()
        .to_owned();
    for path in [
        "/",
        "/pricing",
        "/login",
        "/signup",
        "/healthz",
        "/favicon.ico",
        &stylesheet,
    ] {
        let url = format!("{}{path}", app.address);
        let get = client.get(&url).send().await.unwrap();
        let head = client.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    let head = client
        .head(format!("{}/account", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        303,
        "guarded pages answer HEAD as they answer GET"
    );
    let head = client
        .head(format!("{}/logout", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405, "a POST-only route stays POST-only");
}

async fn a_favicon_is_served_and_linked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    for path in ["/favicon.ico", "/favicon.svg"] {
        let res = browser.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "image/svg+xml");
        assert!(res.text().await.unwrap().starts_with("<svg"));
    }
    let html = browser.get_text("/pricing").await;
    assert!(html.contains(r#"<link rel="icon" href="/favicon.svg" type="image/svg+xml">"#));
}

async fn admins_land_on_the_console_and_customers_on_their_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("customer@example.com").await;
    app.signed_in_admin("boss@example.com").await;

    let res = app.browser().login("customer@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
    let res = app.browser().login("boss@example.com", PASSWORD).await;
    assert_eq!(location(&res), "/admin", "an admin lands on the console");

    // A page that asked for the sign-in still wins, for admins too.
    let browser = app.browser();
    let token = browser.csrf_token("/login?next=/pricing").await;
    let res = browser
        .post_form(
            "/login",
            &[
                ("csrf_token", token.as_str()),
                ("email", "boss@example.com"),
                ("password", PASSWORD),
                ("next", "/pricing"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/pricing");
    // Signed in already: /login sends an admin to the console too.
    assert_eq!(location(&browser.get("/login").await), "/admin");
}

async fn signing_out_says_so_and_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("leaving@example.com").await;
    let res = browser.logout().await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/?signed_out");
    let html = browser.get_text(&location(&res)).await;
    assert!(html.contains("You are signed out."), "{html}");
    assert!(!browser.get_text("/").await.contains("You are signed out."));
    assert_eq!(browser.get("/account").await.status(), 303);
    assert_eq!(app.session_count(), 0, "no session is kept for the notice");
    // The notice is for people who are signed out: a signed-in visitor never sees it.
    let other = app.signed_in_customer("staying@example.com").await;
    assert!(
        !other
            .get_text("/?signed_out")
            .await
            .contains("You are signed out.")
    );
}

async fn a_new_account_shows_no_empty_last_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("fresh@example.com").await;
    let html = browser.get_text("/account").await;
    assert!(html.contains("Member since"));
    assert!(!html.contains("Last sign-in"), "nothing to show yet");
    browser.logout().await;
    browser.login("fresh@example.com", PASSWORD).await;
    assert!(browser.get_text("/account").await.contains("Last sign-in"));
}

async fn admin_lists_show_times_to_the_second(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let html = admin.get_text("/admin").await;
    let times: Vec<&str> = html
        .split(" UTC")
        .filter_map(|before| before.rsplit([' ', '>']).next())
        .filter(|time| time.contains(':'))
        .collect();
    assert!(!times.is_empty(), "the sign-up is listed: {html}");
    for time in times {
        assert!(
            time.len() == 8 && time.matches(':').count() == 2,
            "{time} carries seconds"
        );
    }
}

async fn a_checkout_logs_no_unknown_stripe_enum_values(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    let browser = app.signed_in_customer("enum@example.com").await;
    app.subscribe(&browser, "pro").await;
    let logs = captured_logs();
    let unknown: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Unknown value '"))
        .collect();
    assert!(
        unknown.is_empty(),
        "the simulator speaks Stripe's enums: {unknown:?}"
    );
}

async fn the_audit_log_names_people_and_reads_as_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("person@example.com").await;
    app.browser()
        .login("person@example.com", "not the password at all")
        .await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let html = admin.get_text("/admin").await;
    assert!(
        html.contains(
            r#"<a href="/admin/customers?q=person%40example.com">person@example.com</a>"#
        ),
        "the actor is the account's email, linked to it: {html}"
    );
    assert!(!html.contains(">user:"), "no raw actor ids: {html}");
    assert!(
        html.contains("<dt>email</dt><dd>p***n@example.com</dd>"),
        "details are fields, still masked: {html}"
    );
    assert!(!html.contains("{&quot;"), "no raw JSON: {html}");
    let search = admin
        .get_text("/admin/customers?q=person%40example.com")
        .await;
    assert!(
        search.contains("person@example.com"),
        "the link finds the account"
    );
}
