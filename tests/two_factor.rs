//! Two-factor sign-in for console accounts: enrolment at /account/2fa (confirmed with a code
//! this test computes as an authenticator app would), the sign-in's code step at /login/2fa,
//! replay, recovery codes, ADMIN_REQUIRE_2FA, CSRF, and what is stored.

use diesel::prelude::*;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::common::{Backend, Browser, PASSWORD, TestApp, location};
use crate::on_both_backends;

on_both_backends!(
    a_code_is_required_after_the_password_and_works_once,
    recovery_codes_work_once_each,
    admin_require_2fa_sends_console_accounts_to_enrolment_first,
    enrolment_needs_its_own_session_and_a_valid_csrf_token,
    rotate_key_reseals_two_factor_secrets,
    the_code_step_locks_after_repeated_failures,
    enrolment_ends_every_session_signed_in_with_the_password_alone,
    a_session_cookie_alone_cannot_turn_two_factor_on,
    a_pending_secret_is_shown_to_the_session_enrolling_only,
);

const STEP: u64 = 30;

fn now_step() -> u64 {
    chrono::Utc::now().timestamp() as u64 / STEP
}

/// The code an authenticator app shows for `secret` at time step `step`.
fn code_at(secret: &str, step: u64) -> String {
    let bytes = Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 0, STEP, bytes, None, String::new())
        .generate(step * STEP)
}

fn select_all(html: &str, selector: &str, attr: Option<&str>) -> Vec<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).unwrap();
    document
        .select(&selector)
        .map(|el| match attr {
            Some(attr) => el.value().attr(attr).unwrap_or_default().to_owned(),
            None => el.text().collect::<String>(),
        })
        .collect()
}

/// The secret the enrolment page shows this browser's account.
async fn pending_secret(browser: &Browser) -> String {
    let page = browser.get_text("/account/2fa").await;
    let secret = select_all(&page, "input#secret", Some("value")).remove(0);
    let uri = select_all(&page, "input#otpauth", Some("value")).remove(0);
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&secret),
        "{uri}"
    );
    secret
}

/// Enrols the signed-in account with the current step's code: its secret, the step used, and
/// the recovery codes the page shows once.
async fn enrol(browser: &Browser) -> (String, u64, Vec<String>) {
    let secret = pending_secret(browser).await;
    let step = now_step();
    let res = browser
        .submit(
            "/account/2fa",
            "/account/2fa",
            &[("password", PASSWORD), ("code", &code_at(&secret, step))],
        )
        .await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    let codes = select_all(&page, "ul.recovery-codes code", None);
    assert_eq!(codes.len(), 10, "{page}");
    assert!(
        !browser.get_text("/account/2fa").await.contains(&codes[0]),
        "shown once"
    );
    (secret, step, codes)
}

/// Signs out and in again with the password: the sign-in then waits for its code.
async fn password_step(browser: &Browser, email: &str) {
    browser.logout().await;
    let res = browser.login(email, PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login/2fa");
}

async fn submit_code(browser: &Browser, code: &str) -> reqwest::Response {
    browser
        .submit("/login/2fa", "/login/2fa", &[("code", code)])
        .await
}

fn two_factor_details(app: &TestApp, kind: &'static str) -> Vec<serde_json::Value> {
    app.events(kind)
        .iter()
        .map(|row| serde_json::from_str(&row.details).unwrap())
        .collect()
}

async fn a_code_is_required_after_the_password_and_works_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let admin = app.signed_in_admin(email).await;
    // The account page leads console accounts (only) to enrolment.
    assert!(
        admin
            .get_text("/account")
            .await
            .contains("href=\"/account/2fa\"")
    );
    let customer = app.signed_in_customer("customer@example.com").await;
    assert!(!customer.get_text("/account").await.contains("/account/2fa"));
    let (secret, step, _) = enrol(&admin).await;
    assert_eq!(app.count_events("two_factor_enrolled"), 1);

    // The secret is sealed: neither its bytes nor its text are in the database.
    let user_id = app.user_id(email);
    let (sealed, key_id): (Vec<u8>, String) = app.query(move |conn| {
        use tollgate::db::schema::two_factor;
        Ok(two_factor::table
            .filter(two_factor::user_id.eq(user_id))
            .select((two_factor::secret, two_factor::key_id))
            .first(conn)?)
    });
    let raw = Secret::Encoded(secret.clone()).to_bytes().unwrap();
    assert!(!sealed.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret));
    assert_eq!(key_id.len(), 8, "sealed under a key id");

    password_step(&admin, email).await;
    let res = admin.get("/admin").await;
    assert_eq!(res.status(), 303, "no console before the code");
    assert!(location(&res).starts_with("/login"));
    assert_eq!(
        admin.get("/account").await.status(),
        303,
        "nor anything else"
    );

    let right = code_at(&secret, step + 1);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_eq!(submit_code(&admin, wrong).await.status(), 401);
    assert_eq!(admin.get("/admin").await.status(), 303);
    let failed = two_factor_details(&app, "two_factor_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["reason"], "wrong_code");

    let res = submit_code(&admin, &right).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin");
    assert_eq!(admin.get("/admin").await.status(), 200);
    assert_eq!(app.count_events("two_factor_succeeded"), 1);

    // The same code again, in a new sign-in: a replay.
    password_step(&admin, email).await;
    assert_eq!(submit_code(&admin, &right).await.status(), 401);
    assert_eq!(admin.get("/admin").await.status(), 303);
    let failed = two_factor_details(&app, "two_factor_failed");
    assert!(
        failed.iter().any(|d| d["reason"] == "replayed"),
        "{failed:?}"
    );
    assert_eq!(app.count_events("two_factor_succeeded"), 1);
}

async fn recovery_codes_work_once_each(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "support@example.com";
    let browser = app.signed_in_customer(email).await;
    app.give_role(email, tollgate::accounts::Role::Support);
    let (_, _, codes) = enrol(&browser).await;
    let stored: Vec<String> = app.query(|conn| {
        use tollgate::db::schema::recovery_codes;
        Ok(recovery_codes::table
            .select(recovery_codes::code_hash)
            .load(conn)?)
    });
    assert_eq!(stored.len(), 10);
    for code in &codes {
        assert!(
            !stored
                .iter()
                .any(|hash| hash.contains(&code.replace('-', "")))
        );
    }

    password_step(&browser, email).await;
    let res = submit_code(&browser, &codes[3].to_uppercase()).await;
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/admin").await.status(), 200);
    let used = two_factor_details(&app, "two_factor_recovery_code_used");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["recovery_codes_left"], 9);
    assert_eq!(
        app.events("two_factor_recovery_code_used")[0].severity,
        "HIGH"
    );

    password_step(&browser, email).await;
    assert_eq!(
        submit_code(&browser, &codes[3]).await.status(),
        401,
        "once only"
    );
    assert_eq!(browser.get("/admin").await.status(), 303);
    assert_eq!(submit_code(&browser, &codes[4]).await.status(), 303);
    assert_eq!(browser.get("/admin").await.status(), 200);
}

async fn admin_require_2fa_sends_console_accounts_to_enrolment_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.security.admin_require_2fa = true).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    let support = app.signed_in_customer("support@example.com").await;
    app.give_role("support@example.com", tollgate::accounts::Role::Support);
    let customer = app.signed_in_customer("customer@example.com").await;

    for (browser, path) in [
        (&admin, "/admin"),
        (&admin, "/admin/plans"),
        (&support, "/admin"),
        (&support, "/admin/customers"),
    ] {
        let res = browser.get(path).await;
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(location(&res), "/account/2fa", "{path}");
    }
    assert_eq!(customer.get("/admin").await.status(), 403);
    assert_eq!(
        customer.get("/account/2fa").await.status(),
        403,
        "customers do not enrol"
    );

    enrol(&admin).await;
    assert_eq!(admin.get("/admin").await.status(), 200);
    assert_eq!(admin.get("/admin/plans").await.status(), 200);
    assert_eq!(location(&support.get("/admin").await), "/account/2fa");
}

async fn enrolment_needs_its_own_session_and_a_valid_csrf_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let victim = app.signed_in_admin("victim@example.com").await;
    let other = app.signed_in_admin("other@example.com").await;
    let secret = pending_secret(&victim).await;
    let code = code_at(&secret, now_step());

    for token in ["forged-token", ""] {
        let res = victim
            .post_form(
                "/account/2fa",
                &[
                    ("csrf_token", token),
                    ("password", PASSWORD),
                    ("code", &code),
                ],
            )
            .await;
        assert_eq!(res.status(), 403, "csrf token {token:?}");
    }
    let res = victim
        .post_form("/account/2fa", &[("password", PASSWORD), ("code", &code)])
        .await;
    assert_eq!(res.status(), 403, "no csrf token");

    // Another account's session, with its own valid token, sends the victim's code.
    let res = other
        .submit(
            "/account",
            "/account/2fa",
            &[("password", PASSWORD), ("code", &code)],
        )
        .await;
    assert_ne!(res.status(), 200);
    let enrolled = |email: &'static str| {
        let id = app.user_id(email);
        app.query(move |conn| tollgate::accounts::two_factor::is_enrolled(conn, id.into()))
    };
    assert!(!enrolled("victim@example.com"));
    assert!(!enrolled("other@example.com"));
    assert_eq!(app.count_events("two_factor_enrolled"), 0);

    // The victim's own session, with its token, still can.
    enrol(&victim).await;
    assert!(enrolled("victim@example.com"));
}

async fn rotate_key_reseals_two_factor_secrets(backend: Backend) {
    use tollgate::secret::{decode_key, encode_base64};
    let old = encode_base64(&[0x22; 32]); // the test default ENCRYPTION_KEY
    let new = encode_base64(&[0x44; 32]);
    let before = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let admin = before.signed_in_admin(email).await;
    let (secret, step, _) = enrol(&admin).await;

    let handle = before.database_handle();
    let env = [
        ("ENCRYPTION_KEY", new.clone()),
        ("ENCRYPTION_KEYS_OLD", old),
    ];
    let (code, out, stderr) =
        crate::common::run(crate::operations::tollgate(&handle, &env).arg("rotate-key"));
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("two_factor.secret: re-sealed 1"), "{out}");

    // Only the new key now: the secret still opens, and the code step still works.
    let after = TestApp::spawn_on(before.database_handle(), backend, |config| {
        config.secrets.encryption_key = decode_key::<32>(&new).unwrap();
    })
    .await;
    let browser = after.browser();
    let res = browser.login(email, PASSWORD).await;
    assert_eq!(location(&res), "/login/2fa");
    let res = submit_code(&browser, &code_at(&secret, step + 1)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/admin").await.status(), 200);
}

async fn the_code_step_locks_after_repeated_failures(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let admin = app.signed_in_admin(email).await;
    let (secret, step, codes) = enrol(&admin).await;
    password_step(&admin, email).await;
    let right = code_at(&secret, step + 1);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    for _ in 0..5 {
        assert_eq!(submit_code(&admin, wrong).await.status(), 401);
    }
    for code in [right.as_str(), codes[0].as_str()] {
        let res = submit_code(&admin, code).await;
        assert_eq!(res.status(), 429, "locked, even for a right code");
        assert!(res.headers().contains_key("retry-after"));
    }
    assert_eq!(admin.get("/admin").await.status(), 303);
    assert!(!app.events("two_factor_locked").is_empty());
    assert_eq!(app.count_events("two_factor_succeeded"), 0);
}

/// A session opened with the password before enrolment (a stolen password, say) must not
/// become a two-factor session once the owner enrols: enrolment ends it, and keeps the
/// enrolling one.
async fn enrolment_ends_every_session_signed_in_with_the_password_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let owner = app.signed_in_admin(email).await;
    let intruder = app.browser();
    assert_eq!(intruder.login(email, PASSWORD).await.status(), 303);
    assert_eq!(intruder.get("/admin").await.status(), 200);

    enrol(&owner).await;
    let res = intruder.get("/admin").await;
    assert_eq!(res.status(), 303, "the password-only session ended");
    assert!(location(&res).starts_with("/login"));
    assert_eq!(
        owner.get("/admin").await.status(),
        200,
        "the enrolling one goes on"
    );
    let enrolled = two_factor_details(&app, "two_factor_enrolled");
    assert_eq!(enrolled[0]["sessions_ended"], 2, "{enrolled:?}");
}

/// Whoever holds only a session cookie (not the password) must not enrol a device of their own:
/// the confirmation asks for the password again, and a wrong one is refused and audited.
async fn a_session_cookie_alone_cannot_turn_two_factor_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let admin = app.signed_in_admin(email).await;
    let secret = pending_secret(&admin).await;
    let code = code_at(&secret, now_step());
    let res = admin
        .submit(
            "/account/2fa",
            "/account/2fa",
            &[("password", "not the password at all"), ("code", &code)],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("That is not your password")
    );
    let id = app.user_id(email);
    let enrolled =
        app.query(move |conn| tollgate::accounts::two_factor::is_enrolled(conn, id.into()));
    assert!(!enrolled);
    let failed = two_factor_details(&app, "two_factor_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["reason"], "wrong_password");
    assert_eq!(
        pending_secret(&admin).await,
        secret,
        "the pending secret stays"
    );

    enrol(&admin).await;
    assert_eq!(app.count_events("two_factor_enrolled"), 1);
}

/// Another session of the same account (a stolen cookie, say) never sees the secret a session is
/// enrolling: it is given a new one instead, which voids the first, so a secret is only ever
/// known to the one session that confirms it.
async fn a_pending_secret_is_shown_to_the_session_enrolling_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "admin@example.com";
    let owner = app.signed_in_admin(email).await;
    let other = app.browser();
    assert_eq!(other.login(email, PASSWORD).await.status(), 303);

    let first = pending_secret(&owner).await;
    assert_eq!(
        pending_secret(&owner).await,
        first,
        "stable for its session"
    );
    let seen_elsewhere = pending_secret(&other).await;
    assert_ne!(seen_elsewhere, first);
    // The owner's secret was replaced: its code no longer confirms anything (the owner's
    // page now shows a new secret, which the old code does not match).
    let res = owner
        .submit(
            "/account/2fa",
            "/account/2fa",
            &[
                ("password", PASSWORD),
                ("code", &code_at(&first, now_step())),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app.count_events("two_factor_enrolled"), 0);
    // Nor does the other session's secret confirm from the owner's session.
    assert_ne!(pending_secret(&owner).await, seen_elsewhere);
    let res = owner
        .submit(
            "/account/2fa",
            "/account/2fa",
            &[
                ("password", PASSWORD),
                ("code", &code_at(&seen_elsewhere, now_step())),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        422,
        "the code of a secret this session was never shown"
    );
    assert_eq!(app.count_events("two_factor_enrolled"), 0);

    enrol(&owner).await;
    assert_eq!(app.count_events("two_factor_enrolled"), 1);
}
