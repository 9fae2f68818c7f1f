//! The audit log: every security-relevant event lands in `security_events`; repeated refusals
//! are counted on one row (count, first and last seen) so that a flood cannot flood the log.

use futures_util::StreamExt as _;
use tollgate::audit::{Kind, SecurityEvent};
use tollgate::db::models::security_event::SecurityEventRow;

use crate::common::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    each_account_event_is_recorded_with_severity_actor_and_ip,
    a_thousand_junk_bearer_tokens_make_a_handful_of_rows,
    each_account_and_source_keeps_its_own_row,
    a_repeat_after_the_window_starts_a_new_row,
    a_zero_window_keeps_one_row_per_refusal,
    existing_events_survive_the_aggregation_migration,
);

async fn each_account_event_is_recorded_with_severity_actor_and_ip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = app.signed_in_customer("audit@example.com").await;
    browser.logout().await;
    browser
        .login("audit@example.com", "wrong password here")
        .await;
    browser
        .login("audit@example.com", crate::common::PASSWORD)
        .await;

    let expected = [
        ("signup", "LOW"),
        ("logout", "LOW"),
        ("login_failed", "MEDIUM"),
        ("login_succeeded", "LOW"),
    ];
    for (kind, severity) in expected {
        let events = app.events(kind);
        assert_eq!(events.len(), 1, "{kind}");
        let event = &events[0];
        assert_eq!(event.severity, severity, "{kind}");
        assert_eq!(event.ip.as_deref(), Some("127.0.0.1"), "{kind}");
        serde_json::from_str::<serde_json::Value>(&event.details).expect("details are JSON");
    }
    let user_id = app.query(|conn| {
        Ok(
            tollgate::db::models::user::find_by_email(conn, "audit@example.com")?
                .unwrap()
                .id,
        )
    });
    assert_eq!(
        app.events("login_succeeded")[0].actor.as_deref(),
        Some(format!("user:{user_id}").as_str())
    );
    assert_eq!(
        app.events("logout")[0].actor.as_deref(),
        Some(format!("user:{user_id}").as_str())
    );
}

/// Makes every write to the audit log fail, as a full disk or a lost table would, by renaming
/// its table away (on both backends) until [`restore_audit_log`].
pub fn break_audit_log(app: &TestApp) {
    rename_audit_table(app, "security_events", "security_events_away");
}

pub fn restore_audit_log(app: &TestApp) {
    rename_audit_table(app, "security_events_away", "security_events");
}

fn rename_audit_table(app: &TestApp, from: &str, to: &str) {
    use diesel::RunQueryDsl as _;
    let statement = format!("ALTER TABLE {from} RENAME TO {to}");
    app.query(move |conn| Ok(diesel::sql_query(statement).execute(conn)?));
}

fn total(rows: &[SecurityEventRow]) -> i64 {
    rows.iter().map(|row| row.count).sum()
}

async fn junk_token(app: &TestApp, i: usize) -> u16 {
    let token = format!("tg_svc_DUMMYjunk{i:04}");
    let body = serde_json::json!({ "user_id": 1, "provider": "anthropic" });
    let res = app.internal_post("byok/lease", Some(&token), &body).await;
    res.status().as_u16()
}

async fn a_thousand_junk_bearer_tokens_make_a_handful_of_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|i| junk_token(&app, i))
        .buffer_unordered(8)
        .collect()
        .await;
    let unexpected: Vec<&u16> = statuses.iter().filter(|s| **s != 401).collect();
    assert!(unexpected.is_empty(), "not 401: {unexpected:?}");

    let rows = app.events("service_token_rejected");
    assert_eq!(rows.len(), 1, "one row, not 1,000, even with 8 at once");
    assert_eq!(total(&rows), 1000, "every refusal is counted");
    assert_eq!(app.count_events("service_token_rejected"), 1000);
    let row = rows.iter().max_by_key(|row| row.count).unwrap();
    assert!(row.last_seen_at > row.occurred_at, "first and last seen");
    assert!(row.details.contains("unknown") && !row.details.contains("DUMMYjunk0"));

    let admin = app.signed_in_admin("admin@example.com").await;
    let html = admin.get_text("/admin").await;
    let document = scraper::Html::parse_document(&html);
    let cell = scraper::Selector::parse("td").unwrap();
    let row_selector = scraper::Selector::parse("tbody tr").unwrap();
    let shown: i64 = document
        .select(&row_selector)
        .map(|tr| {
            tr.select(&cell)
                .map(|td| td.text().collect::<String>())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells[1] == "service_token_rejected")
        // "1000", then "since <first seen>" under it.
        .map(|cells| {
            cells[2]
                .split("since")
                .next()
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(shown, 1000, "the console shows the count");
}

async fn each_account_and_source_keeps_its_own_row(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    app.signed_in_customer("alice@example.com").await;
    app.signed_in_customer("bob@example.com").await;
    let browser = app.browser();
    let token = browser.csrf_token("/login").await;
    let fail = |email: String, client: &'static str| {
        let request = browser
            .client
            .post(browser.url("/login"))
            .header("x-forwarded-for", client)
            .form(&[
                ("csrf_token", token.as_str()),
                ("email", &email),
                ("password", "a wrong guess"),
            ]);
        async move { assert_eq!(request.send().await.unwrap().status(), 401) }
    };
    for i in 0..3 {
        fail("alice@example.com".into(), "198.51.100.1").await;
        fail("bob@example.com".into(), "198.51.100.1").await;
        fail(format!("nobody{i}@example.com"), "198.51.100.1").await;
        fail("alice@example.com".into(), "198.51.100.2").await;
    }
    let rows = app.events("login_failed");
    assert_eq!(total(&rows), 12);
    let alice = format!("user:{}", app.user_id("alice@example.com"));
    let bob = format!("user:{}", app.user_id("bob@example.com"));
    let mut seen: Vec<(Option<&str>, Option<&str>, i64)> = rows
        .iter()
        .map(|r| (r.actor.as_deref(), r.ip.as_deref(), r.count))
        .collect();
    seen.sort_unstable();
    let mut expected = vec![
        (None, Some("198.51.100.1"), 3),
        (Some(alice.as_str()), Some("198.51.100.1"), 3),
        (Some(alice.as_str()), Some("198.51.100.2"), 3),
        (Some(bob.as_str()), Some("198.51.100.1"), 3),
    ];
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "one row per account and source; unknown emails share one"
    );
}

/// A CSRF refusal as the extractor records it, from one IPv6 client.
fn refusal() -> SecurityEvent {
    SecurityEvent::new(Kind::CsrfRejected)
        .ip("2001:db8:7:7::1")
        .aggregate(std::time::Duration::from_secs(60), "POST /logout")
}

async fn a_repeat_after_the_window_starts_a_new_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    let write = |event: SecurityEvent, secs: i64| {
        let at = slot + chrono::Duration::seconds(secs);
        app.query(move |conn| tollgate::audit::write_many_at(conn, &[event], at))
    };
    write(refusal(), 0);
    write(refusal().ip("2001:db8:7:7:ffff::2"), 59);
    let rows = app.events("csrf_rejected");
    assert_eq!(
        rows.len(),
        1,
        "the same /64 within the minute is the same source"
    );
    assert_eq!(
        (rows[0].count, rows[0].occurred_at, rows[0].last_seen_at),
        (2, slot, slot + chrono::Duration::seconds(59))
    );
    assert_eq!(
        rows[0].ip.as_deref(),
        Some("2001:db8:7:7::1"),
        "the first address is kept"
    );
    write(refusal(), 60);
    let counts: Vec<i64> = app
        .events("csrf_rejected")
        .iter()
        .map(|r| r.count)
        .collect();
    assert_eq!(counts, [1, 2], "the next minute starts a new row");
    write(
        refusal().aggregate(std::time::Duration::from_secs(60), "POST /signup"),
        61,
    );
    write(refusal().actor("user:7"), 62);
    write(refusal().ip("2001:db8:7:8::1"), 63);
    assert_eq!(
        app.events("csrf_rejected").len(),
        5,
        "another reason, actor or /64: another row"
    );
}

async fn a_zero_window_keeps_one_row_per_refusal(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.audit.aggregate_window = std::time::Duration::ZERO;
    })
    .await;
    for i in 0..3 {
        assert_eq!(junk_token(&app, i).await, 401);
    }
    let rows = app.events("service_token_rejected");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.count == 1));
}

/// Reverts the aggregation migration on `conn`'s backend, runs `between`, and migrates again.
fn around_the_aggregation_migration(
    conn: &mut tollgate::db::DbConnection,
    between: impl FnOnce(&mut tollgate::db::DbConnection),
) {
    use diesel::migration::MigrationSource as _;
    use diesel_migrations::MigrationHarness as _;
    const NAME: &str = "2026-12-02-000020_aggregate_security_events";
    tollgate::db::run_migrations(conn).unwrap();
    match conn {
        tollgate::db::DbConnection::Sqlite(c) => {
            let all = tollgate::db::SQLITE_MIGRATIONS.migrations().unwrap();
            let ours = all.iter().find(|m| m.name().to_string() == NAME).unwrap();
            c.revert_migration(ours.as_ref()).unwrap();
        }
        tollgate::db::DbConnection::Postgresql(c) => {
            let all = tollgate::db::POSTGRES_MIGRATIONS.migrations().unwrap();
            let ours = all.iter().find(|m| m.name().to_string() == NAME).unwrap();
            c.revert_migration(ours.as_ref()).unwrap();
        }
    }
    between(conn);
    tollgate::db::run_migrations(conn).unwrap();
}

async fn existing_events_survive_the_aggregation_migration(backend: Backend) {
    use diesel::RunQueryDsl as _;
    let database = crate::common::TestDatabase::new(backend);
    let rows = database
        .db()
        .run_blocking(|conn| {
            around_the_aggregation_migration(conn, |conn| {
                diesel::sql_query(
                    "INSERT INTO security_events (occurred_at, kind, severity, details) \
                     VALUES ('2026-11-30 08:00:00', 'login_failed', 'MEDIUM', '{}')",
                )
                .execute(conn)
                .unwrap();
            });
            tollgate::db::models::security_event::recent(conn, 10)
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].count, 1);
    assert_eq!(
        rows[0].last_seen_at, rows[0].occurred_at,
        "last seen = first seen"
    );
}
