//! The bodies of the `tollgate` subcommands. `main.rs` parses arguments and maps the
//! outcome to an exit code: 0 success, 1 failure, 2 bad input or configuration.

pub mod admin;
pub mod audit;
pub mod audit_list;
pub mod bench;
pub mod emergency;
pub mod roles;
pub mod rotate;
#[cfg(feature = "stripe-sim")]
pub mod stripe_sim;
pub mod sync;
pub mod tokens;
pub mod validate;

use std::path::Path;

use crate::config::{self, Config, ConfigError, ProcessEnv};
use crate::db::{self, Db};
use crate::startup::Application;

/// A command's failure, with the exit code it deserves. The message never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad input or configuration: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Something failed while doing the work: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Failed(_) => 1,
        }
    }
}

impl From<ConfigError> for CommandError {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::WriteEnvFile { .. } | ConfigError::Random(_) => {
                Self::Failed(err.to_string())
            }
            other => Self::Usage(format!("configuration error: {other}")),
        }
    }
}

fn failed(err: impl std::fmt::Display) -> CommandError {
    CommandError::Failed(err.to_string())
}

/// What a command does when `DATABASE_URL` names a SQLite file that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (`migrate`, `create-admin --create`).
    Create,
    /// Refuse, naming the path (exit 1): a typo must not create a database nobody serves.
    Refuse,
}

/// Connects to `DATABASE_URL` (the only setting database commands need), migrated.
pub(crate) fn connect_database(env_file: &Path, missing: IfMissing) -> Result<Db, CommandError> {
    config::load_env_file(env_file)?;
    open(config::database_url(&ProcessEnv)?, missing)
}

fn open(url: config::DatabaseUrl, missing: IfMissing) -> Result<Db, CommandError> {
    // A command's writes (rotate-key, create-admin) are as durable as the server's.
    let synchronous = config::sqlite_synchronous(&ProcessEnv)?;
    let db = match missing {
        IfMissing::Create => Db::connect_with(url, 2, synchronous),
        IfMissing::Refuse => Db::open_existing(url, 2, synchronous),
    }
    .map_err(failed)?;
    db.run_blocking(db::run_migrations).map_err(failed)?;
    Ok(db)
}

/// Loads the whole configuration (secrets included) and connects to an existing database.
pub(crate) fn connect(env_file: &Path) -> Result<(Config, Db), CommandError> {
    let config = Config::load(env_file)?;
    let db = open(config.database_url.clone(), IfMissing::Refuse)?;
    Ok((config, db))
}

/// `serve --with-stripe-sim`: the simulator's port, and whether to start the demo database over.
#[derive(Debug, Clone, Copy)]
pub struct Demo {
    pub stripe_sim_port: u16,
    pub fresh: bool,
}

/// Serves Tollgate; with `demo`, the offline demo (simulator in-process).
pub async fn serve(env_file: &Path, demo: Option<Demo>) -> Result<(), CommandError> {
    let config = Config::load(env_file)?;
    #[cfg(feature = "stripe-sim")]
    if let Some(demo) = demo {
        return stripe_sim::serve_demo(config, demo.stripe_sim_port, demo.fresh).await;
    }
    #[cfg(not(feature = "stripe-sim"))]
    let _ = demo;
    tracing::info!(
        bind = %config.bind,
        database = ?config.database_url,
        environment = ?config.environment,
        "starting tollgate"
    );
    let host = config.bind.ip();
    let metrics_bind = config.metrics.bind;
    let app = Application::build(config).map_err(failed)?;
    // The bound port (BIND may ask for port 0): scripts and the crash test read this line.
    tracing::info!(
        "listening on http://{}",
        std::net::SocketAddr::new(host, app.port())
    );
    if let (Some(port), Some(bind)) = (app.metrics_port(), metrics_bind) {
        tracing::info!(
            "metrics listening on http://{}/metrics (no token: keep this address private)",
            std::net::SocketAddr::new(bind.ip(), port)
        );
    }
    app.run_until_stopped().await.map_err(failed)
}

pub fn migrate(env_file: &Path) -> Result<(), CommandError> {
    config::load_env_file(env_file)?;
    let synchronous = config::sqlite_synchronous(&ProcessEnv)?;
    let db =
        Db::connect_with(config::database_url(&ProcessEnv)?, 2, synchronous).map_err(failed)?;
    let applied = db.run_blocking(db::run_migrations).map_err(failed)?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        println!(
            "applied {} migration(s): {}",
            applied.len(),
            applied.join(", ")
        );
    }
    Ok(())
}

/// Prints fresh random values for every secret, as `.env` lines.
pub fn keygen() -> Result<(), CommandError> {
    for (var, len) in config::GENERATED_SECRETS {
        println!("{var}={}", config::generate_secret(len)?);
    }
    Ok(())
}
