//! `Stripe-Signature` verification exactly as Stripe specifies: `t={unix},v1={hex}[,v1=…]`,
//! where v1 = HMAC-SHA256(endpoint secret, "{t}.{raw body}"). Any `v1` matching any configured
//! secret is accepted (two secrets during a rotation); the timestamp must be within the
//! tolerance in both directions.
//!
//! The work is bounded before it starts: the header is at most [`MAX_HEADER_LEN`] bytes and
//! [`MAX_ENTRIES`] entries, `t` is digits only, and a `v1` counts only when it is 64 hex digits.
//! The MAC over the body is computed once per secret, however many candidates the header
//! carries, and compared with each in constant time (`subtle`).

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The longest `Stripe-Signature` header considered (Stripe's own are about 150 bytes).
pub const MAX_HEADER_LEN: usize = 1024;
/// The most comma-separated entries considered (Stripe sends `t`, one `v1` per active secret,
/// and sometimes a `v0`).
pub const MAX_ENTRIES: usize = 8;
/// Digits in a Unix timestamp we accept (year 33658 is far enough).
const MAX_TIMESTAMP_DIGITS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("Stripe-Signature header is over the size or entry limit")]
    TooLarge,
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
            Self::TooLarge => "too_large",
            Self::Mismatch => "mismatch",
            Self::Stale { .. } => "stale",
        }
    }
}

/// A parsed header: the signed timestamp (as sent: the MAC covers these exact digits) and the
/// candidate signatures.
struct SignatureHeader<'a> {
    signed_timestamp: &'a str,
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    if value.is_empty()
        || value.len() > MAX_TIMESTAMP_DIGITS
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(SignatureError::Malformed);
    }
    value.parse().map_err(|_| SignatureError::Malformed)
}

/// A `v1` value that can match: exactly 32 bytes of hex. Anything else cannot, and is skipped.
fn parse_signature(value: &str) -> Option<[u8; 32]> {
    let mut signature = [0u8; 32];
    hex::decode_to_slice(value, &mut signature).ok()?;
    Some(signature)
}

fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    if header.len() > MAX_HEADER_LEN || header.split(',').nth(MAX_ENTRIES).is_some() {
        return Err(SignatureError::TooLarge);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some((value, parse_timestamp(value)?)),
            "t" => return Err(SignatureError::Malformed),
            "v1" => signatures.extend(parse_signature(value)),
            _ => {} // v0 and future schemes are ignored, as Stripe's libraries do.
        }
    }
    let (signed_timestamp, timestamp) = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok(SignatureHeader {
        signed_timestamp,
        timestamp,
        signatures,
    })
}

/// HMAC-SHA256(secret, "{t}.{body}"), over `t` exactly as the header carries it.
fn expected_signature(secret: &SecretString, timestamp: &str, body: &[u8]) -> Option<[u8; 32]> {
    let mut mac =
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.expose_secret().as_bytes()).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// Checks `header` against `body` for any of `secrets`; returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance_secs: i64,
    now: i64,
) -> Result<i64, SignatureError> {
    verify_counting(header, body, secrets, tolerance_secs, now).0
}

/// [`verify`], also returning how many MACs over the body it computed (the cost a request
/// can impose; pinned by the tests).
fn verify_counting(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance_secs: i64,
    now: i64,
) -> (Result<i64, SignatureError>, usize) {
    let parsed = match header.ok_or(SignatureError::Missing).and_then(parse_header) {
        Ok(parsed) => parsed,
        Err(err) => return (Err(err), 0),
    };
    let mut macs = 0;
    let mut matched = false;
    for secret in secrets {
        let Some(expected) = expected_signature(secret, parsed.signed_timestamp, body) else {
            continue;
        };
        macs += 1;
        // Every candidate is compared (no early exit): the time taken says nothing about which.
        for candidate in &parsed.signatures {
            matched |= bool::from(expected.ct_eq(candidate));
        }
        if matched {
            break;
        }
    }
    if !matched {
        return (Err(SignatureError::Mismatch), macs);
    }
    // Checked after the signature, so a forged header cannot probe the clock.
    let skew = now - parsed.timestamp;
    if skew.abs() > tolerance_secs {
        return (Err(SignatureError::Stale { skew }), macs);
    }
    (Ok(parsed.timestamp), macs)
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

    #[test]
    fn the_timestamp_is_digits_only_and_a_v1_is_exactly_32_bytes() {
        let body = br#"{"id":"evt_1"}"#;
        let secrets = [secret("whsec_DUMMY")];
        let good = sign("whsec_DUMMY", NOW, body);
        for t in [
            format!("+{NOW}"),
            format!(" {NOW}"),
            format!("{NOW}.0"),
            "-1".into(),
        ] {
            let header = format!("t={t},v1={good}");
            assert_eq!(
                verify(Some(&header), body, &secrets, 300, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        // Empty, short or long hex never counts as a candidate signature.
        for v1 in ["", "00", &"00".repeat(33), &good[..63]] {
            let header = format!("t={NOW},v1={v1}");
            assert_eq!(
                verify(Some(&header), body, &secrets, 300, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        let header = format!("t={NOW},v1=,v1=00,v1={good}");
        assert_eq!(verify(Some(&header), body, &secrets, 300, NOW), Ok(NOW));
        // The MAC covers the digits as sent: `0{t}` is another message.
        let header = format!("t=0{NOW},v1={good}");
        assert_eq!(
            verify(Some(&header), body, &secrets, 300, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn oversized_headers_are_refused_before_any_mac_is_computed() {
        let body = vec![b'x'; 500 * 1024];
        let secrets = [secret("whsec_DUMMYold"), secret("whsec_DUMMYnew")];
        let flood = format!("t={NOW}{}", ",v1=".repeat(4000));
        let (outcome, macs) = verify_counting(Some(&flood), &body, &secrets, 300, NOW);
        assert_eq!(outcome, Err(SignatureError::TooLarge));
        assert_eq!(macs, 0);

        // Within the length limit but over the entry limit.
        let entries = format!("t={NOW}{}", ",v0=1".repeat(MAX_ENTRIES));
        assert!(entries.len() <= MAX_HEADER_LEN);
        let (outcome, macs) = verify_counting(Some(&entries), &body, &secrets, 300, NOW);
        assert_eq!(outcome, Err(SignatureError::TooLarge));
        assert_eq!(macs, 0);

        let long = format!("t={NOW},v0={}", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(
            verify(Some(&long), &body, &secrets, 300, NOW),
            Err(SignatureError::TooLarge)
        );
    }

    #[test]
    fn the_mac_is_computed_once_per_secret_however_many_candidates() {
        let body = vec![b'x'; 500 * 1024];
        let secrets = [secret("whsec_DUMMYold"), secret("whsec_DUMMYnew")];
        let wrong = "00".repeat(32);
        let seven = format!("t={NOW}{}", format!(",v1={wrong}").repeat(MAX_ENTRIES - 1));
        let (outcome, macs) = verify_counting(Some(&seven), &body, &secrets, 300, NOW);
        assert_eq!(outcome, Err(SignatureError::Mismatch));
        assert_eq!(macs, secrets.len(), "one MAC per secret, not per candidate");

        let good = sign("whsec_DUMMYold", NOW, &body);
        let header = format!("t={NOW},v1={wrong},v1={good}");
        let (outcome, macs) = verify_counting(Some(&header), &body, &secrets, 300, NOW);
        assert_eq!(outcome, Ok(NOW));
        assert_eq!(
            macs, 1,
            "a match under the first secret needs no second MAC"
        );
    }
}
