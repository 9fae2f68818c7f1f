//! The notification outbox's settings: delivery retries (`NOTIFY_*`), customer e-mail over
//! SMTP (`SMTP_URL`, `SMTP_FROM`, `PRODUCT_NAME`, `SUPPORT_EMAIL`) and the
//! overlap of a rotated app-webhook secret (`WEBHOOK_SECRET_OVERLAP_HOURS`).

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use super::ConfigError;
use super::settings::Environment;
use super::vars::{Vars, positive};

/// How the outbox delivers.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Attempts per notification before it is marked dead (`NOTIFY_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// The wait before the second attempt; each later one waits about twice as long (with
    /// jitter) as the last (`NOTIFY_RETRY_BASE_SECS`).
    pub retry_base: Duration,
    /// How often the delivery worker looks for due notifications (`NOTIFY_POLL_INTERVAL_MS`).
    pub poll_interval: Duration,
    /// Per webhook attempt (`NOTIFY_HTTP_TIMEOUT_SECS`); SMTP uses it per command too.
    pub timeout: Duration,
    /// Customer and alert e-mail; `None`: e-mails are recorded as not sent.
    pub smtp: Option<SmtpSettings>,
    /// The product's name in e-mails (`PRODUCT_NAME`).
    pub product_name: String,
    /// Where customers reply to (`SUPPORT_EMAIL`); e-mails name it when set.
    pub support_email: Option<String>,
    /// How long a rotated app-webhook secret still signs (`WEBHOOK_SECRET_OVERLAP_HOURS`).
    pub secret_overlap: Duration,
}

/// An SMTP relay: `smtp://user:pass@host:587` (STARTTLS required), `smtps://…:465` (TLS), or,
/// outside production, `smtp://host:port?tls=none` for a local test relay.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The URL carries the relay's password: kept secret.
    pub url: SecretString,
    /// `SMTP_FROM`: a mailbox such as `Billing <billing@example.com>`.
    pub from: String,
}

impl NotifySettings {
    /// Everything at its default: no SMTP.
    pub fn defaults() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(30),
            poll_interval: Duration::from_millis(1000),
            timeout: Duration::from_secs(10),
            smtp: None,
            product_name: "Tollgate".to_owned(),
            support_email: None,
            secret_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

pub(super) fn email_address(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let address = raw.trim();
    if address.parse::<email_address::EmailAddress>().is_err() {
        return Err(ConfigError::Invalid {
            var,
            reason: "must be an e-mail address".into(),
        });
    }
    Ok(address.to_owned())
}

fn smtp(vars: &impl Vars, environment: Environment) -> Result<Option<SmtpSettings>, ConfigError> {
    let Some(raw) = vars.get("SMTP_URL").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let url = SecretString::from(raw.trim().to_owned());
    let parsed = url::Url::parse(url.expose_secret()).map_err(|_| ConfigError::Invalid {
        var: "SMTP_URL",
        reason: "must be a URL such as smtp://user:password@mail.example.com:587".into(),
    })?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
        return Err(ConfigError::Invalid {
            var: "SMTP_URL",
            reason: "must be an smtp:// or smtps:// URL with a host".into(),
        });
    }
    let plain = parsed.query_pairs().any(|(k, v)| k == "tls" && v == "none");
    if plain && environment == Environment::Production {
        return Err(ConfigError::Invalid {
            var: "SMTP_URL",
            reason: "must not use tls=none in production: the relay's password and every e-mail would travel in the clear".into(),
        });
    }
    let from = vars.get("SMTP_FROM").ok_or(ConfigError::Missing {
        var: "SMTP_FROM",
        hint: "required with SMTP_URL, e.g. \"Billing <billing@example.com>\"",
    })?;
    let from = from.trim().to_owned();
    if from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(ConfigError::Invalid {
            var: "SMTP_FROM",
            reason:
                "must be a mailbox such as billing@example.com or \"Billing <billing@example.com>\""
                    .into(),
        });
    }
    Ok(Some(SmtpSettings { url, from }))
}

/// Reads the outbox's variables.
pub fn notify_settings(
    vars: &impl Vars,
    environment: Environment,
) -> Result<NotifySettings, ConfigError> {
    let d = NotifySettings::defaults();
    let product_name = match vars.get("PRODUCT_NAME") {
        Some(name) if !name.trim().is_empty() => {
            let name = name.trim();
            if name.chars().count() > 80 || name.chars().any(char::is_control) {
                return Err(ConfigError::Invalid {
                    var: "PRODUCT_NAME",
                    reason: "must be at most 80 printable characters".into(),
                });
            }
            name.to_owned()
        }
        _ => d.product_name,
    };
    let support_email = vars
        .get("SUPPORT_EMAIL")
        .filter(|v| !v.trim().is_empty())
        .map(|raw| email_address("SUPPORT_EMAIL", &raw))
        .transpose()?;
    Ok(NotifySettings {
        max_attempts: positive(vars, "NOTIFY_MAX_ATTEMPTS", d.max_attempts)?,
        retry_base: Duration::from_secs(positive(vars, "NOTIFY_RETRY_BASE_SECS", 30)?.into()),
        poll_interval: Duration::from_millis(
            positive(vars, "NOTIFY_POLL_INTERVAL_MS", 1000)?.into(),
        ),
        timeout: Duration::from_secs(positive(vars, "NOTIFY_HTTP_TIMEOUT_SECS", 10)?.into()),
        smtp: smtp(vars, environment)?,
        product_name,
        support_email,
        secret_overlap: Duration::from_secs(
            u64::from(positive(vars, "WEBHOOK_SECRET_OVERLAP_HOURS", 24)?) * 3600,
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)], env: Environment) -> Result<NotifySettings, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        notify_settings(&|name: &str| vars.get(name).cloned(), env)
    }

    #[test]
    fn defaults_send_no_email_and_retry_eight_times() {
        let s = settings(&[], Environment::Development).unwrap();
        assert_eq!(s.max_attempts, 8);
        assert!(s.smtp.is_none());
        assert_eq!(s.product_name, "Tollgate");
        assert_eq!(s.secret_overlap, Duration::from_secs(86_400));
    }

    #[test]
    fn smtp_needs_a_sender_and_tls_in_production() {
        let url = ("SMTP_URL", "smtp://user:DUMMYpass@mail.example.com:587");
        let err = settings(&[url], Environment::Development).unwrap_err();
        assert!(err.to_string().contains("SMTP_FROM"), "{err}");
        let s = settings(
            &[url, ("SMTP_FROM", "Billing <billing@example.com>")],
            Environment::Development,
        )
        .unwrap();
        assert!(
            !format!("{s:?}").contains("DUMMYpass"),
            "the password is redacted"
        );
        let plain = ("SMTP_URL", "smtp://127.0.0.1:2525?tls=none");
        let from = ("SMTP_FROM", "billing@example.com");
        assert!(settings(&[plain, from], Environment::Development).is_ok());
        let err = settings(&[plain, from], Environment::Production).unwrap_err();
        assert!(err.to_string().contains("tls=none"), "{err}");
        let err =
            settings(&[("SMTP_URL", "http://x"), from], Environment::Development).unwrap_err();
        assert!(err.to_string().starts_with("SMTP_URL"), "{err}");
        let err = settings(
            &[url, ("SMTP_FROM", "not an address")],
            Environment::Development,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("SMTP_FROM"), "{err}");
    }
}
