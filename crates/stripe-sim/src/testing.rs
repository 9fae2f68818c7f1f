//! Helpers for tests that use the hosted pages as a person would: the card form filled in, and
//! a Billing Portal change reviewed and then confirmed. Behind the `testing` feature, for the
//! simulator's own tests and Tollgate's. They assert as they go: failing is how they report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The checkout form filled in as a person would: `number`, a future expiry, a CVC and the
/// name on the card.
pub fn card_form(number: &str) -> Vec<(&'static str, String)> {
    vec![
        ("card_number", number.to_owned()),
        ("card_expiry", "12 / 34".to_owned()),
        ("card_cvc", "123".to_owned()),
        ("cardholder_name", "Ada Lovelace".to_owned()),
    ]
}

/// The value of the `name` input on a page (a hidden field such as an operation id); panics
/// when there is none.
pub fn input_value(html: &str, name: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(&format!(r#"input[name="{name}"]"#)).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|i| i.value().attr("value"))
        .unwrap_or_else(|| panic!("no {name} input"))
        .to_owned()
}

/// The portal: posts a change, checks that the answer is a review whose form posts it again
/// with `confirm=yes`, then confirms it as that form does; the confirmation's response.
pub async fn confirm_portal_change(
    sim: &reqwest::Client,
    action_url: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let review = sim.post(action_url).form(form).send().await.unwrap();
    assert_eq!(review.status(), 200, "a change is reviewed first");
    let html = review.text().await.unwrap();
    assert_eq!(input_value(&html, "confirm"), "yes", "{html}");
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
