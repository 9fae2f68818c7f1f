//! Stripe's subscription is stored the same whichever path brought it: the success page's API
//! read and a signed webhook carrying the very same object write identical rows.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;
use tollgate::db::schema::subscriptions;

use crate::common::{Backend, TestApp, stripe_event};
use crate::on_both_backends;
use crate::webhooks::status_of;

on_both_backends!(the_webhook_and_the_api_store_one_subscription_alike);

/// Every column Stripe's subscription decides (not the row id nor Tollgate's own timestamps).
type Row = (
    i64,
    String,
    Option<i64>,
    String,
    String,
    Option<NaiveDateTime>,
    bool,
    Option<NaiveDateTime>,
    NaiveDateTime,
);

fn rows(app: &TestApp) -> Vec<Row> {
    app.query(|conn| {
        Ok(subscriptions::table
            .select((
                subscriptions::user_id,
                subscriptions::stripe_subscription_id,
                subscriptions::plan_id,
                subscriptions::stripe_price_id,
                subscriptions::status,
                subscriptions::current_period_end,
                subscriptions::cancel_at_period_end,
                subscriptions::trial_end,
                subscriptions::stripe_updated_at,
            ))
            .load(conn)?)
    })
}

fn forget_subscriptions(app: &TestApp) {
    app.query(|conn| Ok(diesel::delete(subscriptions::table).execute(conn)?));
}

async fn the_webhook_and_the_api_store_one_subscription_alike(backend: Backend) {
    let (app, _) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("both-paths@example.com").await;
    let success = app.subscribe(&customer, "pro").await;
    app.settle().await;
    let sub_id = rows(&app)[0].1.clone();
    // Off its default, so that it is seen to be read on both paths.
    let res = reqwest::Client::new()
        .post(format!("{}/v1/subscriptions/{sub_id}", app.stripe))
        .bearer_auth("sk_test_DUMMYtollgate")
        .form(&[("cancel_at_period_end", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.settle().await;

    // The API path alone: the success page reads the subscription from Stripe.
    forget_subscriptions(&app);
    let page = customer
        .get(success.trim_start_matches(&customer.base))
        .await;
    assert_eq!(page.status(), 200);
    let from_api = rows(&app);
    assert_eq!(from_api.len(), 1);
    let (_, _, plan, _, status, period_end, cancel, _, as_of) = &from_api[0];
    assert!(
        plan.is_some() && period_end.is_some() && *cancel,
        "{from_api:?}"
    );
    assert_eq!(status, "active");

    // The webhook path alone: the very same object, as of the same second.
    forget_subscriptions(&app);
    let mut update = stripe_event("customer.subscription.updated", "evt_1BothPathsAlike");
    update["data"]["object"] = app.stripe_get(&format!("/v1/subscriptions/{sub_id}")).await;
    update["created"] = json!(as_of.and_utc().timestamp());
    app.assert_webhook_accepted(&update).await;
    assert_eq!(status_of(&app, "evt_1BothPathsAlike"), "applied");
    assert_eq!(rows(&app), from_api);
}
