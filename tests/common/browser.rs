//! A browser: a cookie jar, no automatic redirects (tests assert them), the forms a person fills
//! in, and what a response's headers say (where it redirects, which cookie it sets).

use reqwest::redirect::Policy;

use super::html::{csrf_token_in, hidden};

pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            client,
            base: base.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The CSRF token embedded in the page at `path`.
    pub async fn csrf_token(&self, path: &str) -> String {
        let html = self.get_text(path).await;
        csrf_token_in(&html).unwrap_or_else(|| panic!("no csrf_token on {path}"))
    }

    /// Submits a form the way a browser would: fetch the page, send its token with the fields.
    pub async fn submit(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let token = self.csrf_token(page).await;
        let mut form = vec![("csrf_token", token.as_str())];
        form.extend_from_slice(fields);
        self.post_form(action, &form).await
    }

    pub async fn signup(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit(
            "/signup",
            "/signup",
            &[
                ("email", email),
                ("password", password),
                ("password_confirm", password),
            ],
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit(
            "/login",
            "/login",
            &[("email", email), ("password", password)],
        )
        .await
    }

    pub async fn logout(&self) -> reqwest::Response {
        self.submit("/account", "/logout", &[]).await
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The session cookie's `Set-Cookie` header, if the response set one.
pub fn session_set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("tollgate_session=") || v.starts_with("__Host-tollgate="))
}

/// The simulator's checkout form filled in as a person would: `number`, a future expiry, a
/// CVC and the name on the card.
pub fn card_form(number: &str) -> Vec<(&'static str, String)> {
    vec![
        ("card_number", number.to_owned()),
        ("card_expiry", "12 / 34".to_owned()),
        ("card_cvc", "123".to_owned()),
        ("cardholder_name", "Ada Lovelace".to_owned()),
    ]
}

/// The simulator's portal: posts a change, checks that the answer is a review whose form posts
/// it again with `confirm=yes`, then confirms it as that form does; the confirmation's response.
pub async fn confirm_portal_change(
    sim: &reqwest::Client,
    action_url: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let review = sim.post(action_url).form(form).send().await.unwrap();
    assert_eq!(review.status(), 200, "a change is reviewed first");
    let html = review.text().await.unwrap();
    assert_eq!(hidden(&html, "confirm"), "yes", "{html}");
    let document = scraper::Html::parse_document(&html);
    let selector = scraper::Selector::parse("form.confirm-form").unwrap();
    let action = document
        .select(&selector)
        .next()
        .and_then(|f| f.value().attr("action"))
        .unwrap_or_else(|| panic!("no confirmation form: {html}"));
    assert!(
        action_url.ends_with(action),
        "{action} confirms {action_url}"
    );
    let mut confirmed: Vec<(&str, &str)> = form.to_vec();
    confirmed.push(("confirm", "yes"));
    sim.post(action_url).form(&confirmed).send().await.unwrap()
}
