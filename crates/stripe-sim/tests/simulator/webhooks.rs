//! Signed webhook deliveries with retries, and the `/_sim` test controls that renew, fail,
//! dispute and redeliver.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::checkout_session::RetrieveCheckoutSession;
use stripe_core::event::ListEvent;

use crate::harness::{WEBHOOK_SECRET, harness};

#[actix_web::test]
async fn every_state_change_is_delivered_signed_and_retried() {
    let h = harness().await;
    *h.inbox.fail_first.lock().unwrap() = 2;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "11").await;
    h.pay(session.url.as_deref().unwrap(), "4242424242424242")
        .await;
    for kind in [
        "checkout.session.completed",
        "customer.created",
        "customer.subscription.created",
        "invoice.paid",
        "payment_intent.succeeded",
    ] {
        let delivered = h.wait_for(kind).await;
        for (signature, event) in &delivered {
            // Bodies are re-serialized here, so check against the raw bytes the receiver got.
            let raw = h
                .inbox
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| s == signature)
                .unwrap()
                .1
                .clone();
            let parsed: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(&parsed, event);
            assert!(verify_raw(signature, &raw), "{kind} signature");
        }
    }
    let completed = &h.delivered("checkout.session.completed")[0].1;
    assert_eq!(completed["data"]["object"]["client_reference_id"], "11");
    assert_eq!(completed["data"]["object"]["payment_status"], "paid");
    // The first two deliveries were refused with 500: each of those events is retried (after a
    // backoff, so possibly after the deliveries awaited above) until a 200.
    let mut attempts: Vec<serde_json::Value> = Vec::new();
    for _ in 0..500 {
        attempts = h
            .browser
            .get(format!("{}/_sim/deliveries", h.sim_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refused: Vec<_> = attempts.iter().filter(|a| a["status"] == 500).collect();
        let all_retried = refused.iter().all(|failure| {
            attempts.iter().any(|a| {
                a["event_id"] == failure["event_id"]
                    && a["status"] == 200
                    && a["attempt"].as_u64() > failure["attempt"].as_u64()
            })
        });
        if refused.len() == 2 && all_retried {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the two refused deliveries were not both retried to success: {attempts:?}");
}

fn verify_raw(signature: &str, raw: &str) -> bool {
    let (t, v1) = signature.split_once(',').unwrap();
    let (t, v1) = (
        t.strip_prefix("t=").unwrap(),
        v1.strip_prefix("v1=").unwrap(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{raw}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

#[actix_web::test]
async fn test_controls_renew_fail_dispute_and_redeliver_out_of_order() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "13").await;
    h.pay(session.url.as_deref().unwrap(), "4242424242424242")
        .await;
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let sub_id = done.subscription.unwrap().id().to_string();
    let before = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();

    let renew = |outcome: &str| {
        h.browser
            .post(format!(
                "{}/_sim/subscriptions/{sub_id}/renew?outcome={outcome}",
                h.sim_url
            ))
            .send()
    };
    assert_eq!(renew("paid").await.unwrap().status(), 200);
    let renewed = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        renewed.items.data[0].current_period_start,
        before.items.data[0].current_period_end
    );
    assert_eq!(
        h.wait_for_count("invoice.paid", 2).await.len(),
        2,
        "first period and renewal"
    );

    assert_eq!(renew("failed").await.unwrap().status(), 200);
    let failed = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(failed.status, stripe_billing::SubscriptionStatus::PastDue);
    let payment_failed = h.wait_for("invoice.payment_failed").await;
    assert_eq!(payment_failed[0].1["data"]["object"]["status"], "open");
    h.wait_for("payment_intent.payment_failed").await;

    let pi = h.delivered("payment_intent.succeeded")[0].1["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = h
        .browser
        .post(format!("{}/_sim/disputes?payment_intent={pi}", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dispute = h.wait_for("charge.dispute.created").await;
    assert_eq!(
        dispute[0].1["data"]["object"]["payment_intent"],
        pi.as_str()
    );

    // Re-deliver two events, newest first: the endpoint sees them in that order.
    let events = ListEvent::new().limit(2).send(&h.client).await.unwrap();
    let (newer, older) = (events.data[0].id.to_string(), events.data[1].id.to_string());
    let count = h.inbox.deliveries.lock().unwrap().len();
    let res = h
        .browser
        .post(format!(
            "{}/_sim/events/deliver?ids={newer},{older}",
            h.sim_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for _ in 0..500 {
        if h.inbox.deliveries.lock().unwrap().len() >= count + 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = h.inbox.deliveries.lock().unwrap().clone();
    let ids: Vec<String> = deliveries[count..]
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, [newer.clone(), older]);
    let res = h
        .browser
        .post(format!("{}/_sim/events/{newer}/redeliver", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}
