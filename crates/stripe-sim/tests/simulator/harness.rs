//! A simulator with a webhook endpoint of its own that records what it receives, an
//! async-stripe client and a plain browser pointed at it, and the forms a person fills in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use secrecy::SecretString;
use stripe::{Client, ClientBuilder};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use stripe_core::event::ListEvent;
use stripe_product::price::{CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval};
use stripe_product::product::CreateProduct;
use stripe_sim::webhooks::WebhookTarget;
use stripe_sim::{SimConfig, StripeSim};

/// The endpoint secret the simulator signs its deliveries to the inbox with.
pub const WEBHOOK_SECRET: &str = "whsec_DUMMYsimulatorsecret";

/// What the test webhook endpoint received.
#[derive(Clone, Default)]
pub struct Inbox {
    pub deliveries: Arc<Mutex<Vec<(String, String)>>>,
    /// Answer 500 to this many deliveries before accepting.
    pub fail_first: Arc<Mutex<usize>>,
}

async fn receive(inbox: web::Data<Inbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let signature = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    inbox
        .deliveries
        .lock()
        .unwrap()
        .push((signature, String::from_utf8(body.to_vec()).unwrap()));
    let mut fail = inbox.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().finish()
}

pub struct Harness {
    pub sim_url: String,
    pub client: Client,
    pub browser: reqwest::Client,
    pub inbox: Inbox,
    pub sim: Arc<stripe_sim::Sim>,
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub async fn harness_with(adjust: impl FnOnce(&mut SimConfig)) -> Harness {
    let inbox = Inbox::default();
    let data = web::Data::new(inbox.clone());
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let hook = format!("http://{}/hook", receiver.addrs()[0]);
    actix_web::rt::spawn(receiver.run());
    let mut config = SimConfig::local(Some(WebhookTarget {
        url: hook,
        secret: SecretString::from(WEBHOOK_SECRET.to_owned()),
    }));
    config.retry_base = Duration::from_millis(20);
    config.max_attempts = 4;
    adjust(&mut config);
    let (server, sim_url, sim) = StripeSim::start(config).unwrap().into_parts();
    actix_web::rt::spawn(server);
    let client = ClientBuilder::new("sk_test_DUMMY")
        .url(format!("{sim_url}/"))
        .build()
        .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Harness {
        sim_url,
        client,
        browser,
        inbox,
        sim,
    }
}

impl Harness {
    pub async fn plan(&self, name: &str, amount: i64) -> String {
        let product = CreateProduct::new(name).send(&self.client).await.unwrap();
        let price = CreatePrice::new(stripe_types::Currency::USD)
            .product(product.id.as_str())
            .unit_amount(amount)
            .recurring(CreatePriceRecurring::new(
                CreatePriceRecurringInterval::Month,
            ))
            .send(&self.client)
            .await
            .unwrap();
        assert_eq!(price.unit_amount, Some(amount));
        price.id.to_string()
    }

    pub async fn checkout(&self, price: &str, reference: &str) -> stripe_checkout::CheckoutSession {
        CreateCheckoutSession::new()
            .mode(stripe_checkout::CheckoutSessionMode::Subscription)
            .client_reference_id(reference)
            .line_items(vec![CreateCheckoutSessionLineItems {
                price: Some(price.to_owned()),
                quantity: Some(1),
                ..Default::default()
            }])
            .success_url("http://merchant.example/success?session={CHECKOUT_SESSION_ID}")
            .cancel_url("http://merchant.example/pricing")
            .send(&self.client)
            .await
            .unwrap()
    }

    pub async fn pay(&self, session_url: &str, card: &str) -> reqwest::Response {
        let mut form = card_form(card);
        form.push(("email", "payer@example.com".to_owned()));
        self.browser
            .post(session_url)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Pays a new session for `price` with `card`; the customer's and subscription's ids.
    pub async fn subscribed(&self, price: &str, card: &str) -> (String, String) {
        let session = self.checkout(price, "1").await;
        assert_eq!(
            self.pay(session.url.as_deref().unwrap(), card)
                .await
                .status(),
            303
        );
        let done = RetrieveCheckoutSession::new(session.id)
            .send(&self.client)
            .await
            .unwrap();
        (
            done.customer.unwrap().id().to_string(),
            done.subscription.unwrap().id().to_string(),
        )
    }

    pub async fn portal(&self, customer: &str) -> String {
        CreateBillingPortalSession::new()
            .customer(customer)
            .return_url("http://merchant.example/account")
            .send(&self.client)
            .await
            .unwrap()
            .url
    }

    pub async fn page(&self, url: &str) -> String {
        self.browser
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn event_kinds(&self) -> Vec<String> {
        ListEvent::new()
            .limit(100)
            .send(&self.client)
            .await
            .unwrap()
            .data
            .iter()
            .map(|e| e.type_.as_str().to_owned())
            .collect()
    }

    pub async fn wait_for(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        self.wait_for_count(kind, 1).await
    }

    /// Waits until at least `count` events of `kind` were delivered (up to 10 s).
    pub async fn wait_for_count(
        &self,
        kind: &str,
        count: usize,
    ) -> Vec<(String, serde_json::Value)> {
        for _ in 0..500 {
            let found = self.delivered(kind);
            if found.len() >= count {
                return found;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {kind} delivered; got {:?}",
            self.inbox
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .map(|(_, b)| b[..60].to_owned())
                .collect::<Vec<_>>()
        );
    }

    pub fn delivered(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        self.inbox
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|(sig, body)| {
                (
                    sig.clone(),
                    serde_json::from_str::<serde_json::Value>(body).unwrap(),
                )
            })
            .filter(|(_, event)| event["type"] == kind)
            .collect()
    }
}

/// The text of the elements `css` selects on a page, each with its whitespace collapsed,
/// joined by ` | `.
pub fn texts(html: &str, css: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(css).unwrap();
    document
        .select(&selector)
        .map(|e| {
            e.text()
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub use stripe_sim::testing::{card_form, confirm_portal_change};
