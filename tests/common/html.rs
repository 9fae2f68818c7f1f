//! Reading pages: the form fields a test needs to send back (CSRF token, operation id, …).

pub fn csrf_token_in(html: &str) -> Option<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(r#"input[name="csrf_token"]"#).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|input| input.value().attr("value"))
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// The value of the hidden input `name` on a page (e.g. a form's operation id): the
/// simulator's own test helper.
pub use stripe_sim::testing::input_value as hidden;
