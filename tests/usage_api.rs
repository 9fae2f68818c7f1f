//! Usage reporting (issue 16, point 2): `POST /internal/v1/usage` stores batches all or
//! nothing and once per idempotency key; the usage sender forwards platform usage to Stripe's
//! meter events exactly once, through outages and lost answers; BYOK usage is never counted
//! or sent; spend alerts notify once at 80 % and once at 100 %.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::schema::{usage_counters, usage_records, usage_spend_limits};
use tollgate::service_tokens::Scope;

use crate::common::{
    Backend, TestApp, meter_events, metered_app, report_usage, usage_outbox, usage_record,
    wait_until,
};
use crate::on_both_backends;

on_both_backends!(
    a_batch_is_stored_counted_and_forwarded_once_with_stable_identifiers,
    a_retried_batch_counts_once_and_a_reused_key_with_other_content_conflicts,
    invalid_batches_are_refused_whole_with_the_offending_index,
    missing_forged_and_unscoped_tokens_are_refused_and_nothing_is_stored,
    stripe_down_keeps_usage_in_the_outbox_and_it_goes_once_stripe_is_back,
    a_lost_answer_from_stripe_does_not_count_twice,
    spend_alerts_notify_once_at_80_and_once_at_100_percent,
    a_committed_reservation_crosses_the_spend_alert_too,
);

fn stored_records(app: &TestApp) -> Vec<(i64, String, i64, bool, bool)> {
    app.query(|conn| {
        Ok(usage_records::table
            .order(usage_records::id)
            .select((
                usage_records::id,
                usage_records::idempotency_key,
                usage_records::quantity,
                usage_records::byok,
                usage_records::forwarded_at.is_not_null(),
            ))
            .load(conn)?)
    })
}

fn used(app: &TestApp, user_id: i64) -> i64 {
    app.query(move |conn| {
        Ok(usage_counters::table
            .filter(usage_counters::user_id.eq(user_id))
            .filter(usage_counters::feature.eq("tokens"))
            .select(usage_counters::used)
            .first::<i64>(conn)
            .optional()?
            .unwrap_or(0))
    })
}

async fn stripe_customer(app: &TestApp) -> String {
    let customers = app.stripe_get("/v1/customers").await;
    customers["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn a_batch_is_stored_counted_and_forwarded_once_with_stable_identifiers(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    let at = chrono::Utc::now().timestamp();
    let (status, body) = report_usage(
        &app,
        &token,
        vec![
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 1200,
                    "idempotency_key": "run-1", "timestamp": at }),
            usage_record(user_id, "run-2", 300),
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 5000,
                    "idempotency_key": "run-3-byok", "byok": true }),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["conflicts"], 0);
    assert_eq!(body["results"][0]["idempotency_key"], "run-1");
    assert_eq!(body["results"][2]["status"], "accepted");
    // Platform usage counts; BYOK usage is stored for the customer to see, never counted.
    assert_eq!(used(&app, user_id), 1500);
    assert_eq!(stored_records(&app).len(), 3);

    wait_until("the platform records are forwarded", async || {
        usage_outbox(&app).is_empty() && meter_events(&app).await.len() == 2
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let events = meter_events(&app).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let records = stored_records(&app);
    let customer = stripe_customer(&app).await;
    // The sender forwards a batch concurrently: each record's event is found by its identifier,
    // not by the order Stripe saw them in.
    for (id, key, quantity) in [(records[0].0, "run-1", 1200), (records[1].0, "run-2", 300)] {
        // The record's id and the microsecond it was stored: a restored database reusing ids
        // never sends an identifier Stripe has already seen.
        let prefix = format!("tg_usage_{id}_");
        let mut sent = events.iter().filter_map(|event| {
            let stored = event["identifier"].as_str()?.strip_prefix(&prefix)?;
            Some((event, stored))
        });
        let (event, stored) = sent.next().unwrap_or_else(|| panic!("{key}: {events:?}"));
        assert!(sent.next().is_none(), "{key} was sent once: {events:?}");
        assert!(
            stored.parse::<i64>().unwrap() > 1_700_000_000_000_000,
            "{key}"
        );
        assert_eq!(event["event_name"], "tg_tokens");
        assert_eq!(event["payload"]["stripe_customer_id"], customer.as_str());
        assert_eq!(event["payload"]["value"], quantity.to_string());
        if key == "run-1" {
            assert_eq!(event["timestamp"], at, "the reported time is kept");
        }
    }
    // Forwarded records say so; the BYOK one was never queued or sent.
    assert!(records[0].4 && records[1].4);
    assert!(records[2].3 && !records[2].4);
    assert!(events.iter().all(|e| {
        !e["identifier"]
            .as_str()
            .unwrap()
            .starts_with(&format!("tg_usage_{}_", records[2].0))
    }));
}

async fn a_retried_batch_counts_once_and_a_reused_key_with_other_content_conflicts(
    backend: Backend,
) {
    let (app, user_id, token) = metered_app(backend).await;
    // Without a timestamp too: a retry of the same key is the same record.
    let batch = vec![
        usage_record(user_id, "run-1", 100),
        usage_record(user_id, "run-2", 200),
    ];
    let (status, first) = report_usage(&app, &token, batch.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["accepted"], 2);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let (status, again) = report_usage(&app, &token, batch).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 2);
    assert_eq!(again["results"][1]["status"], "duplicate");
    assert_eq!(used(&app, user_id), 300);

    let (status, conflict) = report_usage(
        &app,
        &token,
        vec![
            usage_record(user_id, "run-1", 999),
            usage_record(user_id, "run-3", 1),
        ],
    )
    .await;
    assert_eq!(status, 200, "{conflict}");
    assert_eq!(conflict["conflicts"], 1);
    assert_eq!(conflict["accepted"], 1);
    assert_eq!(conflict["results"][0]["status"], "conflict");
    assert_eq!(conflict["results"][1]["status"], "accepted");
    assert_eq!(used(&app, user_id), 301);
    assert_eq!(stored_records(&app).len(), 3);

    wait_until("every record is forwarded", async || {
        usage_outbox(&app).is_empty() && meter_events(&app).await.len() == 3
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    // The sender forwards a batch concurrently: the order Stripe saw them in is not fixed.
    let mut values: Vec<String> = meter_events(&app)
        .await
        .iter()
        .map(|e| e["payload"]["value"].as_str().unwrap().to_owned())
        .collect();
    values.sort();
    assert_eq!(
        values,
        ["1", "100", "200"],
        "each record once, at its value"
    );
}

async fn invalid_batches_are_refused_whole_with_the_offending_index(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    let good = usage_record(user_id, "good", 10);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| usage_record(user_id, &format!("k{i}"), 1))
        .collect();
    let (status, body) = report_usage(&app, &token, too_many).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1 to 1000"));
    let (status, _) = report_usage(&app, &token, vec![]).await;
    assert_eq!(status, 400);

    let cases = [
        (
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 1,
                    "idempotency_key": "old", "timestamp": 1_000_000_000 }),
            "timestamp",
        ),
        (
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 1,
                    "idempotency_key": "ahead",
                    "timestamp": chrono::Utc::now().timestamp() + 3600 }),
            "timestamp",
        ),
        (usage_record(user_id, "zero", 0), "quantity"),
        // Beyond any real call, and two of them would overflow the period's counter.
        (usage_record(user_id, "huge", i64::MAX), "at most"),
        (
            json!({ "user_id": user_id, "feature": "tokens", "quantity": "12",
                    "idempotency_key": "text" }),
            "expected",
        ),
        (
            usage_record(user_id, &"k".repeat(101), 1),
            "idempotency_key",
        ),
        (usage_record(user_id, "tab\tkey", 1), "idempotency_key"),
        (
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 1,
                    "idempotency_key": "x", "surprise": true }),
            "expected",
        ),
        (
            json!({ "user_id": user_id, "feature": "images", "quantity": 1,
                    "idempotency_key": "unmetered" }),
            "metered",
        ),
        (usage_record(user_id + 1000, "nobody", 1), "unknown user"),
    ];
    for (bad, says) in cases {
        let (status, body) = report_usage(&app, &token, vec![good.clone(), bad.clone()]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["index"], 1, "{bad}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("record 1: ") && error.contains(says),
            "{error}"
        );
    }

    let raw = |body: Vec<u8>| {
        let client = reqwest::Client::new();
        let url = format!("{}/internal/v1/usage", app.address);
        let token = token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let res = raw(b"{\"records\": [".to_vec()).await;
    assert_eq!(res.status(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    let huge = format!(
        "{{\"records\": [{}]}}",
        serde_json::to_string(&usage_record(user_id, &"h".repeat(600 * 1024), 1)).unwrap()
    );
    let res = raw(huge.into_bytes()).await;
    assert_eq!(res.status(), 413);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());

    assert!(
        stored_records(&app).is_empty(),
        "nothing of a refused batch is stored"
    );
    assert_eq!(used(&app, user_id), 0);
    assert!(usage_outbox(&app).is_empty());
    // The single-record form is accepted too.
    let res = app.internal_post("usage", Some(&token), &good).await;
    assert_eq!(res.status(), 200);
    assert_eq!(stored_records(&app).len(), 1);
}

async fn missing_forged_and_unscoped_tokens_are_refused_and_nothing_is_stored(backend: Backend) {
    let (app, user_id, _) = metered_app(backend).await;
    let body = json!({ "records": [usage_record(user_id, "sneaky", 1_000_000)] });
    let res = app.internal_post("usage", None, &body).await;
    assert_eq!(res.status(), 401);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    let forged = "tg_svc_DUMMYforgedtoken00000000000000000000000000";
    assert_eq!(
        app.internal_post("usage", Some(forged), &body)
            .await
            .status(),
        401
    );
    let lease_only = app.service_token("byok-only", &[Scope::ByokLease]);
    assert_eq!(
        app.internal_post("usage", Some(&lease_only), &body)
            .await
            .status(),
        403
    );
    assert!(stored_records(&app).is_empty());
    assert_eq!(used(&app, user_id), 0);
    assert!(app.count_events("service_token_rejected") >= 2);
}

async fn stripe_down_keeps_usage_in_the_outbox_and_it_goes_once_stripe_is_back(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    assert_eq!(
        app.sim_control("/_sim/meter_events/fail?mode=outage&count=100000")
            .await,
        204
    );
    let (status, _) = report_usage(
        &app,
        &token,
        vec![
            usage_record(user_id, "a", 10),
            usage_record(user_id, "b", 20),
        ],
    )
    .await;
    assert_eq!(status, 200);
    wait_until("both rows failed twice", async || {
        let rows = usage_outbox(&app);
        rows.len() == 2 && rows.iter().all(|(_, attempts, _)| *attempts >= 2)
    })
    .await;
    let rows = usage_outbox(&app);
    assert_eq!(rows[0].2.as_deref(), Some("Stripe refused: HTTP 500"));
    assert!(meter_events(&app).await.is_empty());
    assert!(stored_records(&app).iter().all(|r| !r.4), "none forwarded");

    assert_eq!(
        app.sim_control("/_sim/meter_events/fail?mode=outage&count=0")
            .await,
        204
    );
    wait_until("Stripe has both", async || {
        usage_outbox(&app).is_empty() && meter_events(&app).await.len() == 2
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(meter_events(&app).await.len(), 2, "sent once each");
    assert!(stored_records(&app).iter().all(|r| r.4));
}

async fn a_lost_answer_from_stripe_does_not_count_twice(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    assert_eq!(
        app.sim_control("/_sim/meter_events/fail?mode=lost&count=1")
            .await,
        204
    );
    let (status, _) = report_usage(&app, &token, vec![usage_record(user_id, "once", 42)]).await;
    assert_eq!(status, 200);
    wait_until("the record is forwarded", async || {
        usage_outbox(&app).is_empty()
    })
    .await;
    let events = meter_events(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["value"], "42");
    assert!(stored_records(&app)[0].4);
}

fn threshold_rows(app: &TestApp) -> (Vec<Value>, Vec<String>) {
    let webhooks = app
        .notifications("app_webhook")
        .into_iter()
        .filter(|r| r.event_type == "usage.threshold_reached")
        .map(|r| serde_json::from_str::<Value>(&r.payload).unwrap())
        .collect();
    let emails = app
        .notifications("email")
        .into_iter()
        .filter(|r| r.event_type == "usage_threshold")
        .map(|r| r.payload)
        .collect();
    (webhooks, emails)
}

async fn spend_alerts_notify_once_at_80_and_once_at_100_percent(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    app.query(move |conn| {
        crate::common::add_endpoint(
            conn,
            "http://127.0.0.1:9/hooks",
            &["usage.threshold_reached"],
        );
        // A $10.00 alert: 80 % at 5,000 tokens ($8.00), 100 % at 6,000 ($10.00).
        diesel::insert_into(usage_spend_limits::table)
            .values((
                usage_spend_limits::user_id.eq(user_id),
                usage_spend_limits::alert_amount.eq(Some(1000i64)),
                usage_spend_limits::updated_at.eq(tollgate::db::now()),
            ))
            .execute(conn)?;
        Ok(())
    });
    let (status, _) = report_usage(&app, &token, vec![usage_record(user_id, "r1", 4990)]).await;
    assert_eq!(status, 200);
    // BYOK usage costs the customer nothing here: it never moves the alert.
    let (status, _) = report_usage(
        &app,
        &token,
        vec![
            json!({ "user_id": user_id, "feature": "tokens", "quantity": 100000,
                     "idempotency_key": "byok", "byok": true }),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(threshold_rows(&app), (vec![], vec![]));

    let (status, _) = report_usage(&app, &token, vec![usage_record(user_id, "r2", 10)]).await;
    assert_eq!(status, 200);
    let (webhooks, emails) = threshold_rows(&app);
    assert_eq!((webhooks.len(), emails.len()), (1, 1));
    let data = &webhooks[0]["data"];
    assert_eq!(webhooks[0]["type"], "usage.threshold_reached");
    assert_eq!(data["user_id"], user_id);
    assert_eq!(data["percent"], 80);
    assert_eq!(data["alert_amount"], 1000);
    assert_eq!(data["spent"], 800);
    assert_eq!(data["currency"], "usd");
    assert!(data["period_end"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    assert!(emails[0].contains("\"percent\":80"), "{}", emails[0]);

    // Concurrent reports crossing 100 %: notified once.
    let reports = (0..6).map(|i| {
        let token = token.clone();
        let app = &app;
        async move {
            report_usage(
                app,
                &token,
                vec![usage_record(user_id, &format!("c{i}"), 500)],
            )
            .await
        }
    });
    for (status, body) in futures_util::future::join_all(reports).await {
        assert_eq!(status, 200, "{body}");
    }
    let (webhooks, emails) = threshold_rows(&app);
    assert_eq!((webhooks.len(), emails.len()), (2, 2), "{webhooks:?}");
    assert_eq!(webhooks[1]["data"]["percent"], 100);
    assert!(emails[1].contains("\"percent\":100"));

    let (status, _) = report_usage(&app, &token, vec![usage_record(user_id, "r9", 5000)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        threshold_rows(&app).0.len(),
        2,
        "once per threshold and period"
    );
    let audited = app.events("usage_threshold_reached");
    assert_eq!(audited.len(), 2);
    assert!(audited.iter().any(|e| e.details.contains("\"percent\":80")));
}

/// Usage that arrives by committing a reservation counts towards the alert exactly as reported
/// usage does.
async fn a_committed_reservation_crosses_the_spend_alert_too(backend: Backend) {
    let (app, user_id, token) = metered_app(backend).await;
    app.query(move |conn| {
        crate::common::add_endpoint(
            conn,
            "http://127.0.0.1:9/hooks",
            &["usage.threshold_reached"],
        );
        diesel::insert_into(usage_spend_limits::table)
            .values((
                usage_spend_limits::user_id.eq(user_id),
                usage_spend_limits::alert_amount.eq(Some(1000i64)),
                usage_spend_limits::updated_at.eq(tollgate::db::now()),
            ))
            .execute(conn)?;
        Ok(())
    });
    let reserve = app
        .internal_post(
            &format!("entitlements/{user_id}/reserve"),
            Some(&token),
            &json!({ "feature": "tokens", "quantity": 6000, "ttl_secs": 60 }),
        )
        .await;
    assert_eq!(reserve.status(), 200);
    let reserved: Value = reserve.json().await.unwrap();
    assert_eq!(reserved["allowed"], true, "{reserved}");
    assert_eq!(
        threshold_rows(&app),
        (vec![], vec![]),
        "a hold is not spend"
    );
    // 5,500 tokens: 4,500 above the included 1,000 at $2.00 per 1,000 = $9.00, 90 % of $10.
    let commit = app
        .internal_post(
            &format!("entitlements/{user_id}/commit"),
            Some(&token),
            &json!({ "reservation_id": reserved["reservation_id"], "quantity": 5500 }),
        )
        .await;
    assert_eq!(commit.status(), 200);
    let (webhooks, emails) = threshold_rows(&app);
    assert_eq!((webhooks.len(), emails.len()), (1, 1), "{webhooks:?}");
    assert_eq!(webhooks[0]["data"]["percent"], 80);
    assert_eq!(webhooks[0]["data"]["spent"], 900);
}
