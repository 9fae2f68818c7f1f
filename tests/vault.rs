//! The BYOK pages: keys are format-checked, sealed, shown masked, never leaked, and each
//! customer only ever sees and changes their own.

use diesel::prelude::*;
use tollgate::db::schema::byok_keys;

use crate::common::{Backend, TestApp, captured_logs, location};
use crate::on_both_backends;

on_both_backends!(
    a_customer_adds_replaces_and_deletes_keys_that_are_only_ever_masked,
    the_full_key_never_appears_in_pages_logs_or_audit,
    malformed_keys_are_refused_without_being_echoed,
    key_forms_require_csrf_tokens,
    customers_cannot_see_or_change_each_others_keys,
    keys_are_sealed_at_rest_and_bound_to_their_row,
    a_key_whose_audit_row_cannot_be_written_is_not_saved,
);

// Obvious dummies in the providers' shapes.
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-DUMMY-test-key-not-real-000000000000000000000002a1";
pub const OPENAI_KEY: &str = "sk-proj-DUMMY-test-key-not-real-0000000000000000000000000xyz";

async fn a_customer_adds_replaces_and_deletes_keys_that_are_only_ever_masked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("byok@example.com").await;
    assert!(
        browser
            .get_text("/account/keys")
            .await
            .contains("No keys yet.")
    );

    let res = browser.add_key("anthropic", ANTHROPIC_KEY).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/keys");
    let page = browser.get_text("/account/keys").await;
    assert!(page.contains("sk-ant-api03-…2a1"), "masked key shown");
    assert!(page.contains("Anthropic"));
    assert!(page.contains("<td>never</td>"), "not used yet");

    let replacement = "sk-ant-api03-DUMMY-replacement-key-00000000000000000000000000b7c";
    assert_eq!(
        browser.add_key("anthropic", replacement).await.status(),
        303
    );
    assert_eq!(browser.add_key("openai", OPENAI_KEY).await.status(), 303);
    let page = browser.get_text("/account/keys").await;
    assert!(
        page.contains("sk-ant-api03-…b7c") && !page.contains("sk-ant-api03-…2a1"),
        "replaced"
    );
    assert!(page.contains("sk-proj-…xyz"));
    let user_id = app.user_id("byok@example.com");
    let count: i64 = app.query(move |conn| {
        Ok(byok_keys::table
            .filter(byok_keys::user_id.eq(user_id))
            .count()
            .get_result(conn)?)
    });
    assert_eq!(count, 2, "one key per provider");

    let res = browser
        .submit("/account/keys", "/account/keys/openai/delete", &[])
        .await;
    assert_eq!(res.status(), 303);
    let page = browser.get_text("/account/keys").await;
    assert!(!page.contains("sk-proj-…xyz"));
    assert!(page.contains("sk-ant-api03-…b7c"));
    assert_eq!(app.count_events("byok_key_saved"), 3);
    assert_eq!(app.count_events("byok_key_deleted"), 1);

    let res = browser
        .submit("/account/keys", "/account/keys/openai/delete", &[])
        .await;
    assert_eq!(res.status(), 404, "nothing left to delete");
    let res = browser
        .submit("/account/keys", "/account/keys/mistral/delete", &[])
        .await;
    assert_eq!(res.status(), 404);
}

async fn the_full_key_never_appears_in_pages_logs_or_audit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_admin("leak@example.com").await;
    let secret = "sk-ant-api03-DUMMY-leakcheck-ab12cd34ef56gh78ij90kl12mn34op56qr7";
    let res = browser.add_key("anthropic", secret).await;
    assert_eq!(res.status(), 303);
    assert!(!res.text().await.unwrap().contains(secret));

    let mut bodies = Vec::new();
    for path in [
        "/",
        "/account",
        "/account/keys",
        "/admin",
        "/login",
        "/nope",
    ] {
        bodies.push((path, browser.get_text(path).await));
    }
    // A failed save, with the key in the request, must not echo it either.
    let res = browser.add_key("openai", secret).await;
    assert_eq!(res.status(), 422);
    bodies.push(("failed save", res.text().await.unwrap()));
    let middle = &secret[14..50];
    for (path, body) in &bodies {
        assert!(!body.contains(middle), "{path} shows the key");
    }
    let events = app.query(|conn| tollgate::db::models::security_event::recent(conn, 1000));
    assert!(
        events.iter().all(|e| !e.details.contains(middle)),
        "audit details hold the key"
    );
    assert!(
        events
            .iter()
            .any(|e| e.details.contains("sk-ant-api03-…qr7")),
        "audit holds the masked key"
    );
    assert!(
        !captured_logs().contains(middle),
        "a log line holds the key"
    );
}

async fn malformed_keys_are_refused_without_being_echoed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("shape@example.com").await;
    for (provider, key, message) in [
        (
            "anthropic",
            "sk-proj-DUMMY-000000000000000000000000",
            "This key doesn't look like an Anthropic key: those start with sk-ant-",
        ),
        (
            "openai",
            "sk-ant-api03-DUMMY-0000000000000000000",
            "This looks like an Anthropic key. Choose Anthropic as the provider, or paste your OpenAI key.",
        ),
        (
            "openai",
            "pk-DUMMY-000000000000000000000000",
            "This key doesn't look like an OpenAI key: those start with sk-",
        ),
        (
            "openai",
            "sk-short",
            "This key is too short to be an API key: keys are at least 20 characters.",
        ),
        (
            "anthropic",
            &format!("sk-ant-{}", "a".repeat(300)),
            "This key is too long to be an API key: keys are at most 256 characters.",
        ),
        (
            "anthropic",
            "sk-ant-DUMMY <script>alert(1)</script>",
            "This key has characters API keys never contain. Paste only the key: letters, digits, - and _.",
        ),
        (
            "mistral",
            "sk-DUMMY-00000000000000000000000",
            "Choose Anthropic or OpenAI as the provider.",
        ),
    ] {
        let res = browser.add_key(provider, key).await;
        assert_eq!(res.status(), 422, "{key}");
        let html = res.text().await.unwrap();
        let text = scraper::Html::parse_document(&html)
            .root_element()
            .text()
            .collect::<String>();
        assert!(text.contains(message), "{message}");
        assert!(!html.contains(key), "the rejected key is not echoed");
    }
    assert_eq!(app.count_events("byok_key_saved"), 0);
}

async fn key_forms_require_csrf_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("csrf-keys@example.com").await;
    let res = browser
        .post_form(
            "/account/keys",
            &[
                ("provider", "openai"),
                ("api_key", crate::vault::OPENAI_KEY),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(browser.add_key("openai", OPENAI_KEY).await.status(), 303);
    let res = browser.post_form("/account/keys/openai/delete", &[]).await;
    assert_eq!(res.status(), 403);
    assert!(
        browser
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz"),
        "still there"
    );
    assert_eq!(app.count_events("csrf_rejected"), 2);

    let anonymous = app.browser();
    let res = anonymous.get("/account/keys").await;
    assert_eq!(location(&res), "/login?next=%2Faccount%2Fkeys");
}

async fn customers_cannot_see_or_change_each_others_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_in_customer("alice@example.com").await;
    let mallory = app.signed_in_customer("mallory@example.com").await;
    assert_eq!(alice.add_key("openai", OPENAI_KEY).await.status(), 303);

    assert!(
        !mallory
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz")
    );
    let res = mallory
        .submit("/account/keys", "/account/keys/openai/delete", &[])
        .await;
    assert_eq!(
        res.status(),
        404,
        "deleting only ever targets one's own keys"
    );
    assert!(
        alice
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz"),
        "alice's key survives"
    );

    // Mallory saving an OpenAI key creates her own row; alice's is untouched.
    let mallorys = "sk-proj-DUMMY-mallory-000000000000000000000000000000000mmm";
    assert_eq!(mallory.add_key("openai", mallorys).await.status(), 303);
    assert!(
        alice
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…xyz")
    );
    assert!(
        mallory
            .get_text("/account/keys")
            .await
            .contains("sk-proj-…mmm")
    );
}

async fn keys_are_sealed_at_rest_and_bound_to_their_row(backend: Backend) {
    use tollgate::crypto::KeyId;
    let app = TestApp::spawn(backend).await;
    let alice = app.signed_in_customer("sealed-a@example.com").await;
    let bob = app.signed_in_customer("sealed-b@example.com").await;
    alice.add_key("openai", OPENAI_KEY).await;
    bob.add_key(
        "openai",
        "sk-proj-DUMMY-bob-00000000000000000000000000000000000bbb",
    )
    .await;
    let (alice_id, bob_id) = (
        app.user_id("sealed-a@example.com"),
        app.user_id("sealed-b@example.com"),
    );

    let (secret, key_id): (Vec<u8>, String) = app.query(move |conn| {
        Ok(byok_keys::table
            .filter(byok_keys::user_id.eq(alice_id))
            .select((byok_keys::secret, byok_keys::key_id))
            .first(conn)?)
    });
    assert!(
        !String::from_utf8_lossy(&secret).contains("DUMMY"),
        "ciphertext, not plaintext"
    );
    assert_eq!(secret[0], 1, "format version");
    assert_eq!(
        KeyId::of_sealed(&secret).unwrap().to_string(),
        key_id,
        "the row records its key id"
    );

    // Copy alice's ciphertext into bob's row: leasing bob's key must fail, not yield alice's.
    let copied = secret.clone();
    app.query(move |conn| {
        Ok(
            diesel::update(byok_keys::table.filter(byok_keys::user_id.eq(bob_id)))
                .set(byok_keys::secret.eq(copied))
                .execute(conn)?,
        )
    });
    let token = app.service_token("engine", &[tollgate::service_tokens::Scope::ByokLease]);
    let lease = |user_id: i64| {
        app.browser()
            .client
            .post(app.browser().url("/internal/v1/byok/lease"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "user_id": user_id, "provider": "openai" }))
            .send()
    };
    let res = lease(bob_id).await.unwrap();
    assert_eq!(res.status(), 500);
    let body = res.text().await.unwrap();
    assert!(!body.contains("DUMMY"), "{body}");
    let res = lease(alice_id).await.unwrap();
    assert_eq!(res.status(), 200, "alice's own row still opens");
}

/// The key and its audit row commit together: when the row cannot be written, the save fails
/// and the customer's keys are as they were (before, the key was committed first).
async fn a_key_whose_audit_row_cannot_be_written_is_not_saved(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("unaudited@example.com").await;
    assert_eq!(browser.add_key("openai", OPENAI_KEY).await.status(), 303);
    let user_id = app.user_id("unaudited@example.com");
    let keys = || {
        app.query(move |conn| {
            Ok(byok_keys::table
                .filter(byok_keys::user_id.eq(user_id))
                .select((byok_keys::provider, byok_keys::masked))
                .order(byok_keys::provider)
                .load::<(String, String)>(conn)?)
        })
    };
    let before = keys();

    crate::audit::break_audit_log(&app);
    let replacement = "sk-proj-DUMMY-replacement-000000000000000000000000000000rrr";
    let replaced = browser.add_key("openai", replacement).await;
    let added = browser.add_key("anthropic", ANTHROPIC_KEY).await;
    crate::audit::restore_audit_log(&app);

    assert_eq!(replaced.status(), 500);
    assert_eq!(added.status(), 500);
    assert_eq!(
        keys(),
        before,
        "neither the replacement nor the new key was stored"
    );
    assert_eq!(before, [("openai".to_owned(), "sk-proj-…xyz".to_owned())]);
    assert_eq!(app.count_events("byok_key_saved"), 1, "the first save only");
}
