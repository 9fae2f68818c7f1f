//! The database: one connection type over SQLite and PostgreSQL, a pool, embedded migrations.
//!
//! The backend is chosen by the `DATABASE_URL` scheme. Queries are written once against
//! `DbConnection` (diesel's `MultiConnection`); Diesel is blocking, so every use goes through
//! [`Db::run`], which runs on the blocking thread pool, never on the async executor.

pub mod group_commit;
pub mod models;
pub mod schema;
pub mod text;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Timelike as _;

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{self, ManageConnection, R2D2Connection as _};
use diesel::{Connection as _, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret as _;

use crate::config::{DatabaseUrl, SqliteSynchronous};

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
    #[error("the database's writer did not get its turn in time")]
    Busy,
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
    synchronous: SqliteSynchronous,
}

/// How long a SQLite writer waits for the lock before giving up.
pub const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

impl ConnectionFactory {
    pub fn new(url: DatabaseUrl, synchronous: SqliteSynchronous) -> Self {
        Self { url, synchronous }
    }

    pub fn establish(&self) -> Result<DbConnection, DbError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => Ok(DbConnection::Postgresql(PgConnection::establish(
                url.expose_secret(),
            )?)),
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // WAL lets readers run beside the writer; NORMAL survives a process crash,
                // FULL also a power loss (SQLITE_SYNCHRONOUS). A checkpoint every 1,000 pages
                // (SQLite's default): the commit that reaches it copies them back to the
                // database and syncs it while every writer waits. At 10,000 pages that stall
                // was 40 ms, the p99 of BYOK leases at 40,000 a second (5 ms at 1,000 pages),
                // for no measurable saving in webhook CPU (2026-12-07). A WAL that grew past
                // 64 MiB (a long reader held a checkpoint back) is cut back after it.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = {};
                     PRAGMA foreign_keys = ON;
                     PRAGMA wal_autocheckpoint = 1000;
                     PRAGMA journal_size_limit = 67108864;",
                    match self.synchronous {
                        SqliteSynchronous::Normal => "NORMAL",
                        SqliteSynchronous::Full => "FULL",
                    }
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// A connection in the pool, with when it last went back: one that ran work a moment ago
/// needs no test round trip before the next (see [`FRESH`]).
pub struct PooledConnection {
    conn: DbConnection,
    /// When it last went back after work that succeeded (none after a failure: the server may
    /// have gone, so the next checkout tests it).
    returned_at: Option<Instant>,
    /// The work it ran this time failed.
    failed: bool,
}

impl PooledConnection {
    /// Notes how `work`'s result went, for the next checkout's test.
    fn ran<T, E>(&mut self, done: &Result<T, E>) {
        self.failed = done.is_err();
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = DbConnection;

    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

/// How long after its last use a pooled connection is handed out without a test query.
/// Testing every checkout costs a round trip on every request (on the usage and reserve hot
/// path, one of three); a connection that just worked is as good as tested, and one idle for
/// longer (the database may have restarted meanwhile) is tested first.
pub const FRESH: Duration = Duration::from_secs(1);

impl ManageConnection for ConnectionFactory {
    type Connection = PooledConnection;
    type Error = DbError;

    fn connect(&self) -> Result<PooledConnection, DbError> {
        Ok(PooledConnection {
            conn: self.establish()?,
            returned_at: None,
            failed: false,
        })
    }

    fn is_valid(&self, conn: &mut PooledConnection) -> Result<(), DbError> {
        if conn.returned_at.is_some_and(|at| at.elapsed() < FRESH) {
            return Ok(());
        }
        conn.conn.ping().map_err(DbError::Query)
    }

    /// Called as the connection goes back to the pool.
    fn has_broken(&self, conn: &mut PooledConnection) -> bool {
        conn.returned_at = (!std::mem::take(&mut conn.failed)).then(Instant::now);
        conn.conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<ConnectionFactory>;

/// The application's handle on the database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// SQLite has one writer at a time: the hot write paths (usage reports, reserves, commits)
    /// take turns here, parked on a mutex and woken as it frees, instead of in SQLite's busy
    /// handler, which sleeps 1 ms to 100 ms between attempts and gives the lock to whoever
    /// happens to retry first (tail latencies of a tenth of a second under load, and
    /// time-outs). None on PostgreSQL,
    /// whose row locks let writers run side by side.
    sqlite_writer: Option<std::sync::Arc<parking_lot::Mutex<()>>>,
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
    /// Builds the pool and checks that a first connection can be made; SQLite at its default
    /// durability ([`SqliteSynchronous::Normal`]).
    pub fn connect(url: DatabaseUrl, pool_size: u32) -> Result<Self, DbError> {
        Self::connect_with(url, pool_size, SqliteSynchronous::default())
    }

    /// [`Db::connect`], SQLite's commits synced as `synchronous` says.
    pub fn connect_with(
        url: DatabaseUrl,
        pool_size: u32,
        synchronous: SqliteSynchronous,
    ) -> Result<Self, DbError> {
        if let DatabaseUrl::Sqlite(path) = &url {
            secure_sqlite_file(path)?;
        }
        let url_is_sqlite = matches!(url, DatabaseUrl::Sqlite(_));
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(Duration::from_secs(10))
            .build(ConnectionFactory::new(url, synchronous))
            .map_err(DbError::Pool)?;
        let sqlite_writer = url_is_sqlite.then(Default::default);
        Ok(Self {
            pool,
            sqlite_writer,
            metrics: None,
        })
    }

    /// Like [`Db::connect`], but a SQLite file that does not exist is an error rather than a new,
    /// empty database: for commands that work on an existing one (a typo in `DATABASE_URL`
    /// must not leave an admin account in a database nobody serves).
    pub fn open_existing(
        url: DatabaseUrl,
        pool_size: u32,
        synchronous: SqliteSynchronous,
    ) -> Result<Self, DbError> {
        if let DatabaseUrl::Sqlite(path) = &url
            && !path.exists()
        {
            return Err(DbError::Missing { path: path.clone() });
        }
        Self::connect_with(url, pool_size, synchronous)
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
        self.on_blocking_thread(None, work).await
    }

    /// Runs write transaction `work` like [`Db::run`], on SQLite as the instance's one writer
    /// of the moment: it waits for its turn (before taking a pooled connection, so waiting
    /// writers leave the connections to readers) until `due`, or at most
    /// [`SQLITE_BUSY_TIMEOUT_MS`], and fails with [`DbError::Busy`] past that.
    pub async fn write<T, E, F>(&self, due: Option<Instant>, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let longest = Instant::now() + Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
        let until = due.map_or(longest, |due| due.min(longest));
        self.on_blocking_thread(Some(until), work).await
    }

    /// [`Db::run`] and [`Db::write`]: with `turn_until`, on SQLite, in the writer turn.
    async fn on_blocking_thread<T, E, F>(
        &self,
        turn_until: Option<Instant>,
        work: F,
    ) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let metrics = self.metrics.clone();
        let writer = self.sqlite_writer.clone().zip(turn_until);
        actix_web::web::block(move || {
            let turn = match &writer {
                Some((writer, until)) => {
                    let turn = writer.try_lock_until(*until).ok_or(DbError::Busy)?;
                    Some((turn, *until))
                }
                None => None,
            };
            // A writer waiting for a connection holds the turn: it waits no longer than its
            // deadline for one either.
            let got = match &turn {
                Some((_, until)) => {
                    pool.get_timeout(until.saturating_duration_since(Instant::now()))
                }
                None => pool.get(),
            };
            let done = got
                .map_err(DbError::from)
                .map_err(E::from)
                .and_then(|mut conn| {
                    let done = match metrics {
                        Some(metrics) => metrics.scope(|| work(&mut conn)),
                        None => work(&mut conn),
                    };
                    conn.ran(&done);
                    done
                });
            // Handed to the writer that has waited longest (a plain unlock lets a newcomer
            // barge in first, and a writer unlucky several times in a row waits many turns).
            if let Some((turn, _)) = turn {
                parking_lot::MutexGuard::unlock_fair(turn);
            }
            done
        })
        .await
        .map_err(|_| DbError::Blocking)?
    }

    /// Runs `work` with the application's metrics current on this thread (a dedicated
    /// thread's whole life, for [`group_commit`]).
    pub fn scoped<T>(&self, work: impl FnOnce() -> T) -> T {
        match &self.metrics {
            Some(metrics) => metrics.scope(work),
            None => work(),
        }
    }

    /// Runs blocking `work` (a dedicated thread's write transaction) in SQLite's writer turn,
    /// waiting for it as long as it takes, and hands the turn on fairly; PostgreSQL needs none.
    pub fn as_writer<T>(&self, work: impl FnOnce() -> T) -> T {
        let turn = self.sqlite_writer.as_ref().map(|writer| writer.lock());
        let done = work();
        if let Some(turn) = turn {
            parking_lot::MutexGuard::unlock_fair(turn);
        }
        done
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
        // Instances starting together on one database take turns (a session advisory lock):
        // the first applies what is pending, the others then find nothing to do.
        DbConnection::Postgresql(pg) => {
            use diesel::RunQueryDsl as _;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(pg)?;
            let applied = names(pg.run_pending_migrations(POSTGRES_MIGRATIONS));
            let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
            let unlocked = diesel::sql_query(unlock).execute(pg);
            let applied = applied?;
            unlocked?;
            applied
        }
        DbConnection::Sqlite(sqlite) => names(sqlite.run_pending_migrations(SQLITE_MIGRATIONS))?,
    };
    Ok(applied)
}

/// The versions a migration run applied, or its error.
fn names<V: ToString>(applied: diesel::migration::Result<Vec<V>>) -> Result<Vec<String>, DbError> {
    applied
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|err| DbError::Migration(err.to_string()))
}

/// The PostgreSQL advisory lock key migrations are applied under (any fixed number Tollgate
/// alone uses: "tollgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

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

/// Runs `work`, a batch of reads and the writes they decide (a group-commit batch), in one
/// transaction that takes the write lock at its start and plans its statements once:
///
/// - PostgreSQL: `BEGIN` and `SET LOCAL plan_cache_mode = force_generic_plan` in one round
///   trip. The batch's statements are kept prepared and take their kept generic plan: with
///   its default, PostgreSQL plans a statement whose cost depends on an array's length (`=
///   ANY($1)`, `unnest($1)`) anew on every call, which cost a third of its time in a batch.
///   Only for statements whose best plan depends neither on their values nor on a table
///   growing fast (see [`kept_sql!`]): lookups by key in tables that grow slowly.
/// - SQLite: `BEGIN IMMEDIATE`, so the reads are never of a snapshot the writes cannot build
///   on (another process's commit in between).
///
/// Inside a transaction already, `work` runs in a nested one (a savepoint), as
/// `Connection::transaction` would: then `Ok` means the savepoint was released, not that
/// anything committed. `SET LOCAL` needs PostgreSQL 12 or newer.
pub fn batch_transaction<T, E>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    begun_with(
        conn,
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan",
        work,
    )
}

/// Runs `work`, reads and the writes they decide, in one transaction that takes the write
/// lock at its start: `BEGIN IMMEDIATE` on SQLite, so the reads are never of a snapshot the
/// writes cannot build on (another process's commit in between); a plain `BEGIN` on
/// PostgreSQL, whose row locks and unique indexes order concurrent writers. Nested, as
/// [`batch_transaction`].
pub fn write_transaction<T, E>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    begun_with(conn, "BEGIN", work)
}

/// [`write_transaction`] for a group-commit writer thread, which every delivery it serves
/// waits on: on PostgreSQL no statement waits longer than 5 s for a lock (`SET LOCAL
/// lock_timeout`, in the `BEGIN`'s round trip). A lock held elsewhere for long (an operator's
/// open transaction, a stuck session) then fails the batch, whose deliveries are answered 500
/// and retried by Stripe, instead of stopping every delivery behind it. SQLite's writer waits
/// for its lock before it begins ([`SQLITE_BUSY_TIMEOUT_MS`]).
pub fn writer_transaction<T, E>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    begun_with(conn, "BEGIN; SET LOCAL lock_timeout = '5s'", work)
}

/// A transaction begun by `postgres_begin` on PostgreSQL and `BEGIN IMMEDIATE` on SQLite.
fn begun_with<T, E>(
    conn: &mut DbConnection,
    postgres_begin: &str,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Manager = <DbConnection as diesel::Connection>::TransactionManager;
    let depth = Manager::transaction_manager_status_mut(conn).transaction_depth()?;
    if depth.is_some() {
        return conn.transaction(work);
    }
    let begun = match conn {
        DbConnection::Postgresql(pg) => {
            AnsiTransactionManager::begin_transaction_sql(pg, postgres_begin)
        }
        DbConnection::Sqlite(sqlite) => {
            AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")
        }
    };
    if let Err(err) = begun {
        // The `BEGIN` may have run when what follows it failed, leaving PostgreSQL in a
        // transaction diesel does not know of: the pool must not hand this connection out again.
        Manager::transaction_manager_status_mut(conn).set_in_error();
        return Err(err.into());
    }
    match work(conn) {
        Ok(done) => {
            Manager::commit_transaction(conn)?;
            Ok(done)
        }
        Err(err) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(err),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// A statement of fixed text, for what the query builder cannot say, that its connection keeps
/// prepared as it keeps the builder's statements: diesel keeps no `diesel::sql_query` (its text
/// could be built at run time), so PostgreSQL would parse and plan it on every call. The text
/// names its binds `$1`, `$2`, … (a bind may be named more than once; no other `$` may
/// appear), bound in that order with `.bind::<SqlType, _>(value)`. Only where a kept plan
/// stays good: PostgreSQL may keep a generic plan made while a table was small, and use it
/// until the table's next ANALYZE. Inserts, and lookups in small tables, are safe; a join
/// against a fast-growing table (`webhook_events`) is not.
///
/// The text is a constant expression (a literal, a `concat!` of literals), the constant of the
/// statement's own type ([`KeptSite`]), one type per use of the macro: diesel finds the
/// prepared statement by that type and the binds' SQL types, as it does the builder's, without
/// writing out and hashing the text on every call.
#[macro_export]
macro_rules! kept_sql {
    ($text:expr $(,)?) => {{
        /// This statement's own type: its connection keeps it prepared by this.
        struct Site;
        impl $crate::db::KeptSite for Site {
            // A constant: text built at run time does not compile here.
            const TEXT: &'static str = $text;
        }
        $crate::db::KeptSql::<$crate::db::NoBinds, Site>::unbound()
    }};
}
pub use crate::kept_sql;

/// A use of [`kept_sql!`]: the type its statement is kept by, and its text (a constant, so one
/// type is always one text).
pub trait KeptSite: 'static {
    const TEXT: &'static str;
}

/// See [`kept_sql!`].
pub struct KeptSql<B, S> {
    binds: B,
    site: std::marker::PhantomData<S>,
}

impl<S: KeptSite> KeptSql<NoBinds, S> {
    /// The statement of `S` (made by [`kept_sql!`]), nothing bound yet.
    pub fn unbound() -> Self {
        Self {
            binds: NoBinds,
            site: std::marker::PhantomData,
        }
    }
}

/// The binds of a [`KeptSql`] before its first.
pub struct NoBinds;

/// A [`KeptSql`]'s binds: those before, then `value` as `ST`.
pub struct Bind<P, V, ST> {
    before: P,
    value: V,
    sql_type: std::marker::PhantomData<ST>,
}

impl<B, S> KeptSql<B, S> {
    /// Binds the next value: `$1`, then `$2`, ….
    pub fn bind<ST, V>(self, value: V) -> KeptSql<Bind<B, V, ST>, S> {
        KeptSql {
            binds: Bind {
                before: self.binds,
                value,
                sql_type: std::marker::PhantomData,
            },
            site: std::marker::PhantomData,
        }
    }
}

/// The binds of a [`KeptSql`], pushed where the text names them.
pub trait KeptBinds<DB: diesel::backend::Backend> {
    /// How many there are.
    const COUNT: usize;

    /// Pushes bind `n` (from 1) as a parameter.
    fn push<'b>(
        &'b self,
        n: usize,
        pass: &mut diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()>;
}

impl<DB: diesel::backend::Backend> KeptBinds<DB> for NoBinds {
    const COUNT: usize = 0;

    fn push<'b>(
        &'b self,
        n: usize,
        _: &mut diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        Err(diesel::result::Error::QueryBuilderError(
            format!("the statement names ${n}, which is not bound").into(),
        ))
    }
}

impl<DB, P, V, ST> KeptBinds<DB> for Bind<P, V, ST>
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<ST>,
    P: KeptBinds<DB>,
    V: diesel::serialize::ToSql<ST, DB>,
{
    const COUNT: usize = P::COUNT + 1;

    fn push<'b>(
        &'b self,
        n: usize,
        pass: &mut diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        match n == Self::COUNT {
            true => pass.push_bind_param::<ST, V>(&self.value),
            false => self.before.push(n, pass),
        }
    }
}

impl<DB, B, S> diesel::query_builder::QueryFragment<DB> for KeptSql<B, S>
where
    DB: diesel::backend::Backend,
    B: KeptBinds<DB>,
    S: KeptSite,
{
    fn walk_ast<'b>(
        &'b self,
        mut pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        // The text up to each `$n`, then bind n as a parameter (the backend writes its own
        // placeholder); nothing marks the statement unsafe to keep, as `sql_query` does.
        let mut named = vec![false; B::COUNT];
        let mut rest = S::TEXT;
        while let Some(at) = rest.find('$') {
            pass.push_sql(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let n: usize = after[..digits].parse().map_err(|_| {
                diesel::result::Error::QueryBuilderError("a `$` that names no bind".into())
            })?;
            self.binds.push(n, &mut pass)?;
            if let Some(seen) = n.checked_sub(1).and_then(|i| named.get_mut(i)) {
                *seen = true;
            }
            rest = &after[digits..];
        }
        pass.push_sql(rest);
        match named.iter().position(|seen| !seen) {
            None => Ok(()),
            Some(unnamed) => Err(diesel::result::Error::QueryBuilderError(
                format!("${} is bound but the statement never names it", unnamed + 1).into(),
            )),
        }
    }
}

impl<B: KeptBindTypes, S: KeptSite> diesel::query_builder::QueryId for KeptSql<B, S> {
    // Kept by its use of `kept_sql!` (one text) and its binds' SQL types: the same use bound
    // with other types (in a generic function, say) is another statement.
    type QueryId = (S, B::Types);
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// The SQL types of a [`KeptSql`]'s binds, as a type (part of the statement's key).
pub trait KeptBindTypes {
    type Types: 'static;
}

impl KeptBindTypes for NoBinds {
    type Types = ();
}

impl<P: KeptBindTypes, V, ST: 'static> KeptBindTypes for Bind<P, V, ST> {
    type Types = (P::Types, ST);
}

impl<B, S> diesel::query_builder::Query for KeptSql<B, S> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<B, S, Conn> diesel::RunQueryDsl<Conn> for KeptSql<B, S> {}

/// A cheap round trip, for `/readyz`.
pub fn ping(conn: &mut DbConnection) -> Result<(), DbError> {
    conn.ping().map_err(DbError::Query)
}

/// The database's size on disk, in bytes: PostgreSQL's `pg_database_size` of the current
/// database; SQLite's pages in use (the main file, as a checkpoint leaves it).
pub fn size_bytes(conn: &mut DbConnection) -> Result<i64, DbError> {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
    }
    let size: Size = match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query("SELECT pg_database_size(current_database()) AS bytes")
                .get_result(pg)?
        }
        DbConnection::Sqlite(sqlite) => diesel::sql_query(
            "SELECT page_count * page_size AS bytes \
             FROM pragma_page_count(), pragma_page_size()",
        )
        .get_result(sqlite)?,
    };
    Ok(size.bytes)
}

/// Timestamps as SQLite stores them (text), each distinct one written once: the rows a webhook
/// batch inserts share their times, and chrono's formatting, once per bind, was a visible part
/// of a SQLite writer's time. Binding the text as `Text` stores exactly what binding the
/// timestamp as `Timestamp` would.
#[derive(Debug, Default)]
pub struct SqliteTimes {
    written: Vec<(chrono::NaiveDateTime, String)>,
}

impl SqliteTimes {
    /// At most this many distinct times are kept (a batch has two or three).
    const KEPT: usize = 8;

    /// `at` as diesel binds a `Timestamp` on SQLite (`%F %T%.f`).
    pub fn text(&mut self, at: chrono::NaiveDateTime) -> &str {
        let index = match self.written.iter().position(|(seen, _)| *seen == at) {
            Some(index) => index,
            None => {
                if self.written.len() == Self::KEPT {
                    self.written.remove(0);
                }
                self.written.push((at, at.format("%F %T%.f").to_string()));
                self.written.len() - 1
            }
        };
        &self.written[index].1
    }
}

/// The current time as stored in the database (UTC, microseconds).
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    // Both backends keep microseconds; truncating here makes round trips compare equal.
    now.with_nanosecond((now.nanosecond() / 1_000) * 1_000)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::{Text, Timestamp};

    use super::SqliteTimes;

    /// What diesel stores for `at` when it binds a `Timestamp` on SQLite.
    fn bound_by_diesel(conn: &mut SqliteConnection, at: chrono::NaiveDateTime) -> String {
        #[derive(QueryableByName)]
        struct Bound {
            #[diesel(sql_type = Text)]
            text: String,
        }
        diesel::sql_query("SELECT CAST(? AS TEXT) AS text")
            .bind::<Timestamp, _>(at)
            .get_result::<Bound>(conn)
            .unwrap()
            .text
    }

    #[test]
    fn sqlite_times_are_the_text_diesel_binds_each_written_once() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let base = chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .unwrap()
            .naive_utc();
        let mut times = SqliteTimes::default();
        let nanos = [
            0,
            1_000,
            120_000_000,
            123_456_000,
            123_456_789,
            999_999_000,
            5_000_000,
            7,
            42_000,
            100,
        ];
        // More distinct times than it keeps, then the first ones again.
        for round in 0..2 {
            for n in nanos {
                let at = base + chrono::Duration::nanoseconds(n);
                assert_eq!(times.text(at), bound_by_diesel(&mut conn, at), "{n} ns");
                assert!(times.written.len() <= SqliteTimes::KEPT, "round {round}");
            }
        }
        let at = base + chrono::Duration::microseconds(5);
        times.text(at);
        let kept = times.written.len();
        assert_eq!(times.text(at), "2023-11-14 22:13:20.000005");
        assert_eq!(times.written.len(), kept, "written once");
    }
}
