//! Quotas held by reservations (issue 16, points 3 and 4's hard cap): limits in the
//! entitlements, reserve/commit/release, concurrent reserves that never exceed the limit (on
//! two instances of one PostgreSQL database too), expiry, spend caps, refusals without an
//! entitlement, what an undecidable reserve answers, and the attacker's side.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::config::Config;
use tollgate::db::now;
use tollgate::db::schema::{
    plan_meters, plan_spend_caps, plans, subscription_past_due, subscriptions, usage_counters,
    usage_meters, usage_records, usage_reservations, usage_spend_limits,
};
use tollgate::service_tokens::Scope;

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    entitlements_carry_each_metered_features_limit,
    reserve_commit_less_and_release_move_the_remaining_quota,
    concurrent_reserves_never_exceed_the_limit,
    expired_reservations_free_their_quota,
    the_sweep_expires_holds_without_a_reserve,
    the_hard_spend_cap_refuses_with_spend_cap,
    no_subscription_past_due_and_features_outside_the_plan_are_refused,
    the_attackers_side_of_reserve_commit_and_release,
    an_undecidable_reserve_answers_by_the_features_policy_and_is_audited,
    the_subscription_that_speaks_for_the_customer_decides_their_reserves,
    two_instances_sweep_reservations_once_per_period_between_them,
);

/// N instances as one: the reservation sweep takes the job's lease each period, so two
/// instances sweeping every 200 ms run it about once per 200 ms between them (without the
/// lease, twice as often), and neither lets a period go by.
async fn two_instances_sweep_reservations_once_per_period_between_them(backend: Backend) {
    let often = |config: &mut Config| config.quotas.sweep_interval = Duration::from_millis(200);
    let first = TestApp::spawn_with(backend, often).await;
    let _second = TestApp::spawn_on(first.database_handle(), backend, often).await;
    let runs =
        || first.query(|conn| tollgate::db::models::job_lease::runs(conn, "reservation_sweep"));
    let before = runs();
    let started = std::time::Instant::now();
    actix_web::rt::time::sleep(Duration::from_millis(2_000)).await;
    let ran = runs() - before;
    // Counted over the time that really passed (a loaded machine oversleeps).
    let periods = (started.elapsed().as_millis() / 200) as i64;
    // One run a period (a lease may change hands late in a period, so a little slack); two
    // instances without the lease would make about two a period. A loaded machine may lose a
    // period whose run came late, but never half of them.
    assert!(
        ran <= periods + periods / 3 + 1 && ran * 2 >= periods,
        "{ran} runs in {periods} periods"
    );
}

/// A subscribed customer on "Pro", whose plan meters `tokens` (quota 1,000, 500 included, then
/// $2 per 1,000, fail closed), `runs` (no quota, 5¢ each, fail open) and `images` (quota 100,
/// fail open); `seats` is a metered feature of no plan of theirs.
struct Fixture {
    app: TestApp,
    user: i64,
    plan_id: i64,
    token: String,
    /// An `entitlements:read` token.
    reader: String,
}

async fn subscribed(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Fixture {
    let app = TestApp::spawn_with(backend, adjust).await;
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
    let customer = app.signed_in_customer("buyer@example.com").await;
    app.subscribe(&customer, "pro").await;
    let user = app.user_id("buyer@example.com");
    let plan_id = app.query(|conn| {
        Ok(plans::table
            .filter(plans::slug.eq("pro"))
            .select(plans::id)
            .first::<i64>(conn)?)
    });
    seed_meters(&app, plan_id);
    let token = app.service_token("agent-runner", &[Scope::UsageWrite]);
    let reader = app.service_token("gatekeeper", &[Scope::EntitlementsRead]);
    Fixture {
        app,
        user,
        plan_id,
        token,
        reader,
    }
}

fn seed_meters(app: &TestApp, plan_id: i64) {
    app.query(move |conn| {
        for feature in ["tokens", "runs", "images", "seats"] {
            diesel::insert_into(usage_meters::table)
                .values((
                    usage_meters::feature.eq(feature),
                    usage_meters::unit_name.eq(feature),
                    usage_meters::event_name.eq(format!("tollgate_{feature}")),
                    usage_meters::created_at.eq(now()),
                    usage_meters::updated_at.eq(now()),
                ))
                .execute(conn)?;
        }
        for (feature, included, size, amount, quota, fail_open) in [
            ("tokens", 500, 1_000, 200, Some(1_000), false),
            ("runs", 0, 1, 5, None, true),
            ("images", 0, 1, 0, Some(100), true),
        ] {
            diesel::insert_into(plan_meters::table)
                .values((
                    plan_meters::plan_id.eq(plan_id),
                    plan_meters::feature.eq(feature),
                    plan_meters::included.eq(included),
                    plan_meters::package_size.eq(size),
                    plan_meters::package_amount.eq(amount),
                    plan_meters::quota.eq(quota),
                    plan_meters::fail_open.eq(fail_open),
                    plan_meters::created_at.eq(now()),
                    plan_meters::updated_at.eq(now()),
                ))
                .execute(conn)?;
        }
        Ok(())
    });
}

impl Fixture {
    async fn call(&self, user: i64, action: &str, body: Value) -> (u16, Value) {
        call(&self.app, &self.token, user, action, body).await
    }

    async fn reserve(&self, feature: &str, quantity: i64) -> Value {
        let body = json!({ "feature": feature, "quantity": quantity });
        let (status, body) = self.call(self.user, "reserve", body).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn limits(&self) -> Vec<Value> {
        let res = self
            .app
            .internal_get(&format!("entitlements/{}", self.user), &self.reader)
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["limits"].as_array().unwrap().clone()
    }

    /// `(used, reserved)` of the user's counter of `feature`.
    fn counter(&self, feature: &'static str) -> (i64, i64) {
        let user = self.user;
        self.app.query(move |conn| {
            Ok(usage_counters::table
                .filter(usage_counters::user_id.eq(user))
                .filter(usage_counters::feature.eq(feature))
                .select((usage_counters::used, usage_counters::reserved))
                .first(conn)?)
        })
    }

    fn reservation_state(&self, id: &str) -> String {
        let id = id.to_owned();
        self.app.query(move |conn| {
            Ok(usage_reservations::table
                .find(id)
                .select(usage_reservations::state)
                .first(conn)?)
        })
    }
}

async fn call(app: &TestApp, token: &str, user: i64, action: &str, body: Value) -> (u16, Value) {
    let path = format!("entitlements/{user}/{action}");
    let res = app.internal_post(&path, Some(token), &body).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn limit<'a>(limits: &'a [Value], feature: &str) -> &'a Value {
    limits
        .iter()
        .find(|l| l["feature"] == feature)
        .unwrap_or_else(|| panic!("{feature} in {limits:?}"))
}

async fn entitlements_carry_each_metered_features_limit(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let period_end: chrono::NaiveDateTime = f.app.query({
        let user = f.user;
        move |conn| {
            Ok(subscriptions::table
                .filter(subscriptions::user_id.eq(user))
                .select(subscriptions::current_period_end.assume_not_null())
                .first(conn)?)
        }
    });
    let limits = f.limits().await;
    assert_eq!(limits.len(), 3, "the plan's metered features: {limits:?}");
    assert_eq!(
        limit(&limits, "tokens"),
        &json!({ "feature": "tokens", "unit": "tokens", "included": 500, "limit": 1000,
                 "used": 0, "reserved": 0, "remaining": 1000,
                 "resets_at": period_end.and_utc().timestamp() })
    );
    let runs = limit(&limits, "runs");
    assert_eq!(runs["limit"], Value::Null);
    assert_eq!(runs["remaining"], Value::Null);

    f.reserve("tokens", 300).await;
    let limits = f.limits().await;
    let tokens = limit(&limits, "tokens");
    assert_eq!(
        (&tokens["reserved"], &tokens["remaining"]),
        (&json!(300), &json!(700))
    );
}

async fn reserve_commit_less_and_release_move_the_remaining_quota(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let held = f.reserve("tokens", 400).await;
    assert_eq!(held["allowed"], true, "{held}");
    assert_eq!(
        (&held["remaining"], &held["reserved"]),
        (&json!(600), &json!(400))
    );
    let id = held["reservation_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("rsv_"), "{id}");
    assert!(held["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 250);

    let commit = json!({ "reservation_id": id, "quantity": 250 });
    let (status, committed) = f.call(f.user, "commit", commit.clone()).await;
    assert_eq!(status, 200, "{committed}");
    assert_eq!(committed["committed"], 250);
    assert_eq!(
        (&committed["used"], &committed["reserved"]),
        (&json!(250), &json!(0))
    );
    assert_eq!(committed["remaining"], 750, "the unused 150 went back");
    assert_eq!(f.counter("tokens"), (250, 0));
    let (key, quantity, reservation) = f.app.query(|conn| {
        Ok(usage_records::table
            .select((
                usage_records::idempotency_key,
                usage_records::quantity,
                usage_records::reservation_id,
            ))
            .first::<(String, i64, Option<String>)>(conn)?)
    });
    assert_eq!((key.as_str(), quantity), (id.as_str(), 250));
    assert_eq!(reservation.as_deref(), Some(id.as_str()));
    assert_eq!(f.reservation_state(&id), "committed");

    let other = f.reserve("tokens", 100).await;
    let other_id = other["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(other["remaining"], 650);
    let release = json!({ "reservation_id": other_id });
    let (status, released) = f.call(f.user, "release", release.clone()).await;
    assert_eq!(
        (status, &released["released"]),
        (200, &json!(true)),
        "{released}"
    );
    assert_eq!(released["remaining"], 750);
    assert_eq!(f.counter("tokens"), (250, 0));
    assert_eq!(f.call(f.user, "release", release).await.0, 200, "repeat");
    let late = json!({ "reservation_id": other_id });
    assert_eq!(f.call(f.user, "commit", late).await.0, 409, "released");
    let undo = json!({ "reservation_id": id });
    assert_eq!(f.call(f.user, "release", undo).await.0, 409, "committed");
}

async fn concurrent_reserves_never_exceed_the_limit(backend: Backend) {
    // Two hundred requests queue for a few pooled connections: give them time to decide.
    let patient = |config: &mut Config| config.quotas.reserve_deadline = Duration::from_secs(60);
    let f = subscribed(backend, patient).await;
    // On PostgreSQL, a second instance on the same database takes half of the requests.
    let second = match backend {
        Backend::Postgres => {
            Some(TestApp::spawn_on(f.app.database_handle(), backend, patient).await)
        }
        Backend::Sqlite => None,
    };
    // One client (building one loads the system's certificates: slow, and it blocks).
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..200 {
        let address = match (&second, i % 2) {
            (Some(second), 1) => second.address.clone(),
            _ => f.app.address.clone(),
        };
        let (token, user, client) = (f.token.clone(), f.user, client.clone());
        calls.push(actix_web::rt::spawn(async move {
            let started = std::time::Instant::now();
            let res = client
                .post(format!("{address}/internal/v1/entitlements/{user}/reserve"))
                .bearer_auth(token)
                .json(&json!({ "feature": "images", "quantity": 1 }))
                .send()
                .await
                .unwrap_or_else(|err| panic!("after {:?}: {err}", started.elapsed()));
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }));
    }
    let mut allowed = 0;
    for call in calls {
        let body = call.await.unwrap();
        match body["reason"].as_str() {
            None => allowed += 1,
            Some(reason) => assert_eq!(reason, "quota_exceeded", "{body}"),
        }
    }
    assert_eq!(allowed, 100, "exactly the limit");
    assert_eq!(f.counter("images"), (0, 100));
    let held: i64 = f.app.query(|conn| {
        Ok(usage_reservations::table
            .filter(usage_reservations::state.eq("held"))
            .count()
            .get_result(conn)?)
    });
    assert_eq!(held, 100, "one reservation per hold");
    let refused = f.reserve("images", 1).await;
    assert_eq!(
        (&refused["allowed"], &refused["remaining"]),
        (&json!(false), &json!(0))
    );
}

/// Moves reservation `id`'s expiry a second into the past (as if its TTL had run out, without
/// a test that must finish its requests within the TTL).
fn expire(app: &TestApp, id: &str) {
    let id = id.to_owned();
    let expired = app.query(move |conn| {
        Ok(diesel::update(usage_reservations::table.find(id))
            .set(usage_reservations::expires_at.eq(now() - chrono::Duration::seconds(1)))
            .execute(conn)?)
    });
    assert_eq!(expired, 1);
}

async fn expired_reservations_free_their_quota(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let body = json!({ "feature": "tokens", "quantity": 1000, "ttl_secs": 60 });
    let asked = chrono::Utc::now().timestamp();
    let (_, held) = f.call(f.user, "reserve", body).await;
    assert_eq!(held["allowed"], true, "{held}");
    let expires_at = held["expires_at"].as_i64().unwrap();
    let answered = chrono::Utc::now().timestamp();
    assert!(
        (asked + 60..=answered + 61).contains(&expires_at),
        "the TTL asked for: {held}"
    );
    let id = held["reservation_id"].as_str().unwrap().to_owned();
    let refused = f.reserve("tokens", 1).await;
    assert_eq!(refused["reason"], "quota_exceeded", "{refused}");

    expire(&f.app, &id);
    let again = f.reserve("tokens", 600).await;
    assert_eq!(
        again["allowed"], true,
        "the expired hold was freed: {again}"
    );
    assert_eq!(again["remaining"], 400);
    assert_eq!(f.reservation_state(&id), "expired");
    assert_eq!(f.counter("tokens"), (0, 600));
    let late = json!({ "reservation_id": id });
    assert_eq!(f.call(f.user, "commit", late).await.0, 409, "expired");
}

async fn the_sweep_expires_holds_without_a_reserve(backend: Backend) {
    let f = subscribed(backend, |config| {
        config.quotas.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let body = json!({ "feature": "tokens", "quantity": 300, "ttl_secs": 60 });
    let (_, held) = f.call(f.user, "reserve", body).await;
    let id = held["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(f.counter("tokens"), (0, 300));
    expire(&f.app, &id);
    let mut state = String::new();
    for _ in 0..150 {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        state = f.reservation_state(&id);
        if state == "expired" {
            break;
        }
    }
    assert_eq!(state, "expired");
    assert_eq!(f.counter("tokens"), (0, 0));
}

async fn the_hard_spend_cap_refuses_with_spend_cap(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let user = f.user;
    // The customer's cap: $1.00 of usage, i.e. 20 runs at 5¢.
    f.app.query(move |conn| {
        diesel::insert_into(usage_spend_limits::table)
            .values((
                usage_spend_limits::user_id.eq(user),
                usage_spend_limits::cap_amount.eq(Some(100i64)),
                usage_spend_limits::updated_at.eq(now()),
            ))
            .execute(conn)
            .map(drop)
            .map_err(Into::into)
    });
    assert_eq!(f.reserve("runs", 15).await["allowed"], true);
    let over = f.reserve("runs", 6).await;
    assert_eq!(
        (&over["allowed"], &over["reason"]),
        (&json!(false), &json!("spend_cap"))
    );
    assert_eq!(
        f.reserve("runs", 5).await["allowed"],
        true,
        "exactly at the cap"
    );
    assert_eq!(f.counter("runs"), (0, 20));

    // The plan's cap is lower still: 50¢ (already spent by the holds).
    let plan_id = f.plan_id;
    f.app.query(move |conn| {
        diesel::insert_into(plan_spend_caps::table)
            .values((
                plan_spend_caps::plan_id.eq(plan_id),
                plan_spend_caps::cap_amount.eq(50i64),
                plan_spend_caps::updated_at.eq(now()),
            ))
            .execute(conn)
            .map(drop)
            .map_err(Into::into)
    });
    assert_eq!(f.reserve("runs", 1).await["reason"], "spend_cap");
    // Free units (images cost nothing) stay within any cap.
    assert_eq!(
        f.reserve("images", 1).await["reason"],
        "spend_cap",
        "the cap is already passed"
    );
}

async fn no_subscription_past_due_and_features_outside_the_plan_are_refused(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let outside = f.reserve("seats", 1).await;
    assert_eq!(
        (&outside["allowed"], &outside["reason"]),
        (&json!(false), &json!("not_in_plan"))
    );
    assert_eq!(
        f.reserve("no-such-feature", 1).await["reason"],
        "not_in_plan"
    );

    f.app.signed_in_customer("free@example.com").await;
    let free = f.app.user_id("free@example.com");
    let body = json!({ "feature": "tokens", "quantity": 1 });
    let (status, none) = f.call(free, "reserve", body.clone()).await;
    assert_eq!(
        (status, &none["reason"]),
        (200, &json!("no_subscription")),
        "{none}"
    );
    assert_eq!(none["allowed"], false);

    // Past due, and the grace is over: entitlements are off, and so are reservations.
    let user = f.user;
    let sub = f.app.subscription_id(user);
    f.app.query(move |conn| {
        diesel::update(subscriptions::table.filter(subscriptions::user_id.eq(user)))
            .set(subscriptions::status.eq("past_due"))
            .execute(conn)?;
        diesel::insert_into(subscription_past_due::table)
            .values((
                subscription_past_due::stripe_subscription_id.eq(sub),
                subscription_past_due::since.eq(now() - chrono::Duration::days(60)),
            ))
            .execute(conn)?;
        Ok(())
    });
    let due = f.reserve("tokens", 1).await;
    assert_eq!(
        (&due["allowed"], &due["reason"]),
        (&json!(false), &json!("past_due")),
        "{due}"
    );
    let held: i64 = f
        .app
        .query(|conn| Ok(usage_reservations::table.count().get_result(conn)?));
    assert_eq!(held, 0, "no refusal holds anything");
}

async fn the_attackers_side_of_reserve_commit_and_release(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    let held = f.reserve("tokens", 100).await;
    let id = held["reservation_id"].as_str().unwrap().to_owned();
    f.app.signed_in_customer("mallory@example.com").await;
    let mallory = f.app.user_id("mallory@example.com");
    for action in ["commit", "release"] {
        let (status, _) = f
            .call(mallory, action, json!({ "reservation_id": id }))
            .await;
        assert_eq!(status, 404, "another user's reservation: {action}");
    }
    assert_eq!(f.reservation_state(&id), "held");
    let body = json!({ "feature": "tokens", "quantity": 1 });
    assert_eq!(
        f.call(987_654, "reserve", body.clone()).await.0,
        404,
        "unknown user"
    );

    let path = format!("entitlements/{}/reserve", f.user);
    let forged = "tg_svc_DUMMYnotarealtoken000000000000000000000000";
    assert_eq!(
        f.app
            .internal_post(&path, Some(forged), &body)
            .await
            .status(),
        401
    );
    assert_eq!(f.app.internal_post(&path, None, &body).await.status(), 401);
    assert_eq!(
        f.app
            .internal_post(&path, Some(&f.reader), &body)
            .await
            .status(),
        403
    );

    for bad in [
        json!({ "feature": "tokens" }),
        json!({ "feature": "tokens", "quantity": 0 }),
        json!({ "feature": "tokens", "quantity": -5 }),
        json!({ "feature": "tokens", "quantity": 1, "ttl_secs": 0 }),
        json!({ "feature": "tokens", "quantity": 1, "ttl_secs": 3601 }),
        json!({ "feature": "tok ens", "quantity": 1 }),
        json!({ "feature": "tokens", "quantity": 1, "user_id": 1 }),
        json!("tokens"),
    ] {
        let (status, answer) = f.call(f.user, "reserve", bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let huge = json!({ "feature": "tokens", "quantity": 1, "pad": "x".repeat(10_000) });
    assert_eq!(f.call(f.user, "reserve", huge).await.0, 413);

    let more = json!({ "reservation_id": id, "quantity": 101 });
    assert_eq!(
        f.call(f.user, "commit", more).await.0,
        400,
        "more than reserved"
    );
    let commit = json!({ "reservation_id": id, "quantity": 60 });
    let first = f.call(f.user, "commit", commit.clone()).await;
    let replay = f.call(f.user, "commit", commit).await;
    assert_eq!(first.0, 200);
    assert_eq!(
        first, replay,
        "a replayed commit answers the same and counts once"
    );
    let records: i64 = f
        .app
        .query(|conn| Ok(usage_records::table.count().get_result(conn)?));
    assert_eq!(records, 1);
    assert_eq!(f.counter("tokens"), (60, 0));
    let unknown = json!({ "reservation_id": "rsv_nope" });
    assert_eq!(f.call(f.user, "release", unknown).await.0, 404);
}

async fn an_undecidable_reserve_answers_by_the_features_policy_and_is_audited(backend: Backend) {
    // A deadline (the tests' configuration waits longer than any test takes).
    let f = subscribed(backend, |config| {
        config.quotas.reserve_deadline = Duration::from_secs(1)
    })
    .await;
    // Decided once each: the app learns each feature's policy for this user.
    assert_eq!(f.reserve("runs", 1).await["allowed"], true);
    assert_eq!(f.reserve("tokens", 1).await["allowed"], true);

    // Another connection holds the customer's counters longer than the deadline (SQLite: the
    // database's write lock; PostgreSQL: the counters' rows, as a long transaction would).
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let db = f.app.database_handle().db();
    let holder = std::thread::spawn(move || {
        use diesel::connection::SimpleConnection as _;
        let mut conn = db.connection().unwrap();
        let (lock, unlock) = match &**conn {
            tollgate::db::DbConnection::Sqlite(_) => ("BEGIN EXCLUSIVE", "ROLLBACK"),
            tollgate::db::DbConnection::Postgresql(_) => {
                ("BEGIN; SELECT * FROM usage_counters FOR UPDATE", "ROLLBACK")
            }
        };
        conn.batch_execute(lock).unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.batch_execute(unlock).unwrap();
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let open = f.reserve("runs", 1).await;
    let closed = f.reserve("tokens", 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered by the deadline (the lock is held until both have answered)"
    );
    assert_eq!(
        open,
        json!({ "allowed": true, "reason": "undecided", "feature": "runs", "quantity": 1 })
    );
    assert_eq!(closed["allowed"], false, "{closed}");
    assert_eq!(closed["reason"], "undecided");
    release_tx.send(()).unwrap();
    holder.join().unwrap();

    let mut audited = Vec::new();
    for _ in 0..300 {
        audited = f.app.events("usage_undecided");
        if audited.len() == 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        audited.len(),
        2,
        "both answers audited once the database is back"
    );
    let details: Vec<Value> = audited
        .iter()
        .map(|row| serde_json::from_str(&row.details).unwrap())
        .collect();
    let policy = |feature: &str| {
        details
            .iter()
            .find(|d| d["feature"] == feature)
            .map(|d| (d["policy"].clone(), d["user_id"].clone()))
    };
    assert_eq!(policy("runs"), Some((json!("fail_open"), json!(f.user))));
    assert_eq!(
        policy("tokens"),
        Some((json!("fail_closed"), json!(f.user)))
    );
    assert_eq!(audited[0].actor.as_deref(), Some("agent-runner"));
    let held: i64 = f
        .app
        .query(|conn| Ok(usage_reservations::table.count().get_result(conn)?));
    assert_eq!(held, 2, "undecided answers hold nothing");
    assert_eq!(f.counter("runs"), (0, 1));
}

/// Of several subscriptions, the newest live one speaks for the customer, else the newest: a
/// reserve (on PostgreSQL mostly decided by one statement, see `usage_reservation::fast_hold`)
/// picks the same one as the entitlements do, and so allows exactly what they grant.
async fn the_subscription_that_speaks_for_the_customer_decides_their_reserves(backend: Backend) {
    let f = subscribed(backend, |_| {}).await;
    assert_eq!(f.reserve("tokens", 1).await["allowed"], true);
    let lite = f.app.query(|conn| {
        diesel::insert_into(plans::table)
            .values((
                plans::slug.eq("lite"),
                plans::name.eq("Lite"),
                plans::description.eq(""),
                plans::amount.eq(900),
                plans::currency.eq("usd"),
                plans::billing_interval.eq("month"),
                plans::trial_days.eq(0),
                plans::features.eq("api"),
                plans::active.eq(true),
                plans::created_at.eq(now()),
                plans::updated_at.eq(now()),
                plans::feature_lines.eq(""),
                plans::highlighted.eq(false),
            ))
            .execute(conn)?;
        Ok(plans::table
            .filter(plans::slug.eq("lite"))
            .select(plans::id)
            .first::<i64>(conn)?)
    });
    let (user, app) = (f.user, &f.app);
    let newer = |minutes: i64, status: &'static str| {
        let at = now() + chrono::Duration::minutes(minutes);
        app.query(move |conn| {
            diesel::insert_into(subscriptions::table)
                .values((
                    subscriptions::user_id.eq(user),
                    subscriptions::stripe_subscription_id.eq(format!("sub_newer{minutes}")),
                    subscriptions::plan_id.eq(Some(lite)),
                    subscriptions::stripe_price_id.eq("price_lite"),
                    subscriptions::status.eq(status),
                    subscriptions::current_period_end.eq(Some(at + chrono::Duration::days(30))),
                    subscriptions::cancel_at_period_end.eq(false),
                    subscriptions::stripe_updated_at.eq(at),
                    subscriptions::created_at.eq(at),
                    subscriptions::updated_at.eq(at),
                ))
                .execute(conn)?;
            Ok(())
        });
    };
    let plan_of = || async {
        let res = f
            .app
            .internal_get(&format!("entitlements/{}", f.user), &f.reader)
            .await;
        let body: Value = res.json().await.unwrap();
        body["plan"].clone()
    };

    // A newer subscription that ended: the live one on "Pro" still speaks.
    newer(1, "canceled");
    assert_eq!(plan_of().await, "pro");
    assert_eq!(f.reserve("tokens", 1).await["allowed"], true);

    // A newer live one, on a plan that meters nothing: it speaks, and refuses.
    newer(2, "trialing");
    assert_eq!(plan_of().await, "lite");
    let refused = f.reserve("tokens", 1).await;
    assert_eq!(
        (&refused["allowed"], &refused["reason"]),
        (&json!(false), &json!("not_in_plan")),
        "{refused}"
    );
}
