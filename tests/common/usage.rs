//! Usage-based billing fixtures: an app whose customer is on a metered plan, and the usage API
//! and meter events as the tests see them.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use tollgate::db::schema::{plan_meters, usage_meters, usage_outbox};
use tollgate::service_tokens::Scope;

use super::{Backend, TestApp};

/// The metered customer's e-mail.
pub const METERED_EMAIL: &str = "metered@example.com";

/// An app whose customer is subscribed to "Pro", which meters `tokens` (1,000 included, then
/// $2.00 per 1,000); the sender polls fast. Returns the app, the customer's id and a
/// `usage:write` token.
pub async fn metered_app(backend: Backend) -> (TestApp, i64, String) {
    let app = TestApp::spawn_with(backend, |config| {
        config.usage_sender.interval = Duration::from_millis(50);
        config.usage_sender.retry_base = Duration::from_millis(50);
    })
    .await;
    let admin = app.signed_in_admin("admin@example.com").await;
    assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
    let customer = app.signed_in_customer(METERED_EMAIL).await;
    app.subscribe(&customer, "pro").await;
    app.query(|conn| {
        let plan = tollgate::db::models::plan::find_by_slug(conn, "pro")?.unwrap();
        diesel::insert_into(usage_meters::table)
            .values((
                usage_meters::feature.eq("tokens"),
                usage_meters::unit_name.eq("tokens"),
                usage_meters::event_name.eq("tg_tokens"),
                usage_meters::created_at.eq(tollgate::db::now()),
                usage_meters::updated_at.eq(tollgate::db::now()),
            ))
            .execute(conn)?;
        diesel::insert_into(plan_meters::table)
            .values((
                plan_meters::plan_id.eq(plan.id),
                plan_meters::feature.eq("tokens"),
                plan_meters::included.eq(1000),
                plan_meters::package_size.eq(1000),
                plan_meters::package_amount.eq(200),
                plan_meters::fail_open.eq(false),
                plan_meters::created_at.eq(tollgate::db::now()),
                plan_meters::updated_at.eq(tollgate::db::now()),
            ))
            .execute(conn)?;
        Ok(())
    });
    let user_id = app.user_id(METERED_EMAIL);
    let token = app.service_token("agent-runner", &[Scope::UsageWrite]);
    (app, user_id, token)
}

pub fn usage_record(user_id: i64, key: &str, quantity: i64) -> Value {
    json!({ "user_id": user_id, "feature": "tokens", "quantity": quantity, "idempotency_key": key })
}

pub async fn report_usage(app: &TestApp, token: &str, records: Vec<Value>) -> (u16, Value) {
    let res = app
        .internal_post("usage", Some(token), &json!({ "records": records }))
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub fn usage_outbox(app: &TestApp) -> Vec<(i64, i64, Option<String>)> {
    app.query(|conn| {
        Ok(usage_outbox::table
            .order(usage_outbox::usage_record_id)
            .select((
                usage_outbox::usage_record_id,
                usage_outbox::attempts,
                usage_outbox::last_error,
            ))
            .load(conn)?)
    })
}

pub async fn meter_events(app: &TestApp) -> Vec<Value> {
    app.stripe_get("/_sim/meter_events")
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (up to 15 s) until `done` holds.
pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}
