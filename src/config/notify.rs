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

impl SmtpSettings {
    /// `SMTP_URL` taken apart: how to reach and secure the relay, and how to sign in to it.
    pub fn relay(&self) -> Result<SmtpRelay, SmtpUrlError> {
        SmtpRelay::parse(&self.url)
    }
}

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: a plain connection upgraded with STARTTLS, which is required: a relay that
    /// does not offer it gets nothing, neither the password nor an e-mail.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://…?tls=none`: no encryption (a local test relay; refused in production).
    None,
}

/// An SMTP relay as `SMTP_URL` names it. Its `Debug` never prints the password.
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    pub tls: SmtpTls,
    pub host: String,
    /// The URL's port, else 587 (STARTTLS), 465 (TLS) or 25 (no TLS).
    pub port: u16,
    /// The user name and password, percent-decoded, when the URL has a user name.
    pub credentials: Option<(String, SecretString)>,
}

/// Why `SMTP_URL` is not usable. Never quotes the URL (it holds the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("must be a URL such as smtp://user:password@mail.example.com:587")]
    NotAUrl,
    #[error("must be an smtp:// or smtps:// URL with a host")]
    Scheme,
    #[error("takes one option, tls=none (plain SMTP to a local test relay), and only with smtp://")]
    Option,
    #[error(
        "must percent-encode its user name and password as UTF-8, and name a user with a password"
    )]
    Credentials,
}

impl SmtpRelay {
    /// Parses `url`: `smtp://user:pass@host:587` (STARTTLS required), `smtps://…:465`, or
    /// `smtp://host:port?tls=none`.
    pub fn parse(url: &SecretString) -> Result<Self, SmtpUrlError> {
        let url = url::Url::parse(url.expose_secret()).map_err(|_| SmtpUrlError::NotAUrl)?;
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(SmtpUrlError::Scheme),
        };
        let mut plain = false;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") => plain = true,
                _ => return Err(SmtpUrlError::Option),
            }
        }
        let tls = match (url.scheme(), plain) {
            ("smtp", false) => SmtpTls::StartTls,
            ("smtp", true) => SmtpTls::None,
            ("smtps", false) => SmtpTls::Implicit,
            ("smtps", true) => return Err(SmtpUrlError::Option),
            _ => return Err(SmtpUrlError::Scheme),
        };
        let port = url.port().unwrap_or(match tls {
            SmtpTls::StartTls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        });
        let decode = |raw: &str| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| SmtpUrlError::Credentials)
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(SmtpUrlError::Credentials),
            (user, password) => Some((
                decode(user)?,
                SecretString::from(decode(password.unwrap_or_default())?),
            )),
        };
        Ok(Self {
            tls,
            host,
            port,
            credentials,
        })
    }
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
    let relay = SmtpRelay::parse(&url).map_err(|err| ConfigError::Invalid {
        var: "SMTP_URL",
        reason: err.to_string(),
    })?;
    if relay.tls == SmtpTls::None && environment == Environment::Production {
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

    fn relay(url: &str) -> Result<SmtpRelay, SmtpUrlError> {
        SmtpRelay::parse(&SecretString::from(url.to_owned()))
    }

    #[test]
    fn smtp_urls_say_how_the_relay_is_secured() {
        let r = relay("smtp://user:DUMMYpass@mail.example.com:2587").unwrap();
        assert_eq!(
            (r.tls, r.host.as_str(), r.port),
            (SmtpTls::StartTls, "mail.example.com", 2587)
        );
        let r = relay("smtp://mail.example.com").unwrap();
        assert_eq!(
            (r.tls, r.port),
            (SmtpTls::StartTls, 587),
            "STARTTLS by default"
        );
        assert!(r.credentials.is_none());
        let r = relay("smtps://user:DUMMYpass@mail.example.com").unwrap();
        assert_eq!((r.tls, r.port), (SmtpTls::Implicit, 465));
        let r = relay("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (r.tls, r.host.as_str(), r.port),
            (SmtpTls::None, "127.0.0.1", 2525)
        );
        assert_eq!(relay("smtp://[::1]:25?tls=none").unwrap().host, "::1");
    }

    #[test]
    fn smtp_url_credentials_are_percent_decoded_and_never_printed() {
        let r = relay("smtp://apikey%40example.com:DUMMY%2Fp%40ss%3A1@mail.example.com").unwrap();
        let (user, password) = r.credentials.clone().unwrap();
        assert_eq!(user, "apikey@example.com");
        assert_eq!(password.expose_secret(), "DUMMY/p@ss:1");
        let debug = format!("{r:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
        let r = relay("smtp://user@mail.example.com").unwrap();
        assert_eq!(r.credentials.unwrap().1.expose_secret(), "");
    }

    #[test]
    fn unusable_smtp_urls_are_refused_without_quoting_them() {
        for (url, expected) in [
            ("not a url DUMMYpass", SmtpUrlError::NotAUrl),
            (
                "http://user:DUMMYpass@mail.example.com",
                SmtpUrlError::Scheme,
            ),
            ("smtp:DUMMYpass", SmtpUrlError::Scheme),
            ("smtps://mail.example.com?tls=none", SmtpUrlError::Option),
            ("smtp://mail.example.com?tls=off", SmtpUrlError::Option),
            ("smtp://mail.example.com?insecure=1", SmtpUrlError::Option),
            (
                "smtp://:DUMMYpass@mail.example.com",
                SmtpUrlError::Credentials,
            ),
            (
                "smtp://u:DUMMYpass%FF@mail.example.com",
                SmtpUrlError::Credentials,
            ),
        ] {
            let err = relay(url).unwrap_err();
            assert_eq!(err, expected, "{url}");
            assert!(!err.to_string().contains("DUMMYpass"), "{err}");
            let config = settings(
                &[("SMTP_URL", url), ("SMTP_FROM", "billing@example.com")],
                Environment::Development,
            )
            .unwrap_err()
            .to_string();
            assert!(config.starts_with("SMTP_URL"), "{config}");
            assert!(!config.contains("DUMMYpass"), "{config}");
        }
    }
}
