//! Reading variables (the process environment, or a map in tests) and parsing them into the
//! typed settings: `Config::from_vars`, and the parsers it composes, each naming its variable
//! in its error and never echoing the value.

use std::time::Duration;

use ipnet::IpNet;

use super::stripe::stripe_settings;
use super::{
    AuditSettings, Config, ConfigError, DatabaseUrl, Environment, FaultInjection, LogFormat,
    LoginFailureLimit, MetricsSettings, PasswordHashing, QuotaSettings, RateLimit,
    RateLimitSettings, Secrets, SecuritySettings, SessionSettings, SqliteSynchronous,
};
use crate::secret::{KeyBytes, decode_key};

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

/// `SQLITE_SYNCHRONOUS`: `normal` (default) or `full`, in any case.
pub fn sqlite_synchronous(vars: &impl Vars) -> Result<SqliteSynchronous, ConfigError> {
    match vars.get("SQLITE_SYNCHRONOUS") {
        None => Ok(SqliteSynchronous::default()),
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(SqliteSynchronous::Normal),
            "full" => Ok(SqliteSynchronous::Full),
            _ => Err(ConfigError::Invalid {
                var: "SQLITE_SYNCHRONOUS",
                reason: "must be normal or full".into(),
            }),
        },
    }
}

/// `KEY_ROTATION_DAYS` (default 90, seed 000): how old the primary encryption key may get
/// before the dashboard and `validate-secrets` say to rotate it.
pub fn key_rotation_days(vars: &impl Vars) -> Result<u32, ConfigError> {
    positive(
        vars,
        "KEY_ROTATION_DAYS",
        crate::encryption_keys::DEFAULT_ROTATION_DAYS,
    )
}

/// A cache's TTL in milliseconds (`SERVICE_TOKEN_CACHE_MS`, `ENTITLEMENTS_CACHE_MS`): at most
/// `service_tokens::MAX_TOKEN_CACHE`, how late a change made elsewhere may take effect.
fn cache_ttl(vars: &impl Vars, var: &'static str) -> Result<Duration, ConfigError> {
    let expected = "a number of milliseconds from 0 (no cache) to 10000";
    let ttl = Duration::from_millis(parse_or(vars, var, 1000, expected)?);
    if ttl > crate::service_tokens::MAX_TOKEN_CACHE {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("must be {expected}"),
        });
    }
    Ok(ttl)
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

pub(super) fn positive(
    vars: &impl Vars,
    var: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
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
pub(super) fn http_url(var: &'static str, raw: &str) -> Result<(String, url::Url), ConfigError> {
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

/// `LOG_FORMAT`: `text` (the default) or `json`. Read before anything else is (the log is set
/// up first), and again with the rest of the configuration.
pub fn log_format(vars: &impl Vars) -> Result<LogFormat, ConfigError> {
    match vars
        .get("LOG_FORMAT")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(_) => Err(ConfigError::Invalid {
            var: "LOG_FORMAT",
            reason: "must be `text` or `json`".to_owned(),
        }),
    }
}

/// `METRICS_BIND`: an address and port for the token-free `/metrics` listener, if any.
fn metrics_settings(vars: &impl Vars) -> Result<MetricsSettings, ConfigError> {
    let bind = match vars.get("METRICS_BIND") {
        None => None,
        Some(raw) => Some(raw.trim().parse().map_err(|_| ConfigError::Invalid {
            var: "METRICS_BIND",
            reason: "must be an address and port such as 127.0.0.1:9090".to_owned(),
        })?),
    };
    Ok(MetricsSettings { bind })
}

fn public_url(vars: &impl Vars) -> Result<Option<String>, ConfigError> {
    let Some(raw) = vars.get("PUBLIC_URL") else {
        return Ok(None);
    };
    Ok(Some(http_url("PUBLIC_URL", &raw)?.0))
}

/// A comma-separated list of IP addresses and CIDRs (empty when unset).
pub(super) fn networks(vars: &impl Vars, var: &'static str) -> Result<Vec<IpNet>, ConfigError> {
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
            sqlite_synchronous: sqlite_synchronous(vars)?,
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
                admin_require_2fa: boolean(vars, "ADMIN_REQUIRE_2FA", false)?,
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
                usage: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_USAGE_PER_MINUTE", 600_000)?,
                    burst: positive(vars, "RATE_LIMIT_USAGE_BURST", 10_000)?,
                },
                internal: RateLimit {
                    per_minute: positive(vars, "RATE_LIMIT_INTERNAL_PER_MINUTE", 600_000)?,
                    burst: positive(vars, "RATE_LIMIT_INTERNAL_BURST", 10_000)?,
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
            alerts: super::alerts::alert_settings(vars, environment)?,
            notify: super::notify::notify_settings(vars, environment)?,
            audit: AuditSettings {
                aggregate_window: Duration::from_secs(parse_or(
                    vars,
                    "AUDIT_AGGREGATE_WINDOW_SECS",
                    60,
                    "a number of seconds",
                )?),
            },
            quotas: QuotaSettings {
                reserve_deadline: Duration::from_millis(
                    positive(vars, "RESERVE_DEADLINE_MS", 250)?.into(),
                ),
                sweep_interval: Duration::from_secs(
                    positive(vars, "RESERVATION_SWEEP_INTERVAL_SECS", 30)?.into(),
                ),
            },
            service_token_cache: cache_ttl(vars, "SERVICE_TOKEN_CACHE_MS")?,
            entitlements_cache: cache_ttl(vars, "ENTITLEMENTS_CACHE_MS")?,
            redis: super::redis::redis_settings(vars)?,
            log_format: log_format(vars)?,
            metrics: metrics_settings(vars)?,
            key_rotation_days: key_rotation_days(vars)?,
            audit_trail: super::audit_trail(vars)?,
            workers,
            public_url: public_url(vars)?,
            stripe,
            usage_sender: super::settings::UsageSenderSettings {
                interval: Duration::from_millis(
                    positive(vars, "USAGE_SENDER_INTERVAL_MS", 1000)?.into(),
                ),
                retry_base: Duration::from_millis(
                    positive(vars, "USAGE_SENDER_RETRY_BASE_MS", 5000)?.into(),
                ),
            },
            faults: FaultInjection::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::fixtures::{config, config_err, with_keys};
    use super::*;
    use crate::secret::encode_base64;

    #[test]
    fn sqlite_synchronous_is_normal_unless_full_is_asked_for() {
        let normal = config(with_keys(&[])).unwrap();
        assert_eq!(normal.sqlite_synchronous, SqliteSynchronous::Normal);
        let full = config(with_keys(&[("SQLITE_SYNCHRONOUS", "Full")])).unwrap();
        assert_eq!(full.sqlite_synchronous, SqliteSynchronous::Full);
        let err = config_err(&[("SQLITE_SYNCHRONOUS", "off")]);
        assert!(err.contains("SQLITE_SYNCHRONOUS"), "{err}");
        assert!(err.contains("normal or full"), "{err}");
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
    fn the_service_token_cache_defaults_to_a_second_and_is_bounded() {
        let default = config(with_keys(&[])).unwrap();
        assert_eq!(default.service_token_cache, Duration::from_secs(1));
        let off = config(with_keys(&[("SERVICE_TOKEN_CACHE_MS", "0")])).unwrap();
        assert!(off.service_token_cache.is_zero());
        let most = config(with_keys(&[("SERVICE_TOKEN_CACHE_MS", "10000")])).unwrap();
        assert_eq!(most.service_token_cache, Duration::from_secs(10));
        for wrong in ["10001", "-1", "soon"] {
            let err = config_err(&[("SERVICE_TOKEN_CACHE_MS", wrong)]);
            assert!(
                err.contains("SERVICE_TOKEN_CACHE_MS") && err.contains("0 (no cache) to 10000"),
                "{wrong}: {err}"
            );
        }
    }

    #[test]
    fn the_entitlements_cache_defaults_to_a_second_and_is_bounded() {
        let default = config(with_keys(&[])).unwrap();
        assert_eq!(default.entitlements_cache, Duration::from_secs(1));
        let off = config(with_keys(&[("ENTITLEMENTS_CACHE_MS", "0")])).unwrap();
        assert!(off.entitlements_cache.is_zero());
        let err = config_err(&[("ENTITLEMENTS_CACHE_MS", "60000")]);
        assert!(err.contains("ENTITLEMENTS_CACHE_MS"), "{err}");
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_cidrs() {
        let config = config(with_keys(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")])).unwrap();
        assert_eq!(config.security.trusted_proxies.len(), 2);
        let err = config_err(&[("TRUSTED_PROXIES", "nope")]);
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
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
    fn log_format_and_metrics_bind_default_and_refuse_bad_values() {
        let defaults = config(with_keys(&[])).unwrap();
        assert_eq!(defaults.log_format, LogFormat::Text);
        assert_eq!(defaults.metrics.bind, None);
        let set = config(with_keys(&[
            ("LOG_FORMAT", "json"),
            ("METRICS_BIND", "127.0.0.1:9090"),
        ]))
        .unwrap();
        assert_eq!(set.log_format, LogFormat::Json);
        assert_eq!(set.metrics.bind.map(|a| a.port()), Some(9090));
        let err = config_err(&[("LOG_FORMAT", "yaml")]);
        assert_eq!(err, "LOG_FORMAT must be `text` or `json`");
        assert!(config_err(&[("METRICS_BIND", "everywhere")]).starts_with("METRICS_BIND "));
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

#[cfg(test)]
mod key_rotation_tests {
    use super::super::fixtures::{config, config_err, with_keys};

    #[test]
    fn key_rotation_days_defaults_to_90_and_refuses_zero() {
        assert_eq!(config(with_keys(&[])).unwrap().key_rotation_days, 90);
        let custom = config(with_keys(&[("KEY_ROTATION_DAYS", "30")])).unwrap();
        assert_eq!(custom.key_rotation_days, 30);
        assert!(config_err(&[("KEY_ROTATION_DAYS", "0")]).contains("KEY_ROTATION_DAYS"));
        assert!(config_err(&[("KEY_ROTATION_DAYS", "soon")]).contains("KEY_ROTATION_DAYS"));
    }
}
