//! Past-due invoices: the hosted invoice page pays an open invoice with a test card (the
//! subscription is active again), a canceled subscription's open invoice stays open but is no
//! longer collected (as Stripe does), and every invoice has a PDF.

use stripe_billing::invoice::RetrieveInvoice;
use stripe_billing::subscription::{CancelSubscription, RetrieveSubscription};

use crate::harness::{Harness, card_form, harness};

/// A subscription whose renewal failed: its id and the open invoice's.
async fn past_due(h: &Harness) -> (String, String) {
    let price = h.plan("Pro", 2_500).await;
    let (_, sub) = h.subscribed(&price, "4242424242424242").await;
    let renew = format!(
        "{}/_sim/subscriptions/{sub}/renew?outcome=failed",
        h.sim_url
    );
    let res: serde_json::Value = h
        .browser
        .post(&renew)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice = res["subscription"]["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned();
    (sub, invoice)
}

fn payment_events(kinds: &[String]) -> usize {
    kinds
        .iter()
        .filter(|k| k.starts_with("payment_intent."))
        .count()
}

#[actix_web::test]
async fn the_hosted_invoice_page_pays_an_open_invoice() {
    let h = harness().await;
    let (sub, invoice) = past_due(&h).await;
    let open = RetrieveInvoice::new(invoice.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(open.status.as_ref().map(|s| s.as_str()), Some("open"));
    assert!(open.next_payment_attempt.is_some(), "Stripe will retry");
    let url = open.hosted_invoice_url.clone().unwrap();
    assert_eq!(url, format!("{}/i/{invoice}", h.sim_url));

    let page = h.page(&url).await;
    assert!(
        page.contains(&format!(r#"action="/i/{invoice}""#)),
        "{page}"
    );
    assert!(page.contains("Pay $25.00"), "{page}");
    let incomplete = h
        .browser
        .post(&url)
        .form(&[("card_number", "4242")])
        .send()
        .await
        .unwrap();
    assert_eq!(incomplete.status(), 422);
    let declined = h
        .browser
        .post(&url)
        .form(&card_form("4000 0000 0000 0002"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402);
    assert!(declined.text().await.unwrap().contains("declined"));
    let paid = h
        .browser
        .post(&url)
        .form(&card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);

    let settled = RetrieveInvoice::new(invoice.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(settled.status.as_ref().map(|s| s.as_str()), Some("paid"));
    assert_eq!(settled.amount_paid, 2_500);
    assert_eq!(settled.next_payment_attempt, None);
    let sub = RetrieveSubscription::new(sub.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.status.as_str(), "active");
    h.wait_for("invoice.paid").await;
    let updates = h.wait_for_count("customer.subscription.updated", 2).await;
    assert_eq!(
        updates.last().unwrap().1["data"]["object"]["status"],
        "active"
    );
    assert!(!h.page(&url).await.contains("Pay $25.00"), "paid: no form");
    let again = h
        .browser
        .post(&url)
        .form(&card_form("4242 4242 4242 4242"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a paid invoice is not charged again");

    let pdf = h
        .browser
        .get(settled.invoice_pdf.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-1.4"));
}

#[actix_web::test]
async fn canceling_a_past_due_subscription_stops_collecting_its_open_invoice() {
    let h = harness().await;
    let (sub, invoice) = past_due(&h).await;
    let canceled = CancelSubscription::new(sub.as_str())
        .invoice_now(false)
        .prorate(false)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(canceled.status.as_str(), "canceled");
    // As Stripe does: the invoice stays open, but nobody collects it any more.
    let left = RetrieveInvoice::new(invoice.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(left.status.as_ref().map(|s| s.as_str()), Some("open"));
    assert_eq!(left.next_payment_attempt, None);
    assert_eq!(left.auto_advance, Some(false));
    assert!(left.status_transitions.voided_at.is_none());
    h.wait_for("invoice.updated").await;

    let charged = payment_events(&h.event_kinds().await);
    let retry = format!("{}/_sim/invoices/{invoice}/retry?outcome=paid", h.sim_url);
    assert_eq!(h.browser.post(&retry).send().await.unwrap().status(), 409);
    let renew = format!(
        "{}/_sim/subscriptions/{sub}/renew?outcome=failed",
        h.sim_url
    );
    assert_eq!(h.browser.post(&renew).send().await.unwrap().status(), 200);
    assert_eq!(payment_events(&h.event_kinds().await), charged, "no charge");
}

#[actix_web::test]
async fn stripe_retries_an_open_invoice_until_it_is_paid() {
    let h = harness().await;
    let (sub, invoice) = past_due(&h).await;
    let retry = |outcome: &str| {
        format!(
            "{}/_sim/invoices/{invoice}/retry?outcome={outcome}",
            h.sim_url
        )
    };
    assert_eq!(
        h.browser
            .post(retry("failed"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let still = RetrieveInvoice::new(invoice.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(still.attempt_count, 2);
    assert_eq!(still.status.as_ref().map(|s| s.as_str()), Some("open"));
    assert_eq!(
        h.browser.post(retry("paid")).send().await.unwrap().status(),
        200
    );
    let sub = RetrieveSubscription::new(sub.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.status.as_str(), "active");
    assert_eq!(
        h.browser.post(retry("paid")).send().await.unwrap().status(),
        409
    );
}
