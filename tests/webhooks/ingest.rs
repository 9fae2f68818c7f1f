//! Exactly once: duplicates racing on two instances take effect once; in a group-committed
//! batch, one event the database refuses and a writer that panics cost only themselves.

use std::time::Duration;

use serde_json::{Value, json};

use super::{admin_and_customer, checkout_for, signed_now, status_of, stored, stored_count};
use crate::common::{Backend, TestApp, postgres_available, stripe_event};
use crate::on_both_backends;

on_both_backends!(
    duplicate_deliveries_racing_on_two_instances_take_effect_once,
    one_unstorable_event_never_takes_its_batch_down,
    a_panicking_batch_is_answered_500_and_the_writers_live_on,
    each_event_of_a_batch_records_its_own_outcome,
    a_batch_knows_the_customers_it_links_and_looks_up_the_rest,
);

/// A batch looks up its events' customers together, once, before applying any. A checkout
/// in the batch that links a customer must be seen by the batch's later events of that
/// customer, and a customer stored before the batch by its events; a customer nobody knows
/// stays unknown.
async fn a_batch_knows_the_customers_it_links_and_looks_up_the_rest(backend: Backend) {
    use tollgate::db::models::webhook_event::WebhookEventStatus;
    use tollgate::webhooks::Ingested;
    let app = TestApp::spawn(backend).await;
    let (_, jenny) = admin_and_customer(&app).await;
    app.signed_in_customer("ken@example.com").await;
    let ken = app.user_id("ken@example.com");
    // Ken's customer is stored before the batch.
    app.assert_webhook_accepted(&with_customer(
        checkout_for(ken, "evt_1KenCheckout"),
        "cus_DUMMYken",
    ))
    .await;

    let invoice = |id: &str, customer: &str| {
        let mut event = stripe_event("invoice.paid", id);
        event["data"]["object"]["id"] = json!(format!("in_{id}"));
        with_customer(event, customer)
    };
    let subscription = |id: &str, customer: &str| {
        with_customer(stripe_event("customer.subscription.updated", id), customer)
    };
    let outcomes = app.ingest_together(&[
        invoice("evt_1JennyEarly", "cus_DUMMYjenny"),
        with_customer(checkout_for(jenny, "evt_1JennyCheckout"), "cus_DUMMYjenny"),
        invoice("evt_1JennyPaid", "cus_DUMMYjenny"),
        invoice("evt_1KenPaid", "cus_DUMMYken"),
        subscription("evt_1StrangerSub", "cus_DUMMYstranger"),
    ]);
    let applied = Ingested::Stored(WebhookEventStatus::Applied);
    assert_eq!(
        outcomes,
        [
            applied.clone(),
            applied.clone(),
            applied.clone(),
            applied,
            Ingested::Stored(WebhookEventStatus::Failed),
        ]
    );
    let invoices_of = |user_id: i64| {
        app.query(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::invoices;
            Ok(invoices::table
                .filter(invoices::user_id.eq(user_id))
                .select(invoices::stripe_invoice_id)
                .order(invoices::stripe_invoice_id.asc())
                .load::<String>(conn)?)
        })
    };
    // Before its checkout, Jenny's customer was nobody's: that invoice is only recorded.
    assert_eq!(invoices_of(jenny), ["in_evt_1JennyPaid"]);
    assert_eq!(invoices_of(ken), ["in_evt_1KenPaid"]);
    let stranger = stored(&app, "evt_1StrangerSub").unwrap();
    assert_eq!(
        (stranger.status.as_str(), stranger.last_error.as_deref()),
        ("failed", Some("unknown customer cus_…ger"))
    );
}

/// `event` with its object's customer set to `customer`.
fn with_customer(mut event: Value, customer: &str) -> Value {
    event["data"]["object"]["customer"] = json!(customer);
    event
}

async fn duplicate_deliveries_racing_on_two_instances_take_effect_once(backend: Backend) {
    let first = TestApp::spawn(backend).await;
    let second = TestApp::spawn_on(first.database_handle(), backend, |_| {}).await;
    let (_, user_id) = admin_and_customer(&first).await;
    first
        .assert_webhook_accepted(&checkout_for(user_id, "evt_1RaceCheckout"))
        .await;

    let failed = stripe_event("invoice.payment_failed", "evt_1RacePaymentFailed");
    let body = serde_json::to_vec(&failed).unwrap();
    let header = signed_now(&body);
    // One client (building one per request would stall this thread past the server's
    // request timeout), up to 50 connections, alternating between the instances.
    let client = reqwest::Client::new();
    let deliveries = (0..50).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let request = client
            .post(format!("{}/webhooks/stripe", app.address))
            .header("stripe-signature", &header)
            .body(body.clone());
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(deliveries).await;
    let firsts = answers.iter().filter(|a| a["duplicate"] == false).count();
    assert_eq!(
        firsts, 1,
        "exactly one delivery stored the event: {answers:?}"
    );
    assert_eq!(stored_count(&first), 2);
    let row = stored(&first, "evt_1RacePaymentFailed").unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("applied", 1));
    assert_eq!(first.count_events("payment_failed"), 1, "one effect");
    assert_eq!(first.count_events("webhook_validated"), 2);
}

/// Concurrent deliveries share transactions (group commit). An event whose effects the
/// database refuses (PostgreSQL rejects a NUL character in text) must not roll back its
/// neighbours: they are stored and applied, and it alone is refused — Stripe will retry it.
/// A bug that panics while a batch is being written (injected here) must cost that batch a
/// 500, which Stripe retries, and nothing more: the writer threads keep serving, the
/// half-written transaction is gone, and the retried event is stored once it no longer fails.
async fn a_panicking_batch_is_answered_500_and_the_writers_live_on(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let armed = Arc::new(AtomicBool::new(true));
    let panics = Arc::new(AtomicUsize::new(0));
    let (hook_armed, hook_panics) = (Arc::clone(&armed), Arc::clone(&panics));
    let app = TestApp::spawn_with(backend, move |config| {
        config.faults.webhook_batch = Some(Arc::new(move |ids: &[&str]| {
            if hook_armed.load(Ordering::SeqCst) && ids.contains(&"evt_1PanicsOnce") {
                hook_panics.fetch_add(1, Ordering::SeqCst);
                panic!("injected fault: a bug in the webhook writer");
            }
        }));
    })
    .await;
    let in_time = |event: Value| {
        let app = &app;
        async move {
            actix_web::rt::time::timeout(Duration::from_secs(15), app.post_webhook(&event))
                .await
                .expect("answered, not left hanging")
        }
    };
    let panicking = stripe_event("payout.created", "evt_1PanicsOnce");
    for _ in 0..3 {
        let res = in_time(panicking.clone()).await;
        assert_eq!(res.status(), 500, "Stripe is told to retry");
    }
    assert_eq!(panics.load(Ordering::SeqCst), 3);
    assert!(
        stored(&app, "evt_1PanicsOnce").is_none(),
        "the transaction rolled back"
    );

    for i in 0..5 {
        let res = in_time(stripe_event(
            "payout.created",
            &format!("evt_1AfterPanic{i}"),
        ))
        .await;
        assert_eq!(res.status(), 200, "the writer is alive after the panic");
    }
    armed.store(false, Ordering::SeqCst);
    let res = in_time(panicking).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["duplicate"], false,
        "the retry is the first to store it"
    );
    assert!(stored(&app, "evt_1PanicsOnce").is_some());
    assert_eq!(stored_count(&app), 6);
}

async fn one_unstorable_event_never_takes_its_batch_down(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1BatchCheckout"))
        .await;
    let mut poisoned = stripe_event("customer.subscription.updated", "evt_1BatchPoisoned");
    poisoned["data"]["object"]["status"] = json!("active\u{0}");
    let mut events: Vec<Value> = (0..40)
        .map(|i| stripe_event("invoice.paid", &format!("evt_1BatchGood{i}")))
        .collect();
    events.insert(20, poisoned);
    let statuses = deliver_together(&app, events.iter()).await;
    for i in 0..40 {
        assert_eq!(status_of(&app, &format!("evt_1BatchGood{i}")), "applied");
    }
    match backend {
        Backend::Postgres => {
            assert_eq!(statuses[20], 500, "{statuses:?}");
            assert!(stored(&app, "evt_1BatchPoisoned").is_none());
            assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 40);
        }
        Backend::Sqlite => assert!(statuses.iter().all(|s| *s == 200)),
    }
    assert_eq!(
        app.count_events("webhook_validated") as usize,
        1 + statuses.iter().filter(|s| **s == 200).count()
    );
}

/// A group-committed batch records every event's outcome at once (one statement on
/// PostgreSQL): each stored row must still say what happened to that event — applied, failed
/// with its own reason, or ignored — with one attempt, and no other event's outcome.
async fn each_event_of_a_batch_records_its_own_outcome(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // (event, expected status): a subscription event of an unknown customer fails, with the
    // reason; an invoice of an unknown customer is recorded as applied; a type Tollgate does
    // not act on is ignored.
    let events: Vec<(Value, &str)> = (0..30)
        .map(|i| match i % 3 {
            0 => {
                let mut event =
                    stripe_event("customer.subscription.updated", &format!("evt_1Mixed{i}"));
                event["data"]["object"]["customer"] = json!(format!("cus_Unknown{i}"));
                (event, "failed")
            }
            1 => (
                stripe_event("invoice.paid", &format!("evt_1Mixed{i}")),
                "applied",
            ),
            _ => {
                let mut event = stripe_event("invoice.paid", &format!("evt_1Mixed{i}"));
                event["type"] = json!("charge.refund.updated");
                (event, "ignored")
            }
        })
        .collect();
    let statuses = deliver_together(&app, events.iter().map(|(event, _)| event)).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for (i, (_, expected)) in events.iter().enumerate() {
        let row = stored(&app, &format!("evt_1Mixed{i}")).unwrap();
        assert_eq!(
            (row.status.as_str(), row.attempts),
            (*expected, 1),
            "event {i}"
        );
        match *expected {
            // The customer's id is masked in the reason.
            "failed" => assert_eq!(
                row.last_error.as_deref(),
                Some("unknown customer cus_…"),
                "event {i}"
            ),
            _ => assert_eq!(row.last_error, None, "event {i}"),
        }
    }
    let unfinished = app.query(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::webhook_events;
        Ok(webhook_events::table
            .filter(webhook_events::processed_at.is_null())
            .count()
            .get_result::<i64>(conn)?)
    });
    assert_eq!(unfinished, 0, "every event has its processing time");
}

/// A batch claims its events' ids, looks up which are stored, applies the new ones, then
/// stores them with their outcome. A delivery of an event another instance is storing waits
/// for that instance's claim and then answers it as a duplicate, without running its handler
/// (a handler run twice at once could fail on the other's unique rows). Held here
/// deterministically: the "other instance" is a transaction of the test's, committed once the
/// delivery waits on its claim.
#[actix_web::test]
async fn a_delivery_of_an_event_being_stored_elsewhere_waits_for_its_claim() {
    if postgres_available() {
        a_payment_failure_stored_elsewhere_is_a_duplicate(Claim::AsTollgateDoes).await;
    }
}

/// A lock held elsewhere for long (an operator's open transaction, a stuck session) does not
/// stop ingest behind it: the writer's statement gives up after 5 s (`lock_timeout`), the
/// delivery is answered 500 and Stripe retries it; the retry, once the lock is gone, is stored.
/// Held here by a transaction of the test's that claims the event and does not end while the
/// delivery is open (at most 20 s: without the timeout the delivery would wait all that time).
#[actix_web::test]
async fn a_lock_held_elsewhere_fails_the_delivery_instead_of_stopping_ingest() {
    use diesel::prelude::*;
    if !postgres_available() {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let event = stripe_event("payout.created", "evt_1HeldForLong");
    let mut other = app.db.connection().unwrap();
    let other: &mut tollgate::db::DbConnection = &mut other;
    diesel::sql_query("BEGIN").execute(other).unwrap();
    tollgate::db::models::webhook_event::claim(other, &["evt_1HeldForLong"]).unwrap();
    let answered =
        actix_web::rt::time::timeout(Duration::from_secs(20), app.post_webhook(&event)).await;
    diesel::sql_query("ROLLBACK").execute(other).unwrap();
    let response = answered.expect("answered while the lock was still held");
    assert_eq!(response.status(), 500);
    assert_eq!(stored_count(&app), 0);
    app.assert_webhook_accepted(&event).await;
    assert_eq!(status_of(&app, "evt_1HeldForLong"), "applied");
}

/// A writer that stores an event without claiming it (an older instance during a rolling
/// upgrade) is still caught: the batch's unique insert waits for it, finds the event, and the
/// batch rolls back (it applied the event a second time) and answers a duplicate.
#[actix_web::test]
async fn an_event_stored_meanwhile_unclaimed_rolls_back_the_batch_that_applied_it_too() {
    if postgres_available() {
        a_payment_failure_stored_elsewhere_is_a_duplicate(Claim::No).await;
    }
}

/// A linked customer's payment failure, delivered while another writer stores it (as `claim`
/// says), is answered as a duplicate: the other writer's row stands, and none of this
/// delivery's effects (its `payment_failed` and `webhook_validated` audit rows) do.
async fn a_payment_failure_stored_elsewhere_is_a_duplicate(claim: Claim) {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (_, user_id) = admin_and_customer(&app).await;
    app.assert_webhook_accepted(&checkout_for(user_id, "evt_1HeldCheckout"))
        .await;
    let validated = app.count_events("webhook_validated");
    let event = stripe_event("invoice.payment_failed", "evt_1HeldFailure");
    let answer = deliver_while_stored_elsewhere(&app, &event, claim).await;
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(status_of(&app, "evt_1HeldFailure"), "applied");
    assert_eq!(app.count_events("payment_failed"), 0, "not applied here");
    assert_eq!(app.count_events("webhook_validated"), validated);
    assert_eq!(stored_count(&app), 2);
}

/// How the test's "other instance" stores an event.
#[derive(PartialEq)]
enum Claim {
    /// Claimed first, as Tollgate's writers do: a delivery waits on the claim.
    AsTollgateDoes,
    /// Not claimed: a delivery waits on the stored row's unique index entry.
    No,
}

/// Stores `event`'s row in a transaction of the test's (PostgreSQL), delivers `event`
/// meanwhile, commits once the delivery waits for that transaction (on its claim, or on its
/// row), and returns the delivery's answer (a 200).
async fn deliver_while_stored_elsewhere(app: &TestApp, event: &Value, claim: Claim) -> Value {
    use crate::common::Count;
    use diesel::prelude::*;
    let id = event["id"].as_str().unwrap();
    let mut other = app.db.connection().unwrap();
    let other: &mut tollgate::db::DbConnection = &mut other;
    diesel::sql_query("BEGIN").execute(other).unwrap();
    let pid = diesel::sql_query("SELECT pg_backend_pid()::bigint AS n")
        .get_result::<Count>(other)
        .unwrap()
        .n;
    if claim == Claim::AsTollgateDoes {
        tollgate::db::models::webhook_event::claim(other, &[id]).unwrap();
    }
    diesel::sql_query(format!(
        "INSERT INTO webhook_events (stripe_event_id, event_type, livemode, stripe_created, \
         payload_sealed, key_id, status, attempts, received_at, processed_at) \
         VALUES ('{id}', 'invoice.payment_failed', false, now(), '\\x00', 'k', 'applied', 1, \
         now(), now())"
    ))
    .execute(other)
    .unwrap();

    let lock = match claim {
        Claim::AsTollgateDoes => "advisory",
        Claim::No => "transactionid",
    };
    let release = async {
        // The delivery's backend waits on a lock of that kind held by the other transaction.
        let waiting = || {
            app.query(|conn| {
                Ok(diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND locktype = '{lock}' \
                     AND {pid} = ANY(pg_blocking_pids(pid))"
                ))
                .get_result::<Count>(conn)?
                .n)
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while waiting() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the delivery never waited on the other transaction's {lock} lock"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        diesel::sql_query("COMMIT").execute(other).unwrap();
    };
    let (response, ()) = futures_util::future::join(app.post_webhook(event), release).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Delivers `events` to `app` all at once (signed now, one client), so that they share
/// group-committed batches; each delivery's status, in order.
async fn deliver_together<'a>(app: &TestApp, events: impl Iterator<Item = &'a Value>) -> Vec<u16> {
    let client = reqwest::Client::new();
    let deliveries = events.map(|event| {
        let body = serde_json::to_vec(event).unwrap();
        let request = client
            .post(format!("{}/webhooks/stripe", app.address))
            .header("stripe-signature", signed_now(&body))
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    futures_util::future::join_all(deliveries).await
}
