//! A database with many customers (issue 17, point 5): `tollgate bench seed`, and the admin
//! lists paged by keyset (every row exactly once, in order, each page a link to the next).

use std::process::{Command, Stdio};

use tollgate::commands::bench::{self, SeedCounts};

use crate::common::{Backend, Browser, TestApp, TestDatabase, run, test_keyring};
use crate::on_both_backends;

on_both_backends!(
    the_customer_list_pages_through_every_account_once_newest_first,
    a_customer_search_is_a_prefix_in_email_order_with_pages_of_its_own,
    the_webhook_list_pages_through_every_event_once_keeping_its_filter,
    bench_seed_fills_a_scratch_database_that_verifies_and_refuses_one_with_accounts,
    bench_seed_refuses_a_database_in_use_and_a_live_stripe_key,
    the_dashboard_rollup_counts_repeats_in_their_first_hour_and_goes_with_retention,
    the_account_count_is_kept_through_sign_ups_bulk_inserts_and_deletions,
);

/// Seeds `users` accounts and `events` webhook events under the test app's keys.
fn seed(app: &TestApp, users: u64, events: u64) {
    bench::seed(
        &app.db,
        &test_keyring(),
        &app.token_hasher,
        SeedCounts {
            users,
            events,
            audit: 0,
        },
        |_, _, _| {},
    )
    .unwrap();
}

/// The link a page's pager offers to the next page, if any.
fn next_href(html: &str) -> Option<String> {
    let rest = html.split(r#"rel="next" href=""#).nth(1)?;
    // As a browser reads the attribute: askama escapes `&`.
    Some(
        rest.split('"')
            .next()?
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

/// Follows the pager from `first` to the end: each page's listed items (by `item`), in order,
/// and the last page.
async fn walk(
    admin: &Browser,
    first: &str,
    item: impl Fn(&str) -> Vec<String>,
) -> (Vec<Vec<String>>, String) {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let res = admin.get(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        let html = res.text().await.unwrap();
        pages.push(item(&html));
        assert!(pages.len() < 20, "the pager never ends");
        match next_href(&html) {
            Some(next) => path = next,
            None => return (pages, html),
        }
    }
}

/// The seeded emails a customer page lists, in order.
fn seeded_emails(html: &str) -> Vec<String> {
    html.split("<tr><td>")
        .skip(1)
        .filter_map(|row| row.split("</td>").next())
        .filter(|email| email.starts_with("seed-"))
        .map(str::to_owned)
        .collect()
}

async fn the_customer_list_pages_through_every_account_once_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app, 230, 0);
    let admin = app.signed_in_admin("admin@example.com").await;

    let (pages, last) = walk(&admin, "/admin/customers", seeded_emails).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    // The admin's own account (the newest) takes the first page's first row.
    assert_eq!(sizes, [99, 100, 31], "three pages of 100 accounts");
    let listed: Vec<String> = pages.concat();
    let expected: Vec<String> = (1..=230).rev().map(bench::seed_email).collect();
    assert_eq!(listed, expected, "every account once, newest first");
    let first = admin.get_text("/admin/customers").await;
    assert!(first.contains("admin@example.com") && !first.contains(">First page<"));
    assert!(
        last.contains(">First page<"),
        "the last page links back to the first"
    );
    // Each seeded account shows its plan, status and masked Stripe customer.
    assert!(first.contains("Pro (seeded)") && first.contains("cus_…"));

    // Forged cursors: a clear 400, never a 500 or someone else's page.
    for path in [
        "/admin/customers?before=0",
        "/admin/customers?before=-5",
        "/admin/customers?before=abc",
        "/admin/customers?before=99999999999999999999999",
    ] {
        assert_eq!(admin.get(path).await.status(), 400, "{path}");
    }
    let long = "a".repeat(300);
    assert_eq!(
        admin
            .get(&format!("/admin/customers?q={long}"))
            .await
            .status(),
        400
    );
    assert_eq!(
        admin
            .get(&format!("/admin/customers?q=seed&after={long}"))
            .await
            .status(),
        400
    );
    // A customer sees none of it.
    let customer = app.signed_in_customer("someone@example.com").await;
    assert_eq!(
        customer.get("/admin/customers?before=100").await.status(),
        403
    );
}

async fn a_customer_search_is_a_prefix_in_email_order_with_pages_of_its_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app, 230, 0);
    let admin = app.signed_in_admin("admin@example.com").await;
    for email in ["a_b@example.com", "axb@example.com", "a%c@example.com"] {
        app.signed_in_customer(email).await;
    }

    // 230 matches: three pages in email order, each account once.
    let (pages, _) = walk(&admin, "/admin/customers?q=Seed-", seeded_emails).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 30]
    );
    let expected: Vec<String> = (1..=230).map(bench::seed_email).collect();
    assert_eq!(pages.concat(), expected, "email order, every match once");
    let second = admin
        .get_text("/admin/customers?q=seed-&after=seed-0000100%40example.com")
        .await;
    assert_eq!(seeded_emails(&second)[0], bench::seed_email(101));

    // A narrower prefix: one page, nothing else.
    let narrow = admin.get_text("/admin/customers?q=seed-00001").await;
    let found = seeded_emails(&narrow);
    assert_eq!(found.len(), 100);
    assert!(found.iter().all(|email| email.starts_with("seed-00001")));
    assert!(next_href(&narrow).is_none());

    // `_` and `%` are letters here, not wildcards.
    let underscore = admin.get_text("/admin/customers?q=a_").await;
    assert!(underscore.contains("a_b@example.com"));
    assert!(!underscore.contains("axb@example.com") && !underscore.contains("a%c@example.com"));
    let percent = admin.get_text("/admin/customers?q=a%25").await;
    assert!(percent.contains("a%c@example.com") && !percent.contains("a_b@example.com"));
    let none = admin.get_text("/admin/customers?q=nobody").await;
    assert!(none.contains("No customers match."));
}

async fn the_webhook_list_pages_through_every_event_once_keeping_its_filter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app, 10, 450);
    let admin = app.signed_in_admin("admin@example.com").await;
    let event_ids = |html: &str| -> Vec<String> {
        html.split("<code>evt_")
            .skip(1)
            .filter_map(|rest| rest.split('<').next())
            .map(|id| format!("evt_{id}"))
            .collect()
    };
    let (pages, _) = walk(&admin, "/admin/webhooks", event_ids).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [200, 200, 50]
    );
    let listed = pages.concat();
    let expected: Vec<String> = (1..=450u64)
        .rev()
        .map(|n| format!("evt_Seed{n:012}"))
        .collect();
    assert_eq!(listed, expected, "every event once, newest first");

    // The status filter travels with the pager; a filter nothing matches has no pages.
    let applied = admin.get_text("/admin/webhooks?status=applied").await;
    let next = next_href(&applied).expect("a next page");
    assert!(next.contains("status=applied"), "{next}");
    let failed = admin.get_text("/admin/webhooks?status=failed").await;
    assert!(next_href(&failed).is_none() && event_ids(&failed).is_empty());
    for path in ["/admin/webhooks?before=0", "/admin/webhooks?before=x"] {
        assert_eq!(admin.get(path).await.status(), 400, "{path}");
    }
}

fn tollgate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear().current_dir(dir).stdin(Stdio::null());
    cmd
}

async fn bench_seed_fills_a_scratch_database_that_verifies_and_refuses_one_with_accounts(
    backend: Backend,
) {
    let database = TestDatabase::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let url = database.url_string.clone();
    let seed = |args: &[&str]| {
        run(tollgate(dir.path())
            .args(["bench", "seed"])
            .args(args)
            .env("DATABASE_URL", &url))
    };
    let (code, stdout, stderr) = seed(&["--users", "120", "--events", "300", "--audit", "2500"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("accounts: 120 in"), "{stdout}");
    assert!(stdout.contains("KiB per customer"), "{stdout}");

    let (code, stdout, stderr) = run(tollgate(dir.path())
        .args(["audit", "verify"])
        .env("DATABASE_URL", &url));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2500 row(s) verified"), "{stdout}");

    // A database with accounts is never seeded (exit 2, nothing written).
    let (code, _, stderr) = seed(&["--users", "5"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("already has some accounts, 1 plan(s)"),
        "{stderr}"
    );
    let (code, _, stderr) = seed(&["--users", "many"]);
    assert_eq!(code, 2, "{stderr}");

    // What was seeded is what the app serves: the customers and their subscriptions, the
    // events, the audit rows counted on the dashboard.
    let app = TestApp::spawn_on(database, backend, |_| {}).await;
    let counted: (i64, i64, i64, i64) = app.query(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::{
            billing_customers, security_events, subscriptions, webhook_events,
        };
        Ok::<_, tollgate::db::DbError>((
            billing_customers::table.count().get_result(conn)?,
            subscriptions::table.count().get_result(conn)?,
            webhook_events::table.count().get_result(conn)?,
            security_events::table
                .filter(security_events::kind.ne("admin_created"))
                .count()
                .get_result(conn)?,
        ))
    });
    assert_eq!(counted, (120, 120, 300, 2500));
    // The dashboard's rollup counts every row of its 30 days, as the log itself does.
    let since = chrono::Utc::now()
        .naive_utc()
        .date()
        .and_time(chrono::NaiveTime::MIN)
        - chrono::Duration::days(29);
    let (rolled, logged): (i64, i64) = app.query(move |conn| {
        use diesel::dsl::sql;
        use diesel::prelude::*;
        use tollgate::db::models::security_event_search::{Bucket, occurrences_by_bucket};
        use tollgate::db::schema::security_events;
        let rolled = occurrences_by_bucket(conn, Bucket::Day, since)?
            .iter()
            .map(|row| row.occurrences)
            .sum();
        let logged: i64 = security_events::table
            .filter(security_events::occurred_at.ge(since))
            .select(sql::<diesel::sql_types::BigInt>(
                "CAST(COALESCE(SUM(count), 0) AS BIGINT)",
            ))
            .get_result(conn)?;
        Ok::<_, tollgate::db::DbError>((rolled, logged))
    });
    assert!(
        logged >= 1_500,
        "two of the three seeded batches are recent: {logged}"
    );
    assert_eq!(rolled, logged);
}

async fn bench_seed_refuses_a_database_in_use_and_a_live_stripe_key(backend: Backend) {
    // No account yet, but a plan: a database being set up for real, never seeded.
    let database = TestDatabase::migrated(backend);
    let app = TestApp::spawn_on(database, backend, |_| {}).await;
    app.query(|conn| {
        diesel::RunQueryDsl::execute(
            diesel::sql_query(
                "INSERT INTO plans (slug, name, description, amount, currency, billing_interval, \
                 trial_days, features, active, created_at, updated_at, feature_lines, highlighted) \
                 VALUES ('real', 'Real', '', 1000, 'usd', 'month', 0, 'api', TRUE, \
                 '2026-12-01 00:00:00', '2026-12-01 00:00:00', '', FALSE)",
            ),
            conn,
        )
        .map_err(tollgate::db::DbError::Query)
    });
    let refused = bench::seed(
        &app.db,
        &test_keyring(),
        &app.token_hasher,
        SeedCounts {
            users: 10,
            events: 10,
            audit: 10,
        },
        |_, _, _| {},
    );
    assert!(
        matches!(&refused, Err(bench::SeedError::NotEmpty(what)) if what.contains("1 plan(s)")),
        "{refused:?}"
    );
    let written: (i64, i64) = app.query(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::{plans, users};
        Ok::<_, tollgate::db::DbError>((
            users::table.count().get_result(conn)?,
            plans::table.count().get_result(conn)?,
        ))
    });
    assert_eq!(written, (0, 1), "nothing written");

    // A live Stripe key names a production deployment: refused before the database is read.
    let scratch = TestDatabase::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(tollgate(dir.path())
        .args(["bench", "seed", "--users", "3"])
        .env("DATABASE_URL", &scratch.url_string)
        .env("STRIPE_SECRET_KEY", "sk_live_DUMMYnotarealkey0000000000"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("live key"), "{stderr}");
}

/// Occurrences per hour (`YYYY-MM-DD HH`), in hour order.
type Hours = Vec<(String, i64)>;

/// Per hour: the rollup's occurrences and the log's own `SUM(count)`, since `since`.
fn hourly(app: &TestApp, since: chrono::NaiveDateTime) -> (Hours, Hours) {
    app.query(move |conn| {
        use diesel::prelude::*;
        use tollgate::db::models::security_event_search::{Bucket, occurrences_by_bucket};
        use tollgate::db::schema::security_events;
        // Occurrences per hour, whatever the severity.
        fn per_hour(counts: impl Iterator<Item = (String, i64)>) -> Hours {
            let mut hours: Hours = Vec::new();
            for (hour, count) in counts {
                match hours.iter_mut().find(|(h, _)| *h == hour) {
                    Some((_, n)) => *n += count,
                    None => hours.push((hour, count)),
                }
            }
            hours.sort();
            hours
        }
        let rolled = per_hour(
            occurrences_by_bucket(conn, Bucket::Hour, since)?
                .into_iter()
                .map(|row| (row.bucket, row.occurrences)),
        );
        let rows: Vec<(chrono::NaiveDateTime, i64)> = security_events::table
            .filter(security_events::occurred_at.ge(since))
            .select((security_events::occurred_at, security_events::count))
            .load(conn)?;
        let logged = per_hour(
            rows.into_iter()
                .map(|(at, count)| (at.format("%Y-%m-%d %H").to_string(), count)),
        );
        Ok::<_, tollgate::db::DbError>((rolled, logged))
    })
}

async fn the_dashboard_rollup_counts_repeats_in_their_first_hour_and_goes_with_retention(
    backend: Backend,
) {
    use tollgate::audit::{Kind, SecurityEvent, write_many_at};
    let app = TestApp::spawn(backend).await;
    let hour = |h: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    };
    let minutes = |h: u32, m: i64| hour(h) + chrono::Duration::minutes(m);
    // A refusal repeated across an hour's end counts in its first hour, as its row does.
    let repeated = || {
        SecurityEvent::new(Kind::LoginFailed)
            .ip("203.0.113.9")
            .aggregate(std::time::Duration::from_secs(7_200), "same address")
    };
    for at in [minutes(10, 50), minutes(10, 55), minutes(11, 5)] {
        app.query(move |conn| write_many_at(conn, &[repeated()], at));
    }
    let once = SecurityEvent::new(Kind::Logout).actor("user:1");
    app.query(move |conn| write_many_at(conn, &[once.clone(), once], minutes(11, 1)));

    let (rolled, logged) = hourly(&app, hour(0));
    assert_eq!(rolled, logged);
    let repeats = rolled.iter().find(|(h, _)| h == "2026-11-02 10");
    assert_eq!(repeats.map(|(_, n)| *n), Some(3), "{rolled:?}");

    // Retention takes the hours with the rows (cutoff 11:30: hour 10 is gone, 11 stays).
    let retention = tollgate::audit::retention::Retention {
        audit_days: 1,
        webhook_event_days: 1,
        notification_days: 1,
    };
    let now = minutes(11, 30) + chrono::Duration::days(1);
    app.query(move |conn| tollgate::audit::retention::prune_blocking(conn, retention, now));
    let (rolled, _) = hourly(&app, hour(0));
    assert!(
        rolled.iter().all(|(h, _)| h != "2026-11-02 10"),
        "{rolled:?}"
    );
    assert!(
        rolled.iter().any(|(h, _)| h == "2026-11-02 11"),
        "{rolled:?}"
    );
}

/// The admin console's account count is a row the database keeps (triggers), not a scan: it
/// follows sign-ups, the seed's bulk inserts and deletions, and the console shows it.
async fn the_account_count_is_kept_through_sign_ups_bulk_inserts_and_deletions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kept = || app.query(tollgate::db::models::user::count);
    assert_eq!((kept(), app.user_count()), (0, 0));
    let admin = app.signed_in_admin("counter-admin@example.com").await;
    app.signed_in_customer("counter-customer@example.com").await;
    assert_eq!((kept(), app.user_count()), (2, 2));
    // The seed refuses a database with accounts: it writes into a scratch one beside.
    let scratch = TestApp::spawn(backend).await;
    seed(&scratch, 1_500, 0);
    assert_eq!(
        (
            scratch.query(tollgate::db::models::user::count),
            scratch.user_count()
        ),
        (1_500, 1_500)
    );
    scratch.query(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::{billing_customers, subscriptions, users};
        let doomed = users::table.filter(users::email.like("seed-00001%"));
        let ids: Vec<i64> = doomed.select(users::id).load(conn)?;
        diesel::delete(subscriptions::table.filter(subscriptions::user_id.eq_any(&ids)))
            .execute(conn)?;
        diesel::delete(billing_customers::table.filter(billing_customers::user_id.eq_any(&ids)))
            .execute(conn)?;
        diesel::delete(users::table.filter(users::id.eq_any(&ids))).execute(conn)?;
        Ok(())
    });
    assert_eq!(
        (
            scratch.query(tollgate::db::models::user::count),
            scratch.user_count()
        ),
        (1_400, 1_400),
        "seed-0000100 … seed-0000199 are gone"
    );
    let page = admin.get("/admin").await.text().await.unwrap();
    assert!(
        page.contains(
            r#"<span class="stat-value">2</span><span class="stat-label">accounts</span>"#
        ),
        "{page}"
    );
}
