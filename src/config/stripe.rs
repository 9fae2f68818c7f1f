//! How Tollgate reaches Stripe: the API base (never a local address in production), the
//! secret key, the webhook secrets and allow-list, and the per-user throttle.

use std::fmt;

use ipnet::IpNet;

use super::vars::{http_url, networks, positive};
use super::{ConfigError, Environment, StripeSecretKey, Vars};
use crate::secret::SecretString;

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
    pub secret_key: Option<StripeSecretKey>,
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
    /// `PAST_DUE_GRACE_DAYS`: how long a past-due subscription keeps its entitlements after its
    /// first failed payment (a plan may set its own).
    pub past_due_grace_days: u32,
    /// `PLAN_CHANGE_DOWNGRADE`: when a customer's downgrade takes effect.
    pub plan_change_downgrade: DowngradeTiming,
}

/// When a downgrade (a cheaper plan, fewer seats, a shorter interval) takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DowngradeTiming {
    /// At the end of the paid period (a Stripe subscription schedule), the default: what was
    /// paid for is kept, and no credit can be farmed by switching back and forth.
    PeriodEnd,
    /// At once, the unused time credited to the customer's balance.
    Immediate,
}

fn downgrade_timing(vars: &impl Vars) -> Result<DowngradeTiming, ConfigError> {
    match vars.get("PLAN_CHANGE_DOWNGRADE").as_deref().map(str::trim) {
        None | Some("period_end") => Ok(DowngradeTiming::PeriodEnd),
        Some("immediate") => Ok(DowngradeTiming::Immediate),
        Some(_) => Err(ConfigError::Invalid {
            var: "PLAN_CHANGE_DOWNGRADE",
            reason: "must be period_end or immediate".into(),
        }),
    }
}

impl StripeSettings {
    /// Whether the secret key is a live one (events must then say `livemode: true`).
    pub fn live(&self) -> bool {
        self.secret_key
            .as_ref()
            .is_some_and(StripeSecretKey::is_live)
    }
}

impl fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secret_key", &self.secret_key)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

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

pub(super) fn stripe_settings(
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
        .map(|raw| StripeSecretKey::parse(&raw))
        .transpose()
        .map_err(|err| ConfigError::Invalid {
            var: "STRIPE_SECRET_KEY",
            reason: format!("{err} (check it with `tollgate validate-secrets`)"),
        })?;
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
        past_due_grace_days: positive(vars, "PAST_DUE_GRACE_DAYS", 7)?,
        plan_change_downgrade: downgrade_timing(vars)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{config, config_err, with_keys};
    use super::super::{StripeKeyKind, StripeMode};

    #[test]
    fn the_secret_key_is_parsed_at_start_with_its_mode() {
        let err = config_err(&[("STRIPE_SECRET_KEY", "pk_test_DUMMY00000000")]);
        assert_eq!(
            err,
            "STRIPE_SECRET_KEY must start with sk_ or rk_ (check it with `tollgate validate-secrets`)"
        );
        let err = config_err(&[("STRIPE_SECRET_KEY", "sk_prod_DUMMY00000000")]);
        assert_eq!(
            err,
            "STRIPE_SECRET_KEY is malformed: expected sk_test_…, sk_live_…, rk_test_… or rk_live_… \
             (check it with `tollgate validate-secrets`)"
        );
        let config = config(with_keys(&[(
            "STRIPE_SECRET_KEY",
            " rk_test_DUMMYbody000000xyz ",
        )]))
        .unwrap();
        let key = config.stripe.secret_key.as_ref().unwrap();
        assert_eq!(
            (key.mode(), key.kind()),
            (StripeMode::Test, StripeKeyKind::Restricted)
        );
        assert!(!config.stripe.live());
        let shown = format!("{:?}", config.stripe);
        assert!(
            shown.contains("rk_test_…xyz") && !shown.contains("DUMMYbody"),
            "{shown}"
        );
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
}
