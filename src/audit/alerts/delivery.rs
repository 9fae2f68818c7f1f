//! The webhook alert channel (`ALERT_WEBHOOK_URL`): a Slack-compatible JSON POST
//! (`{"text": …}` plus the alert's fields), signed `X-Tollgate-Signature: t=<unix>,v1=<hex>`
//! with v1 = HMAC-SHA256(`ALERT_WEBHOOK_SECRET`, "{t}.{body}").
//!
//! Deliveries are outbox rows (`notifications`, channel `alert_webhook`) written with the alert
//! itself; the outbox's worker (`notify::worker`) sends them, retrying with exponential backoff
//! up to `ALERT_WEBHOOK_MAX_ATTEMPTS`, then marks them dead (logged). No request ever waits for
//! it. The body names the rule, counts, threshold, window and instance: never a secret, an
//! account or an address.

use chrono::NaiveDateTime;
use hmac::{Hmac, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;

use super::{AlertRule, Observed, message_fields};
use crate::config::AlertSettings;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Tollgate-Signature";

/// The JSON a delivery sends for an alert raised at `at`.
pub fn body(
    settings: &AlertSettings,
    rule: AlertRule,
    observed: &Observed,
    at: NaiveDateTime,
) -> serde_json::Value {
    let limit = settings.limit(rule);
    let what = match (rule, observed.requests) {
        (_, Some(requests)) => format!("{} 5xx responses of {requests} requests", observed.count),
        (AlertRule::RedisUnavailable, None) => format!(
            "Redis stopped answering {} time(s); shared limits follow REDIS_FAIL meanwhile",
            observed.count
        ),
        (_, None) => format!("{} events", observed.count),
    };
    let text = format!(
        "Tollgate alert on {}: {} reached its threshold of {}{} ({what} within {} s)",
        settings.instance,
        rule.name(),
        limit.threshold,
        if rule == AlertRule::ServerErrors {
            " %"
        } else {
            ""
        },
        limit.window_secs,
    );
    let mut body = message_fields(settings, rule, observed, at);
    if let Some(map) = body.as_object_mut() {
        map.insert("text".into(), text.into());
    }
    body
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`.
pub fn signature(secret: &secrecy::SecretString, t: i64, body: &[u8]) -> Option<String> {
    let mut mac =
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.expose_secret().as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}
