//! Typed settings from the environment and `.env`.
//!
//! Every variable has a documented default (see `.env.example`) or a start-up error that names
//! it. Secrets are parsed into redacting types here and nowhere else. In development, missing
//! keys are generated once and written to `.env` (mode 0600); in production they must be set.
//!
//! `settings` holds the types the rest of Tollgate reads, `vars` parses variables into them,
//! `stripe` owns the Stripe settings (and `stripe_key` the secret key, whose mode is decided
//! when it is parsed), and `env_file` loads `.env` and writes development secrets.

mod alerts;
mod audit_trail;
mod env_file;
#[cfg(test)]
mod fixtures;
mod notify;
mod redis;
mod settings;
mod stripe;
mod stripe_key;
mod vars;

use std::path::{Path, PathBuf};

pub use alerts::{AlertLimit, AlertRule, AlertSettings, AlertWebhook, MIN_WEBHOOK_SECRET_LEN};
pub use audit_trail::{AuditTrailSettings, audit_trail, default_instance_id};
use env_file::generate_missing_dev_secrets;
pub use env_file::{
    GENERATED_SECRETS, env_file_exposure, generate_secret, load_env_file, read_env_file,
};
pub use notify::{NotifySettings, SmtpRelay, SmtpSettings, SmtpTls, SmtpUrlError, notify_settings};
pub use redis::{RedisFail, RedisSettings};
pub use settings::{
    AuditSettings, Config, DatabaseUrl, Environment, FaultHook, FaultInjection, LogFormat,
    LoginFailureLimit, MetricsSettings, PasswordHashing, QuotaSettings, RateLimit,
    RateLimitSettings, Secrets, SecuritySettings, SessionSettings, SqliteSynchronous,
    UsageSenderSettings,
};
pub use stripe::{DEFAULT_STRIPE_API_BASE, DowngradeTiming, StripeSettings, StripeThrottle};
pub use stripe_key::{StripeKeyKind, StripeMode, StripeSecretKey, StripeSecretKeyError};
pub use vars::{
    DEFAULT_BIND, DEFAULT_DATABASE_URL, ProcessEnv, Vars, database_url, environment,
    key_rotation_days, log_format, sqlite_synchronous, stripe_sim_business_name,
};

/// A configuration problem, always naming the variable and never echoing its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set ({hint})")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var} {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("could not read {path}: {reason}")]
    EnvFile { path: PathBuf, reason: String },
    /// `.env` is readable by others in production (the message names the file and the fix).
    #[error("{0}")]
    EnvFileExposed(String),
    #[error("could not write generated development secrets to {path}: {source}")]
    WriteEnvFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the operating system's random generator failed: {0}")]
    Random(getrandom::Error),
}

impl Config {
    /// Loads `.env`, then the environment. In development, secrets that are missing are
    /// generated and appended to `env_file` (mode 0600) with a notice on stderr.
    pub fn load(env_file: &Path) -> Result<Self, ConfigError> {
        load_env_file(env_file)?;
        if environment(&ProcessEnv)? == Environment::Development {
            let generated = generate_missing_dev_secrets(env_file)?;
            if !generated.is_empty() {
                eprintln!(
                    "tollgate: development mode: generated {} and saved to {} (mode 0600); \
                     the values are not shown",
                    generated.join(", "),
                    env_file.display()
                );
                read_env_file(env_file)?;
            }
        }
        Self::from_vars(&ProcessEnv)
    }
}
