//! Rotating `TOKEN_PEPPER`: with the new pepper primary and the old one in `TOKEN_PEPPERS_OLD`,
//! Stripe's events still find their customers and service tokens still authenticate (and are
//! re-hashed on use); `rotate-key` rebuilds the blind indexes, resumably, after which the old
//! pepper can go.

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::config::Config;
use tollgate::crypto::TokenHasher;
use tollgate::crypto::hashing::Domain;
use tollgate::db::schema::{billing_customers, service_tokens, subscriptions};
use tollgate::secret::{KeyBytes, decode_key, encode_base64};
use tollgate::service_tokens::Scope;

use crate::common::{Backend, TestApp, run, stripe_event};
use crate::on_both_backends;
use crate::operations::tollgate;
use crate::webhooks::status_of;

on_both_backends!(
    subscription_events_still_apply_during_a_pepper_rotation,
    rotate_key_rebuilds_blind_indexes_so_the_old_pepper_can_go,
    service_tokens_survive_a_pepper_rotation_and_are_rehashed_on_use,
);

/// The test default `TOKEN_PEPPER` (see `common::secret_env`), and the one rotated to.
const OLD: [u8; 32] = [0x33; 32];
const NEW: [u8; 32] = [0x66; 32];

fn pepper(bytes: [u8; 32]) -> KeyBytes<32> {
    decode_key::<32>(&encode_base64(&bytes)).unwrap()
}

fn pepper_id(bytes: [u8; 32]) -> String {
    TokenHasher::new(&pepper(bytes), &[])
        .primary_id()
        .to_string()
}

/// Mid-rotation: the new pepper primary, the old one still recognised.
fn rotating(config: &mut Config) {
    config.secrets.token_pepper = pepper(NEW);
    config.secrets.token_peppers_old = vec![pepper(OLD)];
}

/// After the rotation: the old pepper removed.
fn rotated(config: &mut Config) {
    config.secrets.token_pepper = pepper(NEW);
    config.secrets.token_peppers_old = Vec::new();
}

fn rotating_env() -> Vec<(&'static str, String)> {
    vec![
        ("TOKEN_PEPPER", encode_base64(&NEW)),
        ("TOKEN_PEPPERS_OLD", encode_base64(&OLD)),
    ]
}

async fn entitlements(app: &TestApp, token: &str, user_id: i64) -> (u16, Value) {
    let res = app
        .internal_get(&format!("entitlements/{user_id}"), token)
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// A subscription event about `subscription` (a Stripe object), `ahead` seconds in the future
/// so that it is newer than anything recorded so far.
fn subscription_event(kind: &str, id: &str, subscription: &Value, ahead: i64) -> Value {
    let mut e = stripe_event(kind, id);
    e["data"]["object"] = subscription.clone();
    e["created"] = json!(e["created"].as_i64().unwrap() + ahead);
    e
}

/// Checkout as Stripe reports it: links `customer` to `user_id`.
fn checkout(user_id: i64, customer: &str, id: &str) -> Value {
    let mut e = stripe_event("checkout.session.completed", id);
    e["data"]["object"]["client_reference_id"] = json!(user_id.to_string());
    e["data"]["object"]["customer"] = json!(customer);
    e
}

/// The fixture subscription, moved to `customer` (as `sub_DUMMY…{n}`).
fn fixture_subscription(customer: &str, n: usize) -> Value {
    let mut sub =
        stripe_event("customer.subscription.updated", "evt_1Unused")["data"]["object"].clone();
    sub["id"] = json!(format!("sub_DUMMYpepper{n}"));
    sub["customer"] = json!(customer);
    sub
}

fn subscription_status(app: &TestApp, n: usize) -> Option<String> {
    let id = format!("sub_DUMMYpepper{n}");
    app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq(id))
            .select(subscriptions::status)
            .first(conn)
            .optional()?)
    })
}

/// (a) A customer who checked out under the old pepper: after the switch, Stripe's updates and
/// the cancellation still reach their subscription, and entitlements follow.
async fn subscription_events_still_apply_during_a_pepper_rotation(backend: Backend) {
    let (before, _) = TestApp::with_pro_plan(backend).await;
    let browser = before.signed_in_customer("rotating@example.com").await;
    before.subscribe(&browser, "pro").await;
    let user_id = before.user_id("rotating@example.com");
    let sub_id = before.subscription_id(user_id);
    let mut sub = before
        .stripe_get(&format!("/v1/subscriptions/{sub_id}"))
        .await;

    let during = TestApp::spawn_on(before.database_handle(), backend, rotating).await;
    let reader = during.service_token("gate", &[Scope::EntitlementsRead]);
    let (_, now) = entitlements(&during, &reader, user_id).await;
    assert_eq!(
        (now["active"].clone(), now["plan"].clone()),
        (json!(true), json!("pro"))
    );

    sub["cancel_at_period_end"] = json!(true);
    let update = subscription_event("customer.subscription.updated", "evt_1PepperUpd", &sub, 5);
    during.assert_webhook_accepted(&update).await;
    assert_eq!(status_of(&during, "evt_1PepperUpd"), "applied");
    let (_, now) = entitlements(&during, &reader, user_id).await;
    assert_eq!(now["cancel_at_period_end"], true, "{now}");
    assert_eq!(now["active"], true);

    sub["status"] = json!("canceled");
    let deleted = subscription_event("customer.subscription.deleted", "evt_1PepperDel", &sub, 10);
    during.assert_webhook_accepted(&deleted).await;
    assert_eq!(status_of(&during, "evt_1PepperDel"), "applied");
    let (_, now) = entitlements(&during, &reader, user_id).await;
    assert_eq!(
        now["active"], false,
        "a cancelled customer loses access: {now}"
    );
    assert_eq!(now["entitlements"], json!([]));
}

/// (b) `rotate-key` moves every blind index to the new pepper — in batches, surviving a crash,
/// resuming where it stopped, then having nothing to do — including an index made before
/// indexes had a key of their own. Then the old pepper can go and events still apply.
async fn rotate_key_rebuilds_blind_indexes_so_the_old_pepper_can_go(backend: Backend) {
    let before = TestApp::spawn(backend).await;
    let customers = customers_under_the_old_pepper(&before).await;
    let handle = before.database_handle();
    let rotate = |args: &[&str]| {
        run(tollgate(&handle, &rotating_env())
            .arg("rotate-key")
            .args(args))
    };
    let check = || rotate(&["--check"]);
    let (code, report, _) = check();
    assert_eq!(code, 0, "{report}");
    let old_id = pepper_id(OLD);
    assert!(
        report.contains(&format!("3 index(es) under pepper {old_id} (old)"))
            && report.contains("1 index(es) under pepper (none)")
            && report.contains("4 blind index(es) are not under the primary pepper"),
        "{report}"
    );

    // A crash mid-batch rolls the batch back; a staged run does 3; the rerun finishes.
    let (code, _, stderr) = rotate(&["--batch-size", "3", "--fail-after", "2"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("fault injection"), "{stderr}");
    assert!(check().1.contains("4 blind index(es) are not under"));
    let (code, out, _) = rotate(&["--batch-size", "2", "--max-rows", "3"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rebuilt 3 blind index(es); 1 remain"), "{out}");

    // Meanwhile, a server mid-rotation finds every customer, rebuilt or not.
    let during = TestApp::spawn_on(before.database_handle(), backend, rotating).await;
    every_customer_is_found(&during, &customers, "updated", "evt_1PepperMid").await;

    let (code, out, _) = rotate(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("rebuilt 1 blind index(es); 0 remain"), "{out}");
    let (_, out, _) = rotate(&[]);
    let idempotent = out.contains("rebuilt 0 blind index(es); 0 remain");
    assert!(idempotent, "idempotent: {out}");
    let report = check().1;
    assert!(report.contains("old peppers can be removed from TOKEN_PEPPERS_OLD"));
    every_index_is_under_the_new_pepper(&before, &customers);

    // The old pepper gone: cancellations still reach every customer.
    let after = TestApp::spawn_on(before.database_handle(), backend, rotated).await;
    every_customer_is_found(&after, &customers, "deleted", "evt_1PepperAfter").await;
}

/// Four customers indexed under the old pepper: three linked by a checkout, one indexed by an
/// earlier version (HMAC keyed by the pepper itself, no pepper id recorded). Their Stripe ids.
async fn customers_under_the_old_pepper(app: &TestApp) -> Vec<String> {
    let mut customers = Vec::new();
    for n in 0..3 {
        app.signed_in_customer(&format!("idx{n}@example.com")).await;
        let customer = format!("cus_DUMMYpepper{n}");
        let user = app.user_id(&format!("idx{n}@example.com"));
        let event = checkout(user, &customer, &format!("evt_1PepperCo{n}"));
        app.assert_webhook_accepted(&event).await;
        customers.push(customer);
    }
    app.signed_in_customer("idx3@example.com").await;
    let legacy_user = app.user_id("idx3@example.com");
    customers.push(insert_legacy_customer(app, legacy_user, "cus_DUMMYpepper3"));
    customers
}

/// A subscription event for each customer (`updated`, or `deleted` as a cancellation) is
/// applied: the app finds the customer by its blind index.
async fn every_customer_is_found(app: &TestApp, customers: &[String], change: &str, ids: &str) {
    for (n, customer) in customers.iter().enumerate() {
        let mut sub = fixture_subscription(customer, n);
        let id = format!("{ids}{n}");
        let (kind, ahead) = if change == "deleted" {
            sub["status"] = json!("canceled");
            ("customer.subscription.deleted", 10)
        } else {
            ("customer.subscription.updated", 5)
        };
        let event = subscription_event(kind, &id, &sub, ahead);
        app.assert_webhook_accepted(&event).await;
        assert_eq!(status_of(app, &id), "applied", "{customer}");
        if change == "deleted" {
            assert_eq!(subscription_status(app, n).as_deref(), Some("canceled"));
        }
    }
}

/// Every customer's blind index is the new pepper's digest, recorded under its id.
fn every_index_is_under_the_new_pepper(app: &TestApp, customers: &[String]) {
    let new = TokenHasher::new(&pepper(NEW), &[]);
    let rows: Vec<(String, Option<String>)> = app.query(|conn| {
        Ok(billing_customers::table
            .order(billing_customers::user_id)
            .select((
                billing_customers::stripe_customer_index,
                billing_customers::index_key_id,
            ))
            .load(conn)?)
    });
    for ((index, indexed_under), customer) in rows.iter().zip(customers) {
        assert_eq!(
            index,
            &new.digest(Domain::StripeCustomerId, customer.as_bytes())
        );
        assert_eq!(indexed_under.as_deref(), Some(pepper_id(NEW).as_str()));
    }
}

/// A customer row as the version before pepper ids stored it.
fn insert_legacy_customer(app: &TestApp, user_id: i64, customer: &str) -> String {
    use hmac::Mac as _;
    let ring = tollgate::crypto::Keyring::new(
        &decode_key::<32>(&encode_base64(&[0x22; 32])).unwrap(),
        &[],
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&OLD).unwrap();
    mac.update(b"stripe-customer-id\0");
    mac.update(customer.as_bytes());
    let row = tollgate::db::models::billing_customer::BillingCustomerRow {
        user_id: user_id.into(),
        stripe_customer_sealed: ring
            .seal(
                customer.as_bytes(),
                &tollgate::billing::customers::customer_aad(user_id.into()),
            )
            .unwrap(),
        key_id: ring.primary_id().to_string(),
        stripe_customer_index: tollgate::secret::encode_token(&mac.finalize().into_bytes()),
        stripe_customer_masked: "cus_…er3".into(),
        created_at: tollgate::db::now(),
        index_key_id: None,
    };
    app.query(move |conn| tollgate::db::models::billing_customer::insert(conn, &row));
    customer.to_owned()
}

/// (c) Tokens created under the old pepper keep working mid-rotation; each use moves the
/// stored hash to the new pepper, so a used token survives the old pepper's removal, and
/// `--check` counts the tokens that still need it.
async fn service_tokens_survive_a_pepper_rotation_and_are_rehashed_on_use(backend: Backend) {
    let before = TestApp::spawn(backend).await;
    before.signed_in_customer("tokens@example.com").await;
    let user_id = before.user_id("tokens@example.com");
    let used = before.service_token("gate", &[Scope::EntitlementsRead]);
    let idle = before.service_token("idle", &[Scope::EntitlementsRead]);
    let handle = before.database_handle();
    let check = || run(tollgate(&handle, &rotating_env()).args(["rotate-key", "--check"]));
    let old_id = pepper_id(OLD);
    let report = check().1;
    assert!(
        report.contains(&format!("2 live token(s) under pepper {old_id} (old)")),
        "{report}"
    );

    let during = TestApp::spawn_on(before.database_handle(), backend, rotating).await;
    assert_eq!(entitlements(&during, &used, user_id).await.0, 200);
    assert_eq!(
        entitlements(&during, &used, user_id).await.0,
        200,
        "and again, re-hashed"
    );
    let (hash, hashed_under): (String, Option<String>) = before.query(|conn| {
        Ok(service_tokens::table
            .filter(service_tokens::name.eq("gate"))
            .select((service_tokens::token_hash, service_tokens::hash_key_id))
            .first(conn)?)
    });
    let new = TokenHasher::new(&pepper(NEW), &[]);
    assert_eq!(hash, new.digest(Domain::ServiceToken, used.as_bytes()));
    assert_eq!(hashed_under, Some(pepper_id(NEW)));
    let report = check().1;
    assert!(
        report.contains(&format!("1 live token(s) under pepper {old_id} (old)"))
            && report.contains("keep those peppers in TOKEN_PEPPERS_OLD"),
        "{report}"
    );

    let after = TestApp::spawn_on(before.database_handle(), backend, rotated).await;
    assert_eq!(entitlements(&after, &used, user_id).await.0, 200);
    assert_eq!(
        entitlements(&after, &idle, user_id).await.0,
        401,
        "an unused token needed the old pepper: what --check warned about"
    );
}
