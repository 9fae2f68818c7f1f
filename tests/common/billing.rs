//! The billing paths tests walk again and again: an admin's plan form, a customer choosing a
//! plan on /pricing, paying on the simulator's hosted Checkout and coming back subscribed.

use super::app::TestApp;
use super::browser::{Browser, location};
use super::db::Backend;
use super::stripe::card_form;

/// The admin's plan form filled in for `name` (`slug`), `amount` cents a month.
pub fn plan_fields<'a>(name: &'a str, slug: &'a str, amount: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("slug", slug),
        ("description", "Everything a small team needs"),
        ("amount", amount),
        ("currency", "usd"),
        ("interval", "month"),
        ("trial_days", "0"),
        ("features", "agents:unlimited\nbyok"),
    ]
}

impl Browser {
    /// An admin creates a plan on /admin/plans/new.
    pub async fn create_plan(&self, name: &str, slug: &str, amount: &str) -> reqwest::Response {
        let fields = plan_fields(name, slug, amount);
        self.submit_operation("/admin/plans/new", "/admin/plans", &fields)
            .await
    }

    /// A customer chooses the plan `slug` on /pricing (Checkout, the portal or a confirmation).
    pub async fn choose_plan(&self, slug: &str) -> reqwest::Response {
        self.submit_operation("/pricing", "/billing/checkout", &[("plan", slug)])
            .await
    }

    /// A customer chooses the plan `slug` billed by `interval` (`month`, `year`, or empty).
    pub async fn choose_plan_billed(&self, slug: &str, interval: &str) -> reqwest::Response {
        self.submit_operation(
            "/pricing",
            "/billing/checkout",
            &[("plan", slug), ("interval", interval)],
        )
        .await
    }
}

impl TestApp {
    /// An app whose admin has created the "Pro" plan ($25.00 a month).
    pub async fn with_pro_plan(backend: Backend) -> (TestApp, Browser) {
        let app = TestApp::spawn(backend).await;
        let admin = app.signed_in_admin("admin@example.com").await;
        assert_eq!(admin.create_plan("Pro", "pro", "2500").await.status(), 303);
        (app, admin)
    }

    /// Pays on the simulator's Checkout page at `checkout_url` with the card `card`.
    pub async fn pay(&self, checkout_url: &str, card: &str) -> reqwest::Response {
        assert!(
            checkout_url.starts_with(&self.stripe),
            "{checkout_url} is the simulator's page"
        );
        let page = reqwest::get(checkout_url).await.unwrap();
        assert_eq!(page.status(), 200);
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(checkout_url)
            .form(&card_form(card))
            .send()
            .await
            .unwrap()
    }

    /// A checkout end to end: `browser` chooses `slug`, pays with 4242…, follows Stripe's
    /// redirect back to the success page (which records the subscription); its address.
    pub async fn subscribe(&self, browser: &Browser, slug: &str) -> String {
        let res = browser.choose_plan(slug).await;
        assert_eq!(res.status(), 303);
        let paid = self.pay(&location(&res), "4242 4242 4242 4242").await;
        assert_eq!(paid.status(), 303);
        let success = location(&paid);
        assert!(
            success.starts_with(&format!(
                "{}/billing/success?session_id=cs_test_",
                browser.base
            )),
            "{success}"
        );
        assert_eq!(
            browser
                .get(success.trim_start_matches(&browser.base))
                .await
                .status(),
            200
        );
        success
    }
}

/// Opens the Billing Portal from the account page and switches to the plan labelled `label`.
pub async fn switch_plan_in_the_portal(browser: &Browser, sim: &reqwest::Client, label: &str) {
    let res = browser
        .submit_operation("/account", "/billing/portal", &[])
        .await;
    assert_eq!(res.status(), 303);
    let portal = location(&res);
    assert!(portal.contains("/portal/"), "{portal}");
    let page = sim.get(&portal).send().await.unwrap().text().await.unwrap();
    let (action, price) = {
        let doc = scraper::Html::parse_document(&page);
        let form = scraper::Selector::parse(r#"form[action$="/switch"]"#).unwrap();
        let option = scraper::Selector::parse("option").unwrap();
        let form = doc.select(&form).next().expect("a switch form");
        let price = form
            .select(&option)
            .find(|o| o.text().collect::<String>().starts_with(label))
            .and_then(|o| o.value().attr("value"))
            .expect("the plan is offered")
            .to_owned();
        (form.value().attr("action").unwrap().to_owned(), price)
    };
    let origin = portal.split("/portal/").next().unwrap();
    let res = super::stripe::confirm_portal_change(
        sim,
        &format!("{origin}{action}"),
        &[("price", price.as_str())],
    )
    .await;
    assert_eq!(res.status(), 303, "the portal accepts the confirmed switch");
}
