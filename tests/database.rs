//! The schema is the same on both backends; SQLite runs with WAL, foreign keys and a busy
//! timeout; deleting an account takes its sessions with it.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::Text;
use tollgate::db::DbConnection;

use crate::common::{Backend, Count, TestApp, TestDatabase, postgres_available};
use crate::on_both_backends;

on_both_backends!(deleting_an_account_deletes_its_sessions);

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// The rows of the query `sqlite` on SQLite, of `postgres` on PostgreSQL.
fn rows_of<T>(conn: &mut DbConnection, sqlite: &str, postgres: &str) -> Vec<T>
where
    diesel::query_builder::SqlQuery: for<'a> diesel::query_dsl::LoadQuery<'a, diesel::SqliteConnection, T>
        + for<'a> diesel::query_dsl::LoadQuery<'a, diesel::PgConnection, T>,
{
    match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(sqlite).load(c).unwrap(),
        DbConnection::Postgresql(c) => diesel::sql_query(postgres).load(c).unwrap(),
    }
}

fn columns(conn: &mut DbConnection) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<Column> = rows_of(
        conn,
        "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m, pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '__diesel_schema_migrations'",
        "SELECT table_name::text AS table_name, column_name::text AS column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    );
    let mut map = BTreeMap::<String, Vec<String>>::new();
    for row in rows {
        map.entry(row.table_name).or_default().push(row.column_name);
    }
    map.values_mut().for_each(|cols| cols.sort());
    map
}

/// What `read` finds in a migrated SQLite database, and in a migrated PostgreSQL one when
/// PostgreSQL is there.
fn on_each_backend<T>(read: fn(&mut DbConnection) -> T) -> (T, Option<T>) {
    let on = |backend| {
        TestDatabase::migrated(backend)
            .db()
            .run_blocking(|conn| Ok::<_, tollgate::db::DbError>(read(conn)))
            .unwrap()
    };
    let sqlite = on(Backend::Sqlite);
    (sqlite, postgres_available().then(|| on(Backend::Postgres)))
}

#[test]
fn both_backends_migrate_to_the_same_tables_and_columns() {
    let (sqlite_columns, postgres_columns) = on_each_backend(columns);
    for table in [
        "byok_keys",
        "security_events",
        "service_tokens",
        "sessions",
        "settings",
        "users",
    ] {
        assert!(
            sqlite_columns.contains_key(table),
            "{table} is missing: {sqlite_columns:?}"
        );
    }
    if let Some(postgres_columns) = postgres_columns {
        assert_eq!(sqlite_columns, postgres_columns);
    }
}

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Index {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    is_unique: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    partial: bool,
}

/// The indexes the migrations create (not those behind a primary key or a UNIQUE constraint):
/// name, whether unique, whether partial.
fn indexes(conn: &mut DbConnection) -> Vec<Index> {
    let mut rows: Vec<Index> = rows_of(
        conn,
        "SELECT i.name AS name, i.\"unique\" <> 0 AS is_unique, i.partial <> 0 AS partial
         FROM sqlite_master m, pragma_index_list(m.name) i
         WHERE m.type = 'table' AND i.origin = 'c'",
        "SELECT c.relname::text AS name, x.indisunique AS is_unique,
                x.indpred IS NOT NULL AS partial
         FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                           WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u', 'x'))",
    );
    rows.sort();
    rows
}

/// Both backends have the same indexes, each as unique and as partial on one as on the other:
/// an index that holds every row on one backend and some on the other costs a write per row
/// more there.
#[test]
fn both_backends_migrate_to_the_same_indexes() {
    let (sqlite_indexes, postgres_indexes) = on_each_backend(indexes);
    let aggregate = sqlite_indexes
        .iter()
        .find(|index| index.name == "security_events_aggregate");
    assert!(
        aggregate.is_some_and(|index| index.is_unique && index.partial),
        "{sqlite_indexes:?}"
    );
    if let Some(postgres_indexes) = postgres_indexes {
        assert_eq!(sqlite_indexes, postgres_indexes);
    }
}

#[derive(QueryableByName)]
struct Pragma {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct Checkpoint {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    wal_autocheckpoint: i64,
}

#[test]
fn sqlite_connections_use_wal_foreign_keys_a_busy_timeout_and_short_checkpoints() {
    let database = TestDatabase::new(Backend::Sqlite);
    let pragmas = database
        .db()
        .run_blocking(|conn| {
            let mut read = |pragma: &str| {
                diesel::sql_query(format!("SELECT CAST(({pragma}) AS TEXT) AS value"))
                    .get_result::<Pragma>(&mut *conn)
                    .map(|p| p.value)
            };
            let read = (
                read("SELECT journal_mode FROM pragma_journal_mode")?,
                read("SELECT foreign_keys FROM pragma_foreign_keys")?,
                read("SELECT timeout FROM pragma_busy_timeout")?,
                read("SELECT journal_size_limit FROM pragma_journal_size_limit")?,
            );
            // No table-valued form: the pragma itself.
            let checkpoint = diesel::sql_query("PRAGMA wal_autocheckpoint")
                .get_result::<Checkpoint>(conn)?
                .wal_autocheckpoint;
            Ok::<_, tollgate::db::DbError>((read.0, read.1, read.2, checkpoint, read.3))
        })
        .unwrap();
    assert_eq!(
        pragmas,
        (
            "wal".into(),
            "1".into(),
            "5000".into(),
            // Checkpoints every 1,000 pages: the commit that runs one holds every writer up
            // meanwhile (at 10,000 pages, 40 ms: the p99 of BYOK leases on SQLite).
            1_000,
            // A WAL that outgrew 64 MiB (a long reader held a checkpoint back) shrinks again.
            "67108864".into()
        )
    );
}

/// `SQLITE_SYNCHRONOUS` sets how the server's own connections sync their commits: NORMAL (1)
/// by default, FULL (2) when asked for power-loss durability.
#[actix_web::test]
async fn the_servers_sqlite_connections_sync_as_sqlite_synchronous_says() {
    use tollgate::config::SqliteSynchronous;
    for (setting, expected) in [(None, "1"), (Some(SqliteSynchronous::Full), "2")] {
        let app = TestApp::spawn_with(Backend::Sqlite, |config| {
            if let Some(setting) = setting {
                config.sqlite_synchronous = setting;
            }
        })
        .await;
        let synchronous = app
            .app_db
            .run_blocking(|conn| {
                let query = diesel::sql_query(
                    "SELECT CAST((SELECT synchronous FROM pragma_synchronous) AS TEXT) AS value",
                );
                Ok::<_, tollgate::db::DbError>(query.get_result::<Pragma>(conn)?.value)
            })
            .unwrap();
        assert_eq!(synchronous, expected, "{setting:?}");
    }
}

async fn deleting_an_account_deletes_its_sessions(backend: Backend) {
    use tollgate::db::schema::{sessions, users};
    let app = TestApp::spawn(backend).await;
    app.signed_in_customer("gone@example.com").await;
    let with_user: i64 = app.query(|conn| {
        Ok(sessions::table
            .filter(sessions::user_id.is_not_null())
            .count()
            .get_result(conn)?)
    });
    assert_eq!(with_user, 1, "the session row records its user");
    app.query(|conn| Ok(diesel::delete(users::table).execute(conn)?));
    assert_eq!(app.session_count(), 0);
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The database holds password hashes, emails and the audit log: owner-only, whatever the
/// umask (tests run with the usual 022, which would give 0644).
#[actix_web::test]
async fn a_new_sqlite_database_is_readable_by_its_owner_only() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_customer("private@example.com").await;
    let tollgate::config::DatabaseUrl::Sqlite(path) = app.database_handle().url else {
        unreachable!()
    };
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn an_existing_database_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let url = format!("sqlite://{}", path.display());
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_clear()
            .current_dir(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let first = migrate();
    assert!(first.status.success());
    assert!(!String::from_utf8_lossy(&first.stderr).contains("readable by group or others"));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let second = migrate();
    assert!(second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is readable by group or others (mode 644)",
            path.display()
        )) && stderr.contains(&format!("chmod 600 {}", path.display())),
        "{stderr}"
    );
}

/// SQLite's writers take turns within the instance (`Db::write`): one that cannot have its turn
/// by its deadline fails at once with `DbError::Busy` (a reserve then answers by the feature's
/// policy) instead of waiting in SQLite's busy handler. PostgreSQL's writers run side by side.
#[actix_web::test]
async fn a_sqlite_writer_waits_for_its_turn_and_gives_up_at_its_deadline() {
    use std::time::{Duration, Instant};
    use tollgate::db::DbError;

    let mut backends = vec![Backend::Sqlite];
    if postgres_available() {
        backends.push(Backend::Postgres);
    }
    for backend in backends {
        let database = TestDatabase::new(backend);
        let db = database.db();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let holder = {
            let (db, started) = (db.clone(), started.clone());
            actix_web::rt::spawn(async move {
                db.write(None, move |_conn| {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(3_000));
                    Ok::<_, DbError>(())
                })
                .await
            })
        };
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        let asked = Instant::now();
        let second = db
            .write(Some(asked + Duration::from_millis(100)), |_conn| {
                Ok::<_, DbError>(())
            })
            .await;
        match backend {
            Backend::Sqlite => {
                assert!(matches!(second, Err(DbError::Busy)), "{second:?}");
                assert!(
                    asked.elapsed() < Duration::from_millis(2_000),
                    "gave up at its deadline, not the holder's end"
                );
            }
            Backend::Postgres => assert!(second.is_ok(), "{second:?}"),
        }
        holder.await.unwrap().unwrap();
        // The turn is free again.
        db.write(Some(Instant::now() + Duration::from_secs(5)), |_conn| {
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
    }
}

/// The PostgreSQL connection inside `conn`, in a PostgreSQL test.
fn pg(conn: &mut DbConnection) -> &mut diesel::PgConnection {
    match conn {
        DbConnection::Postgresql(pg) => pg,
        DbConnection::Sqlite(_) => unreachable!("a PostgreSQL test"),
    }
}

/// A pooled connection that worked a moment ago is handed out without a test query; one idle
/// for longer than `db::FRESH` is tested first, and replaced when the server has dropped it
/// (here: its backend terminated, as a PostgreSQL restart would).
#[test]
fn an_idle_pooled_connection_is_tested_and_replaced_when_the_server_dropped_it() {
    use tollgate::db::{Db, DbError};
    if !postgres_available() {
        return;
    }
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let backend_pid = |conn: &mut DbConnection| -> Result<i32, DbError> {
        Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(pg(conn))?
            .pid)
    };
    let database = TestDatabase::new(Backend::Postgres);
    let pool = Db::connect(database.url.clone(), 1).unwrap();
    let first = pool.run_blocking(backend_pid).unwrap();
    assert_eq!(
        pool.run_blocking(backend_pid).unwrap(),
        first,
        "the pool's one connection, reused"
    );
    database
        .db()
        .run_blocking(|conn| {
            diesel::sql_query(format!("SELECT pg_terminate_backend({first})")).execute(pg(conn))?;
            Ok::<_, DbError>(())
        })
        .unwrap();
    std::thread::sleep(tollgate::db::FRESH + std::time::Duration::from_millis(200));
    let second = pool
        .run_blocking(backend_pid)
        .expect("the dead connection was tested and replaced, not handed out");
    assert_ne!(second, first);
}

on_both_backends!(a_kept_statement_binds_where_its_text_names_them_and_is_prepared_once);

#[derive(QueryableByName)]
struct Joined {
    #[diesel(sql_type = Text)]
    joined: String,
}

/// Counts the statements a connection prepares to keep (diesel's `CacheQuery` event).
fn count_kept(conn: &mut DbConnection) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use diesel::connection::InstrumentationEvent;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let kept = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&kept);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::CacheQuery { .. } = event {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    kept
}

/// `kept_sql!`: binds go where `$n` names them (one named twice, out of order) and the
/// statement is prepared once and kept (diesel keeps no `sql_query`, so PostgreSQL would parse
/// and plan it on every call); it is kept by its use of the macro, not by its text.
async fn a_kept_statement_binds_where_its_text_names_them_and_is_prepared_once(backend: Backend) {
    use std::sync::atomic::Ordering;
    let database = TestDatabase::migrated(backend);
    let db = database.db();
    let mut pooled = db.connection().unwrap();
    let conn: &mut DbConnection = &mut pooled;
    let kept = count_kept(conn);
    let text = "SELECT CAST($2 AS TEXT) || CAST($1 AS TEXT) || CAST($2 AS TEXT) AS joined";
    for _ in 0..3 {
        let row: Joined = tollgate::kept_sql!(
            "SELECT CAST($2 AS TEXT) || CAST($1 AS TEXT) || CAST($2 AS TEXT) AS joined"
        )
        .bind::<Text, _>("a")
        .bind::<Text, _>("b")
        .get_result(&mut *conn)
        .unwrap();
        assert_eq!(row.joined, "bab");
    }
    assert_eq!(kept.load(Ordering::SeqCst), 1, "prepared once, then reused");
    // Another use with other text and binds is a statement of its own, not the one above.
    for _ in 0..2 {
        let row: Joined = tollgate::kept_sql!("SELECT CAST($1 AS TEXT) || 'c' AS joined")
            .bind::<Text, _>("a")
            .get_result(&mut *conn)
            .unwrap();
        assert_eq!(row.joined, "ac");
    }
    assert_eq!(kept.load(Ordering::SeqCst), 2, "one more statement, kept");
    // Statements are kept by their use, not looked up by their text: the same text used again
    // elsewhere is prepared once more (a cache keyed by text would have found it).
    let row: Joined = tollgate::kept_sql!("SELECT CAST($1 AS TEXT) || 'c' AS joined")
        .bind::<Text, _>("z")
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(row.joined, "zc");
    assert_eq!(kept.load(Ordering::SeqCst), 3, "by use, not by text");
    // The same text through `sql_query` is never kept.
    let plain = text.replace("$2", "'b'").replace("$1", "'a'");
    let row: Joined = diesel::sql_query(&plain).get_result(&mut *conn).unwrap();
    assert_eq!(row.joined, "bab");
    assert_eq!(kept.load(Ordering::SeqCst), 3);
    if let DbConnection::Postgresql(pg) = &mut *conn {
        let prepared: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_prepared_statements \
             WHERE statement LIKE '%|| CAST(% AS TEXT) || CAST(% AS TEXT) AS joined%'",
        )
        .get_result(pg)
        .unwrap();
        assert_eq!(prepared.n, 1, "one named statement on the server");
    }
    // A `$` that names no bind is an error, not a statement with a hole.
    let unbound = tollgate::kept_sql!("SELECT CAST($2 AS TEXT) AS joined")
        .bind::<Text, _>("a")
        .get_result::<Joined>(&mut *conn);
    assert!(unbound.is_err());
    // So is a bind the text never names (it would be dropped without a word).
    let unnamed = tollgate::kept_sql!("SELECT CAST($1 AS TEXT) AS joined")
        .bind::<Text, _>("a")
        .bind::<Text, _>("b")
        .get_result::<Joined>(&mut *conn);
    assert!(unnamed.is_err());
}

/// `db::batch_transaction` on PostgreSQL: generic plans inside the transaction only (a
/// statement over an array is not planned anew on each call), and a rollback on error.
#[test]
fn a_batch_transaction_plans_once_on_postgresql_and_rolls_back_on_error() {
    if !postgres_available() {
        return;
    }
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        plan_cache_mode: String,
    }
    #[derive(QueryableByName)]
    struct Plans {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        custom_plans: i64,
    }
    let database = TestDatabase::migrated(Backend::Postgres);
    let db = database.db();
    let mut pooled = db.connection().unwrap();
    let conn: &mut DbConnection = &mut pooled;
    let mode = |conn: &mut DbConnection| -> String {
        diesel::sql_query("SHOW plan_cache_mode")
            .get_result::<Setting>(pg(conn))
            .unwrap()
            .plan_cache_mode
    };
    tollgate::db::batch_transaction(conn, |conn| {
        assert_eq!(mode(conn), "force_generic_plan");
        for id in 0..8_i64 {
            let row: Count =
                tollgate::kept_sql!("SELECT count(*) AS n FROM users WHERE id = ANY($1)")
                    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(vec![id])
                    .get_result(pg(conn))?;
            assert_eq!(row.n, 0);
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    assert_eq!(mode(conn), "auto", "SET LOCAL: only inside");
    let plans: Plans = diesel::sql_query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%FROM users WHERE id = ANY%'",
    )
    .get_result(pg(conn))
    .unwrap();
    assert_eq!((plans.generic_plans, plans.custom_plans), (8, 0));

    let failed = tollgate::db::batch_transaction(conn, |conn| {
        diesel::sql_query(
            "INSERT INTO settings (name, value, updated_at) VALUES ('batch_test', 'x', now())",
        )
        .execute(conn)?;
        Err::<(), _>(diesel::result::Error::RollbackTransaction)
    });
    assert!(failed.is_err());
    let left: Count =
        diesel::sql_query("SELECT count(*) AS n FROM settings WHERE name = 'batch_test'")
            .get_result(pg(conn))
            .unwrap();
    assert_eq!(left.n, 0, "rolled back");
}

/// `db::batch_transaction` on SQLite takes the write lock at its start (`BEGIN IMMEDIATE`),
/// before any write: its reads are never of a snapshot another writer moves on from.
/// Both transactions a writer of reads and writes begins (a group-commit batch, one webhook
/// delivery) hold SQLite's write lock from their start, before their first write.
#[test]
fn a_batch_and_a_write_transaction_take_sqlites_write_lock_at_once() {
    let database = TestDatabase::migrated(Backend::Sqlite);
    let db = database.db();
    let (mut first, mut second) = (db.connection().unwrap(), db.connection().unwrap());
    let (first, second): (&mut DbConnection, &mut DbConnection) = (&mut first, &mut second);
    diesel::sql_query("PRAGMA busy_timeout = 0")
        .execute(second)
        .unwrap();
    let mut write_elsewhere = |_: &mut DbConnection| {
        let other = diesel::sql_query(
            "INSERT INTO settings (name, value, updated_at) VALUES ('x', 'y', CURRENT_TIMESTAMP)",
        )
        .execute(&mut *second);
        let err = other.expect_err("the transaction holds the write lock before it writes");
        assert!(err.to_string().contains("locked"), "{err}");
        Ok::<_, diesel::result::Error>(())
    };
    tollgate::db::batch_transaction(first, &mut write_elsewhere).unwrap();
    tollgate::db::write_transaction(first, &mut write_elsewhere).unwrap();
}

/// SQLite plans a statement once, whatever values are later bound to it (the query planner
/// stability guarantee, compiled in by `.cargo/config.toml`). Without it, SQLite prepares a
/// statement with a bound `LIMIT` (every diesel `.first()`) or `LIKE` pattern anew before each
/// run: a fifth of the webhook writer's time.
#[test]
fn sqlite_plans_do_not_depend_on_bound_values() {
    let database = TestDatabase::migrated(Backend::Sqlite);
    let mut conn = database.db().connection().unwrap();
    let conn: &mut DbConnection = &mut conn;
    let qpsg: Count = diesel::sql_query("SELECT sqlite_compileoption_used('ENABLE_QPSG') AS n")
        .get_result(conn)
        .unwrap();
    assert_eq!(qpsg.n, 1, "SQLite is built with SQLITE_ENABLE_QPSG");
}

/// SQLite takes none of the locks that only a connection shared between threads, a shared page
/// cache or memory statistics would need (compiled in by `.cargo/config.toml`): a connection is
/// used by one thread at a time. Serialized mode's mutexes were 6 % of the webhook writer's time.
#[test]
fn sqlite_takes_no_lock_a_connection_of_one_thread_does_not_need() {
    let database = TestDatabase::migrated(Backend::Sqlite);
    let mut conn = database.db().connection().unwrap();
    let conn: &mut DbConnection = &mut conn;
    let mut used = |option: &str| -> bool {
        let found: Count = diesel::sql_query("SELECT sqlite_compileoption_used(?) AS n")
            .bind::<Text, _>(option)
            .get_result(conn)
            .unwrap();
        found.n == 1
    };
    assert!(used("THREADSAFE=2"), "multi-thread mode, not serialized");
    assert!(used("DEFAULT_MEMSTATUS=0"), "no memory statistics");
    assert!(
        !used("ENABLE_MEMORY_MANAGEMENT"),
        "a page cache per connection, not one shared behind a mutex"
    );
}

/// Runs `work` on SQLite while another connection (a serving instance, say) holds the write
/// lock and then commits a write of its own: `work` must wait its turn. A transaction that read
/// first would fail at its first write, at once ("database is locked": SQLite waits for a lock
/// only before a transaction's first read).
fn beside_another_writer<T>(
    database: &TestDatabase,
    work: impl FnOnce(&mut DbConnection) -> T,
) -> T {
    use std::time::Duration;
    let db = database.db();
    let mut other = db.connection().unwrap();
    let (held, holding) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let conn: &mut DbConnection = &mut other;
        tollgate::db::write_transaction(conn, |conn| {
            held.send(()).unwrap();
            // Longer than hashing a password takes, well within the busy timeout.
            std::thread::sleep(Duration::from_millis(2_500));
            diesel::sql_query(
                "INSERT INTO settings (name, value, updated_at) \
                 VALUES ('other_writer', 'x', CURRENT_TIMESTAMP)",
            )
            .execute(conn)?;
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();
    });
    holding.recv().unwrap();
    let mut pooled = db.connection().unwrap();
    let done = work(&mut pooled);
    writer.join().unwrap();
    done
}

/// `create-admin` from the CLI beside a serving instance on SQLite: its transaction takes the
/// write lock first, so it waits its turn.
#[test]
fn create_admin_waits_for_another_writer_on_sqlite() {
    use tollgate::accounts::{Email, ExistingAccount, NewPassword};
    let database = TestDatabase::migrated(Backend::Sqlite);
    let email = Email::parse("root@example.com").unwrap();
    let password = NewPassword::parse(secrecy::SecretString::from(
        "a long enough passphrase 42".to_owned(),
    ))
    .unwrap();
    let made = beside_another_writer(&database, |conn| {
        tollgate::accounts::create_admin(conn, &email, &password, ExistingAccount::Refuse, "cli")
    });
    assert!(made.is_ok(), "{:?}", made.err());
}

/// `rotate-key` beside a serving instance on SQLite: a batch reads the values to re-seal, then
/// writes them, in a transaction that takes the write lock first, so it waits its turn.
#[test]
fn a_rotation_batch_waits_for_another_writer_on_sqlite() {
    use tollgate::billing::customers::{SEALED_CUSTOMER_IDS, customer_aad};
    use tollgate::crypto::Keyring;
    use tollgate::crypto::rotation::Rotatable as _;
    use tollgate::db::models::billing_customer::{self, BillingCustomerRow};
    use tollgate::db::models::user::{self, NewUser, Role};

    let database = TestDatabase::migrated(Backend::Sqlite);
    let key = |byte: u8| secrecy::SecretBox::new(Box::new([byte; 32]));
    let old = Keyring::new(&key(0x22), &[]);
    let new = Keyring::new(&key(0x44), &[key(0x22)]);
    let mut pooled = database.db().connection().unwrap();
    let conn: &mut DbConnection = &mut pooled;
    let now = tollgate::db::now();
    let new_user = NewUser {
        email: "rotated@example.com",
        password_hash: "not-a-hash",
        role: Role::Customer,
        created_at: now,
        updated_at: now,
    };
    let user_id = user::insert(conn, &new_user).unwrap().id;
    let aad = customer_aad(user_id);
    let row = BillingCustomerRow {
        user_id,
        stripe_customer_sealed: old.seal(b"cus_DUMMYrotation", &aad).unwrap(),
        key_id: old.primary_id().to_string(),
        stripe_customer_index: "index-DUMMY".into(),
        stripe_customer_masked: "cus_…ion".into(),
        created_at: now,
        index_key_id: None,
    };
    billing_customer::insert(conn, &row).unwrap();
    drop(pooled);

    let batch = beside_another_writer(&database, |conn| {
        SEALED_CUSTOMER_IDS.rotate_batch(conn, &new, 0, 10, None)
    });
    let batch = batch.unwrap_or_else(|err| panic!("the batch failed: {err}"));
    assert_eq!((batch.rotated, batch.raced), (1, 0));
    let mut pooled = database.db().connection().unwrap();
    let stored = billing_customer::for_user(&mut pooled, user_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.key_id, new.primary_id().to_string());
    let opened = new.open(&stored.stripe_customer_sealed, &aad).unwrap();
    assert_eq!(&opened[..], b"cus_DUMMYrotation");
}
