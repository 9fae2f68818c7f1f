//! Alert settings: one threshold and window per rule (`ALERT_<RULE>_THRESHOLD`,
//! `ALERT_<RULE>_WINDOW_SECS`), the 5xx rule's minimum request count, and the optional webhook
//! channel (`ALERT_WEBHOOK_URL`, signed with `ALERT_WEBHOOK_SECRET`).
//!
//! The variables of the two original rules keep working: `ALERT_WEBHOOK_SIGNATURE_FAILURES`
//! and `ALERT_PAYMENT_FAILURES` are their thresholds' defaults, `ALERT_WINDOW_SECS` their
//! windows' default.

use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::vars::{Vars, http_url, positive};
use super::{ConfigError, Environment};
use crate::secret::SecretString;

/// The alert rules. Their names are stable: operators filter `alert` events on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertRule {
    /// Webhooks refused for a signature that does not verify.
    WebhookSignatureFailures,
    /// Webhooks refused for coming from outside `STRIPE_WEBHOOK_ALLOWED_IPS`.
    WebhookInvalidSources,
    /// Replay attempts: a valid signature with a stale timestamp, or a stored event id re-sent
    /// under another signature.
    WebhookReplays,
    /// Requests refused by a rate limiter, all clients together.
    RateLimitViolations,
    /// Requests of one signed-in account refused by its per-account limiters.
    UserRateLimitViolations,
    /// `invoice.payment_failed` events.
    PaymentFailures,
    /// 5xx responses, as a percentage of the requests one instance answered.
    ServerErrors,
    /// Redis (`REDIS_URL`) stopped answering: the shared limits fall back per `REDIS_FAIL`.
    /// Counted in outages, raised when one begins.
    RedisUnavailable,
}

impl AlertRule {
    pub const ALL: [Self; 8] = [
        Self::WebhookSignatureFailures,
        Self::WebhookInvalidSources,
        Self::WebhookReplays,
        Self::RateLimitViolations,
        Self::UserRateLimitViolations,
        Self::PaymentFailures,
        Self::ServerErrors,
        Self::RedisUnavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::WebhookSignatureFailures => "webhook_signature_failures",
            Self::WebhookInvalidSources => "webhook_invalid_sources",
            Self::WebhookReplays => "webhook_replays",
            Self::RateLimitViolations => "rate_limit_violations",
            Self::UserRateLimitViolations => "user_rate_limit_violations",
            Self::PaymentFailures => "payment_failures",
            Self::ServerErrors => "server_errors",
            Self::RedisUnavailable => "redis_unavailable",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rule| rule.name() == name)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// (`ALERT_<RULE>_THRESHOLD`, `ALERT_<RULE>_WINDOW_SECS`).
    fn variables(self) -> (&'static str, &'static str) {
        match self {
            Self::WebhookSignatureFailures => (
                "ALERT_WEBHOOK_SIGNATURE_FAILURES_THRESHOLD",
                "ALERT_WEBHOOK_SIGNATURE_FAILURES_WINDOW_SECS",
            ),
            Self::WebhookInvalidSources => (
                "ALERT_WEBHOOK_INVALID_SOURCES_THRESHOLD",
                "ALERT_WEBHOOK_INVALID_SOURCES_WINDOW_SECS",
            ),
            Self::WebhookReplays => (
                "ALERT_WEBHOOK_REPLAYS_THRESHOLD",
                "ALERT_WEBHOOK_REPLAYS_WINDOW_SECS",
            ),
            Self::RateLimitViolations => (
                "ALERT_RATE_LIMIT_VIOLATIONS_THRESHOLD",
                "ALERT_RATE_LIMIT_VIOLATIONS_WINDOW_SECS",
            ),
            Self::UserRateLimitViolations => (
                "ALERT_USER_RATE_LIMIT_VIOLATIONS_THRESHOLD",
                "ALERT_USER_RATE_LIMIT_VIOLATIONS_WINDOW_SECS",
            ),
            Self::PaymentFailures => (
                "ALERT_PAYMENT_FAILURES_THRESHOLD",
                "ALERT_PAYMENT_FAILURES_WINDOW_SECS",
            ),
            Self::ServerErrors => (
                "ALERT_SERVER_ERRORS_THRESHOLD",
                "ALERT_SERVER_ERRORS_WINDOW_SECS",
            ),
            Self::RedisUnavailable => (
                "ALERT_REDIS_UNAVAILABLE_THRESHOLD",
                "ALERT_REDIS_UNAVAILABLE_WINDOW_SECS",
            ),
        }
    }

    /// (threshold, window in seconds) when nothing is configured. The 5xx rule's threshold is
    /// a percentage.
    fn defaults(self) -> (u32, u32) {
        match self {
            Self::WebhookSignatureFailures | Self::PaymentFailures | Self::ServerErrors => (5, 300),
            Self::WebhookInvalidSources | Self::UserRateLimitViolations => (10, 3600),
            Self::WebhookReplays => (1, 3600),
            Self::RateLimitViolations => (50, 3600),
            Self::RedisUnavailable => (1, 900),
        }
    }
}

/// How many within how long raise a rule's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertLimit {
    /// Events in the window that raise the alert (for the 5xx rule: a percentage of requests).
    pub threshold: u32,
    pub window_secs: u32,
}

/// Where alerts are also sent: a JSON POST (Slack-compatible) to `url`, signed with `secret`.
#[derive(Debug, Clone)]
pub struct AlertWebhook {
    /// Slack's incoming-webhook URLs carry their credential in the path: kept secret too.
    pub url: SecretString,
    /// HMAC-SHA256 key of `X-Tollgate-Signature`; none only in development.
    pub secret: Option<SecretString>,
    /// Per attempt.
    pub timeout: Duration,
    pub max_attempts: u32,
    /// The wait before the second attempt; each later one waits twice as long as the last.
    pub retry_base: Duration,
}

/// When failures raise a CRITICAL `alert` (once per window per rule), and where alerts go.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    limits: [AlertLimit; AlertRule::ALL.len()],
    /// The 5xx rule stays quiet below this many requests in its window (one failure out of two
    /// requests is not an outage).
    pub server_errors_min_requests: u32,
    pub webhook: Option<AlertWebhook>,
    /// Who also receives each alert by e-mail (`ALERT_EMAIL_TO`, comma-separated).
    pub email_to: Vec<String>,
    /// This instance's name in alert messages (`HOSTNAME`, else `tollgate`).
    pub instance: String,
}

impl AlertSettings {
    pub fn limit(&self, rule: AlertRule) -> AlertLimit {
        self.limits[rule.index()]
    }

    pub fn set_limit(&mut self, rule: AlertRule, limit: AlertLimit) {
        self.limits[rule.index()] = limit;
    }
}

/// Every rule at its default, no webhook.
impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            limits: AlertRule::ALL.map(|rule| {
                let (threshold, window_secs) = rule.defaults();
                AlertLimit {
                    threshold,
                    window_secs,
                }
            }),
            server_errors_min_requests: 20,
            webhook: None,
            email_to: Vec::new(),
            instance: "tollgate".to_owned(),
        }
    }
}

/// Shortest `ALERT_WEBHOOK_SECRET` accepted (characters).
pub const MIN_WEBHOOK_SECRET_LEN: usize = 32;

pub(super) fn alert_settings(
    vars: &impl Vars,
    environment: Environment,
) -> Result<AlertSettings, ConfigError> {
    let legacy_window = positive(vars, "ALERT_WINDOW_SECS", 300)?;
    let mut limits = AlertSettings::default().limits;
    for rule in AlertRule::ALL {
        let (threshold_var, window_var) = rule.variables();
        let (mut threshold, mut window) = rule.defaults();
        match rule {
            AlertRule::WebhookSignatureFailures => {
                threshold = positive(vars, "ALERT_WEBHOOK_SIGNATURE_FAILURES", threshold)?;
                window = legacy_window;
            }
            AlertRule::PaymentFailures => {
                threshold = positive(vars, "ALERT_PAYMENT_FAILURES", threshold)?;
                window = legacy_window;
            }
            _ => {}
        }
        let threshold = positive(vars, threshold_var, threshold)?;
        if rule == AlertRule::ServerErrors && threshold > 100 {
            return Err(ConfigError::Invalid {
                var: threshold_var,
                reason: "is a percentage: at most 100".into(),
            });
        }
        limits[rule.index()] = AlertLimit {
            threshold,
            window_secs: positive(vars, window_var, window)?,
        };
    }
    Ok(AlertSettings {
        limits,
        server_errors_min_requests: positive(vars, "ALERT_SERVER_ERRORS_MIN_REQUESTS", 20)?,
        webhook: alert_webhook(vars, environment)?,
        email_to: match vars.get("ALERT_EMAIL_TO") {
            Some(raw) => raw
                .split(',')
                .filter(|part| !part.trim().is_empty())
                .map(|part| super::notify::email_address("ALERT_EMAIL_TO", part))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        },
        instance: vars.get("HOSTNAME").map_or_else(
            || "tollgate".to_owned(),
            |host| host.trim().chars().take(64).collect(),
        ),
    })
}

fn alert_webhook(
    vars: &impl Vars,
    environment: Environment,
) -> Result<Option<AlertWebhook>, ConfigError> {
    let secret = vars.get("ALERT_WEBHOOK_SECRET").map(SecretString::from);
    if let Some(secret) = &secret
        && secret.expose_secret().trim().len() < MIN_WEBHOOK_SECRET_LEN
    {
        return Err(ConfigError::Invalid {
            var: "ALERT_WEBHOOK_SECRET",
            reason: format!(
                "must be at least {MIN_WEBHOOK_SECRET_LEN} characters (generate one with `tollgate keygen`)"
            ),
        });
    }
    let Some(raw) = vars.get("ALERT_WEBHOOK_URL") else {
        return Ok(None);
    };
    let (url, parsed) = http_url("ALERT_WEBHOOK_URL", &raw)?;
    // Slack's URLs carry their credential: never over plain http in production.
    if environment == Environment::Production && parsed.scheme() != "https" {
        return Err(ConfigError::Invalid {
            var: "ALERT_WEBHOOK_URL",
            reason: "must be an https URL in production".into(),
        });
    }
    if secret.is_none() && environment == Environment::Production {
        return Err(ConfigError::Missing {
            var: "ALERT_WEBHOOK_SECRET",
            hint: "required with ALERT_WEBHOOK_URL in production; at least 32 characters",
        });
    }
    Ok(Some(AlertWebhook {
        url: SecretString::from(url),
        secret,
        timeout: Duration::from_secs(positive(vars, "ALERT_WEBHOOK_TIMEOUT_SECS", 5)?.into()),
        max_attempts: positive(vars, "ALERT_WEBHOOK_MAX_ATTEMPTS", 5)?,
        retry_base: Duration::from_secs(
            positive(vars, "ALERT_WEBHOOK_RETRY_BASE_SECS", 30)?.into(),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)], env: Environment) -> Result<AlertSettings, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        alert_settings(&|name: &str| vars.get(name).cloned(), env)
    }

    #[test]
    fn defaults_follow_the_seed_and_old_variables_still_work() {
        let s = settings(&[], Environment::Development).unwrap();
        let pairs: Vec<(u32, u32)> = AlertRule::ALL
            .iter()
            .map(|r| (s.limit(*r).threshold, s.limit(*r).window_secs))
            .collect();
        assert_eq!(
            pairs,
            [
                (5, 300),
                (10, 3600),
                (1, 3600),
                (50, 3600),
                (10, 3600),
                (5, 300),
                (5, 300),
                (1, 900)
            ]
        );
        assert_eq!(s.server_errors_min_requests, 20);
        assert!(s.webhook.is_none());

        let s = settings(
            &[
                ("ALERT_WINDOW_SECS", "60"),
                ("ALERT_PAYMENT_FAILURES", "7"),
                ("ALERT_WEBHOOK_SIGNATURE_FAILURES_THRESHOLD", "9"),
                ("ALERT_WEBHOOK_SIGNATURE_FAILURES", "3"),
                ("ALERT_RATE_LIMIT_VIOLATIONS_WINDOW_SECS", "120"),
            ],
            Environment::Development,
        )
        .unwrap();
        assert_eq!(
            s.limit(AlertRule::PaymentFailures),
            AlertLimit {
                threshold: 7,
                window_secs: 60
            }
        );
        assert_eq!(
            s.limit(AlertRule::WebhookSignatureFailures).threshold,
            9,
            "the new name wins"
        );
        assert_eq!(s.limit(AlertRule::RateLimitViolations).window_secs, 120);
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_the_secret() {
        for (pairs, var) in [
            (
                vec![("ALERT_SERVER_ERRORS_THRESHOLD", "101")],
                "ALERT_SERVER_ERRORS_THRESHOLD",
            ),
            (
                vec![("ALERT_WEBHOOK_REPLAYS_WINDOW_SECS", "0")],
                "ALERT_WEBHOOK_REPLAYS_WINDOW_SECS",
            ),
            (vec![("ALERT_WEBHOOK_URL", "ftp://x")], "ALERT_WEBHOOK_URL"),
            (
                vec![
                    ("ALERT_WEBHOOK_URL", "https://hooks.example"),
                    ("ALERT_WEBHOOK_SECRET", "shortDUMMYsecret"),
                ],
                "ALERT_WEBHOOK_SECRET",
            ),
        ] {
            let err = settings(&pairs, Environment::Development)
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{err}");
            assert!(!err.contains("shortDUMMYsecret"), "{err}");
        }
        let url = [(
            "ALERT_WEBHOOK_URL",
            "https://hooks.example/T0/B0/DUMMYtoken",
        )];
        let err = settings(&url, Environment::Production).unwrap_err();
        assert!(err.to_string().contains("ALERT_WEBHOOK_SECRET"), "{err}");
        // Plain http carries the URL's credential in the clear: refused in production.
        let secret = (
            "ALERT_WEBHOOK_SECRET",
            "DUMMYalertSECRETthatIsLongEnough0123456",
        );
        let plain = [
            ("ALERT_WEBHOOK_URL", "http://hooks.example/T0/B0/DUMMYtoken"),
            secret,
        ];
        let err = settings(&plain, Environment::Production).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        assert!(!err.to_string().contains("DUMMYtoken"), "{err}");
        let https = [url[0], secret];
        assert!(settings(&https, Environment::Production).is_ok());
        assert!(settings(&plain, Environment::Development).is_ok());
        let dev = settings(&url, Environment::Development).unwrap();
        let webhook = dev.webhook.unwrap();
        assert!(webhook.secret.is_none(), "development may send unsigned");
        assert!(
            !format!("{webhook:?}").contains("DUMMYtoken"),
            "the URL is redacted"
        );
    }
}
