//! The list endpoints as Stripe pages them: newest first, `limit`, `starting_after` /
//! `ending_before`, `has_more`, `created[…]` and each resource's filters; async-stripe reads
//! every page.

use std::collections::HashSet;

use stripe_billing::subscription::{CancelSubscription, ListSubscription, ListSubscriptionStatus};
use stripe_core::customer::{CreateCustomer, ListCustomer};
use stripe_core::event::ListEvent;

use crate::harness::{Harness, harness};

/// A `GET` on the API with `query`: its status and JSON body.
async fn list(h: &Harness, path: &str, query: &str) -> (u16, serde_json::Value) {
    let res = h
        .browser
        .get(format!("{}{path}?{query}", h.sim_url))
        .bearer_auth("sk_test_DUMMY")
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every id `path` lists under `query`, two at a time, following `starting_after`.
async fn page_through(h: &Harness, path: &str, query: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor
            .as_ref()
            .map(|c| format!("&starting_after={c}"))
            .unwrap_or_default();
        let (status, page) = list(h, path, &format!("limit=2&{query}{after}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["object"], "list");
        assert_eq!(page["url"], path);
        let got = ids(&page);
        assert!(got.len() <= 2);
        all.extend(got.clone());
        if page["has_more"] == false {
            return all;
        }
        cursor = got.last().cloned();
    }
}

#[actix_web::test]
async fn customers_page_newest_first_and_filter_by_email() {
    let h = harness().await;
    let mut created = Vec::new();
    for email in [
        "a@example.com",
        "b@example.com",
        "a@example.com",
        "c@example.com",
        "d@example.com",
    ] {
        let customer = CreateCustomer::new()
            .email(email)
            .send(&h.client)
            .await
            .unwrap();
        created.push(customer.id.to_string());
    }
    let all = page_through(&h, "/v1/customers", "").await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        5,
        "no customer listed twice"
    );
    assert_eq!(created.iter().collect::<HashSet<_>>(), all.iter().collect());

    let (_, by_email) = list(&h, "/v1/customers", "email=a%40example.com").await;
    let mut a = ids(&by_email);
    a.sort();
    let mut expected = vec![created[0].clone(), created[2].clone()];
    expected.sort();
    assert_eq!(a, expected);
    let (_, none) = list(&h, "/v1/customers", "email=A%40example.com").await;
    assert!(ids(&none).is_empty(), "the email filter is exact");

    // ending_before walks back.
    let (_, first) = list(&h, "/v1/customers", "limit=2").await;
    let second_id = ids(&first)[1].clone();
    let (_, before) = list(&h, "/v1/customers", &format!("ending_before={second_id}")).await;
    assert_eq!(ids(&before), [ids(&first)[0].clone()]);

    for bad in ["limit=0", "limit=101", "limit=ten", "created[gte]=soon"] {
        let (status, body) = list(&h, "/v1/customers", bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
    let (status, _) = list(&h, "/v1/customers", "starting_after=cus_nope").await;
    assert_eq!(status, 404);
    let res = h
        .browser
        .get(format!("{}/v1/customers", h.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "lists need the key");

    // async-stripe reads the page.
    let typed = ListCustomer::new().limit(3).send(&h.client).await.unwrap();
    assert_eq!(typed.data.len(), 3);
    assert!(typed.has_more);
    let typed = ListCustomer::new()
        .email("b@example.com")
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(typed.data[0].id.as_str(), created[1]);
}

#[actix_web::test]
async fn subscriptions_and_invoices_list_by_customer_and_status() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    let (ada, ada_sub) = h.subscribed(&price, "4242 4242 4242 4242").await;
    let (bob, bob_sub) = h.subscribed(&price, "4242 4242 4242 4242").await;
    CancelSubscription::new(bob_sub.as_str())
        .send(&h.client)
        .await
        .unwrap();

    let (_, live) = list(&h, "/v1/subscriptions", "").await;
    assert_eq!(
        ids(&live),
        [ada_sub.as_str()],
        "canceled ones are left out by default"
    );
    let all = page_through(&h, "/v1/subscriptions", "status=all").await;
    assert_eq!(
        all.iter().collect::<HashSet<_>>(),
        [&ada_sub, &bob_sub].into()
    );
    let (_, bobs) = list(
        &h,
        "/v1/subscriptions",
        &format!("customer={bob}&status=all"),
    )
    .await;
    assert_eq!(ids(&bobs), [bob_sub.as_str()]);
    let (_, ended) = list(&h, "/v1/subscriptions", "status=canceled").await;
    assert_eq!(ids(&ended), [bob_sub.as_str()]);
    let (_, by_price) = list(&h, "/v1/subscriptions", &format!("price={price}")).await;
    assert_eq!(ids(&by_price), [ada_sub.as_str()]);
    let (status, _) = list(&h, "/v1/subscriptions", "status=sleeping").await;
    assert_eq!(status, 400);

    let typed = ListSubscription::new()
        .customer(ada.as_str())
        .status(ListSubscriptionStatus::All)
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(typed.data.len(), 1);
    assert_eq!(typed.data[0].id.as_str(), ada_sub);

    let (_, invoices) = list(&h, "/v1/invoices", &format!("customer={ada}")).await;
    let data = invoices["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "invoice");
    assert_eq!(data[0]["customer"], ada.as_str());
    let (_, paid) = list(
        &h,
        "/v1/invoices",
        &format!("subscription={bob_sub}&status=paid"),
    )
    .await;
    assert_eq!(ids(&paid).len(), 1);
    let (_, open) = list(&h, "/v1/invoices", "status=open").await;
    assert!(ids(&open).is_empty());
}

#[actix_web::test]
async fn events_list_by_creation_time_and_type_page_by_page() {
    let h = harness().await;
    let price = h.plan("Pro", 2_500).await;
    h.subscribed(&price, "4242 4242 4242 4242").await;
    let now = chrono::Utc::now().timestamp();
    let all = page_through(&h, "/v1/events", "").await;
    assert!(all.len() > 4, "{all:?}");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    let (_, newest) = list(&h, "/v1/events", "limit=100").await;
    assert_eq!(
        ids(&newest),
        all,
        "paging returns the one newest-first order"
    );

    let (_, future) = list(&h, "/v1/events", &format!("created[gt]={now}")).await;
    assert!(ids(&future).is_empty());
    let (_, past) = list(&h, "/v1/events", &format!("created[lte]={now}&limit=100")).await;
    assert_eq!(ids(&past), all);
    let (_, since) = list(
        &h,
        "/v1/events",
        &format!("created[gte]={}&limit=100", now - 60),
    )
    .await;
    assert_eq!(ids(&since), all);
    let typed = ListEvent::new()
        .type_("customer.subscription.created")
        .send(&h.client)
        .await
        .unwrap();
    assert_eq!(typed.data.len(), 1);
}
