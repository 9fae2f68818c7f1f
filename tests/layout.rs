//! The layout on a phone, as far as markup and the stylesheet decide it: the header's links
//! sit in a "Menu" disclosure that needs no script, and admin tables scroll inside their card
//! instead of widening the page. (That nothing overflows at 390 px is checked in a real
//! browser by the browser suite.)

use scraper::{ElementRef, Html, Selector};

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    the_header_links_sit_in_a_menu_disclosure_that_needs_no_script,
    admin_tables_scroll_inside_their_card,
);

fn select<'a>(doc: &'a Html, css: &str) -> Vec<ElementRef<'a>> {
    let selector = Selector::parse(css).unwrap();
    doc.select(&selector).collect()
}

fn text(element: &ElementRef<'_>) -> String {
    element.text().collect::<String>().trim().to_owned()
}

/// The links in the header's menu, by href (the sign-out form by its action).
fn menu_targets(html: &str) -> Vec<String> {
    let doc = Html::parse_document(html);
    let summaries = select(&doc, "header nav > details.nav-menu > summary");
    assert_eq!(summaries.len(), 1, "one menu toggle: {html}");
    assert_eq!(
        text(&summaries[0]),
        "Menu",
        "the toggle has a visible label"
    );
    assert!(
        select(&doc, "header ul.nav-links").iter().all(|ul| ul
            .parent()
            .and_then(ElementRef::wrap)
            .is_some_and(|p| p.value().name() == "details")),
        "every header link is inside the disclosure"
    );
    select(
        &doc,
        "details.nav-menu a[href], details.nav-menu form[action]",
    )
    .iter()
    .filter_map(|e| e.value().attr("href").or(e.value().attr("action")))
    .map(str::to_owned)
    .collect()
}

async fn the_header_links_sit_in_a_menu_disclosure_that_needs_no_script(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anonymous = app.browser().get_text("/").await;
    assert_eq!(menu_targets(&anonymous), ["/pricing", "/login", "/signup"]);
    assert!(!anonymous.contains("<script") && !anonymous.contains(" style="));

    let customer = app.signed_in_customer("menu@example.com").await;
    let page = customer.get_text("/account").await;
    assert_eq!(
        menu_targets(&page),
        [
            "/pricing",
            "/account",
            "/account/usage",
            "/account/keys",
            "/logout"
        ]
    );

    // The stylesheet hides the toggle and shows the links on wide screens only; on a phone
    // the open menu is a panel under the header.
    let css = app.browser().get_text("/static/app.css").await;
    let wide = css
        .split("@supports selector(::details-content)")
        .nth(1)
        .expect("wide screens show the links where the browser can style the disclosure");
    assert!(wide.contains("@media (min-width: 641px)"), "{wide}");
    assert!(wide.contains(".nav-menu-toggle { display: none; }"));
    assert!(wide.contains(".nav-menu::details-content { content-visibility: visible; }"));
    assert!(css.contains(".nav-menu > .nav-links { position: absolute; top: 100%;"));
}

async fn admin_tables_scroll_inside_their_card(backend: Backend) {
    let (app, admin) = TestApp::with_pro_plan(backend).await;
    let customer = app.signed_in_customer("tables@example.com").await;
    app.subscribe(&customer, "pro").await;
    let mut tables = 0;
    for path in [
        "/admin",
        "/admin/plans",
        "/admin/customers",
        "/admin/webhooks",
    ] {
        let html = admin.get_text(path).await;
        let doc = Html::parse_document(&html);
        let found = select(&doc, "table");
        assert!(!found.is_empty(), "{path} lists something: {html}");
        for table in found {
            let wrap = table
                .ancestors()
                .filter_map(ElementRef::wrap)
                .find(|a| {
                    a.value()
                        .has_class("table-wrap", scraper::CaseSensitivity::CaseSensitive)
                })
                .unwrap_or_else(|| panic!("{path}: a table outside .table-wrap"));
            // A scrollable region a keyboard can reach and a screen reader can name.
            assert_eq!(wrap.value().attr("tabindex"), Some("0"), "{path}");
            assert_eq!(wrap.value().attr("role"), Some("region"), "{path}");
            assert!(
                wrap.value()
                    .attr("aria-label")
                    .is_some_and(|l| !l.is_empty())
            );
            let card = wrap.parent().and_then(ElementRef::wrap).unwrap();
            assert!(
                card.value()
                    .has_class("panel", scraper::CaseSensitivity::CaseSensitive)
            );
            tables += 1;
        }
        assert!(
            select(&doc, "nav.subnav").len() == 1,
            "{path} has the admin subnav"
        );
    }
    assert_eq!(tables, 4);
    let css = admin.get_text("/static/app.css").await;
    assert!(css.contains(".table-wrap { overflow-x: auto; }"));
    // Visually hidden cells are absolutely positioned: the wrap must hold them, or they
    // widen the page past the card.
    assert!(css.contains(".table-wrap { position: relative;"));
    assert!(css.contains(".subnav { flex-wrap: wrap;"));
    assert!(css.contains(".stats { flex-wrap: wrap; }"));
}
