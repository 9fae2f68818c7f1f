//! Reconciliation with Stripe (issue 15, points 9–11): `tollgate sync` replays the events
//! missed while deliveries were off (exactly once) and repairs state that drifted; `--dry-run`
//! changes nothing; `tollgate import-stripe` links Stripe's customers by e-mail and never
//! guesses; two events of one second in the wrong order are settled by what Stripe says.

use std::process::Command;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;
use tollgate::db::schema::{billing_customers, stripe_refetches, subscriptions, webhook_events};

use crate::common::{
    Backend, Browser, Outcome, TestApp, TestDatabase, location, run, stripe_event,
};
use crate::on_both_backends;

on_both_backends!(
    sync_replays_missed_events_once_and_a_dry_run_changes_nothing,
    sync_repairs_drift_for_one_account_by_email_or_id,
    import_links_customers_by_email_and_never_guesses,
    same_second_events_in_the_wrong_order_are_settled_by_stripe,
    the_console_shows_drift_and_an_admin_resyncs_one_customer,
    parked_refetches_neither_block_new_ties_nor_outlive_a_sync,
    sync_replays_an_event_missed_behind_a_later_delivered_one,
    sync_replays_nothing_before_the_first_stored_event,
    the_drift_page_spends_no_customer_budget_and_survives_a_throttle,
    import_again_brings_the_subscriptions_of_an_already_linked_customer,
    sync_repairs_a_drifted_quantity,
);

/// `tollgate {args}` on the app's database and simulator (as an operator runs it).
async fn tollgate(app: &TestApp, args: &[&str]) -> Outcome {
    tollgate_with(app.database_handle(), &app.stripe, args, true).await
}

async fn tollgate_with(
    database: TestDatabase,
    stripe: &str,
    args: &[&str],
    with_key: bool,
) -> Outcome {
    let mut env = vec![("STRIPE_API_BASE", stripe.to_owned())];
    if with_key {
        env.push(("STRIPE_SECRET_KEY", "sk_test_DUMMYtollgate".to_owned()));
    }
    let mut cmd: Command = crate::operations::tollgate(&database, &env);
    cmd.args(args);
    actix_web::web::block(move || {
        let outcome = run(&mut cmd);
        drop(database);
        outcome
    })
    .await
    .unwrap()
}

/// A form POST to the simulator's API, as Tollgate's key: its JSON answer.
async fn stripe_post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

fn stored_events(app: &TestApp) -> i64 {
    app.query(|conn| Ok(webhook_events::table.count().get_result(conn)?))
}

fn stored_event(app: &TestApp, id: &str) -> i64 {
    let id = id.to_owned();
    app.query(move |conn| {
        Ok(webhook_events::table
            .filter(webhook_events::stripe_event_id.eq(id))
            .count()
            .get_result(conn)?)
    })
}

fn cancel_at_period_end(app: &TestApp, sub: &str) -> bool {
    let sub = sub.to_owned();
    app.query(move |conn| {
        Ok(subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq(sub))
            .select(subscriptions::cancel_at_period_end)
            .first(conn)?)
    })
}

/// Waits until every event the simulator recorded has been delivered and stored.
async fn all_delivered(app: &TestApp) {
    for _ in 0..200 {
        if stored_events(app) >= app.stripe_events().await.len() as i64 {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the simulator's events were not all delivered");
}

/// An app with the Pro plan and ada subscribed to it, every event delivered; her subscription.
async fn ada_subscribed(backend: Backend) -> (TestApp, String) {
    let (app, _, sub) = ada_subscribed_with_admin(backend).await;
    (app, sub)
}

async fn ada_subscribed_with_admin(backend: Backend) -> (TestApp, Browser, String) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let ada = app.signed_in_customer("ada@example.com").await;
    app.subscribe(&ada, "pro").await;
    let sub = app.subscription_id(app.user_id("ada@example.com"));
    all_delivered(&app).await;
    (app, admin, sub)
}

async fn sync_replays_missed_events_once_and_a_dry_run_changes_nothing(backend: Backend) {
    let (app, sub) = ada_subscribed(backend).await;
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=false").await,
        200
    );
    // Cancelled at Stripe (the portal, say) while deliveries are lost.
    stripe_post(
        &app,
        &format!("/v1/subscriptions/{sub}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    let missed = app
        .stripe_events()
        .await
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.updated")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stored_event(&app, &missed), 0);
    assert!(!cancel_at_period_end(&app, &sub));

    let (code, stdout, stderr) = tollgate(&app, &["sync", "--dry-run"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "would replay event {missed} (customer.subscription.updated)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("cancel_at_period_end: false → true\n"),
        "{stdout}"
    );
    assert!(!stdout.contains(&sub), "ids are masked: {stdout}");
    assert!(
        stdout.contains("dry run: 1 customer(s) compared, 1 difference(s), 0 repaired"),
        "{stdout}"
    );
    assert_eq!(stored_event(&app, &missed), 0, "a dry run stores nothing");
    assert!(
        !cancel_at_period_end(&app, &sub),
        "a dry run repairs nothing"
    );
    assert_eq!(app.count_events("stripe_sync_run"), 0);

    let (code, stdout, stderr) = tollgate(&app, &["sync"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "replayed event {missed} (customer.subscription.updated): applied"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("1 missed event(s) replayed"), "{stdout}");
    assert!(
        cancel_at_period_end(&app, &sub),
        "the replayed event applied"
    );
    assert_eq!(stored_event(&app, &missed), 1);
    assert_eq!(app.count_events("stripe_sync_run"), 1);
    // The customer hears of the cancellation, as from a delivered event.
    assert!(
        app.notifications("email")
            .iter()
            .any(|n| n.event_type.contains("cancel")),
        "{:?}",
        app.notifications("email")
            .iter()
            .map(|n| &n.event_type)
            .collect::<Vec<_>>()
    );

    // Again: nothing missed, nothing differs.
    let (code, stdout, _) = tollgate(&app, &["sync"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains(
            "1 customer(s) compared, 0 difference(s), 0 repaired, 0 missed event(s) replayed"
        ),
        "{stdout}"
    );
    // Stripe delivering it late is a duplicate, not a replay attack.
    assert_eq!(
        app.sim_control(&format!("/_sim/events/{missed}/redeliver"))
            .await,
        202
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_event(&app, &missed), 1);
    assert_eq!(app.count_events("webhook_replay"), 0);
}

async fn sync_repairs_drift_for_one_account_by_email_or_id(backend: Backend) {
    let (app, sub) = ada_subscribed(backend).await;
    let ada = app.user_id("ada@example.com");
    // Drift with no event at all (a restored backup, a bug): the local row says canceled.
    let drifted = sub.clone();
    app.query(move |conn| {
        diesel::update(
            subscriptions::table.filter(subscriptions::stripe_subscription_id.eq(drifted)),
        )
        .set(subscriptions::status.eq("canceled"))
        .execute(conn)?;
        Ok(())
    });
    let (code, stdout, _) = tollgate(
        &app,
        &["sync", "--customer", "ADA@example.com", "--dry-run"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.contains("status: canceled → active\n"), "{stdout}");
    assert_eq!(app.subscription_status(ada), "canceled");

    let (code, stdout, stderr) = tollgate(&app, &["sync", "--customer", &ada.to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("status: canceled → active (repaired)"),
        "{stdout}"
    );
    assert!(stdout.contains("0 missed event(s) replayed"), "{stdout}");
    assert_eq!(app.subscription_status(ada), "active");
    let repaired = app.events("stripe_sync_run");
    assert!(
        repaired.iter().any(|e| e.details.contains("\"status\"")),
        "an audit row names the repaired field"
    );

    for (args, message) in [
        (
            vec!["sync", "--customer", "nobody@example.com"],
            "no account nobody@example.com",
        ),
        (vec!["sync", "--customer", "999999"], "no account 999999"),
        (
            vec!["sync", "--customer", "'; drop table users"],
            "--customer takes an account id or an e-mail address",
        ),
        (
            vec!["sync", "--customer", "admin@example.com"],
            "has no Stripe customer",
        ),
    ] {
        let (code, stdout, stderr) = tollgate(&app, &args).await;
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let (code, _, stderr) =
        tollgate_with(app.database_handle(), &app.stripe, &["sync"], false).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    // Stripe unreachable: a failure (exit 1) with a message.
    let (code, _, stderr) =
        tollgate_with(app.database_handle(), "http://127.0.0.1:9", &["sync"], true).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("tollgate: Stripe could not be reached"),
        "{stderr}"
    );
}

fn linked_customers(app: &TestApp) -> i64 {
    app.query(|conn| Ok(billing_customers::table.count().get_result(conn)?))
}

async fn import_links_customers_by_email_and_never_guesses(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    for email in ["bea@example.com", "cy@example.com", "dee@example.com"] {
        app.signed_in_customer(email).await;
    }
    let price: String = app.query(|conn| {
        use tollgate::db::schema::plans;
        Ok(plans::table
            .select(plans::stripe_price_id)
            .first::<Option<String>>(conn)?
            .unwrap())
    });
    // At Stripe already: Bea (her address in other case) on a trial, Cy twice, and a stranger.
    let bea = stripe_post(&app, "/v1/customers", &[("email", "Bea@Example.com")]).await;
    let bea = bea["id"].as_str().unwrap().to_owned();
    let trial = stripe_post(
        &app,
        "/v1/subscriptions",
        &[
            ("customer", bea.as_str()),
            ("items[0][price]", price.as_str()),
            ("trial_period_days", "14"),
        ],
    )
    .await;
    for email in ["cy@example.com", "cy@example.com", "stranger@example.com"] {
        stripe_post(&app, "/v1/customers", &[("email", email)]).await;
    }
    // Tollgate made this customer for another account: Dee's address does not claim it.
    let named = [
        ("email", "dee@example.com"),
        ("metadata[tollgate_user_id]", "424242"),
    ];
    stripe_post(&app, "/v1/customers", &named).await;
    // The admin's address: billing is for customers, never a staff account.
    stripe_post(&app, "/v1/customers", &[("email", "admin@example.com")]).await;

    let (code, stdout, stderr) = tollgate(&app, &["import-stripe"]).await;
    assert_eq!(code, 0, "{stderr}");
    let bea_id = app.user_id("bea@example.com");
    assert!(
        stdout.contains(&format!("bea@example.com → account {bea_id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("cy@example.com: 2 Stripe customers have this e-mail (not guessed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stranger@example.com: no account with this e-mail"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dee@example.com: its metadata names account 424242"),
        "{stdout}"
    );
    let admin_id = app.user_id("admin@example.com");
    assert!(
        stdout.contains(&format!("account {admin_id} is a staff account")),
        "{stdout}"
    );
    assert!(
        stdout.contains("(signed up "),
        "the operator sees when: {stdout}"
    );
    assert!(
        stdout.contains("dry run: 1 customer(s) would be linked"),
        "{stdout}"
    );
    assert!(!stdout.contains(&bea), "ids are masked: {stdout}");
    assert_eq!(linked_customers(&app), 0, "a dry run links nothing");

    let (code, stdout, stderr) = tollgate(&app, &["import-stripe", "--apply"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("linked 1 customer(s)"), "{stdout}");
    assert_eq!(linked_customers(&app), 1);
    assert_eq!(app.count_events("stripe_customer_imported"), 1);
    // Her subscription came with her.
    assert_eq!(app.subscription_id(bea_id), trial["id"].as_str().unwrap());
    assert_eq!(app.subscription_status(bea_id), "trialing");
    // The link is Tollgate's usual one: a webhook about her customer finds her.
    let found = tollgate::billing::customers::user_for_customer(
        &app.db,
        &app.token_hasher,
        &tollgate::stripe_id::CustomerId::new(bea.as_str()),
    )
    .await
    .unwrap();
    assert_eq!(found.map(|u| u.get()), Some(bea_id));

    let (code, stdout, _) = tollgate(&app, &["import-stripe", "--apply"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("linked 0 customer(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!("already account {bea_id}'s")),
        "{stdout}"
    );
    assert_eq!(linked_customers(&app), 1);
    assert_eq!(app.count_events("stripe_customer_imported"), 1);
}

fn pending_refetches(app: &TestApp) -> i64 {
    app.query(|conn| Ok(stripe_refetches::table.count().get_result(conn)?))
}

async fn same_second_events_in_the_wrong_order_are_settled_by_stripe(backend: Backend) {
    let (app, sub) = ada_subscribed(backend).await;
    // Stripe's truth: active, not cancelling.
    let truth = app.stripe_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(truth["cancel_at_period_end"], false);
    let second = chrono::Utc::now().timestamp();
    let event = |id: &str, object: &serde_json::Value| {
        let mut event = stripe_event("customer.subscription.updated", id);
        event["created"] = json!(second);
        event["data"]["object"] = object.clone();
        event
    };
    let mut stale = truth.clone();
    stale["cancel_at_period_end"] = json!(true);
    // Both in one second; the newer one (Stripe's state) arrives first.
    app.assert_webhook_accepted(&event("evt_tieNewer", &truth))
        .await;
    app.assert_webhook_accepted(&event("evt_tieOlder", &stale))
        .await;
    for _ in 0..100 {
        if !cancel_at_period_end(&app, &sub) && pending_refetches(&app) == 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !cancel_at_period_end(&app, &sub),
        "Stripe's state is stored"
    );
    assert_eq!(pending_refetches(&app), 0);
}

async fn the_console_shows_drift_and_an_admin_resyncs_one_customer(backend: Backend) {
    let (app, admin, sub) = ada_subscribed_with_admin(backend).await;
    let ada = app.user_id("ada@example.com");
    let page = admin.get_text("/admin/drift").await;
    assert!(page.contains("No drift"), "{page}");
    assert!(page.contains("1 customer(s) on this page"), "{page}");

    // Ended at Stripe, the event lost.
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=false").await,
        200
    );
    let res = reqwest::Client::new()
        .delete(format!("{}/v1/subscriptions/{sub}", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = admin.get_text("/admin/drift").await;
    assert!(
        page.contains("<td>status</td><td>active</td><td>canceled</td>"),
        "{page}"
    );
    assert!(!page.contains(&sub), "ids are masked");
    assert_eq!(
        app.subscription_status(ada),
        "active",
        "the drift page changes nothing"
    );

    let resync = format!("/admin/customers/{ada}/resync");
    let customers = admin.get_text("/admin/customers").await;
    assert!(
        customers.contains(&format!("action=\"{resync}\"")),
        "{customers}"
    );
    // Attackers: no token, a forged one, a customer, support.
    assert_eq!(admin.post_form(&resync, &[]).await.status(), 403);
    assert_eq!(
        admin
            .post_form(&resync, &[("csrf_token", "forged")])
            .await
            .status(),
        403
    );
    let mallory = app.signed_in_customer("mallory@example.com").await;
    assert_eq!(mallory.submit("/account", &resync, &[]).await.status(), 403);
    let support = app.signed_in_support("support@example.com").await;
    assert_eq!(support.submit("/admin", &resync, &[]).await.status(), 403);
    assert_eq!(app.subscription_status(ada), "active");
    assert_eq!(app.count_events("stripe_sync_run"), 0);

    let res = admin.submit("/admin/customers", &resync, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/admin/customers");
    let page = admin.get_text("/admin/customers").await;
    assert!(page.contains("1 difference(s) found, 1 repaired"), "{page}");
    assert_eq!(app.subscription_status(ada), "canceled");
    let runs = app.events("stripe_sync_run");
    assert!(
        runs.iter()
            .all(|e| e.actor.as_deref().is_some_and(|a| a.starts_with("admin"))),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|e| e.details.contains("\"user:")),
        "{runs:?}"
    );
    // Sent again: nothing left to repair.
    admin.submit("/admin/customers", &resync, &[]).await;
    let page = admin.get_text("/admin/customers").await;
    assert!(page.contains("the local state already matched"), "{page}");
    let page = admin.get_text("/admin/drift").await;
    assert!(page.contains("No drift"), "{page}");

    // Malformed and unknown ids.
    for path in [
        "/admin/customers/abc/resync",
        "/admin/customers/99999999999999999999999/resync",
    ] {
        assert_eq!(
            admin.submit("/admin/customers", path, &[]).await.status(),
            404,
            "{path}"
        );
    }
    let res = admin
        .submit("/admin/customers", "/admin/customers/424242/resync", &[])
        .await;
    assert_eq!(res.status(), 303);
    let page = admin.get_text("/admin/customers").await;
    assert!(page.contains("no Stripe customer"), "{page}");
    assert_eq!(admin.get("/admin/drift?after=abc").await.status(), 400);
    assert_eq!(mallory.get("/admin/drift").await.status(), 403);
}

/// Rows of the refetch queue as a test inserts them: `(object id, attempts)`, ada's.
fn park_refetches(app: &TestApp, user_id: i64, rows: &[(String, i64)]) {
    let rows = rows.to_vec();
    app.query(move |conn| {
        for (id, attempts) in rows {
            diesel::insert_into(stripe_refetches::table)
                .values((
                    stripe_refetches::stripe_object_id.eq(id),
                    stripe_refetches::object_type.eq("subscription"),
                    stripe_refetches::user_id.eq(user_id),
                    stripe_refetches::requested_at
                        .eq(chrono::Utc::now().naive_utc() - chrono::Duration::hours(1)),
                    stripe_refetches::attempts.eq(attempts),
                ))
                .execute(conn)?;
        }
        Ok(())
    });
}

fn refetch_pending_for(app: &TestApp, id: &str) -> i64 {
    let id = id.to_owned();
    app.query(move |conn| {
        Ok(stripe_refetches::table
            .filter(stripe_refetches::stripe_object_id.eq(id))
            .count()
            .get_result(conn)?)
    })
}

/// Attacker review, finding 5: objects that failed every attempt are parked, not read first
/// forever (they filled the batch, so a new tie was never settled), and a sync that compared
/// the object drops its request.
async fn parked_refetches_neither_block_new_ties_nor_outlive_a_sync(backend: Backend) {
    let (app, sub) = ada_subscribed(backend).await;
    let ada = app.user_id("ada@example.com");
    let dead: Vec<(String, i64)> = (0..25).map(|i| (format!("sub_gone{i:02}"), 5)).collect();
    park_refetches(&app, ada, &dead);
    let truth = app.stripe_get(&format!("/v1/subscriptions/{sub}")).await;
    let second = chrono::Utc::now().timestamp();
    let event = |id: &str, object: &serde_json::Value| {
        let mut event = stripe_event("customer.subscription.updated", id);
        event["created"] = json!(second);
        event["data"]["object"] = object.clone();
        event
    };
    let mut stale = truth.clone();
    stale["cancel_at_period_end"] = json!(true);
    app.assert_webhook_accepted(&event("evt_parkNewer", &truth))
        .await;
    app.assert_webhook_accepted(&event("evt_parkOlder", &stale))
        .await;
    for _ in 0..100 {
        if !cancel_at_period_end(&app, &sub) && refetch_pending_for(&app, &sub) == 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !cancel_at_period_end(&app, &sub),
        "the tie is settled despite parked rows"
    );
    assert_eq!(refetch_pending_for(&app, &sub), 0);
    assert_eq!(pending_refetches(&app), 25, "parked rows are not retried");

    // A request for ada's subscription that failed every attempt: a sync compares it anyway.
    park_refetches(&app, ada, &[(sub.clone(), 5)]);
    let (code, _, stderr) = tollgate(&app, &["sync"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        refetch_pending_for(&app, &sub),
        0,
        "the sync settled the request"
    );
}

/// Attacker review, finding 6: an event missed before a later one was delivered is replayed
/// (the window starts three days before the newest stored event, not at it).
async fn sync_replays_an_event_missed_behind_a_later_delivered_one(backend: Backend) {
    let (app, sub) = ada_subscribed(backend).await;
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=false").await,
        200
    );
    stripe_post(
        &app,
        &format!("/v1/subscriptions/{sub}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    let missed = app
        .stripe_events()
        .await
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.updated")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A later change, a second on, is delivered.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=true").await,
        200
    );
    stripe_post(
        &app,
        &format!("/v1/subscriptions/{sub}"),
        &[("cancel_at_period_end", "false")],
    )
    .await;
    for _ in 0..100 {
        if stored_events(&app) >= app.stripe_events().await.len() as i64 - 1 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored_event(&app, &missed), 0);

    let (code, stdout, stderr) = tollgate(&app, &["sync"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "replayed event {missed} (customer.subscription.updated)"
        )),
        "{stdout}"
    );
    assert_eq!(stored_event(&app, &missed), 1);
    assert!(
        !cancel_at_period_end(&app, &sub),
        "the older replayed event does not overwrite the newer state"
    );
}

/// Attacker review, finding 6: with no event stored yet (a fresh install, a product just
/// imported) a sync replays nothing (the customers would hear of 30 days of old news) and
/// says why.
async fn sync_replays_nothing_before_the_first_stored_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.sim_control("/_sim/webhooks?auto_deliver=false").await,
        200
    );
    stripe_post(&app, "/v1/customers", &[("email", "old@example.com")]).await;
    assert!(!app.stripe_events().await.is_empty());
    assert_eq!(stored_events(&app), 0);
    let (code, stdout, stderr) = tollgate(&app, &["sync"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("nothing to replay"), "{stdout}");
    assert!(!stdout.contains("replayed event"), "{stdout}");
    assert_eq!(stored_events(&app), 0);
}

/// Attacker review, finding 10: the drift page reads Stripe under the system's throttle key,
/// not each customer's, and a customer that cannot be read now shows as not checked instead
/// of failing the whole page.
async fn the_drift_page_spends_no_customer_budget_and_survives_a_throttle(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.stripe.throttle.subscription_per_minute = 1;
    })
    .await;
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
    let ada = app.signed_in_customer("ada@example.com").await;
    app.subscribe(&ada, "pro").await;
    let bea = app.signed_in_customer("bea@example.com").await;
    app.subscribe(&bea, "pro").await;
    all_delivered(&app).await;
    let (ada_id, bea_id) = (
        app.user_id("ada@example.com"),
        app.user_id("bea@example.com"),
    );
    // One read a minute in all: the first customer is checked, the second is not.
    let res = admin.get("/admin/drift").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("1 customer(s) on this page"), "{page}");
    assert!(page.contains("Not checked"), "{page}");
    assert!(page.contains(&format!("account {bea_id}.")), "{page}");
    // Again: nobody can be read, the page still shows (each customer's own budget was never
    // spent: per customer, the first view would have read both).
    let res = admin.get("/admin/drift").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("0 customer(s) on this page"), "{page}");
    assert!(
        page.contains(&format!("accounts {ada_id}, {bea_id}.")),
        "{page}"
    );
}

/// Attacker review, finding 11: when importing a customer's subscriptions failed after the
/// link was written, the next `import-stripe --apply` imports them (the customer is already
/// linked, not skipped).
async fn import_again_brings_the_subscriptions_of_an_already_linked_customer(backend: Backend) {
    let (app, _admin) = TestApp::with_pro_plan(backend).await;
    app.signed_in_customer("dee@example.com").await;
    let price: String = app.query(|conn| {
        use tollgate::db::schema::plans;
        Ok(plans::table
            .select(plans::stripe_price_id)
            .first::<Option<String>>(conn)?
            .unwrap())
    });
    let dee = stripe_post(&app, "/v1/customers", &[("email", "dee@example.com")]).await;
    let dee = dee["id"].as_str().unwrap().to_owned();
    let sub = stripe_post(
        &app,
        "/v1/subscriptions",
        &[
            ("customer", dee.as_str()),
            ("items[0][price]", price.as_str()),
            ("trial_period_days", "14"),
        ],
    )
    .await;
    let sub = sub["id"].as_str().unwrap().to_owned();
    let (code, _, stderr) = tollgate(&app, &["import-stripe", "--apply"]).await;
    assert_eq!(code, 0, "{stderr}");
    let dee_id = app.user_id("dee@example.com");
    assert_eq!(app.subscription_id(dee_id), sub);
    // As if Stripe had failed after the link committed: her subscription never arrived.
    app.query(move |conn| {
        Ok(
            diesel::delete(subscriptions::table.filter(subscriptions::user_id.eq(dee_id)))
                .execute(conn)?,
        )
    });
    let (code, stdout, stderr) = tollgate(&app, &["import-stripe", "--apply"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("linked 0 customer(s)"), "{stdout}");
    assert_eq!(app.subscription_id(dee_id), sub, "{stdout}");
}

async fn sync_repairs_a_drifted_quantity(backend: Backend) {
    use tollgate::db::schema::subscription_quantities as q;
    let (app, sub) = ada_subscribed(backend).await;
    let drifted = sub.clone();
    app.query(move |conn| {
        diesel::update(q::table.filter(q::stripe_subscription_id.eq(drifted)))
            .set(q::quantity.eq(5_i64))
            .execute(conn)?;
        Ok(())
    });
    let (code, stdout, stderr) = tollgate(&app, &["sync", "--customer", "ada@example.com"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("quantity: 5 → 1 (repaired)"), "{stdout}");
    let quantity: i64 = app.query(move |conn| {
        Ok(q::table
            .filter(q::stripe_subscription_id.eq(sub))
            .select(q::quantity)
            .first(conn)?)
    });
    assert_eq!(quantity, 1);
}
