//! The notification outbox: billing changes queue their notifications in the same transaction
//! (once, however often Stripe delivers the cause), the worker delivers them per customer in
//! order, retries, gives up into the dead letters, and admins redeliver; a server killed
//! mid-send loses nothing and a receiver deduplicating by `webhook-id` sees each exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::db::models::notification::NotificationRow;
use tollgate::notify::{self, AppEvent};
use tollgate::service_tokens::Scope;

use crate::common::{
    AlertReceiver, Backend, Received, Reply, TestApp, TestDatabase, add_endpoint, location,
    secret_env, serve_command, switch_plan_in_the_portal,
};
use crate::on_both_backends;

on_both_backends!(
    a_subscription_s_life_reaches_services_and_the_customer_once_each,
    deliveries_keep_each_customer_s_order_retry_and_end_in_the_dead_letters,
    dead_letters_are_redelivered_by_admins_only,
    a_key_change_tells_services_without_the_key,
    a_plan_switched_in_the_portal_tells_the_customer_and_services,
    a_trial_ending_notice_is_e_mailed_once,
    a_disabled_endpoint_s_queue_waits_and_resumes_in_order,
    retention_prunes_finished_notifications_only,
);

const ALL_EVENTS: [&str; 7] = [
    "subscription.activated",
    "subscription.updated",
    "subscription.canceled",
    "entitlements.changed",
    "invoice.paid",
    "invoice.payment_failed",
    "byok_key.changed",
];

fn body(received: &Received) -> Value {
    serde_json::from_str(&received.body).unwrap()
}

fn of_type<'a>(rows: &'a [NotificationRow], event_type: &str) -> Vec<&'a NotificationRow> {
    rows.iter().filter(|r| r.event_type == event_type).collect()
}

/// Checks `webhook-signature` as the Standard Webhooks specification defines it (the
/// independent check, with the `standardwebhooks` crate, is in `app_webhooks`).
fn signed_by(secret: &str, received: &Received) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            received.headers["webhook-id"], received.headers["webhook-timestamp"], received.body
        )
        .as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    received.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

/// Checkout, a duplicate Stripe delivery, a failed renewal and a cancellation made in
/// Tollgate: each reaches the product's services and the customer once.
async fn a_subscription_s_life_reaches_services_and_the_customer_once_each(backend: Backend) {
    let receiver = AlertReceiver::start();
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    let (_, secret) = app.query(|conn| Ok(add_endpoint(conn, &receiver.url, &ALL_EVENTS)));
    let customer = app.signed_in_customer("lifecycle@example.com").await;
    let user_id = app.user_id("lifecycle@example.com");
    app.subscribe(&customer, "pro").await;
    // `invoice.paid` comes in its own delivery, which may follow the page's answer.
    app.settle().await;

    let rows = app.settled_notifications("app_webhook").await;
    assert_eq!(
        of_type(&rows, "subscription.activated").len(),
        1,
        "{rows:#?}"
    );
    assert_eq!(of_type(&rows, "invoice.paid").len(), 1, "{rows:#?}");
    assert_eq!(of_type(&rows, "entitlements.changed").len(), 1, "{rows:#?}");
    assert!(rows.iter().all(|r| r.status == "sent"), "{rows:#?}");
    let received = receiver.wait_for(rows.len()).await;
    assert_eq!(received.len(), rows.len(), "one delivery per row");
    assert!(received.iter().all(|r| signed_by(&secret, r)));
    let paid = received
        .iter()
        .map(body)
        .find(|b| b["type"] == "invoice.paid")
        .unwrap();
    assert_eq!(paid["data"]["user_id"], user_id);
    assert_eq!(paid["data"]["invoice"]["amount_paid"], 2500);
    assert_eq!(paid["data"]["invoice"]["plan"], "pro");
    let entitled = received
        .iter()
        .map(body)
        .find(|b| b["type"] == "entitlements.changed")
        .unwrap();
    assert_eq!(entitled["data"]["active"], true);
    assert_eq!(entitled["data"]["plan"], "pro");

    // The receipt is recorded, and without SMTP says so; never dropped.
    let emails = app.settled_notifications("email").await;
    let receipts = of_type(&emails, "receipt");
    assert_eq!(receipts.len(), 1, "{emails:#?}");
    assert_eq!(receipts[0].recipient, "lifecycle@example.com");
    assert_eq!(receipts[0].status, "not_sent");
    assert_eq!(
        receipts[0].last_error.as_deref(),
        Some("not sent: SMTP not configured")
    );

    // Stripe delivers invoice.paid again: acknowledged, nothing new queued.
    let invoice_paid = app
        .stripe_events()
        .await
        .into_iter()
        .find(|e| e["type"] == "invoice.paid")
        .unwrap();
    let id = invoice_paid["id"].as_str().unwrap();
    let redelivered = app
        .sim_control(&format!("/_sim/events/{id}/redeliver"))
        .await;
    assert!((200..300).contains(&redelivered), "{redelivered}");
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.notifications("app_webhook").len(), rows.len());
    assert_eq!(app.notifications("email").len(), emails.len());

    // A renewal fails: services hear it, the customer gets the link to pay.
    let subscription = app.subscription_id(user_id);
    assert_eq!(
        app.sim_control(&format!(
            "/_sim/subscriptions/{subscription}/renew?outcome=failed"
        ))
        .await,
        200
    );
    let mut failed = Vec::new();
    for _ in 0..200 {
        failed = app.notifications("email");
        if !of_type(&failed, "payment_failed").is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let payment_failed: Value =
        serde_json::from_str(&of_type(&failed, "payment_failed")[0].payload).unwrap();
    assert_eq!(payment_failed["amount"]["amount"], 2500);
    assert_eq!(payment_failed["plan"], "Pro");
    assert!(
        payment_failed["pay_url"]
            .as_str()
            .is_some_and(|url| url.starts_with(&app.stripe)),
        "{payment_failed}"
    );
    let pay_page = reqwest::get(payment_failed["pay_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(pay_page.status(), 200, "the link opens the invoice");
    let number = payment_failed["invoice_number"].as_str().unwrap();
    assert!(pay_page.text().await.unwrap().contains(number));
    let rows = app.settled_notifications("app_webhook").await;
    assert_eq!(of_type(&rows, "invoice.payment_failed").len(), 1);
    let past_due: Vec<Value> = of_type(&rows, "subscription.updated")
        .iter()
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert!(
        past_due
            .iter()
            .any(|b| b["data"]["subscription"]["status"] == "past_due"),
        "{past_due:#?}"
    );

    // Paid on the hosted invoice page: active again (cancelling while past due would end the
    // subscription at once).
    let paid = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(payment_failed["pay_url"].as_str().unwrap())
        .form(&crate::common::card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    for _ in 0..300 {
        let status: String = app.query(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::subscriptions;
            Ok(subscriptions::table
                .filter(subscriptions::user_id.eq(user_id))
                .select(subscriptions::status)
                .first(conn)?)
        });
        if status == "active" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;

    // Cancelled in Tollgate: one e-mail and one event, though Stripe reports it as well.
    let before = app.notifications("app_webhook").len();
    let res = customer
        .submit_operation("/account", "/billing/subscription/cancel", &[])
        .await;
    assert_eq!(res.status(), 303, "{}", location(&res));
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    let emails = app.settled_notifications("email").await;
    let canceled = of_type(&emails, "subscription_canceled");
    assert_eq!(canceled.len(), 1, "{emails:#?}");
    let message: Value = serde_json::from_str(&canceled[0].payload).unwrap();
    assert_eq!(
        (&message["ended"], &message["plan"]),
        (&json!(false), &json!("Pro"))
    );
    assert!(message["ends_at"].is_string());
    let rows = app.settled_notifications("app_webhook").await;
    let updates: Vec<Value> = rows[before..]
        .iter()
        .filter(|r| r.event_type == "subscription.updated")
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?} {rows:#?}");
    assert_eq!(
        updates[0]["data"]["subscription"]["cancel_at_period_end"],
        true
    );
    // Still entitled until the period ends: no entitlements.changed.
    assert!(
        rows[before..]
            .iter()
            .all(|r| r.event_type != "entitlements.changed")
    );
}

/// User A's first event fails twice: A's second waits for it, B's goes straight out. User C's
/// event fails every attempt (`NOTIFY_MAX_ATTEMPTS`) and ends dead; C's next one goes out
/// after it. The metrics count sent, retried and dead per channel.
async fn deliveries_keep_each_customer_s_order_retry_and_end_in_the_dead_letters(backend: Backend) {
    let a1_failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = AlertReceiver::answering_each(Arc::new(move |_, received: &Received| {
        let body: Value = serde_json::from_str(&received.body).unwrap();
        let step = body["data"]["step"].as_str().unwrap_or_default().to_owned();
        match step.as_str() {
            "a1" if a1_failures.fetch_add(1, Ordering::SeqCst) < 2 => Reply::Status(503),
            "c1" => Reply::Status(500),
            _ => Reply::Status(200),
        }
    }));
    let app = TestApp::spawn_with(backend, |config| config.notify.max_attempts = 3).await;
    let mut users = Vec::new();
    for name in ["a", "b", "c"] {
        let email = format!("order-{name}@example.com");
        app.signed_in_customer(&email).await;
        users.push(app.user_id(&email));
    }
    app.query(|conn| {
        add_endpoint(conn, &receiver.url, &["invoice.paid"]);
        for (user, step) in [
            (users[0], "a1"),
            (users[0], "a2"),
            (users[1], "b1"),
            (users[2], "c1"),
            (users[2], "c2"),
        ] {
            let data = json!({ "step": step });
            notify::publish(conn, AppEvent::InvoicePaid, user.into(), data, step)?;
        }
        // The same cause again: nothing new.
        let again = notify::publish(
            conn,
            AppEvent::InvoicePaid,
            users[0].into(),
            json!({ "step": "a1" }),
            "a1",
        )?;
        assert_eq!(again, 0);
        Ok(())
    });
    let rows = app.settled_notifications("app_webhook").await;
    assert_eq!(rows.len(), 5);
    let steps: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| body(r)["data"]["step"].as_str().unwrap().to_owned())
        .collect();
    let first = |step: &str| steps.iter().position(|s| s == step).unwrap();
    let last = |step: &str| steps.iter().rposition(|s| s == step).unwrap();
    assert_eq!(steps.iter().filter(|s| *s == "a1").count(), 3, "{steps:?}");
    assert!(first("a2") > last("a1"), "A in order: {steps:?}");
    assert!(first("b1") < last("a1"), "B does not wait for A: {steps:?}");
    assert!(
        first("c2") > last("c1"),
        "C's next waits for the dead one: {steps:?}"
    );

    let status = |step: &str| {
        rows.iter()
            .find(|r| r.payload.contains(&format!("\"step\":\"{step}\"")))
            .map(|r| (r.status.clone(), r.attempts, r.last_error.clone()))
            .unwrap()
    };
    assert_eq!(status("a1"), ("sent".into(), 3, None));
    assert_eq!(
        status("c1"),
        ("dead".into(), 3, Some("answered 500".into()))
    );
    assert_eq!(status("c2"), ("sent".into(), 1, None));

    // One id per notification, the same on each retry.
    let ids: HashMap<String, BTreeSet<String>> =
        receiver
            .received()
            .iter()
            .fold(HashMap::new(), |mut ids, r| {
                ids.entry(body(r)["data"]["step"].as_str().unwrap().to_owned())
                    .or_default()
                    .insert(r.headers["webhook-id"].clone());
                ids
            });
    assert!(ids.values().all(|set| set.len() == 1), "{ids:?}");

    let token = app.service_token("prometheus", &[Scope::MetricsRead]);
    let mut counted = Vec::new();
    for result in ["sent", "retried", "dead"] {
        let result = format!("result=\"{result}\"");
        let labels = ["channel=\"app_webhook\"", result.as_str()];
        counted.push(
            app.metric_total(&token, "tollgate_notifications_total", &labels)
                .await,
        );
    }
    // Sent, retried (a1 twice, c1 twice), dead.
    assert_eq!(counted, [4.0, 4.0, 1.0]);
}

/// A dead notification in the console: support sees it but cannot redeliver; a forged form
/// is refused; an admin's redelivery is audited and sent once the receiver is back.
async fn dead_letters_are_redelivered_by_admins_only(backend: Backend) {
    let up = Arc::new(AtomicBool::new(false));
    let up_now = Arc::clone(&up);
    let receiver = AlertReceiver::answering(Arc::new(move |_| {
        if up_now.load(Ordering::SeqCst) {
            Reply::Status(200)
        } else {
            Reply::Status(502)
        }
    }));
    let app = TestApp::spawn_with(backend, |config| config.notify.max_attempts = 1).await;
    let admin = app.signed_in_admin("outbox-admin@example.com").await;
    let customer = app.signed_in_customer("outbox-customer@example.com").await;
    let user_id = app.user_id("outbox-customer@example.com");
    app.query(|conn| {
        add_endpoint(conn, &receiver.url, &["invoice.paid"]);
        notify::publish(
            conn,
            AppEvent::InvoicePaid,
            user_id.into(),
            json!({}),
            "dead-1",
        )
    });
    let rows = app.settled_notifications("app_webhook").await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("dead", 1));
    let id = rows[0].id;

    let page = admin.get_text("/admin/notifications?status=dead").await;
    assert!(page.contains("answered 502"), "{page}");
    assert!(page.contains(&format!("/admin/notifications/{id}/redeliver")));
    for filter in ["channel=carrier_pigeon", "status=lost", "event_type=nope"] {
        let res = admin.get(&format!("/admin/notifications?{filter}")).await;
        assert_eq!(res.status(), 400, "{filter}");
    }

    let action = format!("/admin/notifications/{id}/redeliver");
    // A customer, and a support account, may not; nor a form without its token.
    assert_eq!(
        customer.submit("/account", &action, &[]).await.status(),
        403
    );
    let support = app.signed_in_support("outbox-support@example.com").await;
    let support_page = support.get_text("/admin/notifications").await;
    assert!(support_page.contains("answered 502"));
    assert!(!support_page.contains(&action), "support has no button");
    assert_eq!(
        support
            .submit("/admin/notifications", &action, &[])
            .await
            .status(),
        403
    );
    let forged = admin.post_form(&action, &[("csrf_token", "forged")]).await;
    assert_eq!(forged.status(), 403);
    assert_eq!(app.count_events("notification_redelivered"), 0);
    assert_eq!(app.notifications("app_webhook")[0].status, "dead");

    up.store(true, Ordering::SeqCst);
    let res = admin.submit("/admin/notifications", &action, &[]).await;
    assert_eq!(res.status(), 303);
    let rows = app.settled_notifications("app_webhook").await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("sent", 1));
    assert_eq!(app.count_events("notification_redelivered"), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].headers["webhook-id"], received[1].headers["webhook-id"],
        "a redelivery keeps its id"
    );
    // Sent now: a second redelivery changes nothing.
    let again = admin.submit("/admin/notifications", &action, &[]).await;
    assert_eq!(again.status(), 303);
    assert_eq!(app.count_events("notification_redelivered"), 1);
    let missing = admin
        .submit(
            "/admin/notifications",
            "/admin/notifications/999999/redeliver",
            &[],
        )
        .await;
    assert_eq!(missing.status(), 404);
}

/// Saving and deleting a BYOK key reach the product's services as `byok_key.changed`, with
/// the key masked, never whole.
async fn a_key_change_tells_services_without_the_key(backend: Backend) {
    let receiver = AlertReceiver::start();
    let app = TestApp::spawn(backend).await;
    app.query(|conn| Ok(add_endpoint(conn, &receiver.url, &["byok_key.changed"])));
    let customer = app.signed_in_customer("byok-events@example.com").await;
    let key = "sk-ant-DUMMYkey0000000000000000000000000000000000";
    assert_eq!(customer.add_key("anthropic", key).await.status(), 303);
    let received = receiver.wait_for(1).await;
    let saved = body(&received[0]);
    assert_eq!(saved["type"], "byok_key.changed");
    assert_eq!(saved["data"]["provider"], "anthropic");
    assert_eq!(saved["data"]["state"], "saved");
    assert!(!received[0].body.contains(key), "{}", received[0].body);
    let masked = saved["data"]["key"].as_str().unwrap();
    assert!(masked.ends_with("000") && masked.len() < 20, "{masked}");

    let res = customer
        .submit("/account/keys", "/account/keys/anthropic/delete", &[])
        .await;
    assert_eq!(res.status(), 303);
    let received = receiver.wait_for(2).await;
    let deleted = body(&received[1]);
    assert_eq!(
        (&deleted["data"]["state"], &deleted["data"]["key"]),
        (&json!("deleted"), &Value::Null)
    );
}

/// `tollgate serve` is killed (SIGKILL) while a delivery is in flight, then started again: every
/// notification arrives; a receiver deduplicating by `webhook-id` sees each exactly once, one
/// that does not sees each at least once.
fn killed_mid_send_nothing_is_lost_or_doubled(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let stalled = Arc::new(AtomicBool::new(true));
    let stall = Arc::clone(&stalled);
    let hung = Arc::new(std::sync::Mutex::new(None::<String>));
    let hung_id = Arc::clone(&hung);
    // The very first request hangs until the server is gone; later ones answer at once.
    let receiver = AlertReceiver::answering_each(Arc::new(move |n, received: &Received| {
        if n == 0 && stall.load(Ordering::SeqCst) {
            *hung_id.lock().unwrap() = Some(received.headers["webhook-id"].clone());
            Reply::Slow(Duration::from_secs(30))
        } else {
            Reply::Status(200)
        }
    }));
    let db = database.db();
    let expected: BTreeSet<String> = db
        .run_blocking(|conn| {
            add_endpoint(conn, &receiver.url, &["invoice.paid"]);
            let at = tollgate::db::now();
            let mut users = Vec::new();
            for name in ["kill-a", "kill-b", "kill-c"] {
                let user = tollgate::db::models::user::insert(
                    conn,
                    &tollgate::db::models::user::NewUser {
                        email: &format!("{name}@example.com"),
                        password_hash: "unused",
                        role: tollgate::accounts::Role::Customer,
                        created_at: at,
                        updated_at: at,
                    },
                )?;
                users.push(user.id);
            }
            for n in 0..12 {
                let user = users[n % users.len()];
                notify::publish(
                    conn,
                    AppEvent::InvoicePaid,
                    user,
                    json!({ "n": n }),
                    &format!("kill-{n}"),
                )?;
            }
            Ok::<_, tollgate::db::DbError>(
                tollgate::db::models::notification::all(conn)?
                    .into_iter()
                    .map(|r| r.message_id)
                    .collect(),
            )
        })
        .unwrap();
    assert_eq!(expected.len(), 12);

    let dir = tempfile::tempdir().unwrap();
    let start = || {
        serve_command(dir.path())
            .envs(secret_env())
            .env("DATABASE_URL", &database.url_string)
            .env("INSTANCE_ID", "outbox-kill-test")
            .env("NOTIFY_POLL_INTERVAL_MS", "50")
            .env("NOTIFY_RETRY_BASE_SECS", "1")
            // Claims last twice this plus 10 s: the interrupted one is taken again after that.
            .env("NOTIFY_HTTP_TIMEOUT_SECS", "3")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "no delivery started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mid-send: the first delivery is in flight, its row claimed.
    server.kill().unwrap();
    server.wait().unwrap();
    stalled.store(false, Ordering::SeqCst);
    let claimed = db
        .run_blocking(tollgate::db::models::notification::all)
        .unwrap()
        .into_iter()
        .filter(|r| r.status == "sending")
        .count();
    assert!(claimed >= 1, "killed with a delivery in flight");

    let mut server = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let deduplicated = loop {
        let ids: BTreeSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        if ids.len() >= expected.len() || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rows = loop {
        let rows = db
            .run_blocking(tollgate::db::models::notification::all)
            .unwrap();
        if rows.iter().all(|r| r.status == "sent") || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill().unwrap();
    server.wait().unwrap();

    assert_eq!(
        deduplicated, expected,
        "every notification, exactly once by id"
    );
    assert!(rows.iter().all(|r| r.status == "sent"), "{rows:#?}");
    let raw = receiver.received().len();
    assert!(raw >= expected.len(), "at least once: {raw}");
    let interrupted = hung.lock().unwrap().clone().unwrap();
    let times = receiver
        .received()
        .iter()
        .filter(|r| r.headers["webhook-id"] == interrupted)
        .count();
    assert_eq!(
        times, 2,
        "the interrupted one went out again after the restart"
    );
}

#[test]
fn killed_mid_send_nothing_is_lost_or_doubled_sqlite() {
    killed_mid_send_nothing_is_lost_or_doubled(Backend::Sqlite);
}

#[test]
fn killed_mid_send_nothing_is_lost_or_doubled_postgres() {
    if crate::common::postgres_available() {
        killed_mid_send_nothing_is_lost_or_doubled(Backend::Postgres);
    }
}

/// A switch from Pro to Team in Stripe's Billing Portal: the customer is told the plan
/// changed, the services get the new subscription and entitlements; once each.
async fn a_plan_switched_in_the_portal_tells_the_customer_and_services(backend: Backend) {
    let receiver = AlertReceiver::start();
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    assert_eq!(
        admin.create_plan("Team", "team", "9900").await.status(),
        303
    );
    app.query(|conn| Ok(add_endpoint(conn, &receiver.url, &ALL_EVENTS)));
    let customer = app.signed_in_customer("switcher@example.com").await;
    app.subscribe(&customer, "pro").await;
    app.settled_notifications("app_webhook").await;
    let before = app.notifications("app_webhook").len();

    let sim = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    switch_plan_in_the_portal(&customer, &sim, "Team").await;
    for _ in 0..200 {
        let emails = app.settled_notifications("email").await;
        if !of_type(&emails, "plan_changed").is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let emails = app.settled_notifications("email").await;
    let changed = of_type(&emails, "plan_changed");
    assert_eq!(changed.len(), 1, "{emails:#?}");
    let message: Value = serde_json::from_str(&changed[0].payload).unwrap();
    assert_eq!(
        (&message["from"], &message["to"]),
        (&json!("Pro"), &json!("Team"))
    );
    let rows = app.settled_notifications("app_webhook").await;
    let new: Vec<Value> = rows[before..]
        .iter()
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    let updated: Vec<&Value> = new
        .iter()
        .filter(|b| b["type"] == "subscription.updated")
        .collect();
    assert_eq!(updated.len(), 1, "{new:#?}");
    assert_eq!(updated[0]["data"]["subscription"]["plan"], "team");
    let entitled: Vec<&Value> = new
        .iter()
        .filter(|b| b["type"] == "entitlements.changed")
        .collect();
    assert_eq!(entitled.len(), 1, "{new:#?}");
    assert_eq!(entitled[0]["data"]["plan"], "team");
}

/// Stripe's `customer.subscription.trial_will_end`: one trial-ending e-mail, however often the
/// event is delivered.
async fn a_trial_ending_notice_is_e_mailed_once(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("trialist@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user_id = app.user_id("trialist@example.com");
    let subscription = app
        .stripe_get(&format!(
            "/v1/subscriptions/{}",
            app.subscription_id(user_id)
        ))
        .await;
    let trial_end = chrono::Utc::now().timestamp() + 3 * 86_400;
    let mut object = subscription.clone();
    object["status"] = json!("trialing");
    object["trial_end"] = json!(trial_end);
    let mut event = crate::common::stripe_event("customer.subscription.updated", "evt_1TrialEnds");
    event["type"] = json!("customer.subscription.trial_will_end");
    event["data"] = json!({ "object": object });
    app.assert_webhook_accepted(&event).await;
    let again = app.post_webhook(&event).await;
    assert_eq!(again.status(), 200, "a duplicate is acknowledged");
    let emails = app.settled_notifications("email").await;
    let trial = of_type(&emails, "trial_ending");
    assert_eq!(trial.len(), 1, "{emails:#?}");
    assert_eq!(trial[0].recipient, "trialist@example.com");
    let message: Value = serde_json::from_str(&trial[0].payload).unwrap();
    assert_eq!(message["plan"], "Pro");
    let expected = chrono::DateTime::from_timestamp(trial_end, 0)
        .unwrap()
        .naive_utc();
    assert_eq!(
        message["trial_end"],
        json!(expected.format("%Y-%m-%dT%H:%M:%S").to_string())
    );
}

fn set_enabled(app: &TestApp, endpoint: i64, enabled: bool) {
    use diesel::prelude::*;
    use tollgate::db::schema::webhook_endpoints as e;
    app.query(|conn| {
        diesel::update(e::table.find(endpoint))
            .set(e::enabled.eq(enabled))
            .execute(conn)?;
        Ok(())
    });
}

/// Rows queued for an endpoint that is then disabled are paused, not spent: no attempt while it
/// is off, and in order once it is on again.
async fn a_disabled_endpoint_s_queue_waits_and_resumes_in_order(backend: Backend) {
    let receiver = AlertReceiver::start();
    let app = TestApp::spawn(backend).await;
    let customer = app.signed_in_customer("paused@example.com").await;
    drop(customer);
    let user_id = app.user_id("paused@example.com");
    app.query(|conn| {
        use diesel::Connection as _;
        use diesel::prelude::*;
        use tollgate::db::schema::webhook_endpoints as e;
        conn.transaction(|conn| {
            let (endpoint, _) = add_endpoint(conn, &receiver.url, &["invoice.paid"]);
            for n in 0..3 {
                let data = json!({ "n": n });
                notify::publish(
                    conn,
                    AppEvent::InvoicePaid,
                    user_id.into(),
                    data,
                    &format!("p{n}"),
                )?;
            }
            // Disabled before the worker could see it enabled.
            diesel::update(e::table.find(endpoint))
                .set(e::enabled.eq(false))
                .execute(conn)?;
            Ok(())
        })
    });
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    let rows = app.notifications("app_webhook");
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.status == "pending" && r.attempts == 0),
        "{rows:#?}"
    );
    assert!(receiver.received().is_empty());
    // The console says why the later two wait.
    let admin = app.signed_in_admin("paused-admin@example.com").await;
    let page = admin.get_text("/admin/notifications").await;
    assert_eq!(
        page.matches("after the earlier one for this customer")
            .count(),
        2,
        "{page}"
    );

    let endpoint = rows[0].endpoint_id.unwrap();
    set_enabled(&app, endpoint, true);
    let rows = app.settled_notifications("app_webhook").await;
    assert!(rows.iter().all(|r| r.status == "sent" && r.attempts == 1));
    let order: Vec<i64> = receiver
        .wait_for(3)
        .await
        .iter()
        .map(|r| body(r)["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2]);
}

/// `NOTIFICATION_RETENTION_DAYS`: finished rows older than that go; a row still on its way
/// stays, however old.
async fn retention_prunes_finished_notifications_only(backend: Backend) {
    use diesel::prelude::*;
    use tollgate::audit::retention::{self, Retention, Table};
    use tollgate::db::schema::notifications as n;

    let app = TestApp::spawn(backend).await;
    let (old_sent, recent_sent) = app.query(|conn| {
        let message = notify::Email::TrialEnding {
            plan: None,
            trial_end: None,
        };
        for cause in ["old", "recent"] {
            notify::email(conn, None, "kept@example.com", &message, cause)?;
        }
        let ids: Vec<i64> = n::table.select(n::id).order(n::id).load(conn)?;
        Ok((ids[0], ids[1]))
    });
    // Both end `not_sent` (no SMTP here); then one is made old, and a pending row old too.
    let rows = app.settled_notifications("email").await;
    assert!(rows.iter().all(|r| r.status == "not_sent"));
    let long_ago = tollgate::db::now() - chrono::Duration::days(91);
    let pending = app.query(|conn| {
        diesel::update(n::table.find(old_sent))
            .set(n::updated_at.eq(long_ago))
            .execute(conn)?;
        let (endpoint, _) = add_endpoint(conn, "http://127.0.0.1:9/", &["invoice.paid"]);
        diesel::update(tollgate::db::schema::webhook_endpoints::table.find(endpoint))
            .set(tollgate::db::schema::webhook_endpoints::enabled.eq(false))
            .execute(conn)?;
        let user = tollgate::db::models::user::insert(
            conn,
            &tollgate::db::models::user::NewUser {
                email: "waiting@example.com",
                password_hash: "unused",
                role: tollgate::accounts::Role::Customer,
                created_at: long_ago,
                updated_at: long_ago,
            },
        )?;
        // Queued while the endpoint was on, long ago, and still waiting.
        diesel::update(tollgate::db::schema::webhook_endpoints::table.find(endpoint))
            .set(tollgate::db::schema::webhook_endpoints::enabled.eq(true))
            .execute(conn)?;
        Ok(user.id)
    });
    let pending_id = app.query(|conn| {
        use diesel::Connection as _;
        conn.transaction(|conn| {
            notify::publish(conn, AppEvent::InvoicePaid, pending, json!({}), "waiting")?;
            diesel::update(tollgate::db::schema::webhook_endpoints::table)
                .set(tollgate::db::schema::webhook_endpoints::enabled.eq(false))
                .execute(conn)?;
            diesel::update(n::table.filter(n::channel.eq("app_webhook")))
                .set(n::updated_at.eq(long_ago))
                .execute(conn)?;
            n::table
                .filter(n::channel.eq("app_webhook"))
                .select(n::id)
                .first::<i64>(conn)
                .map_err(Into::into)
        })
    });
    let retention = Retention {
        audit_days: 30,
        webhook_event_days: 90,
        notification_days: 90,
    };
    let db = app.database_handle().db();
    let pruned = retention::prune(&db, retention).await.unwrap();
    assert_eq!(pruned.of(Table::Notifications), 1);
    let left: Vec<i64> = app.query(|conn| Ok(n::table.select(n::id).order(n::id).load(conn)?));
    assert_eq!(left, [recent_sent, pending_id]);
}
