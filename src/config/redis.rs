//! Limits shared by every instance: `REDIS_URL`, `REDIS_FAIL` and `REDIS_KEY_PREFIX`.

use secrecy::{ExposeSecret as _, SecretString};

use super::ConfigError;
use super::vars::Vars;

/// Where the limiters of every instance keep their state (`REDIS_URL` set), and what happens
/// when that Redis cannot be reached.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`, `rediss://…` (TLS is not built in: refused) or
    /// `redis+unix:///path`. It may carry a password: kept secret.
    pub url: SecretString,
    pub fail: RedisFail,
    /// How long a limiter waits for Redis before it counts it as unreachable
    /// (`REDIS_TIMEOUT_MS`, default 250, 10 to 10000).
    pub timeout: std::time::Duration,
    /// Put before every key (`REDIS_KEY_PREFIX`, default `tollgate`), so that deployments
    /// sharing one Redis keep apart.
    pub prefix: String,
}

/// `REDIS_FAIL`: what the limiters do while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFail {
    /// `open` (the default): each instance limits in memory on its own until Redis is back
    /// (so N instances allow up to N times the budget meanwhile).
    Open,
    /// `closed`: requests to limited routes are answered 503 until Redis is back.
    Closed,
}

pub(super) fn redis_settings(vars: &impl Vars) -> Result<Option<RedisSettings>, ConfigError> {
    let Some(url) = vars.get("REDIS_URL") else {
        return Ok(None);
    };
    let url = SecretString::from(url.trim().to_owned());
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "REDIS_URL",
        reason: reason.to_owned(),
    };
    let raw = url.expose_secret();
    if !(raw.starts_with("redis://") || raw.starts_with("redis+unix://")) {
        return Err(invalid(
            "must start with redis:// or redis+unix:// (rediss:// is not supported: reach a remote Redis through a TLS tunnel)",
        ));
    }
    // The message never repeats the URL: it may hold a password.
    redis::Client::open(raw).map_err(|_| invalid("is not a valid Redis URL"))?;
    let fail = match vars.get("REDIS_FAIL").as_deref().map(str::trim) {
        None | Some("open") => RedisFail::Open,
        Some("closed") => RedisFail::Closed,
        Some(_) => {
            return Err(ConfigError::Invalid {
                var: "REDIS_FAIL",
                reason: "must be open or closed".into(),
            });
        }
    };
    let prefix = vars
        .get("REDIS_KEY_PREFIX")
        .map_or_else(|| "tollgate".to_owned(), |p| p.trim().to_owned());
    let well_formed = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !well_formed {
        return Err(ConfigError::Invalid {
            var: "REDIS_KEY_PREFIX",
            reason: "must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
        });
    }
    let timeout = match vars
        .get("REDIS_TIMEOUT_MS")
        .map(|v| v.trim().parse::<u64>())
    {
        None => 250,
        Some(Ok(ms)) if (10..=10_000).contains(&ms) => ms,
        Some(_) => {
            return Err(ConfigError::Invalid {
                var: "REDIS_TIMEOUT_MS",
                reason: "must be a number of milliseconds from 10 to 10000".into(),
            });
        }
    };
    Ok(Some(RedisSettings {
        url,
        fail,
        timeout: std::time::Duration::from_millis(timeout),
        prefix,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<RedisSettings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        redis_settings(&|name: &str| vars.get(name).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn redis_is_optional_and_fails_open_by_default() {
        assert!(settings(&[]).unwrap().is_none());
        let set = settings(&[("REDIS_URL", "redis://127.0.0.1:6379/0")])
            .unwrap()
            .unwrap();
        assert_eq!(set.fail, RedisFail::Open);
        assert_eq!(set.prefix, "tollgate");
        assert_eq!(set.timeout, std::time::Duration::from_millis(250));
        let closed = settings(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_FAIL", "closed"),
            ("REDIS_KEY_PREFIX", "billing-eu.1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(closed.fail, RedisFail::Closed);
        assert_eq!(closed.prefix, "billing-eu.1");
    }

    #[test]
    fn a_wrong_redis_setting_is_refused_without_echoing_the_url() {
        let err = settings(&[("REDIS_URL", "http://:hunter2-DUMMY@cache:6379")]).unwrap_err();
        assert!(
            err.contains("REDIS_URL") && !err.contains("hunter2"),
            "{err}"
        );
        let err = settings(&[("REDIS_URL", "rediss://:hunter2-DUMMY@cache:6379")]).unwrap_err();
        assert!(
            err.contains("rediss://") && !err.contains("hunter2"),
            "{err}"
        );
        let err = settings(&[("REDIS_URL", "redis://:hunter2-DUMMY@cache:notaport")]).unwrap_err();
        assert!(
            err.contains("not a valid") && !err.contains("hunter2"),
            "{err}"
        );
        let err =
            settings(&[("REDIS_URL", "redis://127.0.0.1"), ("REDIS_FAIL", "maybe")]).unwrap_err();
        assert!(err.contains("REDIS_FAIL must be open or closed"), "{err}");
        for timeout in ["9", "10001", "soon"] {
            let err = settings(&[
                ("REDIS_URL", "redis://127.0.0.1"),
                ("REDIS_TIMEOUT_MS", timeout),
            ])
            .unwrap_err();
            assert!(
                err.contains("REDIS_TIMEOUT_MS") && err.contains("10 to 10000"),
                "{err}"
            );
        }
        for prefix in ["has space", "a:b", &"x".repeat(65)] {
            let err = settings(&[
                ("REDIS_URL", "redis://127.0.0.1"),
                ("REDIS_KEY_PREFIX", prefix),
            ])
            .unwrap_err();
            assert!(err.contains("REDIS_KEY_PREFIX"), "{prefix}: {err}");
        }
        let debug = format!(
            "{:?}",
            settings(&[("REDIS_URL", "redis://:hunter2-DUMMY@cache:6379")]).unwrap()
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
