//! Typed settings from the environment and `.env`.
//!
//! Every variable has a documented default (see `.env.example`) or a start-up error that names
//! it. Secrets are parsed into redacting types here and nowhere else. In development, missing
//! keys are generated once and written to `.env` (mode 0600); in production they must be set.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::secret::{KeyBytes, SecretString, decode_key, encode_base64};

/// Where Tollgate runs: development is friendly, production is strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

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
}

/// When repeated failures raise a CRITICAL `alert` (once per window).
#[derive(Debug, Clone, Copy)]
pub struct AlertSettings {
    pub window_secs: u32,
    /// Webhook signature failures within the window that raise an alert.
    pub webhook_signature_failures: u32,
    /// Failed payments (`invoice.payment_failed`) within the window that raise an alert.
    pub payment_failures: u32,
}

/// Per-user limits on calls to Stripe, per operation class (seed 004's defaults).
#[derive(Debug, Clone, Copy)]
pub struct StripeThrottle {
    pub customer_per_minute: u32,
    pub subscription_per_minute: u32,
    pub payment_intent_per_minute: u32,
    pub default_per_minute: u32,
}

/// How Tollgate reaches Stripe.
pub struct StripeSettings {
    /// `sk_test_…`/`sk_live_…`/`rk_…`; without it billing pages explain that billing is off.
    pub secret_key: Option<SecretString>,
    pub publishable_key: Option<String>,
    /// `https://api.stripe.com` (tests and offline demos: the simulator's address).
    pub api_base: String,
    pub throttle: StripeThrottle,
    /// `STRIPE_WEBHOOK_SECRET`: one `whsec_…`, or two (comma-separated) during a rotation.
    pub webhook_secrets: Vec<SecretString>,
    /// How far a webhook's signed timestamp may be from now, either way.
    pub webhook_tolerance_secs: i64,
    /// `STRIPE_WEBHOOK_ALLOWED_IPS`: when not empty, deliveries from elsewhere are refused.
    pub webhook_allowed_ips: Vec<IpNet>,
}

impl StripeSettings {
    /// Whether the secret key is a live one (events must then say `livemode: true`).
    pub fn live(&self) -> bool {
        use secrecy::ExposeSecret as _;
        self.secret_key.as_ref().is_some_and(|k| {
            k.expose_secret().starts_with("sk_live_") || k.expose_secret().starts_with("rk_live_")
        })
    }
}

impl fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSettings")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

#[derive(Debug)]
pub struct Config {
    pub environment: Environment,
    pub bind: SocketAddr,
    pub database_url: DatabaseUrl,
    pub database_pool_size: u32,
    pub secrets: Secrets,
    pub session: SessionSettings,
    pub security: SecuritySettings,
    pub rate_limits: RateLimitSettings,
    pub password_hashing: PasswordHashing,
    pub alerts: AlertSettings,
    pub audit: AuditSettings,
    /// HTTP worker threads; default: one per core.
    pub workers: Option<usize>,
    /// Where people reach Tollgate (for Stripe's return URLs); default `http://` + the bound address.
    pub public_url: Option<String>,
    pub stripe: StripeSettings,
    /// Failures tests inject on purpose; never set from the environment.
    pub faults: FaultInjection,
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

/// Reads variables by name: the process environment in production, a map in tests.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment (after `.env` has been loaded into it).
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name).filter(|value| !value.trim().is_empty())
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
const KEYGEN_HINT: &str = "generate one with `tollgate keygen`";

/// Loads `.env` from `env_file` (if present) into the process environment without overriding
/// variables that are already set, then checks who may read it: a `.env` open to group or
/// others is refused in production and warned about in development.
pub fn load_env_file(env_file: &Path) -> Result<(), ConfigError> {
    read_env_file(env_file)?;
    let Some(problem) = env_file_exposure(env_file) else {
        return Ok(());
    };
    match environment(&ProcessEnv) {
        Ok(Environment::Production) => Err(ConfigError::EnvFileExposed(problem)),
        _ => {
            tracing::warn!("{problem} (tollgate refuses to start like this in production)");
            Ok(())
        }
    }
}

/// Why `env_file` is too open, if it is: it holds every secret, so only its owner may read it.
pub fn env_file_exposure(env_file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(env_file).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by group or others (mode {mode:o}): run `chmod 600 {}`",
            env_file.display(),
            env_file.display()
        )
    })
}

/// Loads `.env` into the process environment, checking nothing else.
pub fn read_env_file(env_file: &Path) -> Result<(), ConfigError> {
    match dotenvy::from_path(env_file) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ConfigError::EnvFile {
            path: env_file.to_owned(),
            reason: match err {
                dotenvy::Error::LineParse(_, index) => format!("syntax error at byte {index}"),
                other => other.to_string(),
            },
        }),
    }
}

pub fn environment(vars: &impl Vars) -> Result<Environment, ConfigError> {
    match vars.get("TOLLGATE_ENV").as_deref().map(str::trim) {
        None | Some("development") => Ok(Environment::Development),
        Some("production") => Ok(Environment::Production),
        Some(_) => Err(ConfigError::Invalid {
            var: "TOLLGATE_ENV",
            reason: "must be `development` or `production`".to_owned(),
        }),
    }
}

/// The business name the Stripe simulator shows customers on its hosted pages and invoices
/// (`STRIPE_SIM_BUSINESS_NAME`, as Stripe shows the account's public business name); read by
/// `tollgate stripe-sim` and `serve --with-stripe-sim` only (unset: the simulator's default,
/// "Tollgate"). At most 100 characters.
pub fn stripe_sim_business_name(vars: &impl Vars) -> Option<String> {
    vars.get("STRIPE_SIM_BUSINESS_NAME")
        .map(|name| name.trim().chars().take(100).collect())
}

pub fn database_url(vars: &impl Vars) -> Result<DatabaseUrl, ConfigError> {
    DatabaseUrl::parse(
        &vars
            .get("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
    )
}

fn parse_or<T: std::str::FromStr>(
    vars: &impl Vars,
    var: &'static str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match vars.get(var) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
            var,
            reason: format!("must be {expected}"),
        }),
    }
}

fn positive(vars: &impl Vars, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    let value = parse_or(vars, var, default, "a positive whole number")?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            var,
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

fn key<const N: usize>(vars: &impl Vars, var: &'static str) -> Result<KeyBytes<N>, ConfigError> {
    let raw = vars.get(var).ok_or(ConfigError::Missing {
        var,
        hint: KEYGEN_HINT,
    })?;
    decode_key::<N>(&raw).map_err(|err| ConfigError::Invalid {
        var,
        reason: format!("{err} ({KEYGEN_HINT})"),
    })
}

fn old_keys(vars: &impl Vars) -> Result<Vec<KeyBytes<32>>, ConfigError> {
    let Some(raw) = vars.get("ENCRYPTION_KEYS_OLD") else {
        return Ok(Vec::new());
    };
    crate::crypto::Keyring::parse_old_keys(&raw).map_err(|err| ConfigError::Invalid {
        var: "ENCRYPTION_KEYS_OLD",
        reason: format!("has a bad entry: {err}"),
    })
}

fn old_peppers(vars: &impl Vars) -> Result<Vec<KeyBytes<32>>, ConfigError> {
    let Some(raw) = vars.get("TOKEN_PEPPERS_OLD") else {
        return Ok(Vec::new());
    };
    crate::crypto::TokenHasher::parse_old_peppers(&raw).map_err(|err| ConfigError::Invalid {
        var: "TOKEN_PEPPERS_OLD",
        reason: format!("has a bad entry: {err}"),
    })
}

/// An absolute http(s) URL with a host, parsed (not pattern-matched), without a trailing `/`.
fn http_url(var: &'static str, raw: &str) -> Result<(String, url::Url), ConfigError> {
    let trimmed = raw.trim().trim_end_matches('/').to_owned();
    let invalid = || ConfigError::Invalid {
        var,
        reason: "must be an http(s) URL".into(),
    };
    let parsed = url::Url::parse(&trimmed).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid());
    }
    Ok((trimmed, parsed))
}

fn public_url(vars: &impl Vars) -> Result<Option<String>, ConfigError> {
    let Some(raw) = vars.get("PUBLIC_URL") else {
        return Ok(None);
    };
    Ok(Some(http_url("PUBLIC_URL", &raw)?.0))
}

/// True for an address on this machine (the simulator's kind of address): `localhost`, the
/// loopback ranges and the unspecified addresses, IPv4 or IPv6.
fn is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
        None => true,
    }
}

fn stripe_settings(
    vars: &impl Vars,
    environment: Environment,
) -> Result<StripeSettings, ConfigError> {
    let raw_base = vars
        .get("STRIPE_API_BASE")
        .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into());
    let (api_base, parsed_base) = http_url("STRIPE_API_BASE", &raw_base)?;
    if environment == Environment::Production
        && (is_local(&parsed_base) || parsed_base.scheme() != "https")
    {
        return Err(ConfigError::Invalid {
            var: "STRIPE_API_BASE",
            reason: "must be Stripe's https address in production (the simulator is for tests and demos)".into(),
        });
    }
    let secret_key = vars
        .get("STRIPE_SECRET_KEY")
        .map(|k| SecretString::from(k.trim().to_owned()));
    if let Some(key) = &secret_key {
        use secrecy::ExposeSecret as _;
        let k = key.expose_secret();
        if !(k.starts_with("sk_") || k.starts_with("rk_")) {
            return Err(ConfigError::Invalid {
                var: "STRIPE_SECRET_KEY",
                reason: "must start with sk_ or rk_ (check it with `tollgate validate-secrets`)"
                    .into(),
            });
        }
    }
    let webhook_secrets: Vec<SecretString> = vars
        .get("STRIPE_WEBHOOK_SECRET")
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    {
        use secrecy::ExposeSecret as _;
        if webhook_secrets.len() > 2
            || webhook_secrets
                .iter()
                .any(|s| !s.expose_secret().starts_with("whsec_"))
        {
            return Err(ConfigError::Invalid {
                var: "STRIPE_WEBHOOK_SECRET",
                reason: "must be one whsec_… secret, or two comma-separated during a rotation"
                    .into(),
            });
        }
    }
    Ok(StripeSettings {
        webhook_secrets,
        webhook_tolerance_secs: positive(vars, "STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?.into(),
        webhook_allowed_ips: networks(vars, "STRIPE_WEBHOOK_ALLOWED_IPS")?,
        secret_key,
        publishable_key: vars.get("STRIPE_PUBLISHABLE_KEY"),
        api_base,
        throttle: StripeThrottle {
            customer_per_minute: positive(vars, "STRIPE_RATE_LIMIT_CUSTOMER", 100)?,
            subscription_per_minute: positive(vars, "STRIPE_RATE_LIMIT_SUBSCRIPTION", 50)?,
            payment_intent_per_minute: positive(vars, "STRIPE_RATE_LIMIT_PAYMENT_INTENT", 200)?,
            default_per_minute: positive(vars, "STRIPE_RATE_LIMIT_DEFAULT", 100)?,
        },
    })
}

/// A comma-separated list of IP addresses and CIDRs (empty when unset).
fn networks(vars: &impl Vars, var: &'static str) -> Result<Vec<IpNet>, ConfigError> {
    let Some(raw) = vars.get(var) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    var,
                    reason: format!("has `{item}`, which is not an IP address or CIDR"),
                })
        })
        .collect()
}

/// Most argon2 computations allowed at once (19 MiB each: 1024 of them is 19 GiB).
const MAX_ARGON2_CONCURRENT: u32 = 1024;

fn password_hashing(vars: &impl Vars) -> Result<PasswordHashing, ConfigError> {
    // Two per core keeps every core busy while a verification waits for its thread.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let default = u32::try_from(cores * 2).unwrap_or(MAX_ARGON2_CONCURRENT);
    let max_concurrent = positive(
        vars,
        "ARGON2_MAX_CONCURRENT",
        default.min(MAX_ARGON2_CONCURRENT),
    )?;
    if max_concurrent > MAX_ARGON2_CONCURRENT {
        return Err(ConfigError::Invalid {
            var: "ARGON2_MAX_CONCURRENT",
            reason: format!("must be at most {MAX_ARGON2_CONCURRENT}"),
        });
    }
    let max_wait_ms = parse_or(
        vars,
        "ARGON2_MAX_WAIT_MS",
        5_000,
        "a number of milliseconds",
    )?;
    Ok(PasswordHashing {
        max_concurrent,
        max_wait: Duration::from_millis(max_wait_ms),
    })
}

fn boolean(vars: &impl Vars, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match vars
        .get(var)
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(ConfigError::Invalid {
            var,
            reason: "must be true or false".to_owned(),
        }),
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

    /// Builds the configuration from variables. Secrets must be present.
    pub fn from_vars(vars: &impl Vars) -> Result<Self, ConfigError> {
        let bind_raw = vars.get("BIND").unwrap_or_else(|| DEFAULT_BIND.into());
        let bind = bind_raw.trim().parse().map_err(|_| ConfigError::Invalid {
            var: "BIND",
            reason: "must be an address and port such as 127.0.0.1:8080".to_owned(),
        })?;
        let workers = match vars.get("WORKERS") {
            None => None,
            Some(_) => Some(positive(vars, "WORKERS", 1)? as usize),
        };
        let environment = environment(vars)?;
        let cookie_secure = boolean(vars, "SESSION_COOKIE_SECURE", true)?;
        if environment == Environment::Production && !cookie_secure {
            return Err(ConfigError::Invalid {
                var: "SESSION_COOKIE_SECURE",
                reason: "must not be false in production: session cookies would travel over plain http (unset it, or serve production over https)".into(),
            });
        }
        let stripe = stripe_settings(vars, environment)?;
        // The single budget sign-in and sign-up once shared: still the default of both.
        let legacy = RateLimit {
            per_minute: positive(vars, "RATE_LIMIT_AUTH_PER_MINUTE", 5)?,
            burst: positive(vars, "RATE_LIMIT_AUTH_BURST", 5)?,
        };
        if vars.get("TOLLGATE_ENV").is_none() && stripe.live() {
            return Err(ConfigError::Invalid {
                var: "TOLLGATE_ENV",
                reason: "is not set, but STRIPE_SECRET_KEY is a live key: set TOLLGATE_ENV=production (development mode is for test keys)".into(),
            });
        }
        Ok(Self {
            environment,
            bind,
            database_url: database_url(vars)?,
            database_pool_size: positive(vars, "DATABASE_POOL_SIZE", 8)?,
            secrets: Secrets {
                secret_key: key(vars, "SECRET_KEY")?,
                encryption_key: key(vars, "ENCRYPTION_KEY")?,
                encryption_keys_old: old_keys(vars)?,
                token_pepper: key(vars, "TOKEN_PEPPER")?,
                token_peppers_old: old_peppers(vars)?,
            },
            session: SessionSettings {
                cookie_secure,
                idle_timeout: Duration::from_secs(
                    positive(vars, "SESSION_IDLE_TIMEOUT_SECS", 30 * 60)?.into(),
                ),
                absolute_lifetime: Duration::from_secs(
                    positive(vars, "SESSION_ABSOLUTE_LIFETIME_SECS", 12 * 60 * 60)?.into(),
                ),
            },
            security: SecuritySettings {
                hsts_max_age: parse_or(vars, "HSTS_MAX_AGE", 31_536_000, "a number of seconds")?,
                trusted_proxies: networks(vars, "TRUSTED_PROXIES")?,
            },
            rate_limits: RateLimitSettings {
                sign_in: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_SIGN_IN_PER_MINUTE", legacy.per_minute)?,
                    burst: positive(vars, "RATE_LIMIT_SIGN_IN_BURST", legacy.burst)?,
                },
                sign_up: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_SIGN_UP_PER_MINUTE", legacy.per_minute)?,
                    burst: positive(vars, "RATE_LIMIT_SIGN_UP_BURST", legacy.burst)?,
                },
                default: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_DEFAULT_PER_MINUTE", 600)?,
                    burst: positive(vars, "RATE_LIMIT_DEFAULT_BURST", 100)?,
                },
                lease: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_LEASE_PER_MINUTE", 600)?,
                    burst: positive(vars, "RATE_LIMIT_LEASE_BURST", 60)?,
                },
                webhook: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_WEBHOOK_PER_MINUTE", 1000)?,
                    burst: positive(vars, "RATE_LIMIT_WEBHOOK_BURST", 1000)?,
                },
                login_failures: LoginFailureLimit {
                    per_account: positive(vars, "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", 10)?,
                    window: Duration::from_secs(
                        positive(vars, "RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS", 15 * 60)?.into(),
                    ),
                },
            },
            password_hashing: password_hashing(vars)?,
            alerts: AlertSettings {
                window_secs: positive(vars, "ALERT_WINDOW_SECS", 300)?,
                webhook_signature_failures: positive(vars, "ALERT_WEBHOOK_SIGNATURE_FAILURES", 5)?,
                payment_failures: positive(vars, "ALERT_PAYMENT_FAILURES", 5)?,
            },
            audit: AuditSettings {
                aggregate_window: Duration::from_secs(parse_or(
                    vars,
                    "AUDIT_AGGREGATE_WINDOW_SECS",
                    60,
                    "a number of seconds",
                )?),
            },
            workers,
            public_url: public_url(vars)?,
            stripe,
            faults: FaultInjection::default(),
        })
    }

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

/// The secret variables and their sizes in bytes.
pub const GENERATED_SECRETS: [(&str, usize); 3] = [
    ("SECRET_KEY", 64),
    ("ENCRYPTION_KEY", 32),
    ("TOKEN_PEPPER", 32),
];

/// A fresh random value for a secret of `len` bytes, base64-encoded.
pub fn generate_secret(len: usize) -> Result<String, ConfigError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(ConfigError::Random)?;
    Ok(encode_base64(&bytes))
}

fn generate_missing_dev_secrets(env_file: &Path) -> Result<Vec<&'static str>, ConfigError> {
    let missing: Vec<_> = GENERATED_SECRETS
        .iter()
        .filter(|(var, _)| ProcessEnv.get(var).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut assignments = Vec::new();
    for (var, len) in &missing {
        assignments.push((*var, generate_secret(*len)?));
    }
    if ProcessEnv.get("SESSION_COOKIE_SECURE").is_none() {
        assignments.push(("SESSION_COOKIE_SECURE", "false".to_owned()));
    }
    let existing = match std::fs::read_to_string(env_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::WriteEnvFile {
                path: env_file.to_owned(),
                source,
            });
        }
    };
    write_private(env_file, &fill_env_file(&existing, &assignments)).map_err(|source| {
        ConfigError::WriteEnvFile {
            path: env_file.to_owned(),
            source,
        }
    })?;
    Ok(missing.iter().map(|(var, _)| *var).collect())
}

/// Puts each assignment into a dotenv text: an existing empty `VAR=` line is filled in place
/// (dotenv keeps the first assignment, so an appended one would be ignored); others are added.
fn fill_env_file(existing: &str, assignments: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
    let mut appended = Vec::new();
    for (var, value) in assignments {
        let empty = lines.iter_mut().find(|line| {
            line.trim_start()
                .strip_prefix(var)
                .and_then(|rest| rest.trim_start().strip_prefix('='))
                .is_some_and(|v| {
                    let v = v.split('#').next().unwrap_or("").trim();
                    v.is_empty() || v == "\"\"" || v == "''"
                })
        });
        match empty {
            Some(line) => *line = format!("{var}={value}"),
            None => appended.push(format!("{var}={value}")),
        }
    }
    if !appended.is_empty() {
        lines.push(String::new());
        lines.push(
            "# Generated by tollgate on first run (development only). SESSION_COOKIE_SECURE=false"
                .into(),
        );
        lines.push("# is for local http only: browsers drop Secure cookies on plain http.".into());
        lines.extend(appended);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Writes a file only its owner may read: a private temporary file renamed into place.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let tmp = path.with_extension("tollgate-tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn with_keys(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("SECRET_KEY", encode_base64(&[1; 64])),
            ("ENCRYPTION_KEY", encode_base64(&[2; 32])),
            ("TOKEN_PEPPER", encode_base64(&[3; 32])),
        ];
        all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        all
    }

    fn config(pairs: Vec<(&'static str, String)>) -> Result<Config, ConfigError> {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Config::from_vars(&vars(&refs))
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = config(with_keys(&[])).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(
            matches!(config.database_url, DatabaseUrl::Sqlite(ref p) if p == Path::new("tollgate.db"))
        );
        assert!(config.session.cookie_secure);
    }

    #[test]
    fn missing_and_malformed_secrets_name_the_variable_without_echoing_it() {
        let err = config(vec![]).unwrap_err().to_string();
        assert!(err.starts_with("SECRET_KEY is not set"), "{err}");

        let mut pairs = with_keys(&[]);
        pairs[1].1 = "c2hvcnQ=".into();
        let err = config(pairs).unwrap_err().to_string();
        assert!(
            err.starts_with("ENCRYPTION_KEY must decode to 32 bytes (got 5)"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ="));
    }

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

    #[test]
    fn trusted_proxies_accept_addresses_and_cidrs() {
        let config = config(with_keys(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")])).unwrap();
        assert_eq!(config.security.trusted_proxies.len(), 2);
        let err = config_err(&[("TRUSTED_PROXIES", "nope")]);
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
    }

    fn config_err(extra: &[(&'static str, &'static str)]) -> String {
        config(with_keys(extra)).unwrap_err().to_string()
    }

    #[test]
    fn generated_secrets_fill_empty_lines_in_place_and_append_the_rest() {
        let existing = "# copied from .env.example\nSECRET_KEY=\nBIND=127.0.0.1:9000\nTOKEN_PEPPER=\"\" # later\n";
        let filled = fill_env_file(
            existing,
            &[
                ("SECRET_KEY", "AAA".into()),
                ("TOKEN_PEPPER", "BBB".into()),
                ("ENCRYPTION_KEY", "CCC".into()),
            ],
        );
        let lines: Vec<_> = filled.lines().collect();
        assert_eq!(lines[1], "SECRET_KEY=AAA");
        assert_eq!(lines[2], "BIND=127.0.0.1:9000");
        assert_eq!(lines[3], "TOKEN_PEPPER=BBB");
        assert_eq!(*lines.last().unwrap(), "ENCRYPTION_KEY=CCC");
        assert_eq!(filled.matches("SECRET_KEY=").count(), 1);
    }

    #[test]
    fn production_refuses_a_local_or_plain_http_stripe() {
        let err = config_err(&[
            ("TOLLGATE_ENV", "production"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111"),
        ]);
        assert!(
            err.starts_with("STRIPE_API_BASE must be Stripe's https address"),
            "{err}"
        );
        let err = config_err(&[
            ("TOLLGATE_ENV", "production"),
            ("STRIPE_API_BASE", "https://localhost:12111"),
        ]);
        assert!(err.contains("STRIPE_API_BASE"), "{err}");
        let dev = config(with_keys(&[("STRIPE_API_BASE", "http://127.0.0.1:12111/")])).unwrap();
        assert_eq!(dev.stripe.api_base, "http://127.0.0.1:12111");
        let prod = config(with_keys(&[("TOLLGATE_ENV", "production")])).unwrap();
        assert_eq!(prod.stripe.api_base, "https://api.stripe.com");
    }

    #[test]
    fn hosts_are_parsed_as_urls_not_pattern_matched() {
        for local in [
            "https://[::1]:12111",
            "https://[::1]",
            "https://[::ffff:127.0.0.1]",
            "https://LOCALHOST",
            "https://127.9.9.9",
            "https://0.0.0.0:443",
            "https://[::]",
            "https://user:pw@localhost/",
        ] {
            let err = config_err(&[("TOLLGATE_ENV", "production"), ("STRIPE_API_BASE", local)]);
            assert!(
                err.starts_with("STRIPE_API_BASE must be Stripe's"),
                "{local}: {err}"
            );
        }
        for malformed in [
            "https://",
            "ftp://api.stripe.com",
            "api.stripe.com",
            "https:// x",
        ] {
            let err = config_err(&[("STRIPE_API_BASE", malformed)]);
            assert_eq!(err, "STRIPE_API_BASE must be an http(s) URL", "{malformed}");
            let err = config_err(&[("PUBLIC_URL", malformed)]);
            assert_eq!(err, "PUBLIC_URL must be an http(s) URL", "{malformed}");
        }
        let prod = config(with_keys(&[
            ("TOLLGATE_ENV", "production"),
            ("STRIPE_API_BASE", "https://stripe-proxy.internal.example/"),
        ]))
        .unwrap();
        assert_eq!(
            prod.stripe.api_base,
            "https://stripe-proxy.internal.example"
        );
    }

    #[test]
    fn production_refuses_insecure_cookies_and_live_keys_need_production() {
        let err = config_err(&[
            ("TOLLGATE_ENV", "production"),
            ("SESSION_COOKIE_SECURE", "false"),
        ]);
        assert!(
            err.starts_with("SESSION_COOKIE_SECURE must not be false in production"),
            "{err}"
        );
        assert!(config(with_keys(&[("SESSION_COOKIE_SECURE", "false")])).is_ok());

        for live in ["sk_live_DUMMY00000000", "rk_live_DUMMY00000000"] {
            let err = config_err(&[("STRIPE_SECRET_KEY", live)]);
            assert!(
                err.starts_with("TOLLGATE_ENV is not set, but STRIPE_SECRET_KEY is a live key: set TOLLGATE_ENV=production"),
                "{err}"
            );
            assert!(!err.contains(live), "the key is never echoed");
        }
        assert!(config(with_keys(&[("STRIPE_SECRET_KEY", "sk_test_DUMMY00000000")])).is_ok());
        let prod = config(with_keys(&[
            ("TOLLGATE_ENV", "production"),
            ("STRIPE_SECRET_KEY", "sk_live_DUMMY00000000"),
        ]))
        .unwrap();
        assert!(prod.stripe.live());
    }

    #[test]
    fn old_peppers_are_parsed_and_a_bad_entry_is_named_without_its_value() {
        let old = encode_base64(&[4; 32]);
        let pairs = with_keys(&[]);
        let mut with_old = pairs.clone();
        with_old.push(("TOKEN_PEPPERS_OLD", format!("{old}, {old}")));
        let rotated = config(with_old).unwrap();
        assert_eq!(rotated.secrets.token_peppers_old.len(), 2);
        assert_eq!(
            rotated.token_hasher().pepper_ids().len(),
            2,
            "duplicates collapse"
        );
        let mut bad = pairs;
        bad.push(("TOKEN_PEPPERS_OLD", format!("{old},c2hvcnQ=")));
        let err = config(bad).unwrap_err().to_string();
        assert!(
            err.starts_with("TOKEN_PEPPERS_OLD has a bad entry: entry 2:"),
            "{err}"
        );
        assert!(!err.contains(&old) && !err.contains("c2hvcnQ="), "{err}");
    }

    #[test]
    fn bad_values_are_errors_not_defaults() {
        assert!(config_err(&[("TOLLGATE_ENV", "prod")]).contains("TOLLGATE_ENV"));
        assert!(config_err(&[("BIND", "nowhere")]).contains("BIND"));
        assert!(
            config_err(&[("SESSION_COOKIE_SECURE", "maybe")]).contains("SESSION_COOKIE_SECURE")
        );
        assert!(
            config_err(&[("RATE_LIMIT_SIGN_IN_PER_MINUTE", "0")])
                .contains("RATE_LIMIT_SIGN_IN_PER_MINUTE")
        );
        assert!(
            config_err(&[("RATE_LIMIT_SIGN_UP_BURST", "0")]).contains("RATE_LIMIT_SIGN_UP_BURST")
        );
        for var in [
            "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT",
            "RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS",
            "ARGON2_MAX_CONCURRENT",
        ] {
            assert!(config_err(&[(var, "0")]).contains(var), "{var}");
        }
        assert!(config_err(&[("ARGON2_MAX_CONCURRENT", "5000")]).contains("ARGON2_MAX_CONCURRENT"));
        assert!(config_err(&[("ARGON2_MAX_WAIT_MS", "soon")]).contains("ARGON2_MAX_WAIT_MS"));
        assert!(
            config_err(&[("AUDIT_AGGREGATE_WINDOW_SECS", "-1")])
                .contains("AUDIT_AGGREGATE_WINDOW_SECS")
        );
    }

    #[test]
    fn sign_in_and_sign_up_have_budgets_of_their_own() {
        let both = config(with_keys(&[])).unwrap().rate_limits;
        assert_eq!((both.sign_in.per_minute, both.sign_in.burst), (5, 5));
        assert_eq!((both.sign_up.per_minute, both.sign_up.burst), (5, 5));
        let split = config(with_keys(&[
            ("RATE_LIMIT_AUTH_PER_MINUTE", "3"),
            ("RATE_LIMIT_AUTH_BURST", "4"),
            ("RATE_LIMIT_SIGN_UP_PER_MINUTE", "2"),
        ]))
        .unwrap()
        .rate_limits;
        assert_eq!((split.sign_in.per_minute, split.sign_in.burst), (3, 4));
        assert_eq!((split.sign_up.per_minute, split.sign_up.burst), (2, 4));
    }

    #[test]
    fn hardening_settings_have_their_documented_defaults() {
        let config = config(with_keys(&[])).unwrap();
        let failures = config.rate_limits.login_failures;
        assert_eq!(failures.per_account, 10);
        assert_eq!(failures.window, Duration::from_secs(900));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(config.password_hashing.max_concurrent as usize, cores * 2);
        assert_eq!(config.password_hashing.max_wait, Duration::from_secs(5));
        assert_eq!(config.audit.aggregate_window, Duration::from_secs(60));
    }
}
