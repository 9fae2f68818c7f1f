//! The webhook alert channel (`ALERT_WEBHOOK_URL`): a Slack-compatible JSON POST
//! (`{"text": …}` plus the alert's fields), signed `X-Tollgate-Signature: t=<unix>,v1=<hex>`
//! with v1 = HMAC-SHA256(`ALERT_WEBHOOK_SECRET`, "{t}.{body}").
//!
//! Deliveries are rows (`alert_deliveries`) written with the alert itself; a background
//! [`Worker`] in `serve` sends the due ones, retrying with exponential backoff up to
//! `ALERT_WEBHOOK_MAX_ATTEMPTS`, then marks them dead (logged). No request ever waits for it,
//! and no database connection is held across the HTTP call. The body names the rule, counts,
//! threshold, window and instance: never a secret, an account or an address.

use chrono::{Duration, NaiveDateTime};
use hmac::{Hmac, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;

use super::{AlertRule, Observed, message_fields};
use crate::config::{AlertSettings, AlertWebhook};
use crate::db::models::alert::{self, AlertDeliveryRow};
use crate::db::{Db, DbError, now};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Tollgate-Signature";
/// Deliveries one pass takes.
const BATCH: i64 = 20;

/// The JSON a delivery sends for an alert raised at `at`.
pub fn body(
    settings: &AlertSettings,
    rule: AlertRule,
    observed: &Observed,
    at: NaiveDateTime,
) -> serde_json::Value {
    let limit = settings.limit(rule);
    let what = match observed.requests {
        Some(requests) => format!("{} 5xx responses of {requests} requests", observed.count),
        None => format!("{} events", observed.count),
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

/// Sends due alert deliveries, forever, every poll interval.
pub struct Worker {
    db: Db,
    webhook: AlertWebhook,
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not build the HTTP client for ALERT_WEBHOOK_URL")]
    Client,
}

impl Worker {
    /// The worker for `settings`' webhook, if one is configured.
    pub fn new(db: Db, settings: &AlertSettings) -> Result<Option<Self>, WorkerError> {
        let Some(webhook) = settings.webhook.clone() else {
            return Ok(None);
        };
        if webhook.secret.is_none() {
            tracing::warn!("ALERT_WEBHOOK_SECRET is not set: alert webhooks are sent unsigned");
        }
        let client = reqwest::Client::builder()
            .timeout(webhook.timeout)
            .connect_timeout(webhook.timeout)
            // A redirect could carry the alert somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| WorkerError::Client)?;
        Ok(Some(Self {
            db,
            webhook,
            client,
        }))
    }

    pub async fn run(self) {
        let mut every = actix_web::rt::time::interval(self.webhook.poll_interval);
        loop {
            every.tick().await;
            if let Err(err) = self.deliver_due().await {
                tracing::warn!(error = %err, "could not read due alert deliveries");
            }
        }
    }

    /// One pass: claims each due delivery (so one instance attempts it), sends it with no
    /// connection held, and records the outcome. Returns how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize, DbError> {
        let at = now();
        let due = self.db.run(move |conn| alert::due(conn, at, BATCH)).await?;
        let mut delivered = 0;
        for row in due {
            // If this instance dies mid-attempt, the row is due again after the lease.
            let lease = at + self.lease();
            let id = row.id;
            let claimed = self
                .db
                .run(move |conn| alert::claim_attempt(conn, id, at, lease))
                .await?;
            if !claimed {
                continue;
            }
            let outcome = self.send(&row.body).await;
            delivered += usize::from(outcome.is_ok());
            self.record(&row, outcome).await?;
        }
        Ok(delivered)
    }

    fn lease(&self) -> Duration {
        Duration::from_std(self.webhook.timeout * 2).unwrap_or(Duration::minutes(1))
            + Duration::seconds(30)
    }

    /// POSTs `body`: `Ok` on a 2xx, else why not, in words that hold no URL (Slack's carry
    /// their credential).
    async fn send(&self, body: &str) -> Result<(), String> {
        let t = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.webhook.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(secret) = &self.webhook.secret {
            let signed = signature(secret, t, body.as_bytes()).ok_or("signing failed")?;
            request = request.header(SIGNATURE_HEADER, signed);
        }
        match request.send().await {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("answered {}", res.status().as_u16())),
            Err(err) if err.is_timeout() => Err("timed out".into()),
            Err(err) if err.is_connect() => Err("could not connect".into()),
            Err(_) => Err("request failed".into()),
        }
    }

    async fn record(
        &self,
        row: &AlertDeliveryRow,
        outcome: Result<(), String>,
    ) -> Result<(), DbError> {
        let (id, attempts, rule) = (row.id, row.attempts + 1, row.rule.clone());
        let at = now();
        let error = match outcome {
            Ok(()) => {
                tracing::info!(alert = %rule, attempts, "alert delivered to ALERT_WEBHOOK_URL");
                return self
                    .db
                    .run(move |conn| alert::mark_delivered(conn, id, at))
                    .await;
            }
            Err(error) => error,
        };
        let next = (attempts < i64::from(self.webhook.max_attempts)).then(|| {
            let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(16);
            let wait = self
                .webhook
                .retry_base
                .saturating_mul(2u32.saturating_pow(exponent));
            at + Duration::from_std(wait).unwrap_or(Duration::hours(1))
        });
        match next {
            Some(_) => {
                tracing::warn!(alert = %rule, attempts, error = %error, "alert delivery failed; will retry")
            }
            None => {
                tracing::error!(alert = %rule, attempts, error = %error, "alert delivery dead: ALERT_WEBHOOK_URL failed every attempt")
            }
        }
        self.db
            .run(move |conn| alert::mark_failed(conn, id, &error, next, at))
            .await
    }
}
