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
            // Below the server's 5-s keep-alive: a connection idle longer is not reused, as the
            // server may close it just as a request goes out (a spurious IncompleteMessage when
            // a test waits between two requests of one browser on a loaded machine).
            .pool_idle_timeout(std::time::Duration::from_secs(2))
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

    /// Submits a form that carries an operation id (billing, plans): fetch the page, send its
    /// operation id and CSRF token with the fields, as the page's form would.
    pub async fn submit_operation(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let op = hidden(&self.get_text(page).await, "operation_id");
        let mut form = fields.to_vec();
        form.push(("operation_id", &op));
        self.submit(page, action, &form).await
    }

    /// Adds (or replaces) the signed-in customer's key for `provider` on /account/keys.
    pub async fn add_key(&self, provider: &str, key: &str) -> reqwest::Response {
        self.submit(
            "/account/keys",
            "/account/keys",
            &[("provider", provider), ("api_key", key)],
        )
        .await
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
