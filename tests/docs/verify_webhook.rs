// Cargo.toml: hmac = "0.12", sha2 = "0.10", base64 = "0.22"
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// How far `webhook-timestamp` may be from now, either way (seconds).
const TOLERANCE_SECS: u64 = 5 * 60;

#[derive(Debug, PartialEq, Eq)]
pub enum WebhookError {
    /// The configured secret is not `whsec_` + base64.
    BadSecret,
    BadTimestamp,
    /// Signed too long ago (a replay) or too far ahead.
    Stale,
    BadSignature,
}

/// Checks a Tollgate webhook (Standard Webhooks). `secret`: the endpoint's `whsec_…`;
/// `id`, `timestamp`, `signatures`: the `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` headers; `body`: the raw request body, before any JSON parsing;
/// `now`: the current Unix time in seconds.
pub fn verify_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), WebhookError> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| WebhookError::BadSecret)?;
    let sent_at: i64 = timestamp.parse().map_err(|_| WebhookError::BadTimestamp)?;
    if now.abs_diff(sent_at) > TOLERANCE_SECS {
        return Err(WebhookError::Stale);
    }
    // One `v1,<base64>` per secret in force, space-separated (two during a rotation).
    for signature in signatures.split(' ') {
        let Some(("v1", encoded)) = signature.split_once(',') else {
            continue;
        };
        let Ok(candidate) = BASE64.decode(encoded) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::BadSecret)?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(WebhookError::BadSignature)
}
