//! The database: one connection type over SQLite and PostgreSQL, a pool, embedded migrations.
//!
//! The backend is chosen by the `DATABASE_URL` scheme. Queries are written once against
//! `DbConnection` (diesel's `MultiConnection`); Diesel is blocking, so every use goes through
//! [`Db::run`], which runs on the blocking thread pool, never on the async executor.

pub mod models;
pub mod schema;
pub mod text;

use std::path::Path;
use std::time::Duration;

use chrono::Timelike as _;

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{self, ManageConnection, R2D2Connection as _};
use diesel::{Connection as _, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret as _;

use crate::config::DatabaseUrl;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs a statement `MultiConnection` cannot express (e.g. `ON CONFLICT DO NOTHING`) on the
/// concrete backend: `$body` is compiled once per backend with `$c` bound to its connection.
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgresql($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}
pub(crate) use per_backend;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the blocking thread pool is gone")]
    Blocking,
    #[error("the database is unavailable (see the log)")]
    Unavailable,
    #[error(
        "the SQLite database {} does not exist (`tollgate migrate` creates it)",
        path.display()
    )]
    Missing { path: std::path::PathBuf },
    #[error("could not create the database file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl DbError {
    /// True when a unique constraint rejected the write (e.g. an email already registered).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// Opens connections for the pool, with SQLite's pragmas applied to each.
#[derive(Debug)]
pub struct ConnectionFactory {
    url: DatabaseUrl,
}

/// How long a SQLite writer waits for the lock before giving up.
pub const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

impl ConnectionFactory {
    pub fn new(url: DatabaseUrl) -> Self {
        Self { url }
    }

    pub fn establish(&self) -> Result<DbConnection, DbError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => Ok(DbConnection::Postgresql(PgConnection::establish(
                url.expose_secret(),
            )?)),
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // WAL lets readers run beside the writer; NORMAL survives a process crash
                // (FULL would also survive power loss at several times the commit cost).
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;"
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionFactory {
    type Connection = DbConnection;
    type Error = DbError;

    fn connect(&self) -> Result<DbConnection, DbError> {
        self.establish()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), DbError> {
        conn.ping().map_err(DbError::Query)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<ConnectionFactory>;

/// The application's handle on the database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// The application's metrics, current on the thread while [`Db::run`]'s work runs (so the
    /// audit log counts what it writes); none for the CLI.
    metrics: Option<crate::metrics::Metrics>,
}

/// A SQLite database holds password hashes, emails and the audit log: its files are for the
/// owner alone. A new database file is created mode 0600 (SQLite gives its `-wal` and `-shm`
/// files the database file's mode); an existing file that others can read gets a warning.
fn secure_sqlite_file(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(DbError::File {
                path: path.to_owned(),
                source,
            });
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the database file {} is readable by group or others (mode {mode:o}): run `chmod 600 {}`",
                file.display(),
                file.display()
            );
        }
    }
    Ok(())
}

impl Db {
    /// Builds the pool and checks that a first connection can be made.
    pub fn connect(url: DatabaseUrl, pool_size: u32) -> Result<Self, DbError> {
        if let DatabaseUrl::Sqlite(path) = &url {
            secure_sqlite_file(path)?;
        }
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(Duration::from_secs(10))
            .build(ConnectionFactory::new(url))
            .map_err(DbError::Pool)?;
        Ok(Self {
            pool,
            metrics: None,
        })
    }

    /// Like [`Db::connect`], but a SQLite file that does not exist is an error rather than a new,
    /// empty database: for commands that work on an existing one (a typo in `DATABASE_URL`
    /// must not leave an admin account in a database nobody serves).
    pub fn open_existing(url: DatabaseUrl, pool_size: u32) -> Result<Self, DbError> {
        if let DatabaseUrl::Sqlite(path) = &url
            && !path.exists()
        {
            return Err(DbError::Missing { path: path.clone() });
        }
        Self::connect(url, pool_size)
    }

    /// The same database, counting into `metrics` what its work records.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The pool's connections now (for the metrics scrape).
    pub fn pool_state(&self) -> crate::metrics::PoolState {
        let state = self.pool.state();
        crate::metrics::PoolState {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// Runs `work` with a pooled connection on the blocking thread pool.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let metrics = self.metrics.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            match metrics {
                Some(metrics) => metrics.scope(|| work(&mut conn)),
                None => work(&mut conn),
            }
        })
        .await
        .map_err(|_| DbError::Blocking)?
    }

    /// A connection of the pool for a dedicated thread to keep (the webhook writers): it goes
    /// back to the pool when dropped. Never call this on the async executor.
    pub fn connection(&self) -> Result<r2d2::PooledConnection<ConnectionFactory>, DbError> {
        Ok(self.pool.get()?)
    }

    /// Runs `work` on the calling thread: for CLI commands and start-up, never on the async
    /// executor.
    pub fn run_blocking<T, E: From<DbError>>(
        &self,
        work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.pool.get().map_err(DbError::from)?;
        work(&mut conn)
    }
}

/// Applies pending migrations for the connection's backend; returns the versions applied.
pub fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>, DbError> {
    let applied = match conn {
        DbConnection::Postgresql(pg) => pg.run_pending_migrations(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(sqlite) => sqlite.run_pending_migrations(SQLITE_MIGRATIONS),
    }
    .map_err(|err| DbError::Migration(err.to_string()))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Runs the reads of `work` in one transaction that sees one snapshot of the database: on
/// PostgreSQL a read-only REPEATABLE READ transaction (READ COMMITTED would let each statement
/// see a different moment); on SQLite a read transaction (WAL keeps its snapshot).
pub fn snapshot<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    conn.transaction(|conn| {
        if let DbConnection::Postgresql(pg) = conn {
            use diesel::RunQueryDsl as _;
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(pg)?;
        }
        work(conn)
    })
}

/// A cheap round trip, for `/readyz`.
pub fn ping(conn: &mut DbConnection) -> Result<(), DbError> {
    conn.ping().map_err(DbError::Query)
}

/// The current time as stored in the database (UTC, microseconds).
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    // Both backends keep microseconds; truncating here makes round trips compare equal.
    now.with_nanosecond((now.nanosecond() / 1_000) * 1_000)
        .unwrap_or(now)
}
