//! The hosted Billing Portal: each change reviewed before it applies, the card on file and
//! the invoice history.

use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::checkout_session::RetrieveCheckoutSession;

use crate::harness::{card_form, confirm_portal_change, harness};

#[actix_web::test]
async fn the_portal_confirms_each_change_before_applying_it() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let other = h.plan("Team", 9_900).await;
    let (customer, sub_id) = h.subscribed(&price, "4242424242424242").await;
    let portal = h.portal(&customer).await;
    let page = h.page(&portal).await;
    assert!(
        page.contains("Cancel plan") && page.contains("payer@example.com"),
        "{page}"
    );
    assert!(page.contains(r#"href="http://merchant.example/account">← Return to Tollgate</a>"#));
    let action = |what: &str| format!("{portal}/subscriptions/{sub_id}/{what}");
    let canceling = || async {
        RetrieveSubscription::new(sub_id.as_str())
            .send(&h.client)
            .await
            .unwrap()
            .cancel_at_period_end
    };
    let updates = || async {
        h.event_kinds()
            .await
            .iter()
            .filter(|k| *k == "customer.subscription.updated")
            .count()
    };

    // A post without the confirmation only shows what would happen.
    let review = h
        .browser
        .post(action("cancel"))
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 200);
    let html = review.text().await.unwrap();
    assert!(
        html.contains("Cancel your plan") && html.contains("stays available"),
        "{html}"
    );
    assert!(!canceling().await, "not applied before it is confirmed");
    assert_eq!(updates().await, 0);

    let done = confirm_portal_change(&h.browser, &action("cancel"), &[]).await;
    assert_eq!(done.status(), 303);
    let back = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.ends_with("?done=cancel"), "{back}");
    assert!(canceling().await);
    let page = h.page(&format!("{}{back}", h.sim_url)).await;
    assert!(
        page.contains("Your plan has been canceled") && page.contains("Renew plan"),
        "{page}"
    );

    let done = confirm_portal_change(&h.browser, &action("resume"), &[]).await;
    assert_eq!(done.status(), 303);
    assert!(!canceling().await);

    let review = h
        .browser
        .post(action("switch"))
        .form(&[("price", other.as_str())])
        .send()
        .await
        .unwrap();
    let html = review.text().await.unwrap();
    assert!(
        html.contains("Confirm your updates")
            && html.contains("Pro — $25.00 / month")
            && html.contains("Team — $99.00 / month"),
        "{html}"
    );
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(
        sub.items.data[0].price.id.as_str(),
        price,
        "not switched yet"
    );
    let done =
        confirm_portal_change(&h.browser, &action("switch"), &[("price", other.as_str())]).await;
    assert_eq!(done.status(), 303);
    let sub = RetrieveSubscription::new(sub_id.as_str())
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(sub.items.data[0].price.id.as_str(), other);
    assert_eq!(updates().await, 3, "one update per confirmed change");
    let same = h
        .browser
        .post(action("switch"))
        .form(&[("price", other.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        same.status(),
        400,
        "switching to the current plan is no change"
    );

    // Another customer's subscription cannot be changed through this portal.
    let (_, theirs) = h.subscribed(&price, "4242424242424242").await;
    let res = h
        .browser
        .post(format!("{portal}/subscriptions/{theirs}/cancel"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let updated = h.wait_for("customer.subscription.updated").await;
    assert!(
        updated
            .iter()
            .any(|(_, e)| e["data"]["previous_attributes"]["cancel_at_period_end"] == false)
    );
}

#[actix_web::test]
async fn the_portal_shows_the_card_on_file_and_the_invoice_history() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let session = h.checkout(&price, "5").await;
    let mut form = card_form("5555 5555 5555 4444");
    form[1].1 = "08 / 31".to_owned();
    form.push(("email", "card@example.com".to_owned()));
    let paid = h
        .browser
        .post(session.url.as_deref().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let done = RetrieveCheckoutSession::new(session.id)
        .send(&h.client)
        .await
        .unwrap();
    let customer = done.customer.unwrap().id().to_string();
    let sub_id = done.subscription.unwrap().id().to_string();
    let renew = format!("{}/_sim/subscriptions/{sub_id}/renew", h.sim_url);
    assert_eq!(h.browser.post(&renew).send().await.unwrap().status(), 200);

    let portal = h.portal(&customer).await;
    let page = h.page(&portal).await;
    assert!(
        page.contains(r#"<span class="card-brand">Mastercard</span> <span class="card-last4">•••• 4444</span>"#)
            && page.contains("Expires 08/2031"),
        "{page}"
    );
    assert!(
        page.contains("<dd>Ada Lovelace</dd>"),
        "the name on the card names the new customer"
    );
    let doc = scraper::Html::parse_document(&page);
    let rows = scraper::Selector::parse("tr.invoice-row").unwrap();
    let rows: Vec<String> = doc
        .select(&rows)
        .map(|r| r.text().collect::<String>())
        .collect();
    assert_eq!(rows.len(), 2, "the first period and the renewal: {rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.contains("$25.00") && r.contains("Paid") && r.contains("Pro")),
        "{rows:?}"
    );

    let link = scraper::Selector::parse("a.invoice-link").unwrap();
    let href = doc
        .select(&link)
        .next()
        .unwrap()
        .value()
        .attr("href")
        .unwrap()
        .to_owned();
    let invoice = h.page(&format!("{}{href}", h.sim_url)).await;
    assert!(
        invoice.contains("Invoice SIM-")
            && invoice.contains("$25.00")
            && invoice.contains("card@example.com"),
        "{invoice}"
    );
    // An invoice is shown only through its own customer's portal.
    let (stranger, _) = h.subscribed(&price, "4242424242424242").await;
    let elsewhere = h.portal(&stranger).await;
    let invoice_id = href.rsplit('/').next().unwrap();
    let res = h
        .browser
        .get(format!("{elsewhere}/invoices/{invoice_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
