//! The audit trail as an operator keeps it: each row chained to the previous by a hash
//! (`tollgate audit verify` names the first row an edit, a deletion or a reordering breaks),
//! retention that prunes old rows in batches while the chain stays verifiable
//! (`tollgate audit prune [--dry-run]`, and `serve` on its own), and the JSON-lines copy in
//! `AUDIT_LOG_FILE` (mode 0600, reopened on SIGHUP, never a secret).

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tollgate::audit::{self, Kind, SecurityEvent};
use tollgate::db::schema::{security_events, sessions, stripe_operations, webhook_events};
use tollgate::db::{Db, DbConnection, DbError};

use crate::common::{Backend, TestApp, TestDatabase, run, run_with_stdin};
use crate::on_both_backends;
use crate::operations::tollgate;

on_both_backends!(
    an_untouched_trail_verifies_across_chains_rollbacks_and_repeats,
    concurrent_writers_append_one_gapless_chain,
    verify_names_the_row_an_edit_deletion_or_reordering_breaks,
    prune_deletes_only_what_retention_allows_and_the_chain_still_verifies,
    serve_prunes_old_rows_on_its_own,
    the_audit_file_gets_every_event_as_json_without_secrets_and_follows_rotation,
    an_event_of_a_rolled_back_transaction_never_reaches_the_file,
    an_open_audit_transaction_holds_up_no_other_writer,
    an_instances_lanes_are_its_own_whatever_its_id_holds,
);

fn exec(db: &Db, sql: &str) {
    let sql = sql.to_owned();
    db.run_blocking(|conn: &mut DbConnection| {
        diesel::sql_query(sql).execute(conn).map_err(DbError::from)
    })
    .unwrap();
}

/// Writes `n` distinct events through the domain writer as if at `at`.
fn write_events(db: &Db, n: usize, at: NaiveDateTime) {
    for i in 0..n {
        let event = SecurityEvent::new(Kind::LoginFailed)
            .actor(format!("user:{i}"))
            .ip("192.0.2.7")
            .details(serde_json::json!({ "attempt": i }));
        db.run_blocking(|conn| audit::write_many_at(conn, &[event], at))
            .unwrap();
    }
}

/// (id, chain, sequence) of every chained row, in chain and sequence order.
fn chained(db: &Db) -> Vec<(i64, String, i64)> {
    db.run_blocking(|conn| {
        security_events::table
            .filter(security_events::chain_id.is_not_null())
            .order((security_events::chain_id, security_events::chain_seq))
            .select((
                security_events::id,
                security_events::chain_id.assume_not_null(),
                security_events::chain_seq.assume_not_null(),
            ))
            .load::<(i64, String, i64)>(conn)
            .map_err(DbError::from)
    })
    .unwrap()
}

fn verify(database: &TestDatabase) -> (i32, String, String) {
    run(tollgate(database, &[]).args(["audit", "verify"]))
}

async fn an_untouched_trail_verifies_across_chains_rollbacks_and_repeats(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    write_events(&db, 3, tollgate::db::now());
    // A rolled-back append leaves no gap: the next row takes its sequence.
    let rolled_back: Result<(), DbError> = db.run_blocking(|conn| {
        conn.transaction(|conn| {
            audit::write(conn, &SecurityEvent::new(Kind::Logout))?;
            Err(DbError::Unavailable)
        })
    });
    assert!(rolled_back.is_err());
    // Repeats of an aggregated refusal are counted on their first row, not chained again.
    for _ in 0..3 {
        let refusal = SecurityEvent::new(Kind::ServiceTokenRejected)
            .ip("192.0.2.9")
            .aggregate(Duration::from_secs(3600), "unknown");
        db.run_blocking(|conn| audit::write(conn, &refusal))
            .unwrap();
    }
    write_events(&db, 1, tollgate::db::now());
    let ours = audit::chain::instance_id().to_owned();
    let sequences: Vec<i64> = chained(&db).into_iter().map(|(_, _, seq)| seq).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    // Another instance (another chain) appends beside it: create-admin writes an audit row.
    let (code, _, stderr) = run_with_stdin(
        tollgate(&database, &[("INSTANCE_ID", "web-2".to_owned())]).args([
            "create-admin",
            "--email",
            "chain-admin@example.com",
        ]),
        crate::common::PASSWORD,
    );
    assert_eq!(code, 0, "{stderr}");
    let chains: Vec<(String, i64)> = chained(&db).into_iter().map(|(_, c, s)| (c, s)).collect();
    assert!(chains.contains(&("web-2".to_owned(), 1)), "{chains:?}");
    let (code, stdout, stderr) = verify(&database);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("audit trail intact: 2 chain(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("chain {ours}: sequences 1..=5")),
        "{stdout}"
    );
}

async fn concurrent_writers_append_one_gapless_chain(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || write_events(&db, 10, tollgate::db::now()))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    // One chain on SQLite (one writer at a time); on PostgreSQL a writer that finds every
    // lane busy opens another. Each chain is gapless and its ids rise with its sequence.
    let rows = chained(&db);
    assert_eq!(rows.len(), 40);
    let mut chains: std::collections::BTreeMap<String, Vec<(i64, i64)>> = Default::default();
    for (id, chain, seq) in rows {
        chains.entry(chain).or_default().push((id, seq));
    }
    let ours = audit::chain::instance_id();
    for (chain, links) in &chains {
        assert!(
            chain == ours || chain.starts_with(&format!("{ours}#")),
            "{chain}"
        );
        let sequences: Vec<i64> = links.iter().map(|(_, seq)| *seq).collect();
        assert_eq!(
            sequences,
            (1..=links.len() as i64).collect::<Vec<i64>>(),
            "{chain}"
        );
        assert!(
            links.windows(2).all(|w| w[0].0 < w[1].0),
            "{chain}: {links:?}"
        );
    }
    if backend == Backend::Sqlite {
        assert_eq!(chains.len(), 1);
    }
    let (code, stdout, stderr) = verify(&database);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("40 row(s) verified"), "{stdout}");
}

async fn verify_names_the_row_an_edit_deletion_or_reordering_breaks(backend: Backend) {
    // (what is done, the SQL, the sequence whose row verify must name, what it must say)
    let cases: [(&str, &[&str], i64, &str); 6] = [
        (
            "edit a row's details",
            &["UPDATE security_events SET details = '{\"attempt\":99}' WHERE chain_seq = 3"],
            3,
            "does not match its hash",
        ),
        (
            "edit a row's details and its hash",
            &[
                "UPDATE security_events SET details = '{}', hash = (SELECT hash FROM security_events WHERE chain_seq = 1) WHERE chain_seq = 3",
            ],
            3,
            "does not match its hash",
        ),
        (
            "delete a middle row",
            &["DELETE FROM security_events WHERE chain_seq = 3"],
            4,
            "(sequence 3) is missing",
        ),
        (
            "delete the newest row",
            &["DELETE FROM security_events WHERE chain_seq = 5"],
            5,
            "the newest rows were deleted",
        ),
        (
            "swap two rows' places",
            &[
                "UPDATE security_events SET chain_seq = -2 WHERE chain_seq = 2",
                "UPDATE security_events SET chain_seq = 2 WHERE chain_seq = 3",
                "UPDATE security_events SET chain_seq = 3 WHERE chain_seq = -2",
            ],
            2,
            "does not match its hash",
        ),
        (
            "swap two rows' content",
            &[
                "UPDATE security_events SET details = 'x' WHERE chain_seq = 2",
                "UPDATE security_events SET details = '{\"attempt\":1}' WHERE chain_seq = 3",
                "UPDATE security_events SET details = '{\"attempt\":2}' WHERE chain_seq = 2",
            ],
            2,
            "does not match its hash",
        ),
    ];
    for (what, statements, sequence, says) in cases {
        let database = TestDatabase::migrated(backend);
        let db = database.db();
        write_events(&db, 5, tollgate::db::now());
        let rows = chained(&db);
        let (code, _, _) = verify(&database);
        assert_eq!(code, 0, "{what}: intact before");
        for sql in statements {
            exec(&db, sql);
        }
        let (code, stdout, stderr) = verify(&database);
        assert_eq!(code, 1, "{what}: {stdout}{stderr}");
        let chain = &rows[0].1;
        let named = match rows.iter().find(|(_, _, seq)| *seq == sequence) {
            // The newest row is gone: verify names the chain and the missing sequence.
            _ if says.contains("newest") => format!("chain {chain}, sequence {sequence}"),
            Some((id, _, _)) if what.starts_with("swap two rows' places") => {
                // The row now at sequence 2 is the one that was at 3.
                let moved = rows.iter().find(|(_, _, s)| *s == 3).unwrap().0;
                let _ = id;
                format!("row id={moved} (chain {chain}, sequence {sequence})")
            }
            Some((id, _, _)) => format!("row id={id} (chain {chain}, sequence {sequence})"),
            None => unreachable!(),
        };
        assert!(
            stderr.contains(&named),
            "{what}: expected {named:?} in {stderr}"
        );
        assert!(
            stderr.contains(says),
            "{what}: expected {says:?} in {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    }
}

fn days_ago(days: i64) -> NaiveDateTime {
    tollgate::db::now() - chrono::Duration::days(days)
}

/// Old and new rows in every table retention prunes: the audit log (4 old, 3 new), webhook
/// events (old applied, old ignored, old received, old failed, new applied), sessions (one
/// expired, one live) and operation ids (one old, one new).
fn old_and_new_rows(db: &Db) {
    use tollgate::db::models::webhook_event::{self, NewWebhookEvent, WebhookEventStatus};
    write_events(db, 4, days_ago(40));
    write_events(db, 3, tollgate::db::now());
    let events = [
        ("evt_old_applied", WebhookEventStatus::Applied, 100),
        ("evt_old_ignored", WebhookEventStatus::Ignored, 100),
        ("evt_old_received", WebhookEventStatus::Received, 100),
        ("evt_old_failed", WebhookEventStatus::Failed, 100),
        ("evt_new_applied", WebhookEventStatus::Applied, 1),
    ];
    let rows: Vec<NewWebhookEvent<'_>> = events
        .iter()
        .map(|(id, status, age)| NewWebhookEvent {
            stripe_event_id: id,
            event_type: "invoice.paid",
            livemode: false,
            stripe_created: days_ago(*age),
            payload_sealed: b"sealed",
            key_id: "k1",
            status: *status,
            attempts: 1,
            last_error: None,
            received_at: days_ago(*age),
            processed_at: None,
            signature_digest: None,
        })
        .collect();
    db.run_blocking(|conn| webhook_event::insert_new(conn, &rows))
        .unwrap();
    db.run_blocking(|conn| {
        for (key, expires) in [("expired", days_ago(1)), ("live", days_ago(-1))] {
            diesel::insert_into(sessions::table)
                .values((
                    sessions::key_hash.eq(key),
                    sessions::state.eq("{}"),
                    sessions::created_at.eq(days_ago(2)),
                    sessions::expires_at.eq(expires),
                ))
                .execute(conn)?;
        }
        for (key, age) in [("op-old-0000000000", 8), ("op-new-0000000000", 1)] {
            diesel::insert_into(stripe_operations::table)
                .values((
                    stripe_operations::operation_key.eq(key),
                    stripe_operations::kind.eq("checkout"),
                    stripe_operations::created_at.eq(days_ago(age)),
                ))
                .execute(conn)?;
        }
        Ok::<_, DbError>(())
    })
    .unwrap();
}

/// How many rows each pruned table holds: audit, webhook events, sessions, operation ids.
fn table_counts(db: &Db) -> [i64; 4] {
    db.run_blocking(|conn| {
        Ok::<_, DbError>([
            security_events::table.count().get_result(conn)?,
            webhook_events::table.count().get_result(conn)?,
            sessions::table.count().get_result(conn)?,
            stripe_operations::table.count().get_result(conn)?,
        ])
    })
    .unwrap()
}

fn old_audit_rows(db: &Db) -> i64 {
    db.run_blocking(|conn| {
        security_events::table
            .filter(security_events::occurred_at.lt(days_ago(30)))
            .count()
            .get_result(conn)
            .map_err(DbError::from)
    })
    .unwrap()
}

fn remaining_webhook_events(db: &Db) -> Vec<String> {
    db.run_blocking(|conn| {
        webhook_events::table
            .order(webhook_events::stripe_event_id)
            .select(webhook_events::stripe_event_id)
            .load::<String>(conn)
            .map_err(DbError::from)
    })
    .unwrap()
}

async fn prune_deletes_only_what_retention_allows_and_the_chain_still_verifies(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    old_and_new_rows(&db);
    let before = table_counts(&db);
    assert_eq!(before, [7, 5, 2, 2]);

    let (code, stdout, stderr) =
        run(tollgate(&database, &[]).args(["audit", "prune", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "security_events: would delete 4",
        "webhook_events: would delete 2",
        "sessions: would delete 1",
        "stripe_operations: would delete 1",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert_eq!(table_counts(&db), before, "a dry run deletes nothing");
    // A longer retention keeps the audit rows.
    let longer = [("AUDIT_RETENTION_DAYS", "50".to_owned())];
    let (_, stdout, _) = run(tollgate(&database, &longer).args(["audit", "prune", "--dry-run"]));
    assert!(
        stdout.contains("security_events: would delete 0"),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(tollgate(&database, &[]).args(["audit", "prune"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("security_events: deleted 4"), "{stdout}");
    assert_eq!(table_counts(&db), [3, 3, 1, 1]);
    assert_eq!(
        remaining_webhook_events(&db),
        ["evt_new_applied", "evt_old_failed", "evt_old_received"],
        "unfinished events are kept whatever their age"
    );
    let sequences: Vec<i64> = chained(&db).into_iter().map(|(_, _, seq)| seq).collect();
    assert_eq!(sequences, [5, 6, 7]);

    let (code, stdout, stderr) = verify(&database);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("sequences 5..=7 (3 row(s), checkpoint 4)"),
        "{stdout}"
    );
    // The chain goes on from its head, and a tampered row after the checkpoint is still caught.
    write_events(&db, 1, tollgate::db::now());
    assert_eq!(verify(&database).0, 0);
    exec(
        &db,
        "UPDATE security_events SET actor = 'user:0' WHERE chain_seq = 6",
    );
    let (code, _, stderr) = verify(&database);
    assert_eq!(code, 1);
    assert!(stderr.contains("sequence 6)"), "{stderr}");
}

async fn serve_prunes_old_rows_on_its_own(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    old_and_new_rows(&db);
    let _app = TestApp::spawn_on(database.shared(), backend, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // (The app may audit its own start: only the old rows must go.)
    while old_audit_rows(&db) != 0 || table_counts(&db)[1..] != [3, 1, 1] {
        assert!(
            Instant::now() < deadline,
            "not pruned: {:?}",
            table_counts(&db)
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(verify(&database).0, 0);
}

/// Waits (up to 10 s) until `path` holds a line whose kind is `kind`; returns the file's lines.
fn lines_once(path: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::File::open(path)
            .map(|file| {
                std::io::BufReader::new(file)
                    .lines()
                    .map(|line| serde_json::from_str(&line.unwrap()).expect("each line is JSON"))
                    .collect()
            })
            .unwrap_or_default();
        if lines.iter().any(|line| line["kind"] == kind) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} in {}: {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn the_audit_file_gets_every_event_as_json_without_secrets_and_follows_rotation(
    backend: Backend,
) {
    const BYOK_KEY: &str = "sk-ant-api03-DUMMY-audit-file-key-000000000000000000000000f11e";
    const FORGED_TOKEN: &str = "tg_svc_DUMMYforged00000000000000000000000000000";
    let database = TestDatabase::migrated(backend);
    let (code, token, stderr) = run(tollgate(&database, &[]).args([
        "service-token",
        "create",
        "--name",
        "engine",
        "--scope",
        "byok:lease",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("security_audit.log");
    let mut serve = tollgate(
        &database,
        &[
            ("AUDIT_LOG_FILE", log.display().to_string()),
            ("INSTANCE_ID", "file-test".to_owned()),
            ("BIND", "127.0.0.1:0".to_owned()),
            ("SESSION_COOKIE_SECURE", "false".to_owned()),
            (
                "STRIPE_WEBHOOK_SECRET",
                crate::common::WEBHOOK_SECRET.to_owned(),
            ),
        ],
    );
    let mut child = serve
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let address = crate::common::announced_address(&mut child, "listening on ")
        .recv_timeout(Duration::from_secs(30))
        .unwrap();
    let browser = crate::common::Browser::new(&address);
    let password = crate::common::PASSWORD;
    browser.signup("file@example.com", password).await;
    browser.logout().await;
    browser.login("file@example.com", password).await;
    browser.add_key("anthropic", BYOK_KEY).await;
    let user_id = database
        .db()
        .run_blocking(|conn| tollgate::db::models::user::find_by_email(conn, "file@example.com"))
        .unwrap()
        .unwrap()
        .id;
    let lease = serde_json::json!({ "user_id": user_id, "provider": "anthropic" });
    let client = reqwest::Client::new();
    for bearer in [token.as_str(), FORGED_TOKEN] {
        client
            .post(format!("{address}/internal/v1/byok/lease"))
            .bearer_auth(bearer)
            .json(&lease)
            .send()
            .await
            .unwrap();
    }
    let bad = client
        .post(format!("{address}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", "t=1700000000,v1=00ff")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());

    let lines = lines_once(&log, "webhook_invalid_signature");
    for kind in [
        "signup",
        "login_succeeded",
        "byok_key_saved",
        "byok_leased",
        "service_token_rejected",
    ] {
        assert!(
            lines.iter().any(|line| line["kind"] == kind),
            "{kind}: {lines:?}"
        );
    }
    for line in &lines {
        for field in [
            "time",
            "kind",
            "severity",
            "actor",
            "ip",
            "request_id",
            "details",
            "hash",
        ] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
        assert_eq!(line["chain"], "file-test");
        assert_eq!(line["hash"].as_str().unwrap().len(), 64);
    }
    let signup = lines.iter().find(|line| line["kind"] == "signup").unwrap();
    assert!(signup["request_id"].is_string(), "{signup}");
    assert_eq!(signup["ip"], "127.0.0.1");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(log.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut secrets: Vec<String> = crate::common::secret_env()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    secrets.extend([
        password.to_owned(),
        BYOK_KEY.to_owned(),
        crate::common::WEBHOOK_SECRET.to_owned(),
        token.clone(),
        token["tg_svc_".len()..].to_owned(),
        FORGED_TOKEN.to_owned(),
    ]);
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the audit file"
        );
    }

    // logrotate: rename, SIGHUP; the next events go to a new file.
    let rotated = dir.path().join("logs").join("security_audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let (code, _, _) =
        run(std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]));
    assert_eq!(code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new file after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.logout().await;
    let fresh = lines_once(&log, "logout");
    assert!(
        fresh.iter().all(|line| line["kind"] != "signup"),
        "{fresh:?}"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old, text, "the rotated file got nothing more");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the server"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn an_event_of_a_rolled_back_transaction_never_reaches_the_file(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let path = log.clone();
    let app = TestApp::spawn_with(backend, |config| config.audit_trail.log_file = Some(path)).await;
    let rolled_back: Result<(), DbError> = app.db.run_blocking(|conn| {
        conn.transaction(|conn| {
            let event = SecurityEvent::new(Kind::LoginLocked).actor("user:1");
            audit::write(conn, &event)?;
            Err(DbError::Unavailable)
        })
    });
    assert!(rolled_back.is_err());
    app.db
        .run_blocking(|conn| audit::write(conn, &SecurityEvent::new(Kind::Logout)))
        .unwrap();
    let lines = lines_once(&log, "logout");
    assert!(
        lines.iter().all(|line| line["kind"] != "login_locked"),
        "{lines:?}"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

async fn an_open_audit_transaction_holds_up_no_other_writer(backend: Backend) {
    if backend == Backend::Sqlite {
        return; // SQLite has one writer at a time, whatever the audit log does.
    }
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    write_events(&db, 1, tollgate::db::now());
    let (written, wait) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.run_blocking(|conn| {
                conn.transaction(|conn| {
                    audit::write(conn, &SecurityEvent::new(Kind::Logout))?;
                    written.send(()).unwrap();
                    released.recv().unwrap();
                    Ok::<_, DbError>(())
                })
            })
            .unwrap();
        })
    };
    wait.recv().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let other = db.clone();
    std::thread::spawn(move || {
        write_events(&other, 1, tollgate::db::now());
        done.send(()).unwrap();
    });
    let unblocked = finished.recv_timeout(Duration::from_secs(5)).is_ok();
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        unblocked,
        "a writer waited for another transaction's audit row"
    );
    let (code, stdout, stderr) = verify(&database);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("audit trail intact: 2 chain(s), 3 row(s)"),
        "{stdout}"
    );
}

/// An instance's lanes are `<instance>` and `<instance>#…` exactly: the `_` an instance id may
/// hold matches itself only, on both backends (LIKE reads it as any character).
async fn an_instances_lanes_are_its_own_whatever_its_id_holds(backend: Backend) {
    use tollgate::db::models::audit_chain;
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    for chain in [
        "web_1",
        "web_1#00aa",
        "web_1#00bb",
        "webx1#00cc",
        "web_10",
        "web_1x#00dd",
    ] {
        exec(
            &db,
            &format!(
                "INSERT INTO audit_chains (chain_id, last_sequence, last_hash, \
                 checkpoint_sequence, checkpoint_hash, updated_at) \
                 VALUES ('{chain}', 0, 'genesis', 0, 'genesis', '2026-12-01 00:00:00')"
            ),
        );
    }
    let lanes: Vec<String> = db
        .run_blocking(|conn| audit_chain::lanes(conn, "web_1"))
        .unwrap()
        .into_iter()
        .map(|head| head.chain_id)
        .collect();
    assert_eq!(lanes, ["web_1", "web_1#00aa", "web_1#00bb"]);
}
