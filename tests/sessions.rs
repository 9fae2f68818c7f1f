//! Sessions: cookie flags, a new id on sign-in, idle timeout and absolute lifetime.

use std::time::Duration;

use crate::common::{Backend, TestApp, location, session_set_cookie};
use crate::on_both_backends;

on_both_backends!(
    session_cookie_is_http_only_and_lax,
    session_cookie_is_secure_and_host_prefixed_unless_disabled,
    signing_in_changes_the_session_id_and_kills_the_old_one,
    idle_sessions_expire,
    sessions_end_at_their_absolute_lifetime_however_active,
    a_session_revoked_during_a_request_never_comes_back_signed_in,
    a_session_signed_in_with_a_replaced_password_is_signed_out,
);

async fn session_cookie_is_http_only_and_lax(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.browser().get("/login").await;
    let cookie =
        session_set_cookie(&res).expect("the login form starts a session for its CSRF token");
    assert!(cookie.starts_with("tollgate_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "explicitly disabled for local http in tests: {cookie}"
    );
}

async fn session_cookie_is_secure_and_host_prefixed_unless_disabled(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.session.cookie_secure = true).await;
    let res = app.browser().get("/login").await;
    let cookie = session_set_cookie(&res).unwrap();
    assert!(cookie.starts_with("__Host-tollgate="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn signing_in_changes_the_session_id_and_kills_the_old_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("fixation@example.com").await;

    let browser = app.browser();
    let before = cookie_pair(&session_set_cookie(&browser.get("/login").await).unwrap());
    let res = browser
        .login("fixation@example.com", crate::common::PASSWORD)
        .await;
    assert_eq!(res.status(), 303);
    let after = cookie_pair(&session_set_cookie(&res).expect("a new session cookie on sign-in"));
    assert_ne!(before, after, "session id must change on sign-in");

    // An attacker holding the pre-login cookie gets nothing.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = replay
        .get(browser.url("/account"))
        .header("cookie", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let res = replay
        .get(browser.url("/account"))
        .header("cookie", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn idle_sessions_expire(backend: Backend) {
    // Seconds of slack either side: a loaded machine may take one to answer a request.
    let app = TestApp::spawn_with(backend, |config| {
        config.session.idle_timeout = Duration::from_secs(5)
    })
    .await;
    let browser = app.signed_in_customer("idle@example.com").await;
    assert_eq!(browser.get("/account").await.status(), 200);
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        browser.get("/account").await.status(),
        200,
        "activity keeps it alive"
    );
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        browser.get("/account").await.status(),
        200,
        "still within 5 s of the last request"
    );
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let res = browser.get("/account").await;
    assert_eq!(res.status(), 303, "idle for longer than the timeout");
    assert_eq!(location(&res), "/login?next=%2Faccount");
}

async fn sessions_end_at_their_absolute_lifetime_however_active(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.session.absolute_lifetime = Duration::from_secs(6)
    })
    .await;
    let browser = app.signed_in_customer("absolute@example.com").await;
    for _ in 0..2 {
        actix_web::rt::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(browser.get("/account").await.status(), 200);
    }
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(browser.get("/account").await.status(), 303);
}

/// A request loads its session, `revoke-sessions` (or sign-out elsewhere) deletes the row, and
/// then the request saves the session state it changed. That save must not recreate the row
/// with the old user id: the store is driven exactly as actix-session drives it.
async fn a_session_revoked_during_a_request_never_comes_back_signed_in(backend: Backend) {
    use actix_session::storage::SessionStore as _;
    use actix_web::cookie::time::Duration as CookieDuration;
    use tollgate::db::models::session;
    use tollgate::web::middleware::session_store::DbSessionStore;

    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("inflight@example.com").await;
    let user_id = app.user_id("inflight@example.com");
    let store = DbSessionStore::new(app.db.clone(), Duration::from_secs(3600));
    let ttl = CookieDuration::minutes(30);
    let state: std::collections::HashMap<String, String> = [
        ("user_id", user_id.to_string()),
        ("csrf", "\"token\"".to_owned()),
        ("flash", r#"{"kind":"info","message":"hello"}"#.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let key = store.save(state.clone(), &ttl).await.unwrap();
    let loaded = store
        .load(&key)
        .await
        .unwrap()
        .expect("the request loads its session");
    assert_eq!(loaded["user_id"], user_id.to_string());

    // Meanwhile: `tollgate revoke-sessions`.
    app.query(session::delete_all);
    let saved = store.update(key, loaded, &ttl).await.unwrap();

    let after = store.load(&saved).await.unwrap().unwrap_or_default();
    assert!(!after.contains_key("user_id"), "signed out: {after:?}");
    assert!(
        !after.contains_key("csrf"),
        "the old CSRF token went with it"
    );
    use diesel::prelude::*;
    use tollgate::db::schema::sessions;
    let signed_in: i64 = app.query(|conn| {
        Ok(sessions::table
            .filter(sessions::user_id.eq(user_id))
            .count()
            .get_result(conn)?)
    });
    assert_eq!(signed_in, 0, "no session row of that user came back");
}

/// A sign-in verifies the password, then saves a new session. If a password reset or a
/// `create-admin --promote-existing` commits in between, its "end every session" has already
/// run when that session is saved. What is left is a session made with a credential the
/// account no longer has: it must be worthless, whatever the store holds.
async fn a_session_signed_in_with_a_replaced_password_is_signed_out(backend: Backend) {
    use tollgate::db::models::user;
    let app = TestApp::spawn(backend).await;
    let squatter = app.signed_in_customer("late@example.com").await;
    let bystander = app.signed_in_customer("steady@example.com").await;
    assert_eq!(squatter.get("/account").await.status(), 200);
    let id = app.user_id("late@example.com");
    let sessions_before = app.session_count();

    // The promotion's new password, committed without touching the session table.
    let new_hash =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZGlmZmVyZW50aGFzaGRpZmZlcmVudGhhc2g";
    app.query(|conn| user::set_password_hash(conn, id.into(), new_hash));
    app.promote_to_admin("late@example.com");
    assert_eq!(
        app.session_count(),
        sessions_before,
        "the session row is still there"
    );

    let res = squatter.get("/admin").await;
    assert_eq!(res.status(), 303, "signed out, not an admin");
    assert!(location(&res).starts_with("/login"));
    assert_eq!(
        squatter.get("/account").await.status(),
        303,
        "and it stays signed out"
    );
    assert_eq!(bystander.get("/account").await.status(), 200);
}
