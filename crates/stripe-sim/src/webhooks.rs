//! Signed webhook delivery, as Stripe does it: `Stripe-Signature: t={unix},v1={hex HMAC-SHA256
//! of "{t}.{payload}" keyed by the endpoint secret}`, retried with exponential backoff until the
//! endpoint answers 2xx (or the attempts run out). Every attempt is recorded for inspection.

use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// Where events go.
pub struct WebhookTarget {
    pub url: String,
    pub secret: SecretString,
}

/// One delivery attempt, as `/_sim/deliveries` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// `t=…,v1=…` for `payload` signed at `timestamp` with `secret`.
pub fn signature_header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={timestamp},v1={:x}", mac.finalize().into_bytes())
}

pub struct Deliverer {
    target: std::sync::RwLock<Option<std::sync::Arc<WebhookTarget>>>,
    client: reqwest::Client,
    retry_base: Duration,
    max_attempts: u32,
    pub attempts: Mutex<Vec<DeliveryAttempt>>,
}

impl Deliverer {
    pub fn new(target: Option<WebhookTarget>, retry_base: Duration, max_attempts: u32) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            target: std::sync::RwLock::new(target.map(std::sync::Arc::new)),
            client,
            retry_base,
            max_attempts,
            attempts: Mutex::new(Vec::new()),
        }
    }

    fn target(&self) -> Option<std::sync::Arc<WebhookTarget>> {
        self.target.read().ok().and_then(|t| t.clone())
    }

    /// Points delivery at an endpoint (or turns it off).
    pub fn set_target(&self, target: Option<WebhookTarget>) {
        if let Ok(mut slot) = self.target.write() {
            *slot = target.map(std::sync::Arc::new);
        }
    }

    pub fn enabled(&self) -> bool {
        self.target().is_some()
    }

    fn record(&self, attempt: DeliveryAttempt) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.push(attempt);
        }
    }

    /// Delivers one event (its exact JSON bytes), retrying with backoff; returns when it was
    /// accepted or the attempts ran out.
    pub async fn deliver(&self, event_id: &str, event_type: &str, payload: &[u8]) -> bool {
        let Some(target) = self.target() else {
            return false;
        };
        for attempt in 1..=self.max_attempts {
            let signature = signature_header(
                target.secret.expose_secret(),
                crate::state::unix_now(),
                payload,
            );
            let sent = self
                .client
                .post(&target.url)
                .header("content-type", "application/json; charset=utf-8")
                .header("stripe-signature", signature)
                .header(
                    "user-agent",
                    "Stripe/1.0 (+https://stripe.com/docs/webhooks) tollgate-sim",
                )
                .body(payload.to_vec())
                .send()
                .await;
            let (status, error) = match sent {
                Ok(res) => (Some(res.status().as_u16()), None),
                Err(err) => (
                    None,
                    Some(
                        if err.is_timeout() {
                            "timeout"
                        } else {
                            "connection failed"
                        }
                        .to_owned(),
                    ),
                ),
            };
            self.record(DeliveryAttempt {
                event_id: event_id.to_owned(),
                event_type: event_type.to_owned(),
                attempt,
                status,
                error,
            });
            if status.is_some_and(|s| (200..300).contains(&s)) {
                return true;
            }
            if attempt < self.max_attempts {
                actix_web::rt::time::sleep(self.retry_base * 2u32.saturating_pow(attempt - 1))
                    .await;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::signature_header;

    #[test]
    fn signs_like_stripe() {
        // HMAC-SHA256("whsec_DUMMY", "1700000000.{}"), computed independently with openssl.
        assert_eq!(
            signature_header("whsec_DUMMY", 1_700_000_000, b"{}"),
            "t=1700000000,v1=aaf0668e72baf9a910117f049a49c325341faee7a48f35bec0a551e40cd082d0"
        );
    }
}
