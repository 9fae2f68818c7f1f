//! The typed settings the rest of Tollgate reads: `Config` and its parts, each with its
//! defaults documented where it is parsed (`vars.rs`) and its secrets redacted in `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::{AlertSettings, ConfigError, StripeSettings};
use crate::secret::{KeyBytes, SecretString};

/// Where Tollgate runs: development is friendly, production is strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// `SQLITE_SYNCHRONOUS`: when a SQLite commit is on disk. Either way the database is in WAL
/// mode and never corrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// `normal` (the default): a commit survives the process crashing (SIGKILL, a panic); a
    /// power loss or kernel crash may lose the last commits before a WAL checkpoint.
    #[default]
    Normal,
    /// `full`: every commit is synced to disk before it is acknowledged, so it also survives
    /// a power loss (one fsync per commit: group commit shares one among a batch).
    Full,
}

/// Which database `DATABASE_URL` points at. PostgreSQL URLs may hold a password: redacted.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(std::sync::Arc<SecretString>),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(_) => f.write_str("postgres://[REDACTED]"),
        }
    }
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            var: "DATABASE_URL",
            reason: reason.to_owned(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(std::sync::Arc::new(SecretString::from(
                url.to_owned(),
            ))));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("must start with sqlite:// or postgres://"))?;
        if path.is_empty() || path.contains(":memory:") || path.starts_with('?') {
            return Err(invalid(
                "must name a SQLite file (in-memory databases are not supported)",
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// The three secrets Tollgate needs to start.
pub struct Secrets {
    /// Signs and encrypts the session cookie (64 bytes).
    pub secret_key: KeyBytes<64>,
    /// Primary AES-256-GCM key for data at rest (32 bytes): seals everything new.
    pub encryption_key: KeyBytes<32>,
    /// Earlier encryption keys, still able to open what they sealed until `rotate-key` is done.
    pub encryption_keys_old: Vec<KeyBytes<32>>,
    /// HMAC key for token hashes, and the root of the blind-index key (32 bytes): makes every
    /// new digest.
    pub token_pepper: KeyBytes<32>,
    /// Earlier peppers, whose token hashes and blind indexes are still recognised until
    /// `rotate-key` has rebuilt the indexes and every token has been used (and re-hashed).
    pub token_peppers_old: Vec<KeyBytes<32>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets([REDACTED])")
    }
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `Secure` on the session cookie; only ever disabled explicitly, for local http.
    pub cookie_secure: bool,
    /// A session unused for this long is gone.
    pub idle_timeout: Duration,
    /// A session older than this is gone, however active.
    pub absolute_lifetime: Duration,
}

/// A per-client-IP limit: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Sign-in submissions.
    pub sign_in: RateLimit,
    /// Sign-up submissions (a budget of their own: a sign-up flood must not lock people out
    /// of signing in, nor the other way round).
    pub sign_up: RateLimit,
    /// Everything else.
    pub default: RateLimit,
    /// BYOK leases, per service token.
    pub lease: RateLimit,
    /// Usage reports and quota reservations (commit, release), per service token.
    pub usage: RateLimit,
    /// Every service API request (`/internal/v1`), per client address.
    pub internal: RateLimit,
    /// Stripe's webhook deliveries, per source IP.
    pub webhook: RateLimit,
    /// Failed sign-ins per account, whatever address they come from.
    pub login_failures: LoginFailureLimit,
}

/// At most `per_account` failed sign-ins per account (normalised email) within `window`; then
/// the account's sign-in answers 429 until the window closes.
#[derive(Debug, Clone, Copy)]
pub struct LoginFailureLimit {
    pub per_account: u32,
    pub window: Duration,
}

/// How much argon2 work runs at once: each hash or verification holds 19 MiB, so a flood of
/// sign-ins must queue (for at most `max_wait`, then 503) rather than exhaust memory.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHashing {
    pub max_concurrent: u32,
    /// How long a request waits for a free slot; zero: not at all.
    pub max_wait: Duration,
}

/// How log lines are written to stderr (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: one line per event, span fields in front (the default).
    #[default]
    Text,
    /// For collectors: one JSON object per line.
    Json,
}

/// Where Prometheus scrapes `/metrics` (see docs/security.md, "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// `METRICS_BIND`: a second address serving only `/metrics`, without a token (a private
    /// interface); none: `/metrics` on the main address only, with a `metrics:read` token.
    pub bind: Option<SocketAddr>,
}

/// Quotas held by reservations (`POST /internal/v1/entitlements/{user_id}/reserve`).
#[derive(Debug, Clone, Copy)]
pub struct QuotaSettings {
    /// How long a reserve may wait for the database before the feature's policy answers
    /// (`RESERVE_DEADLINE_MS`, default 250).
    pub reserve_deadline: Duration,
    /// How often expired reservations are swept and their holds freed
    /// (`RESERVATION_SWEEP_INTERVAL_SECS`, default 30).
    pub sweep_interval: Duration,
}

/// How the audit log stores repeated refusals.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// Repeats of a refusal (same kind, source, actor, reason) within this long of its first
    /// occurrence are counted on one row; zero: every refusal gets its own row.
    pub aggregate_window: Duration,
}

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// `Strict-Transport-Security: max-age=…`; 0 leaves the header out.
    pub hsts_max_age: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed; nobody else's is.
    pub trusted_proxies: Vec<IpNet>,
    /// `ADMIN_REQUIRE_2FA`: console accounts must enrol two-factor sign-in before any console
    /// page opens.
    pub admin_require_2fa: bool,
}

#[derive(Debug)]
pub struct Config {
    pub environment: Environment,
    pub bind: SocketAddr,
    pub database_url: DatabaseUrl,
    pub database_pool_size: u32,
    /// SQLite only (`SQLITE_SYNCHRONOUS`).
    pub sqlite_synchronous: SqliteSynchronous,
    pub secrets: Secrets,
    pub session: SessionSettings,
    pub security: SecuritySettings,
    pub rate_limits: RateLimitSettings,
    pub password_hashing: PasswordHashing,
    pub alerts: AlertSettings,
    /// The notification outbox: retries, e-mail, app-webhook secret overlap.
    pub notify: super::NotifySettings,
    pub audit: AuditSettings,
    pub quotas: QuotaSettings,
    /// How long a service token that authenticated is taken at its word without a lookup
    /// (`SERVICE_TOKEN_CACHE_MS`, default 1000; zero: every request looks it up). A token
    /// revoked on another instance or from the command line stops working within this.
    pub service_token_cache: Duration,
    /// How long a customer's entitlements are answered from memory (`ENTITLEMENTS_CACHE_MS`,
    /// default 1000; zero: every request reads them). What this instance writes (usage,
    /// reservations, webhooks, pages) forgets them at once; what another instance or a command
    /// writes shows within this.
    pub entitlements_cache: Duration,
    pub log_format: LogFormat,
    pub metrics: MetricsSettings,
    /// Days the primary encryption key may age before Tollgate says to rotate it.
    pub key_rotation_days: u32,
    /// The audit chain, retention and file copy.
    pub audit_trail: super::AuditTrailSettings,
    /// HTTP worker threads; default: one per core.
    pub workers: Option<usize>,
    /// Where people reach Tollgate (for Stripe's return URLs); default `http://` + the bound address.
    pub public_url: Option<String>,
    pub stripe: StripeSettings,
    /// The usage sender: forwarding stored usage to Stripe's meters.
    pub usage_sender: UsageSenderSettings,
    /// Where limits shared by every instance live (`REDIS_URL`); `None`: in each process.
    pub redis: Option<super::RedisSettings>,
    /// Failures tests inject on purpose; never set from the environment.
    pub faults: FaultInjection,
}

/// How the usage sender forwards stored usage to Stripe's meter events API.
#[derive(Debug, Clone, Copy)]
pub struct UsageSenderSettings {
    /// How often it looks for due rows in `usage_outbox` (`USAGE_SENDER_INTERVAL_MS`).
    pub interval: Duration,
    /// The wait after the first failed attempt; each later one waits twice as long, up to an
    /// hour (`USAGE_SENDER_RETRY_BASE_MS`).
    pub retry_base: Duration,
}

/// Hooks through which tests make a component fail the way a bug would, to prove that the
/// rest survives it. Empty (doing nothing) unless a test sets them in code.
#[derive(Clone, Default)]
pub struct FaultInjection {
    /// Called by a webhook writer inside each batch's work, with the batch's event ids.
    pub webhook_batch: Option<FaultHook>,
}

/// A test's hook: called with the ids of what is being worked on; it fails by panicking.
pub type FaultHook = std::sync::Arc<dyn Fn(&[&str]) + Send + Sync>;

impl FaultInjection {
    pub fn webhook_batch(&self, event_ids: &[&str]) {
        if let Some(hook) = &self.webhook_batch {
            hook(event_ids);
        }
    }
}

impl fmt::Debug for FaultInjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjection")
            .field("webhook_batch", &self.webhook_batch.is_some())
            .finish()
    }
}

impl Config {
    /// The keyring for data at rest: the primary key and the older ones.
    pub fn keyring(&self) -> crate::crypto::Keyring {
        crate::crypto::Keyring::new(
            &self.secrets.encryption_key,
            &self.secrets.encryption_keys_old,
        )
    }

    /// The HMAC hasher for tokens and blind indexes: the primary pepper and the older ones.
    pub fn token_hasher(&self) -> crate::crypto::TokenHasher {
        crate::crypto::TokenHasher::new(&self.secrets.token_pepper, &self.secrets.token_peppers_old)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn database_url_scheme_picks_the_backend() {
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:pw@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(
            matches!(DatabaseUrl::parse("sqlite:///tmp/x.db"), Ok(DatabaseUrl::Sqlite(p)) if p == Path::new("/tmp/x.db"))
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        let shown = format!(
            "{:?}",
            DatabaseUrl::parse("postgres://u:hunter2@h/db").unwrap()
        );
        assert!(!shown.contains("hunter2"));
    }
}
