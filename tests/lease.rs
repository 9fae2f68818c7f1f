//! The lease API: scoped service tokens, audited leases and refusals, per-token rate limits.

use tollgate::config::RateLimit;
use tollgate::service_tokens::Scope;

use crate::common::{Backend, TestApp};
use crate::on_both_backends;
use crate::vault::ANTHROPIC_KEY;

on_both_backends!(
    a_service_leases_a_customers_key_with_an_audited_no_store_response,
    missing_wrong_revoked_and_unscoped_tokens_are_refused_and_audited,
    unknown_users_and_providers_and_bad_bodies_get_json_errors,
    a_user_id_that_is_not_a_json_number_is_a_bad_request,
    leases_are_rate_limited_per_token,
    a_token_revoked_elsewhere_is_refused_within_the_token_cache_ttl,
    a_cached_token_revoked_elsewhere_leases_nothing_from_the_next_request_on,
    a_lease_whose_audit_row_cannot_be_written_hands_out_no_key,
    leases_made_together_are_recorded_together_before_any_key_leaves,
    a_switch_thrown_or_a_key_deleted_while_a_lease_waits_is_honoured,
);

async fn lease(app: &TestApp, token: Option<&str>, body: serde_json::Value) -> reqwest::Response {
    app.internal_post("byok/lease", token, &body).await
}

async fn customer_with_key(app: &TestApp) -> i64 {
    let browser = app.signed_in_customer("leased@example.com").await;
    assert_eq!(
        browser.add_key("anthropic", ANTHROPIC_KEY).await.status(),
        303
    );
    app.user_id("leased@example.com")
}

async fn a_service_leases_a_customers_key_with_an_audited_no_store_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("execution-engine", &[Scope::ByokLease]);
    assert!(token.starts_with("tg_svc_"));

    let res = lease(
        &app,
        Some(&token),
        serde_json::json!({ "user_id": user_id, "provider": "anthropic" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["api_key"], ANTHROPIC_KEY);
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(body["user_id"], user_id);

    let leased = app.events("byok_leased");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].actor.as_deref(), Some("execution-engine"));
    assert!(leased[0].details.contains("sk-ant-api03-…2a1"));
    assert!(!leased[0].details.contains(ANTHROPIC_KEY));

    let owner = app.browser();
    owner
        .login("leased@example.com", crate::common::PASSWORD)
        .await;
    let page = owner.get_text("/account/keys").await;
    assert!(
        !page.contains("<td>never</td>"),
        "last used is shown: {page}"
    );
}

async fn missing_wrong_revoked_and_unscoped_tokens_are_refused_and_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user_id = customer_with_key(&app).await;
    let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
    let reader = app.service_token("gatekeeper", &[Scope::EntitlementsRead]);
    let revoked = app.service_token("retired", &[Scope::ByokLease]);
    app.query(|conn| tollgate::service_tokens::revoke(conn, Some("retired")));

    for (token, status) in [
        (None, 401),
        (
            Some("tg_svc_DUMMYnotarealtoken000000000000000000000000"),
            401,
        ),
        (Some("Basic-looking-nonsense"), 401),
        (Some(revoked.as_str()), 401),
        (Some(reader.as_str()), 403),
    ] {
        let res = lease(&app, token, body.clone()).await;
        assert_eq!(res.status(), status, "{token:?}");
        assert_eq!(res.headers()["content-type"], "application/json");
        if status == 401 {
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
        }
        let json: serde_json::Value = res.json().await.unwrap();
        assert!(json["error"].is_string());
        assert!(json.get("api_key").is_none());
    }
    let rejected = app.events("service_token_rejected");
    assert_eq!(rejected.len(), 5);
    assert!(rejected.iter().all(|e| e.severity == "HIGH"));
    let reasons: Vec<_> = rejected.iter().map(|e| e.details.clone()).collect();
    for reason in [
        "missing",
        "unknown",
        "malformed",
        "revoked",
        "scope byok:lease not granted",
    ] {
        assert!(
            reasons.iter().any(|d| d.contains(reason)),
            "{reason}: {reasons:?}"
        );
    }
    assert!(
        rejected
            .iter()
            .any(|e| e.actor.as_deref() == Some("gatekeeper"))
    );
    assert!(
        reasons.iter().all(|d| !d.contains(&revoked)),
        "tokens are masked in the audit log"
    );
    assert_eq!(app.count_events("byok_leased"), 0);
}

async fn unknown_users_and_providers_and_bad_bodies_get_json_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("engine", &[Scope::ByokLease]);
    for (body, status) in [
        (
            serde_json::json!({ "user_id": 999_999, "provider": "anthropic" }),
            404,
        ),
        (
            serde_json::json!({ "user_id": user_id, "provider": "openai" }),
            404,
        ),
        (
            serde_json::json!({ "user_id": user_id, "provider": "mistral" }),
            404,
        ),
        (serde_json::json!({ "user": user_id }), 400),
    ] {
        let res = lease(&app, Some(&token), body.clone()).await;
        assert_eq!(res.status(), status, "{body}");
        assert_eq!(res.headers()["content-type"], "application/json");
    }
}

/// `user_id` is a JSON integer: its digits as a string, a fraction or an object are refused.
async fn a_user_id_that_is_not_a_json_number_is_a_bad_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("engine", &[Scope::ByokLease]);
    for bad in [
        serde_json::json!(user_id.to_string()),
        serde_json::json!(1.5),
        serde_json::json!({ "id": user_id }),
        serde_json::json!(null),
    ] {
        let body = serde_json::json!({ "user_id": bad, "provider": "anthropic" });
        let res = lease(&app, Some(&token), body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(res.headers()["content-type"], "application/json");
    }
    assert_eq!(app.count_events("byok_leased"), 0);
}

async fn leases_are_rate_limited_per_token(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.lease = RateLimit {
            per_minute: 2,
            burst: 2,
        }
    })
    .await;
    let user_id = customer_with_key(&app).await;
    let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
    let busy = app.service_token("busy", &[Scope::ByokLease]);
    let other = app.service_token("other", &[Scope::ByokLease]);
    let statuses = [
        lease(&app, Some(&busy), body.clone())
            .await
            .status()
            .as_u16(),
        lease(&app, Some(&busy), body.clone())
            .await
            .status()
            .as_u16(),
        lease(&app, Some(&busy), body.clone())
            .await
            .status()
            .as_u16(),
        lease(&app, Some(&other), body.clone())
            .await
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429, 200]);
    let refused = lease(&app, Some(&busy), body.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let limited = app.events("rate_limited");
    assert_eq!(limited.len(), 1, "repeats share a row");
    assert_eq!(limited[0].count, 2, "each refusal is counted once");
    assert_eq!(limited[0].actor.as_deref(), Some("busy"));
}

/// No key leaves without its audit row: when the row cannot be written the lease is an error
/// without the key, and the key's use is not recorded either (before, the use was committed
/// first and the audit written after).
async fn a_lease_whose_audit_row_cannot_be_written_hands_out_no_key(backend: Backend) {
    use diesel::prelude::*;
    use tollgate::db::schema::byok_keys;
    let app = TestApp::spawn(backend).await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("execution-engine", &[Scope::ByokLease]);
    let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });

    crate::audit::break_audit_log(&app);
    let res = lease(&app, Some(&token), body).await;
    let (status, text) = (res.status(), res.text().await.unwrap());
    crate::audit::restore_audit_log(&app);

    assert_eq!(status, 500);
    assert!(!text.contains("DUMMY"), "no key in the answer: {text}");
    let last_used = app.query(move |conn| {
        Ok(byok_keys::table
            .filter(byok_keys::user_id.eq(user_id))
            .select(byok_keys::last_used_at)
            .first::<Option<chrono::NaiveDateTime>>(conn)?)
    });
    assert_eq!(last_used, None, "the lease left no trace of a use");
    assert_eq!(app.count_events("byok_leased"), 0);
}

/// A token that authenticated is remembered for `SERVICE_TOKEN_CACHE_MS`: revoked from the
/// command line (another process, which cannot reach this instance's memory), it is refused
/// within that time; with the cache off (0), from the next request on. A lease is refused from
/// the next request on either way.
async fn a_token_revoked_elsewhere_is_refused_within_the_token_cache_ttl(backend: Backend) {
    use std::time::{Duration, Instant};
    for ttl in [Duration::from_millis(300), Duration::ZERO] {
        let app = TestApp::spawn_with(backend, |config| config.service_token_cache = ttl).await;
        let user_id = customer_with_key(&app).await;
        let token = app.service_token("engine", &[Scope::EntitlementsRead, Scope::ByokLease]);
        let path = format!("entitlements/{user_id}");
        let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
        assert_eq!(app.internal_get(&path, &token).await.status(), 200);
        assert_eq!(lease(&app, Some(&token), body.clone()).await.status(), 200);
        app.query(|conn| tollgate::service_tokens::revoke(conn, Some("engine")));
        let revoked = Instant::now();
        assert_eq!(
            lease(&app, Some(&token), body.clone()).await.status(),
            401,
            "a lease is refused at once (cache {ttl:?})"
        );
        loop {
            let status = app.internal_get(&path, &token).await.status();
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                !ttl.is_zero() && revoked.elapsed() < ttl + Duration::from_millis(700),
                "still accepted {:?} after the revocation (cache {ttl:?})",
                revoked.elapsed()
            );
            actix_web::rt::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A token remembered by the instance (the longest cache there is), then revoked from outside
/// it: the other routes still take it from the cache, but a lease does not get a key. The lease
/// desk finds the token revoked, the refusal is audited as a revoked token, no lease is
/// recorded, and the instance forgets the token, so its other routes refuse it at once too.
async fn a_cached_token_revoked_elsewhere_leases_nothing_from_the_next_request_on(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| {
        config.service_token_cache = tollgate::service_tokens::MAX_TOKEN_CACHE;
    })
    .await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("engine", &[Scope::EntitlementsRead, Scope::ByokLease]);
    let path = format!("entitlements/{user_id}");
    let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
    assert_eq!(lease(&app, Some(&token), body.clone()).await.status(), 200);
    app.query(|conn| tollgate::service_tokens::revoke(conn, Some("engine")));
    assert_eq!(
        app.internal_get(&path, &token).await.status(),
        200,
        "still remembered by the instance"
    );
    let refused = lease(&app, Some(&token), body.clone()).await;
    assert_eq!(refused.status(), 401);
    let text = refused.text().await.unwrap();
    assert!(!text.contains(ANTHROPIC_KEY), "{text}");
    assert_eq!(app.count_events("byok_leased"), 1, "only the first lease");
    let refusals = app.events("service_token_rejected");
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0].details.contains(r#""reason":"revoked""#),
        "{}",
        refusals[0].details
    );
    assert_eq!(
        app.internal_get(&path, &token).await.status(),
        401,
        "forgotten by the instance"
    );
}

/// Leases made together are recorded together (group commit): while another writer holds the
/// key's row, no lease is answered, as none has its audit row yet; once it lets go, every
/// lease is answered and audited, in a few transactions (one `occurred_at` each; at most four
/// allowed, for requests that reach the queue late) instead of one per lease, and the key's
/// last use is recorded.
async fn leases_made_together_are_recorded_together_before_any_key_leaves(backend: Backend) {
    use diesel::prelude::*;
    use std::time::Duration;
    use tollgate::db::schema::byok_keys;
    const LEASES: usize = 24;
    let app = TestApp::spawn_with(backend, |config| {
        config.rate_limits.lease = RateLimit {
            per_minute: 6000,
            burst: 100,
        }
    })
    .await;
    let user_id = customer_with_key(&app).await;
    let token = app.service_token("execution-engine", &[Scope::ByokLease]);
    let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
    // A first lease: the token's first use is recorded (a write of its own) and remembered.
    assert_eq!(lease(&app, Some(&token), body.clone()).await.status(), 200);
    let first = app.events("byok_leased")[0].id;

    // Another writer holds the key's row (and, on SQLite, the write lock).
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let db = app.db.clone();
    let holder = std::thread::spawn(move || {
        db.run_blocking(|conn| {
            conn.transaction::<_, tollgate::db::DbError, _>(|conn| {
                diesel::update(byok_keys::table.filter(byok_keys::user_id.eq(user_id)))
                    .set(byok_keys::last_used_at.eq(None::<chrono::NaiveDateTime>))
                    .execute(conn)?;
                held.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
        })
        .unwrap();
    });
    holding.recv().unwrap();

    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..LEASES)
        .map(|_| {
            let (app_url, token, body) = (app.address.clone(), token.clone(), body.clone());
            let client = client.clone();
            actix_web::rt::spawn(async move {
                client
                    .post(format!("{app_url}/internal/v1/byok/lease"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Time for every request to reach the lease desk's queue (a late one starts a transaction
    // of its own: the bound below allows a few).
    actix_web::rt::time::sleep(Duration::from_millis(2_000)).await;
    assert!(
        requests.iter().all(|r| !r.is_finished()),
        "no key leaves before its audit row is committed"
    );
    assert_eq!(
        app.count_events("byok_leased"),
        1,
        "only the first lease's row"
    );

    release.send(()).unwrap();
    holder.join().unwrap();
    for request in requests {
        let res = request.await.unwrap();
        assert_eq!(res.status(), 200);
        let leased: serde_json::Value = res.json().await.unwrap();
        assert_eq!(leased["api_key"], ANTHROPIC_KEY);
    }
    let rows = app.events("byok_leased");
    assert_eq!(rows.len(), LEASES + 1, "every lease is audited");
    let transactions: std::collections::BTreeSet<_> = rows
        .iter()
        .filter(|row| row.id != first)
        .map(|row| row.occurred_at)
        .collect();
    assert!(
        transactions.len() <= 4,
        "{LEASES} leases in {} transactions",
        transactions.len()
    );
    let last_used = app.query(move |conn| {
        Ok(byok_keys::table
            .filter(byok_keys::user_id.eq(user_id))
            .select(byok_keys::last_used_at)
            .first::<Option<chrono::NaiveDateTime>>(conn)?)
    });
    assert!(last_used.is_some(), "the key's last use is recorded");
    let verdict = app.query(tollgate::audit::chain::verify);
    assert!(
        matches!(verdict, tollgate::audit::chain::Verdict::Intact(_)),
        "the audit chain holds: {verdict:?}"
    );
}

/// A lease reads the switch and the key, then records itself; what changes in between is
/// honoured when it records: leases switched off (`tollgate byok disable-leases`) or the key
/// deleted by its owner while the lease waits for the write lock, and the lease gets 503 or
/// 404, no key and no audit row.
async fn a_switch_thrown_or_a_key_deleted_while_a_lease_waits_is_honoured(backend: Backend) {
    use diesel::prelude::*;
    use std::time::Duration;
    use tollgate::db::schema::byok_keys;
    for (change, expected) in [("switch", 503), ("delete", 404)] {
        let app = TestApp::spawn(backend).await;
        let user_id = customer_with_key(&app).await;
        let token = app.service_token("execution-engine", &[Scope::ByokLease]);
        let body = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
        assert_eq!(lease(&app, Some(&token), body.clone()).await.status(), 200);
        let before = app.count_events("byok_leased");

        // Another writer holds the key's row and makes the change, not yet committed.
        let (held, holding) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let db = app.db.clone();
        let holder = std::thread::spawn(move || {
            db.run_blocking(|conn| {
                conn.transaction::<_, tollgate::db::DbError, _>(|conn| {
                    let key = byok_keys::table.filter(byok_keys::user_id.eq(user_id));
                    diesel::update(key)
                        .set(byok_keys::last_used_at.eq(None::<chrono::NaiveDateTime>))
                        .execute(conn)?;
                    if change == "switch" {
                        tollgate::vault::set_leases_disabled(conn, true)?;
                    } else {
                        diesel::delete(key).execute(conn)?;
                    }
                    held.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
            .unwrap();
        });
        holding.recv().unwrap();
        let address = app.address.clone();
        let (waiting_token, waiting_body) = (token.clone(), body.clone());
        let waiting = actix_web::rt::spawn(async move {
            reqwest::Client::new()
                .post(format!("{address}/internal/v1/byok/lease"))
                .bearer_auth(waiting_token)
                .json(&waiting_body)
                .send()
                .await
                .unwrap()
        });
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "{change}: the lease waits to record itself"
        );
        release.send(()).unwrap();
        holder.join().unwrap();
        let res = waiting.await.unwrap();
        assert_eq!(res.status(), expected, "{change}");
        let text = res.text().await.unwrap();
        assert!(!text.contains(ANTHROPIC_KEY), "{change}: no key in {text}");
        assert_eq!(
            app.count_events("byok_leased"),
            before,
            "{change}: no lease row"
        );
    }
}
