//! `STRIPE_SECRET_KEY` as a type: its mode (test or live) and kind (secret or restricted) are
//! decided once, when it is parsed; the key itself stays in a `secrecy` box and is shown only
//! masked (`sk_test_…xyz`), so no call site masks it by hand.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};

use crate::secret::mask_api_key;

/// Which of Stripe's two worlds a key belongs to: test mode moves no money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMode {
    Test,
    Live,
}

impl StripeMode {
    /// The mode of a key shaped `<prefix>test_<body>` or `<prefix>live_<body>` (e.g.
    /// `sk_test_…`, `pk_live_…`), if it has that shape: a body of at least 8 letters and digits.
    pub fn of_key(value: &str, prefix: &str) -> Option<Self> {
        let rest = value.strip_prefix(prefix)?;
        let (mode, body) = if let Some(body) = rest.strip_prefix("test_") {
            (Self::Test, body)
        } else {
            (Self::Live, rest.strip_prefix("live_")?)
        };
        let body_ok = body.len() >= 8 && body.chars().all(|c| c.is_ascii_alphanumeric());
        body_ok.then_some(mode)
    }
}

/// A full secret key (`sk_…`) or a restricted one (`rk_…`, limited to what its creator allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeKeyKind {
    Secret,
    Restricted,
}

impl StripeKeyKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Secret => "sk_",
            Self::Restricted => "rk_",
        }
    }
}

/// Why a value is not a usable Stripe secret key. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripeSecretKeyError {
    /// Some other kind of value (a publishable key, a webhook secret, …).
    #[error("must start with sk_ or rk_")]
    NotASecretKey,
    /// `sk_…`/`rk_…`, but not followed by `test_`/`live_` and the key's body.
    #[error("is malformed: expected sk_test_…, sk_live_…, rk_test_… or rk_live_…")]
    Malformed,
}

/// A Stripe secret or restricted key, of a known mode.
pub struct StripeSecretKey {
    key: SecretString,
    mode: StripeMode,
    kind: StripeKeyKind,
}

impl StripeSecretKey {
    /// `sk_test_…`, `sk_live_…`, `rk_test_…` or `rk_live_…` (surrounding whitespace ignored).
    pub fn parse(raw: &str) -> Result<Self, StripeSecretKeyError> {
        let raw = raw.trim();
        let kind = [StripeKeyKind::Secret, StripeKeyKind::Restricted]
            .into_iter()
            .find(|kind| raw.starts_with(kind.prefix()))
            .ok_or(StripeSecretKeyError::NotASecretKey)?;
        let mode = StripeMode::of_key(raw, kind.prefix()).ok_or(StripeSecretKeyError::Malformed)?;
        Ok(Self {
            key: SecretString::from(raw.to_owned()),
            mode,
            kind,
        })
    }

    pub fn mode(&self) -> StripeMode {
        self.mode
    }

    pub fn kind(&self) -> StripeKeyKind {
        self.kind
    }

    /// Whether the key moves real money (webhook events must then say `livemode: true`).
    pub fn is_live(&self) -> bool {
        self.mode == StripeMode::Live
    }

    /// The key itself, for the `Authorization` header of calls to Stripe and nothing else.
    pub fn expose(&self) -> &str {
        self.key.expose_secret()
    }
}

/// `sk_test_…xyz`: the key's kind and mode and its last three characters (only the prefix when
/// the key is short), never the rest.
impl fmt::Display for StripeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_api_key(self.key.expose_secret()))
    }
}

impl fmt::Debug for StripeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StripeSecretKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "DUMMYbody0000000000xyz";

    #[test]
    fn the_mode_and_kind_are_decided_by_the_prefix() {
        for (prefix, mode, kind) in [
            ("sk_test_", StripeMode::Test, StripeKeyKind::Secret),
            ("sk_live_", StripeMode::Live, StripeKeyKind::Secret),
            ("rk_test_", StripeMode::Test, StripeKeyKind::Restricted),
            ("rk_live_", StripeMode::Live, StripeKeyKind::Restricted),
        ] {
            let key = StripeSecretKey::parse(&format!("{prefix}{BODY}")).unwrap();
            assert_eq!((key.mode(), key.kind()), (mode, kind), "{prefix}");
            assert_eq!(key.is_live(), mode == StripeMode::Live, "{prefix}");
        }
    }

    #[test]
    fn other_values_are_refused_with_the_reason() {
        for not_secret in ["pk_test_DUMMY0000", "whsec_DUMMY0000", "DUMMYkey0000", ""] {
            assert_eq!(
                StripeSecretKey::parse(not_secret).unwrap_err(),
                StripeSecretKeyError::NotASecretKey,
                "{not_secret}"
            );
        }
        for malformed in [
            "sk_prod_DUMMY0000",
            "sk_test_short",
            "rk_live_",
            "sk_test_DUMMY-0000",
            "sk_DUMMY00000000",
        ] {
            assert_eq!(
                StripeSecretKey::parse(malformed).unwrap_err(),
                StripeSecretKeyError::Malformed,
                "{malformed}"
            );
        }
        assert_eq!(
            StripeSecretKeyError::NotASecretKey.to_string(),
            "must start with sk_ or rk_"
        );
        assert_eq!(
            StripeSecretKeyError::Malformed.to_string(),
            "is malformed: expected sk_test_…, sk_live_…, rk_test_… or rk_live_…"
        );
    }

    #[test]
    fn it_shows_only_its_kind_mode_and_last_three_characters() {
        let key = StripeSecretKey::parse(&format!(" sk_live_{BODY}\n")).unwrap();
        assert_eq!(key.to_string(), "sk_live_…xyz");
        assert_eq!(format!("{key:?}"), "StripeSecretKey(sk_live_…xyz)");
        assert_eq!(
            format!("{:?}", Some(&key)),
            "Some(StripeSecretKey(sk_live_…xyz))"
        );
        assert_eq!(key.expose(), format!("sk_live_{BODY}"), "trimmed, whole");
        let short = StripeSecretKey::parse("rk_test_DUMMY000").unwrap();
        assert_eq!(
            short.to_string(),
            "rk_test_…",
            "too short to show any of it"
        );
        assert_eq!(format!("{short:?}"), "StripeSecretKey(rk_test_…)");
    }

    #[test]
    fn publishable_keys_have_a_mode_too() {
        assert_eq!(
            StripeMode::of_key("pk_test_DUMMY0000", "pk_"),
            Some(StripeMode::Test)
        );
        assert_eq!(
            StripeMode::of_key("pk_live_DUMMY0000", "pk_"),
            Some(StripeMode::Live)
        );
        assert_eq!(StripeMode::of_key("sk_test_DUMMY0000", "pk_"), None);
        assert_eq!(StripeMode::of_key("pk_test_short", "pk_"), None);
        assert_eq!(StripeMode::of_key("pk_prod_DUMMY0000", "pk_"), None);
    }
}
