//! Audit queries (issue 13, point 4): `/admin/security` filters and pages the audit log,
//! `/admin/security/export` hands it over as CSV or JSON (admins only, audited, formulas
//! defused), and `tollgate audit list` prints the same selection from the command line.

use chrono::Duration;
use tollgate::audit::{Kind, SecurityEvent};

use crate::common::{Backend, TestApp, run};
use crate::on_both_backends;
use crate::operations::tollgate;

on_both_backends!(
    each_filter_narrows_the_list,
    pages_walk_every_row_once_while_events_arrive,
    exports_hold_the_filtered_rows_as_csv_and_json,
    only_admins_list_and_export,
    bad_filters_answer_400_with_what_to_fix,
    audit_list_prints_the_same_from_the_cli,
    an_export_stops_at_the_row_cap_and_says_so,
);

/// Writes `event` as if it happened `ago` before now.
pub(crate) fn seed(app: &TestApp, event: SecurityEvent, ago: Duration) {
    let at = tollgate::db::now() - ago;
    app.query(move |conn| tollgate::audit::write_many_at(conn, &[event], at));
}

/// The kinds in the page's event table, top to bottom.
pub(crate) fn listed_kinds(html: &str) -> Vec<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("table tbody tr td:nth-child(3) code").unwrap();
    document
        .select(&selector)
        .map(|code| code.text().collect())
        .collect()
}

/// The ids in the page's event table, top to bottom.
fn listed_ids(html: &str) -> Vec<i64> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("table tbody tr td:first-child").unwrap();
    document
        .select(&selector)
        .map(|cell| cell.text().collect::<String>().trim().parse().unwrap())
        .collect()
}

/// The page's link with `rel` (`prev`: newer, `next`: older), HTML entities decoded.
fn pager_link(html: &str, rel: &str) -> Option<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(&format!(r#"a[rel="{rel}"]"#)).unwrap();
    document
        .select(&selector)
        .next()
        .and_then(|a| a.value().attr("href"))
        .map(str::to_owned)
}

/// Four events, one per severity, each distinct in kind, actor, address and age.
fn seed_four(app: &TestApp, admin_email: &str) -> i64 {
    let admin_id = app.user_id(admin_email);
    seed(
        app,
        SecurityEvent::new(Kind::WebhookValidated)
            .actor("stripe")
            .ip("198.51.100.1"),
        Duration::hours(1),
    );
    seed(
        app,
        SecurityEvent::new(Kind::LoginFailed).ip("203.0.113.7"),
        Duration::hours(2),
    );
    seed(
        app,
        SecurityEvent::new(Kind::WebhookInvalidSignature)
            .actor("stripe")
            .ip("192.0.2.9"),
        Duration::days(3),
    );
    seed(
        app,
        SecurityEvent::new(Kind::SessionsRevoked).actor(format!("admin:{admin_id}")),
        Duration::days(10),
    );
    admin_id
}

async fn each_filter_narrows_the_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("filters@example.com").await;
    seed_four(&app, "filters@example.com");
    let kinds = |query: &'static str| {
        let admin = &admin;
        async move {
            let res = admin.get(&format!("/admin/security?{query}")).await;
            assert_eq!(res.status(), 200, "{query}");
            listed_kinds(&res.text().await.unwrap())
        }
    };
    let all = kinds("").await;
    for kind in [
        "webhook_validated",
        "login_failed",
        "webhook_invalid_signature",
        "sessions_revoked",
    ] {
        assert!(all.iter().any(|k| k == kind), "{kind} in {all:?}");
    }
    // Severity is a minimum: HIGH includes CRITICAL, excludes MEDIUM and LOW.
    let high = kinds("severity=HIGH").await;
    assert!(
        high.contains(&"webhook_invalid_signature".into()),
        "{high:?}"
    );
    assert!(high.contains(&"sessions_revoked".into()), "{high:?}");
    assert!(
        !high
            .iter()
            .any(|k| k == "login_failed" || k == "webhook_validated"),
        "{high:?}"
    );
    assert_eq!(kinds("severity=critical").await, ["sessions_revoked"]);
    assert_eq!(kinds("kind=login_failed").await, ["login_failed"]);
    assert_eq!(kinds("ip=192.0.2.9").await, ["webhook_invalid_signature"]);
    assert_eq!(
        kinds("actor=stripe").await,
        ["webhook_invalid_signature", "webhook_validated"]
    );
    // An account's email finds its events whatever its role was.
    let by_email = kinds("actor=filters%40example.com").await;
    assert!(
        by_email.contains(&"sessions_revoked".into()),
        "{by_email:?}"
    );
    assert!(!by_email.contains(&"login_failed".into()), "{by_email:?}");
    // A time range: from four days ago to two days ago holds the three-day-old event only.
    let day = |ago: i64| {
        (chrono::Utc::now() - Duration::days(ago))
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let range = format!("/admin/security?from={}&to={}", day(4), day(2));
    let html = admin.get_text(&range).await;
    assert_eq!(listed_kinds(&html), ["webhook_invalid_signature"]);
    // Filters combine.
    assert_eq!(
        kinds("severity=HIGH&actor=stripe").await,
        ["webhook_invalid_signature"]
    );
    assert!(kinds("severity=HIGH&kind=login_failed").await.is_empty());
}

async fn pages_walk_every_row_once_while_events_arrive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("pages@example.com").await;
    for i in 0..23 {
        seed(
            &app,
            SecurityEvent::new(Kind::PaymentFailed).details(serde_json::json!({ "n": i })),
            Duration::minutes(30 - i),
        );
    }
    let mut seen = Vec::new();
    let mut next = Some("/admin/security?kind=payment_failed&size=5".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let html = admin.get_text(&path).await;
        let ids = listed_ids(&html);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        seen.extend(ids);
        pages += 1;
        if pages == 2 {
            // New events arrive mid-walk: they go on top, the walk neither repeats nor skips.
            for _ in 0..3 {
                seed(
                    &app,
                    SecurityEvent::new(Kind::PaymentFailed),
                    Duration::zero(),
                );
            }
        }
        next = pager_link(&html, "next");
        if let Some(newer) = pager_link(&html, "prev") {
            assert!(newer.contains("after="), "{newer}");
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23, "{seen:?}");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 23, "no repeats: {seen:?}");
    // And back up: from the oldest page, `newer` links reach the three new ones.
    let oldest = *seen.last().unwrap();
    let mut back = Vec::new();
    let mut prev = Some(format!(
        "/admin/security?kind=payment_failed&size=10&after={}",
        oldest - 1
    ));
    while let Some(path) = prev {
        let html = admin.get_text(&path).await;
        back.extend(listed_ids(&html));
        prev = pager_link(&html, "prev");
    }
    back.sort_unstable();
    back.dedup();
    assert_eq!(back.len(), 26, "every row once, the new ones included");
}

async fn exports_hold_the_filtered_rows_as_csv_and_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("export@example.com").await;
    seed_four(&app, "export@example.com");
    // A value a spreadsheet would run as a formula.
    seed(
        &app,
        SecurityEvent::new(Kind::WebhookInvalidIp)
            .actor("=HYPERLINK(\"http://evil\")")
            .ip("192.0.2.66"),
        Duration::minutes(5),
    );
    let res = admin
        .get("/admin/security/export?format=csv&severity=HIGH")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"tollgate-audit-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let csv = res.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,occurred_at,last_seen_at,count,kind,severity,actor,ip,request_id,details"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "HIGH and above only: {csv}");
    assert!(
        rows.iter()
            .all(|r| r.contains(",HIGH,") || r.contains(",CRITICAL,")),
        "{csv}"
    );
    assert!(
        csv.contains(r#""'=HYPERLINK(""http://evil"")""#),
        "defused: {csv}"
    );
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");

    let res = admin
        .get("/admin/security/export?format=json&kind=login_failed")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".json\"")
    );
    let json: serde_json::Value = res.json().await.unwrap();
    let events = json.as_array().unwrap();
    assert_eq!(events.len(), 1, "{json}");
    assert_eq!(events[0]["kind"], "login_failed");
    assert_eq!(events[0]["severity"], "MEDIUM");
    assert_eq!(events[0]["ip"], "203.0.113.7");
    assert_eq!(events[0]["count"], 1);
    assert!(events[0]["details"].is_object());

    // Each export is audited, with who took it and what.
    let exported = app.events("audit_exported");
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0].severity, "HIGH");
    let admin_id = app.user_id("export@example.com");
    assert_eq!(
        exported[0].actor.as_deref(),
        Some(format!("admin:{admin_id}").as_str())
    );
    let details: serde_json::Value = serde_json::from_str(&exported[1].details).unwrap();
    assert_eq!(details["format"], "csv");
    assert_eq!(details["rows"], 3);
    assert_eq!(details["filter"]["severity"], "HIGH");
    // The list page links to both formats, keeping the filter.
    let page = admin.get_text("/admin/security?severity=HIGH").await;
    assert!(
        page.contains("/admin/security/export?format=csv&amp;severity=HIGH"),
        "{page}"
    );
}

async fn only_admins_list_and_export(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.signed_in_customer("nosy@example.com").await;
    for path in [
        "/admin/security",
        "/admin/security?severity=HIGH",
        "/admin/security/export?format=csv",
        "/admin/security/export?format=json",
        "/admin/security/overview",
    ] {
        assert_eq!(customer.get(path).await.status(), 403, "{path}");
        let anonymous = app.browser().get(path).await;
        assert_eq!(anonymous.status(), 303, "{path}");
        assert!(
            crate::common::location(&anonymous).starts_with("/login"),
            "{path}"
        );
    }
    assert_eq!(app.count_events("audit_exported"), 0);
}

async fn bad_filters_answer_400_with_what_to_fix(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("typos@example.com").await;
    let long = "a".repeat(101);
    let cases = [
        (
            "severity=SEVERE".to_owned(),
            "severity must be one of LOW, MEDIUM, HIGH or CRITICAL",
        ),
        (
            "kind=login_faild".to_owned(),
            "kind must be one of the listed event kinds",
        ),
        (
            "ip=10.0.0.300".to_owned(),
            "address must be an IPv4 or IPv6 address",
        ),
        (
            "from=yesterday".to_owned(),
            "from must be a UTC date or time",
        ),
        ("to=2026-13-40".to_owned(), "to must be a UTC date or time"),
        (
            "from=2026-12-02&to=2026-12-01".to_owned(),
            "the time range is empty",
        ),
        (
            format!("actor={long}"),
            "actor is too long (at most 100 characters)",
        ),
    ];
    for (query, message) in &cases {
        for path in ["/admin/security", "/admin/security/export"] {
            let res = admin.get(&format!("{path}?format=csv&{query}")).await;
            assert_eq!(res.status(), 400, "{path}?{query}");
            let html = res.text().await.unwrap();
            assert!(html.contains(message), "{path}?{query}: {html}");
            assert!(html.contains("The filter was not applied"));
        }
    }
    // A bad page position or format is a plain 400.
    assert_eq!(admin.get("/admin/security?before=abc").await.status(), 400);
    assert_eq!(
        admin
            .get("/admin/security/export?format=xlsx")
            .await
            .status(),
        400
    );
    assert_eq!(admin.get("/admin/security/export").await.status(), 400);
    assert_eq!(
        app.count_events("audit_exported"),
        0,
        "nothing was exported"
    );
}

async fn audit_list_prints_the_same_from_the_cli(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _admin = app.signed_in_admin("cli-list@example.com").await;
    seed_four(&app, "cli-list@example.com");
    let database = app.database_handle();
    let list = |args: &[&str]| run(tollgate(&database, &[]).args(["audit", "list"]).args(args));

    // A table by default: MEDIUM and above within the last day.
    let (code, table, stderr) = list(&["--severity", "MEDIUM", "--since", "24h"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("login_failed") && table.contains("203.0.113.7"),
        "{table}"
    );
    assert!(
        !table.contains("webhook_validated"),
        "LOW is below MEDIUM: {table}"
    );
    assert!(
        !table.contains("webhook_invalid_signature"),
        "three days old: {table}"
    );

    let (code, table, _) = list(&["--severity", "HIGH", "--since", "7d"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("webhook_invalid_signature") && !table.contains("sessions_revoked"),
        "{table}"
    );

    // --json: one object per line, the export's fields.
    let (code, json, _) = list(&["--severity", "HIGH", "--json"]);
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["sessions_revoked", "webhook_invalid_signature"]);
    assert_eq!(events[1]["ip"], "192.0.2.9");
    let (_, json, _) = list(&["--kind", "login_failed", "--json", "--limit", "1"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.contains("\"kind\":\"login_failed\""));

    // Bad input exits 2 with one line saying what to fix.
    for (args, message) in [
        (vec!["--since", "2x"], "--since must be"),
        (vec!["--since", "yesterday"], "--since must be"),
        (vec!["--severity", "SEVERE"], "severity must be one of"),
        (vec!["--kind", "nope"], "kind must be one of"),
        (vec!["--limit", "0"], "--limit must be between"),
    ] {
        let (code, stdout, stderr) = list(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

async fn an_export_stops_at_the_row_cap_and_says_so(backend: Backend) {
    use diesel::Connection as _;
    let app = TestApp::spawn(backend).await;
    let admin = app.signed_in_admin("cap@example.com").await;
    let cap = tollgate::audit::query::EXPORT_ROW_CAP;
    assert_eq!(cap, 10_000);
    let events = vec![SecurityEvent::new(Kind::PaymentFailed); cap as usize + 1];
    let at = tollgate::db::now();
    app.query(move |conn| {
        conn.transaction(|conn| tollgate::audit::write_many_at(conn, &events, at))
    });
    let res = admin
        .get("/admin/security/export?format=csv&kind=payment_failed")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-export-truncated"], "true");
    assert_eq!(res.headers()["x-export-rows"], cap.to_string().as_str());
    let csv = res.text().await.unwrap();
    assert_eq!(
        csv.lines().count(),
        cap as usize + 1,
        "the header and the newest {cap} rows"
    );
    let details: serde_json::Value =
        serde_json::from_str(&app.events("audit_exported")[0].details).unwrap();
    assert_eq!(details["truncated"], true);
    assert_eq!(details["rows"], cap);
}
