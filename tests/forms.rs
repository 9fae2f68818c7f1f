//! Server-rendered forms with validation: one error summary at the top ("There is a problem",
//! focused on load, a link to each failing field), each failing field `aria-invalid` and
//! described by its message, and messages in sentence case that say exactly what to fix.

use scraper::{Html, Selector};

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    sign_up_errors_are_summarised_linked_and_described,
    sign_in_failures_link_to_the_email_field,
    byok_messages_name_the_providers_prefix,
    the_plan_form_names_the_maximum_price_and_lists_fields_in_order,
);

/// A failing form as assistive technology meets it.
pub struct FormReport {
    html: Html,
}

impl FormReport {
    pub fn parse(body: &str) -> Self {
        Self {
            html: Html::parse_document(body),
        }
    }

    fn one(&self, css: &str) -> Option<scraper::ElementRef<'_>> {
        self.html.select(&Selector::parse(css).unwrap()).next()
    }

    /// The summary's (link target, text) pairs; asserts the summary's own attributes.
    pub fn summary(&self) -> Vec<(Option<String>, String)> {
        let summary = self.one("div.error-summary").expect("an error summary");
        let attr = |name| summary.value().attr(name);
        assert_eq!(attr("role"), Some("alert"));
        assert_eq!(attr("tabindex"), Some("-1"));
        assert!(attr("autofocus").is_some(), "focus lands on the summary");
        let heading = attr("aria-labelledby").expect("labelled by its heading");
        let heading = self
            .one(&format!("#{heading}"))
            .expect("the heading exists");
        assert_eq!(heading.text().collect::<String>(), "There is a problem");
        let items = Selector::parse("li").unwrap();
        let link = Selector::parse("a").unwrap();
        summary
            .select(&items)
            .map(|li| {
                let href = li
                    .select(&link)
                    .next()
                    .and_then(|a| a.value().attr("href"))
                    .map(str::to_owned);
                (href, li.text().collect::<String>().trim().to_owned())
            })
            .collect()
    }

    pub fn has_summary(&self) -> bool {
        self.one("div.error-summary").is_some()
    }

    /// The message a failing field is described by (asserting it is marked invalid).
    pub fn field_error(&self, id: &str) -> String {
        let field = self.one(&format!("#{id}")).expect("the field exists");
        assert_eq!(field.value().attr("aria-invalid"), Some("true"), "{id}");
        let described = field.value().attr("aria-describedby").unwrap_or_default();
        let error_id = format!("{id}-error");
        assert!(
            described.split(' ').any(|d| d == error_id),
            "{id} is described by {error_id}: {described:?}"
        );
        self.one(&format!("#{error_id}"))
            .expect("the message exists")
            .text()
            .collect()
    }

    pub fn attr(&self, id: &str, name: &str) -> Option<String> {
        self.one(&format!("#{id}"))
            .and_then(|e| e.value().attr(name))
            .map(str::to_owned)
    }
}

fn link(field: &str, message: &str) -> (Option<String>, String) {
    (Some(format!("#{field}")), message.to_owned())
}

async fn sign_up_errors_are_summarised_linked_and_described(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.browser();
    let blank = FormReport::parse(&browser.get_text("/signup").await);
    assert!(!blank.has_summary(), "no summary before a submission");
    assert_eq!(blank.attr("email", "aria-invalid"), None);

    let fields = [
        ("email", "ada@example"),
        ("password", "short one"),
        ("password_confirm", "another"),
    ];
    let res = browser.submit("/signup", "/signup", &fields).await;
    assert_eq!(res.status(), 422);
    let page = FormReport::parse(&res.text().await.unwrap());
    let email = "Enter an email address in the form name@example.com.";
    let password = "Your password must be at least 12 characters long.";
    let confirm = "The passwords do not match. Type the same password in both fields.";
    assert_eq!(
        page.summary(),
        [
            link("email", email),
            link("password", password),
            link("password_confirm", confirm)
        ]
    );
    assert_eq!(page.field_error("email"), email);
    assert_eq!(page.field_error("password"), password);
    assert_eq!(page.field_error("password_confirm"), confirm);
    assert_eq!(
        page.attr("password", "aria-describedby").as_deref(),
        Some("password-help password-error"),
        "the help text still describes the field"
    );
    assert_eq!(page.attr("email", "value").as_deref(), Some("ada@example"));
    assert_eq!(page.attr("password", "value"), None, "never echoed");

    let res = browser
        .submit(
            "/signup",
            "/signup",
            &[("email", " "), ("password", ""), ("password_confirm", "")],
        )
        .await;
    let page = FormReport::parse(&res.text().await.unwrap());
    assert_eq!(
        page.summary(),
        [
            link("email", "Enter your email address."),
            link("password", "Enter a password.")
        ]
    );
    assert_eq!(app.user_count(), 0);
}

async fn sign_in_failures_link_to_the_email_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("grace@example.com").await;
    let res = app
        .browser()
        .login("grace@example.com", "wrong guess")
        .await;
    assert_eq!(res.status(), 401);
    let page = FormReport::parse(&res.text().await.unwrap());
    assert_eq!(
        page.summary(),
        [link("email", "Invalid email or password.")]
    );
    assert_eq!(page.field_error("email"), "Invalid email or password.");
    assert_eq!(
        page.attr("email", "value").as_deref(),
        Some("grace@example.com")
    );
}

async fn byok_messages_name_the_providers_prefix(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("keys@example.com").await;
    let res = browser
        .add_key("anthropic", "sk-proj-DUMMY-000000000000000000000")
        .await;
    assert_eq!(res.status(), 422);
    let page = FormReport::parse(&res.text().await.unwrap());
    let message = "This key doesn't look like an Anthropic key: those start with sk-ant-";
    assert_eq!(page.summary(), [link("api_key", message)]);
    assert_eq!(page.field_error("api_key"), message);
    assert_eq!(
        page.attr("api_key", "aria-describedby").as_deref(),
        Some("api_key-help api_key-error")
    );

    let res = browser
        .add_key("gemini", "sk-DUMMY-000000000000000000000")
        .await;
    let page = FormReport::parse(&res.text().await.unwrap());
    let message = "Choose Anthropic or OpenAI as the provider.";
    assert_eq!(page.summary(), [link("provider", message)]);
    assert_eq!(page.field_error("provider"), message);
    assert_eq!(page.attr("api_key", "aria-invalid"), None);
}

async fn the_plan_form_names_the_maximum_price_and_lists_fields_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_admin("admin@example.com").await;
    let res = browser.create_plan("", "Bad Slug", "100000000").await;
    assert_eq!(res.status(), 422);
    let page = FormReport::parse(&res.text().await.unwrap());
    let max = "The price can be at most 99999999 minor units ($999999.99).";
    let summary = page.summary();
    let fields: Vec<_> = summary.iter().map(|(href, _)| href.as_deref()).collect();
    assert_eq!(fields, [Some("#name"), Some("#slug"), Some("#amount")]);
    assert_eq!(summary[2].1, max);
    assert_eq!(page.field_error("amount"), max);
    assert_eq!(
        page.attr("amount", "aria-describedby").as_deref(),
        Some("amount-help amount-error")
    );
    assert_eq!(page.attr("currency", "aria-invalid"), None);
    assert_eq!(
        page.attr("currency", "aria-describedby").as_deref(),
        Some("currency-help")
    );

    for (amount, message) in [
        ("-5", "The price cannot be negative."),
        (
            "12.50",
            "Enter the price as a whole number of minor units (cents), e.g. 2500 for $25.00.",
        ),
    ] {
        let res = browser.create_plan("Pro", "pro", amount).await;
        let page = FormReport::parse(&res.text().await.unwrap());
        assert_eq!(page.summary(), [link("amount", message)], "{amount}");
    }
}
