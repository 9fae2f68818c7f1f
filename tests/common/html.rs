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

/// The value of the hidden input `name` on a page (e.g. a form's operation id).
pub fn hidden(html: &str, name: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(&format!(r#"input[name="{name}"]"#)).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|i| i.value().attr("value"))
        .unwrap_or_else(|| panic!("no {name} input"))
        .to_owned()
}
