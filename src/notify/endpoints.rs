//! The product's own services' webhook endpoints and Standard Webhooks signing.
//!
//! A secret is `whsec_` + base64 of 32 random bytes; the signing key is those bytes. Each
//! delivery carries `webhook-id` (the outbox row's message id, stable across retries),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`: space-separated
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per secret in force (the
//! current one, and the previous one during a rotation's overlap).

use base64::Engine as _;
use chrono::NaiveDateTime;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{Aad, CryptoError, Keyring};
use crate::db::models::webhook_endpoint::WebhookEndpointRow;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the endpoint's secret cannot be opened: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the endpoint's secret is malformed")]
    Malformed,
}

/// The AAD binding a sealed secret to its endpoint and column: a secret copied to another
/// endpoint, or from `previous_secret` to `secret`, does not open.
pub fn secret_aad(public_id: &str, column: &'static str) -> Aad {
    Aad::new("webhook_endpoints", column, public_id)
}

/// A fresh secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> Result<SecretString, getrandom::Error> {
    let bytes = Zeroizing::new(crate::secret::random_bytes::<32>()?);
    Ok(SecretString::from(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes.as_slice())
    )))
}

/// The signing key of a `whsec_` secret.
fn signing_key(secret: &str) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map(Zeroizing::new)
        .map_err(|_| SigningError::Malformed)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` for one secret.
pub fn sign(
    secret: &SecretString,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let key = signing_key(secret.expose_secret())?;
    let mut mac =
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(&key).map_err(|_| SigningError::Malformed)?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The secrets that sign for `endpoint` at `at`: the current one, then the previous one while
/// its overlap lasts.
pub fn secrets_in_force(
    keyring: &Keyring,
    endpoint: &WebhookEndpointRow,
    at: NaiveDateTime,
) -> Result<Vec<SecretString>, SigningError> {
    let mut secrets =
        vec![keyring.open_string(&endpoint.secret, &secret_aad(&endpoint.public_id, "secret"))?];
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_expires_at)
        && until > at
    {
        secrets.push(keyring.open_string(
            previous,
            &secret_aad(&endpoint.public_id, "previous_secret"),
        )?);
    }
    Ok(secrets)
}

/// The `webhook-signature` header's value: one signature per secret in force.
pub fn signature_header(
    secrets: &[SecretString],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example (its README's test vector).
    #[test]
    fn signs_the_specifications_example() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = br#"{"test": 2432232314}"#;
        let signed = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body).unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_secret_in_force_signs_and_fresh_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert_ne!(a.expose_secret(), b.expose_secret());
        let header = signature_header(&[a.clone(), b.clone()], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&a, "msg_1", 1, b"{}").unwrap());
        assert_eq!(parts[1], sign(&b, "msg_1", 1, b"{}").unwrap());
    }
}
