//! Subscription changes as Tollgate makes them: the invoice preview, a prorated update billed
//! at once, and a subscription schedule whose next phase starts at the renewal — every answer
//! read by async-stripe's own types.

use stripe_billing::invoice::{
    CreatePreviewInvoice, CreatePreviewInvoiceSubscriptionDetails,
    CreatePreviewInvoiceSubscriptionDetailsItems,
    CreatePreviewInvoiceSubscriptionDetailsProrationBehavior,
};
use stripe_billing::subscription::{
    CreateSubscription, CreateSubscriptionItems, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_billing::subscription_schedule::{
    CreateSubscriptionSchedule, ReleaseSubscriptionSchedule, RetrieveSubscriptionSchedule,
    UpdateSubscriptionSchedule, UpdateSubscriptionSchedulePhases,
    UpdateSubscriptionSchedulePhasesEndDate, UpdateSubscriptionSchedulePhasesItems,
    UpdateSubscriptionSchedulePhasesStartDate,
};
use stripe_core::customer::CreateCustomer;

use crate::harness::{Harness, harness};

/// A customer on `price` (a trial, so that no payment method is needed), quantity 1.
async fn subscription(h: &Harness, price: &str) -> stripe_billing::Subscription {
    let customer = CreateCustomer::new().send(&h.client).await.unwrap();
    CreateSubscription::new()
        .customer(customer.id.as_str())
        .items(vec![CreateSubscriptionItems {
            price: Some(price.to_owned()),
            quantity: Some(1),
            ..CreateSubscriptionItems::new()
        }])
        .trial_period_days(30u32)
        .send(&h.client)
        .await
        .unwrap()
}

fn prorate(amount: i64, remaining: i64, span: i64) -> i64 {
    (amount * remaining * 2 + span) / (2 * span)
}

#[actix_web::test]
async fn previews_and_updates_prorate_as_stripe_does() {
    let h = harness().await;
    let basic = h.plan("Basic", 1_000).await;
    let pro = h.plan("Pro", 2_500).await;
    let sub = subscription(&h, &basic).await;
    let item = &sub.items.data[0];
    let (start, end) = (item.current_period_start, item.current_period_end);
    let at = start + (end - start) / 3;
    let preview = CreatePreviewInvoice::new()
        .subscription(sub.id.as_str())
        .subscription_details(CreatePreviewInvoiceSubscriptionDetails {
            items: Some(vec![CreatePreviewInvoiceSubscriptionDetailsItems {
                id: Some(item.id.to_string()),
                price: Some(pro.clone()),
                quantity: Some(2),
                ..Default::default()
            }]),
            proration_behavior: Some(
                CreatePreviewInvoiceSubscriptionDetailsProrationBehavior::AlwaysInvoice,
            ),
            proration_date: Some(at),
            ..Default::default()
        })
        .send(&h.client)
        .await
        .unwrap();
    let lines = &preview.lines.data;
    assert_eq!(lines.len(), 3, "credit, charge, next period");
    let remaining = end - at;
    assert_eq!(lines[0].amount, -prorate(1_000, remaining, end - start));
    assert_eq!(lines[1].amount, prorate(5_000, remaining, end - start));
    assert_eq!(lines[2].amount, 5_000);
    assert_eq!(lines[2].period.start, end);
    assert_eq!(preview.next_payment_attempt, Some(end));

    let updated = UpdateSubscription::new(sub.id.as_str())
        .items(vec![UpdateSubscriptionItems {
            id: Some(item.id.to_string()),
            price: Some(pro.clone()),
            quantity: Some(2),
            ..Default::default()
        }])
        .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
        .proration_date(at)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(updated.items.data[0].quantity, Some(2));
    assert_eq!(updated.items.data[0].price.id.as_str(), pro);
    let invoices = h.wait_for_count("invoice.paid", 2).await;
    let update = invoices
        .iter()
        .find(|(_, e)| e["data"]["object"]["billing_reason"] == "subscription_update")
        .expect("the proration is invoiced at once");
    assert_eq!(
        update.1["data"]["object"]["amount_due"],
        lines[0].amount + lines[1].amount
    );
}

#[actix_web::test]
async fn a_schedules_next_phase_starts_at_the_renewal() {
    let h = harness().await;
    let pro = h.plan("Pro", 2_500).await;
    let basic = h.plan("Basic", 1_000).await;
    let sub = subscription(&h, &pro).await;
    let item = &sub.items.data[0];
    let schedule = CreateSubscriptionSchedule::new()
        .from_subscription(sub.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(schedule.phases.len(), 1);
    assert_eq!(schedule.phases[0].end_date, item.current_period_end);
    let phases = vec![
        UpdateSubscriptionSchedulePhases {
            start_date: Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
                item.current_period_start,
            )),
            end_date: Some(UpdateSubscriptionSchedulePhasesEndDate::Timestamp(
                item.current_period_end,
            )),
            ..UpdateSubscriptionSchedulePhases::new(vec![UpdateSubscriptionSchedulePhasesItems {
                price: Some(pro.clone()),
                quantity: Some(1),
                ..Default::default()
            }])
        },
        UpdateSubscriptionSchedulePhases::new(vec![UpdateSubscriptionSchedulePhasesItems {
            price: Some(basic.clone()),
            quantity: Some(3),
            ..Default::default()
        }]),
    ];
    let updated = UpdateSubscriptionSchedule::new(schedule.id.as_str())
        .phases(phases)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(updated.phases.len(), 2);
    assert_eq!(updated.phases[1].start_date, item.current_period_end);

    let renewed: serde_json::Value = h
        .browser
        .post(format!("{}/_sim/subscriptions/{}/renew", h.sim_url, sub.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = &renewed["subscription"]["items"]["data"][0];
    assert_eq!(item["price"]["id"], basic.as_str());
    assert_eq!(item["quantity"], 3);

    // A schedule is released (its subscription carries on) and cannot be released twice.
    let other = subscription(&h, &pro).await;
    let schedule = CreateSubscriptionSchedule::new()
        .from_subscription(other.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    let released = ReleaseSubscriptionSchedule::new(schedule.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        released.status,
        stripe_billing::SubscriptionScheduleStatus::Released
    );
    assert!(
        ReleaseSubscriptionSchedule::new(schedule.id.as_str())
            .send(&h.client)
            .await
            .is_err()
    );
    let again = RetrieveSubscriptionSchedule::new(schedule.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        again.released_subscription.as_deref(),
        Some(other.id.as_str())
    );
}

#[actix_web::test]
async fn a_scheduled_subscriptions_cancellation_is_refused_until_the_schedule_is_released() {
    let h = harness().await;
    let pro = h.plan("Pro", 2_500).await;
    let sub = subscription(&h, &pro).await;
    let schedule = CreateSubscriptionSchedule::new()
        .from_subscription(sub.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    let refused = UpdateSubscription::new(sub.id.as_str())
        .cancel_at_period_end(true)
        .send(&h.client)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("updating any cancelation behavior directly is not allowed"),
        "{refused}"
    );
    ReleaseSubscriptionSchedule::new(schedule.id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    let canceled = UpdateSubscription::new(sub.id.as_str())
        .cancel_at_period_end(true)
        .send(&h.client)
        .await
        .unwrap();
    assert!(canceled.cancel_at_period_end);
    assert!(canceled.schedule.is_none());
}
