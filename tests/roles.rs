//! Console roles: every `/admin` route, walked from the one table that declares it
//! (`tollgate::web::routes::admin::ROUTES`), as an anonymous visitor, a customer, a support
//! account and an admin; the read-only console's navigation; and `tollgate set-role`.

use std::process::{Command, Stdio};

use diesel::prelude::*;
use tollgate::accounts::Role;
use tollgate::web::console::{Access, ConsoleRoute};
use tollgate::web::routes::admin::ROUTES;

use crate::common::{Backend, Browser, PASSWORD, TestApp, location, run, secret_env, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    every_console_route_answers_each_role_as_declared,
    support_sees_the_console_without_its_actions,
    set_role_changes_the_role_ends_sessions_and_is_audited,
);

impl TestApp {
    /// Gives an existing account `role` directly in the database (its sessions survive).
    pub fn give_role(&self, email: &str, role: Role) {
        let email = email.to_owned();
        self.query(move |conn| {
            let user = tollgate::db::models::user::find_by_email(conn, &email)?.unwrap();
            tollgate::db::models::user::set_role(conn, user.id, role)
        })
    }

    /// A browser signed in to a new support account.
    pub async fn signed_in_support(&self, email: &str) -> Browser {
        let browser = self.signed_in_customer(email).await;
        self.give_role(email, Role::Support);
        browser
    }
}

/// Something behind every `{id}` a console route takes: a plan, a service token, a stored
/// webhook event, an app webhook endpoint and a notification. A new route with an id and no fixture here fails
/// the walk.
struct Fixtures {
    plan: i64,
    token: i64,
    webhook_event: i64,
    endpoint: String,
    notification: i64,
    customer: i64,
}

impl Fixtures {
    async fn make(app: &TestApp, admin: &Browser) -> Self {
        use tollgate::db::schema::{plans, service_tokens, webhook_events};
        assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
        app.service_token(
            "walker",
            &[tollgate::service_tokens::Scope::EntitlementsRead],
        );
        app.assert_webhook_accepted(&stripe_event("payout.created", "evt_1Walk"))
            .await;
        let first = |table: &'static str| {
            app.query(move |conn| {
                Ok(match table {
                    "plans" => plans::table.select(plans::id).first(conn)?,
                    "tokens" => service_tokens::table
                        .select(service_tokens::id)
                        .first(conn)?,
                    _ => webhook_events::table
                        .select(webhook_events::id)
                        .first(conn)?,
                })
            })
        };
        let fields = [
            ("url", "https://hooks.example.com/"),
            ("events", "invoice.paid"),
        ];
        let res = admin
            .submit("/admin/endpoints", "/admin/endpoints", &fields)
            .await;
        assert_eq!(res.status(), 200);
        let endpoint = app.query(tollgate::db::models::webhook_endpoint::all)[0]
            .public_id
            .clone();
        let notification = app.query(|conn| {
            let message = tollgate::notify::Email::TrialEnding {
                plan: None,
                trial_end: None,
            };
            tollgate::notify::email(conn, None, "walker@example.com", &message, "walk")?;
            Ok(tollgate::db::models::notification::all(conn)?[0].id)
        });
        Self {
            plan: first("plans"),
            token: first("tokens"),
            webhook_event: first("webhooks"),
            endpoint,
            notification,
            customer: app.user_id("admin@example.com"),
        }
    }

    fn path(&self, route: &ConsoleRoute) -> String {
        let path = format!("/admin{}", route.path);
        if !path.contains("{id}") {
            return path;
        }
        if route.path.starts_with("/endpoints/") {
            return path.replace("{id}", &self.endpoint);
        }
        let id = if route.path.starts_with("/plans/") {
            self.plan
        } else if route.path.starts_with("/tokens/") {
            self.token
        } else if route.path.starts_with("/webhooks/") {
            self.webhook_event
        } else if route.path.starts_with("/notifications/") {
            self.notification
        } else if route.path.starts_with("/customers/") {
            self.customer
        } else {
            panic!("no fixture for the id in {} {}", route.method, route.path)
        };
        path.replace("{id}", &id.to_string())
    }
}

/// Sends `route` as `browser`; a POST carries the session's own CSRF token (so only the role
/// can refuse it).
async fn send(browser: &Browser, route: &ConsoleRoute, path: &str) -> reqwest::Response {
    match route.method {
        "GET" => browser.get(path).await,
        "POST" => {
            let html = browser.get_text("/account").await;
            let token = crate::common::csrf_token_in(&html).unwrap_or_default();
            browser
                .post_form(
                    path,
                    &[("csrf_token", token.as_str()), ("operation_id", "")],
                )
                .await
        }
        other => panic!("the walk does not know {other} ({path})"),
    }
}

async fn every_console_route_answers_each_role_as_declared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let support = app.signed_in_support("support@example.com").await;
    let customer = app.signed_in_customer("customer@example.com").await;
    let anonymous = app.browser();
    let fixtures = Fixtures::make(&app, &admin).await;
    assert!(ROUTES.len() >= 15, "the table lists every console route");
    assert!(ROUTES.iter().any(|r| r.method == "POST"));
    assert!(ROUTES.iter().any(|r| r.path.contains("{id}")));

    for route in ROUTES {
        let path = fixtures.path(route);
        let what = format!("{} {path}", route.method);
        let res = send(&anonymous, route, &path).await;
        assert_eq!(res.status(), 303, "anonymous {what}");
        assert!(location(&res).starts_with("/login"), "anonymous {what}");
        assert_eq!(
            send(&customer, route, &path).await.status(),
            403,
            "customer {what}"
        );
        let res = send(&support, route, &path).await;
        match route.access {
            Access::Read => assert_eq!(res.status(), 200, "support {what}"),
            Access::Manage => {
                assert_eq!(res.status(), 403, "support {what}");
                let page = res.text().await.unwrap();
                assert!(
                    page.contains("You do not have access"),
                    "the 403 page: {what}"
                );
            }
        }
    }
    // Support changed nothing: the token still works, the plan is still on sale.
    let token_active: i64 = app.query(|conn| {
        use tollgate::db::schema::service_tokens;
        Ok(service_tokens::table
            .filter(service_tokens::revoked_at.is_null())
            .count()
            .get_result(conn)?)
    });
    assert_eq!(token_active, 1, "support revoked nothing");
    assert_eq!(app.count_events("plan_archived"), 0);
    assert_eq!(app.count_events("webhook_reprocessed"), 0);

    for route in ROUTES {
        let path = fixtures.path(route);
        let res = send(&admin, route, &path).await;
        assert_ne!(res.status(), 403, "admin {} {path}", route.method);
        assert!(!location(&res).starts_with("/login"), "admin {path}");
    }
}

async fn support_sees_the_console_without_its_actions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let support = app.signed_in_support("support@example.com").await;
    app.assert_webhook_accepted(&stripe_event("payout.created", "evt_1Nav"))
        .await;

    let page = support.get_text("/admin/webhooks").await;
    assert!(page.contains("evt_1Nav"), "support sees the webhook list");
    assert!(
        !page.contains("href=\"/admin/webhooks/"),
        "no link to the decrypted payload"
    );
    assert!(!page.contains("href=\"/admin/plans\""), "no plans link");
    assert!(!page.contains("href=\"/admin/tokens\""), "no tokens link");
    assert!(
        page.contains("nav-role") && page.contains(">support<"),
        "role shown"
    );
    let page = support.get_text("/admin").await;
    assert!(
        !page.contains("method=\"post\" action=\"/admin"),
        "no console forms"
    );

    let page = admin.get_text("/admin/webhooks").await;
    assert!(page.contains("href=\"/admin/webhooks/"));
    assert!(page.contains("href=\"/admin/plans\"") && page.contains("href=\"/admin/tokens\""));
    assert!(page.contains(">admin<"), "role shown");
}

fn set_role(dir: &std::path::Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .arg("set-role")
        .args(args)
        .env("DATABASE_URL", url)
        .envs(secret_env());
    run(&mut cmd)
}

async fn set_role_changes_the_role_ends_sessions_and_is_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.database_handle().url_string;
    let dir = tempfile::tempdir().unwrap();
    let person = app.signed_in_customer("helper@example.com").await;
    let bystander = app.signed_in_customer("other@example.com").await;
    assert_eq!(person.get("/admin").await.status(), 403);

    for bad in [
        vec!["--email", "helper@example.com", "--role", "root"],
        vec!["--email", "helper@example.com", "--role", "Support"],
        vec!["--email", "not-an-email", "--role", "support"],
        vec!["--email", "helper@example.com"],
    ] {
        let (code, stdout, stderr) = set_role(dir.path(), &url, &bad);
        assert_eq!(code, 2, "{bad:?}: {stdout}{stderr}");
    }
    let (code, _, stderr) = set_role(
        dir.path(),
        &url,
        &["--email", "nobody@example.com", "--role", "support"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(app.count_events("role_changed"), 0);

    let args = ["--email", "helper@example.com", "--role", "support"];
    let (code, stdout, stderr) = set_role(dir.path(), &url, &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("support") && stdout.contains("ended 1 session"),
        "{stdout}"
    );
    assert_eq!(
        person.get("/admin").await.status(),
        303,
        "its session ended"
    );
    assert_eq!(
        bystander.get("/account").await.status(),
        200,
        "others keep theirs"
    );

    let events = app.events("role_changed");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].severity, "HIGH");
    let details: serde_json::Value = serde_json::from_str(&events[0].details).unwrap();
    assert_eq!(details["old_role"], "customer");
    assert_eq!(details["new_role"], "support");
    assert!(
        !events[0].details.contains("helper@example.com"),
        "email masked"
    );

    let browser = app.browser();
    assert_eq!(
        browser.login("helper@example.com", PASSWORD).await.status(),
        303
    );
    assert_eq!(browser.get("/admin/customers").await.status(), 200);
    assert_eq!(browser.get("/admin/plans").await.status(), 403);

    let (code, stdout, _) = set_role(dir.path(), &url, &args);
    assert_eq!(code, 0);
    assert!(stdout.contains("already"), "{stdout}");
    assert_eq!(app.count_events("role_changed"), 1, "no change, no row");
}
