//! `Stripe-Signature` verification exactly as Stripe specifies: `t={unix},v1={hex}[,v1=…]`,
//! where v1 = HMAC-SHA256(endpoint secret, "{t}.{raw body}"). Any `v1` matching any configured
//! secret is accepted (two secrets during a rotation); the timestamp must be within the
//! tolerance in both directions. Comparisons are constant-time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no signature matches")]
    Mismatch,
    #[error("timestamp outside the tolerance ({skew} s)")]
    Stale { skew: i64 },
}

impl SignatureError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Stale { .. } => "stale",
        }
    }
}

/// Checks `header` against `body` for any of `secrets`; returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance_secs: i64,
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "t" => return Err(SignatureError::Malformed),
            "v1" => signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
            _ => {} // v0 and future schemes are ignored, as Stripe's libraries do.
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matched = secrets.iter().any(|secret| {
        signatures.iter().any(|signature| {
            let Ok(mut mac) =
                <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.expose_secret().as_bytes())
            else {
                return false;
            };
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(signature).is_ok()
        })
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // Checked after the signature, so a forged header cannot probe the clock.
    let skew = now - timestamp;
    if skew.abs() > tolerance_secs {
        return Err(SignatureError::Stale { skew });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn accepts_any_matching_v1_for_any_configured_secret() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign("whsec_DUMMYnew", NOW, body);
        let header = format!("t={NOW},v1={},v1={good},v0=abc", "00".repeat(32));
        let secrets = [secret("whsec_DUMMYold"), secret("whsec_DUMMYnew")];
        assert_eq!(verify(Some(&header), body, &secrets, 300, NOW), Ok(NOW));
    }

    #[test]
    fn refuses_tampering_wrong_secrets_and_stale_or_future_timestamps() {
        let body = br#"{"id":"evt_1"}"#;
        let secrets = [secret("whsec_DUMMY")];
        let header = |t: i64| format!("t={t},v1={}", sign("whsec_DUMMY", t, body));
        assert_eq!(
            verify(Some(&header(NOW)), br#"{"id":"evt_2"}"#, &secrets, 300, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header(NOW)), body, &[secret("whsec_OTHER")], 300, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header(NOW - 301)), body, &secrets, 300, NOW),
            Err(SignatureError::Stale { skew: 301 })
        );
        assert_eq!(
            verify(Some(&header(NOW + 301)), body, &secrets, 300, NOW),
            Err(SignatureError::Stale { skew: -301 })
        );
        assert_eq!(
            verify(Some(&header(NOW - 300)), body, &secrets, 300, NOW),
            Ok(NOW - 300)
        );
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,t=2,v1=00",
            "t=1,v1=zz",
            "garbage",
        ] {
            assert_eq!(
                verify(Some(bad), body, &secrets, 300, NOW),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(None, body, &secrets, 300, NOW),
            Err(SignatureError::Missing)
        );
    }
}
