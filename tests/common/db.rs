//! The test databases: a fresh SQLite file per test, or a PostgreSQL database cloned from a
//! template migrated once per run (crates.io's test-db scheme), dropped when the test ends.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::prelude::*;
use diesel::{PgConnection, RunQueryDsl};
use tollgate::config::DatabaseUrl;
use tollgate::db::{Db, DbConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn postgres_url_for(database: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{database}")
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Drops databases left behind by test runs whose process is gone.
fn sweep_stale_databases(conn: &mut PgConnection) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'tollgate_tpl_%' OR datname LIKE 'tollgate_test_%'",
    )
    .load(conn)
    .unwrap_or_default();
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
            ))
            .execute(conn);
        }
    }
}

fn postgres_template() -> Option<&'static str> {
    static TEMPLATE: OnceLock<Option<String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let admin_url = postgres_admin_url();
            let mut admin = match PgConnection::establish(&admin_url) {
                Ok(conn) => conn,
                Err(err) => {
                    if std::env::var("REQUIRE_POSTGRES").as_deref() == Ok("1") {
                        panic!("REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {admin_url}: {err}");
                    }
                    eprintln!(
                        "\n!!!!! PostgreSQL is NOT reachable at {admin_url} ({err}).\n\
                         !!!!! SKIPPING every PostgreSQL variant of the tests. Set REQUIRE_POSTGRES=1 to fail instead.\n"
                    );
                    return None;
                }
            };
            sweep_stale_databases(&mut admin);
            let name = format!("tollgate_tpl_{}", std::process::id());
            diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).unwrap();
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).unwrap();
            let conn = PgConnection::establish(&postgres_url_for(&name)).unwrap();
            let mut conn = DbConnection::Postgresql(conn);
            tollgate::db::run_migrations(&mut conn).unwrap();
            Some(name)
        })
        .as_deref()
}

/// One number a statement counts (`… AS n`).
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// Is PostgreSQL there? (Says so loudly, once, when it is not; panics under REQUIRE_POSTGRES=1.)
pub fn postgres_available() -> bool {
    postgres_template().is_some()
}

/// Where a test's data lives; removed when the test ends.
enum Storage {
    Sqlite(tempfile::TempDir),
    Postgres(String),
    Borrowed,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres(name) = self
            && let Ok(mut admin) = PgConnection::establish(&postgres_admin_url())
        {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = diesel::sql_query(drop).execute(&mut admin);
        }
    }
}

fn fresh_database(backend: Backend) -> (DatabaseUrl, Storage) {
    fresh_database_from(backend, true)
}

/// A new database: on PostgreSQL cloned from the migrated template, or (`migrated` false) an
/// empty one.
fn fresh_database_from(backend: Backend, migrated: bool) -> (DatabaseUrl, Storage) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tollgate.db");
            (DatabaseUrl::Sqlite(path), Storage::Sqlite(dir))
        }
        Backend::Postgres => {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let template = postgres_template().expect("PostgreSQL checked by on_both_backends!");
            let name = format!(
                "tollgate_test_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            let template = if migrated { template } else { "template0" };
            let mut admin = PgConnection::establish(&postgres_admin_url()).unwrap();
            diesel::sql_query(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .execute(&mut admin)
            .unwrap();
            let url = DatabaseUrl::parse(&postgres_url_for(&name)).unwrap();
            (url, Storage::Postgres(name))
        }
    }
}

/// A database of the given backend without an app, for tests of the CLI and schema.
pub struct TestDatabase {
    pub url: DatabaseUrl,
    pub url_string: String,
    _storage: Storage,
}

impl TestDatabase {
    pub fn new(backend: Backend) -> Self {
        Self::of(fresh_database(backend))
    }

    /// A database with no tables at all, on either backend.
    pub fn empty(backend: Backend) -> Self {
        Self::of(fresh_database_from(backend, false))
    }

    fn of((url, storage): (DatabaseUrl, Storage)) -> Self {
        let url_string = match (&url, &storage) {
            (DatabaseUrl::Sqlite(path), _) => format!("sqlite://{}", path.display()),
            (DatabaseUrl::Postgres(_), Storage::Postgres(name)) => postgres_url_for(name),
            _ => unreachable!(),
        };
        Self {
            url,
            url_string,
            _storage: storage,
        }
    }

    /// A fresh database that exists and is migrated (SQLite's file too), as after `migrate`.
    pub fn migrated(backend: Backend) -> Self {
        let database = Self::new(backend);
        database
            .db()
            .run_blocking(tollgate::db::run_migrations)
            .unwrap();
        database
    }

    pub fn db(&self) -> Db {
        Db::connect(self.url.clone(), 2).unwrap()
    }

    /// The same database, owned elsewhere: dropping this handle keeps the data.
    pub fn shared(&self) -> Self {
        Self {
            url: self.url.clone(),
            url_string: self.url_string.clone(),
            _storage: Storage::Borrowed,
        }
    }
}
