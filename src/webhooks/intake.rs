//! A delivery's way in: its source address, its `Stripe-Signature` and its payload are checked,
//! in that order, before anything is stored. A refusal says why, typed, so that the web layer
//! answers it and audits it; only an event that passed all three reaches the [`super::writer`].

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::verify::{self, SignatureError};
use super::{PayloadError, StripeEvent};
use crate::audit::{Actor, Kind, SecurityEvent};
use crate::config::StripeSettings;

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `STRIPE_WEBHOOK_ALLOWED_IPS` is set and the sender is not in it.
    Source,
    /// No `STRIPE_WEBHOOK_SECRET`: nothing can be verified (billing is off). Not audited: the
    /// sender did nothing wrong.
    NoSecret,
    /// The signature does not verify against any configured secret.
    Signature {
        error: SignatureError,
        /// The body's length, for the audit.
        bytes: usize,
    },
    /// A valid signature whose timestamp is outside the tolerance: a replay attempt (or a
    /// badly wrong clock), refused like any signature failure but recorded as a replay.
    Replay {
        /// Seconds between the signed timestamp and now (negative: from the future).
        skew: i64,
        bytes: usize,
    },
    /// Signed, but not an event Tollgate accepts.
    Payload(PayloadError),
}

impl Refusal {
    /// The audit record of this refusal by `stripe` (the sender), its repeats within `window`
    /// counted on one row; `None` for a refusal that is not audited.
    pub fn event(&self, stripe: &Actor, window: Duration) -> Option<SecurityEvent> {
        let (kind, reason, details) = match self {
            Self::NoSecret => return None,
            Self::Source => (
                Kind::WebhookInvalidIp,
                "source",
                json!({ "reason": "source address not in STRIPE_WEBHOOK_ALLOWED_IPS" }),
            ),
            Self::Signature { error, bytes } => (
                Kind::WebhookInvalidSignature,
                error.as_str(),
                json!({ "reason": error.as_str(), "bytes": bytes }),
            ),
            Self::Replay { skew, bytes } => (
                Kind::WebhookReplay,
                "stale_timestamp",
                json!({ "reason": "stale_timestamp", "skew_secs": skew, "bytes": bytes }),
            ),
            // Grouped as one reason: the parser's messages vary with the input.
            Self::Payload(error) => (
                Kind::WebhookInvalidPayload,
                "payload",
                json!({ "reason": error.to_string() }),
            ),
        };
        Some(
            stripe
                .event(kind)
                .details(details)
                .aggregate(window, reason),
        )
    }
}

/// A delivery as it arrived.
#[derive(Clone, Copy)]
pub struct Arrival<'a> {
    /// The client address, as Tollgate resolves it (trusted proxies only).
    pub from: IpAddr,
    /// The `Stripe-Signature` header, if there is one that is text.
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    /// Unix seconds, for the signature's tolerance.
    pub now: i64,
}

/// The verified event of a delivery, or why it is refused: source first (cheapest, and a
/// stranger's body is not even looked at), then the signature, then the payload.
pub fn intake(stripe: &StripeSettings, arrival: Arrival<'_>) -> Result<StripeEvent, Refusal> {
    let allowed = &stripe.webhook_allowed_ips;
    if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(&arrival.from)) {
        return Err(Refusal::Source);
    }
    if stripe.webhook_secrets.is_empty() {
        tracing::warn!("a webhook arrived but STRIPE_WEBHOOK_SECRET is not set");
        return Err(Refusal::NoSecret);
    }
    verify::verify(
        arrival.signature,
        arrival.body,
        &stripe.webhook_secrets,
        stripe.webhook_tolerance_secs,
        arrival.now,
    )
    .map_err(|error| match error {
        SignatureError::Stale { skew } => Refusal::Replay {
            skew,
            bytes: arrival.body.len(),
        },
        error => Refusal::Signature {
            error,
            bytes: arrival.body.len(),
        },
    })?;
    StripeEvent::parse(arrival.body, stripe.live()).map_err(Refusal::Payload)
}

/// What identifies the `Stripe-Signature` header an event arrived with (SHA-256, hex), stored
/// with the event: the same event re-sent under another header is a replay attempt.
pub fn signature_digest(header: Option<&str>) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(header.unwrap_or_default().as_bytes()))
}
