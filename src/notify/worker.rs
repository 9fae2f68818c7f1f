//! The delivery worker: one per instance (`serve`). Every poll it lists due rows, claims each
//! (row claiming: exactly one worker on any instance gets a row; a claim is a lease that runs
//! out if its worker dies), sends the claimed rows concurrently with no database connection
//! held, and records each outcome: sent; retried after an exponential, jittered backoff; or
//! dead after the channel's last attempt. An attempt is cut off before its claim runs out, so
//! no two workers send one row at once; a claim left by a crash or a SIGKILL mid-send is due
//! again when it runs out, and the row goes out again (receivers deduplicate by the message
//! id, which a retry keeps).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDateTime};
use secrecy::ExposeSecret as _;

use super::email::{Email, Mailer};
use super::endpoints::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{Channel, Status};
use crate::config::{AlertWebhook, Config, NotifySettings};
use crate::crypto::Keyring;
use crate::db::models::{notification, webhook_endpoint};
use crate::db::{Db, DbError, now};
use crate::metrics::Metrics;

/// Rows one pass claims (and sends concurrently).
const BATCH: i64 = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(6 * 3600);

/// Why an attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt (a timeout, a refused connection, a 5xx, a 4xx).
    Retry(String),
    /// No attempt can succeed (a row that cannot be read, a channel that is not configured).
    Final(Status, String),
}

impl Failure {
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry(reason.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("could not build the HTTP client for webhooks")]
    Client,
    #[error(transparent)]
    Mailer(#[from] super::email::MailerError),
}

/// How one channel retries.
#[derive(Debug, Clone, Copy)]
struct Policy {
    max_attempts: u32,
    retry_base: StdDuration,
}

pub struct Worker {
    db: Db,
    instance: String,
    settings: NotifySettings,
    alert: Option<AlertWebhook>,
    mailer: Option<Mailer>,
    client: reqwest::Client,
    alert_client: Option<reqwest::Client>,
    keyring: Arc<Keyring>,
    metrics: Metrics,
}

fn http_client(timeout: StdDuration) -> Result<reqwest::Client, WorkerError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect could carry a notification somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| WorkerError::Client)
}

impl Worker {
    /// The worker for `config`; `public_url` is where e-mails link to.
    pub fn new(
        db: Db,
        config: &Config,
        public_url: &str,
        metrics: Metrics,
    ) -> Result<Self, WorkerError> {
        let settings = config.notify.clone();
        let mailer = Mailer::new(&settings, public_url)?;
        if mailer.is_none() {
            tracing::info!(
                "SMTP_URL is not set: e-mails are recorded in the outbox as not sent, never sent"
            );
        }
        let alert = config.alerts.webhook.clone();
        if alert.as_ref().is_some_and(|a| a.secret.is_none()) {
            tracing::warn!("ALERT_WEBHOOK_SECRET is not set: alert webhooks are sent unsigned");
        }
        let alert_client = alert.as_ref().map(|a| http_client(a.timeout)).transpose()?;
        Ok(Self {
            db,
            instance: config.audit_trail.instance_id.clone(),
            client: http_client(settings.timeout)?,
            settings,
            alert,
            mailer,
            alert_client,
            keyring: Arc::new(config.keyring()),
            metrics,
        })
    }

    /// Delivers forever. A claim its previous run left unfinished (a crash, a SIGKILL) is due
    /// again when its lease runs out: never sooner, since another process with the same
    /// `INSTANCE_ID` (a deploy beside the old one) may still be sending it.
    pub async fn run(self) {
        let mut every = actix_web::rt::time::interval(self.settings.poll_interval);
        loop {
            every.tick().await;
            // A full batch: there may be more due at once.
            loop {
                match self.deliver_due().await {
                    Ok(n) if n == usize::try_from(BATCH).unwrap_or(usize::MAX) => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not read due notifications");
                        break;
                    }
                }
            }
        }
    }

    fn policy(&self, channel: Channel) -> Policy {
        match (channel, &self.alert) {
            (Channel::AlertWebhook, Some(alert)) => Policy {
                max_attempts: alert.max_attempts,
                retry_base: alert.retry_base,
            },
            _ => Policy {
                max_attempts: self.settings.max_attempts,
                retry_base: self.settings.retry_base,
            },
        }
    }

    /// How long one attempt may take, all in: an SMTP session is several commands, each with
    /// the timeout of its own, so the whole attempt is cut off here too.
    fn attempt_limit(&self) -> StdDuration {
        let longest = self.alert.as_ref().map_or(self.settings.timeout, |a| {
            a.timeout.max(self.settings.timeout)
        });
        longest * 2
    }

    /// How long a claim lasts: an attempt is cut off well before its claim runs out, so no
    /// attempt outlives its claim and no row is sent by two workers at once.
    fn lease(&self) -> Duration {
        Duration::from_std(self.attempt_limit()).unwrap_or(Duration::minutes(1))
            + Duration::seconds(10)
    }

    /// One pass: claims up to a batch of due rows and sends them. Returns how many it claimed.
    pub async fn deliver_due(&self) -> Result<usize, DbError> {
        let at = now();
        let lease_until = at + self.lease();
        let instance = self.instance.clone();
        let claimed = self
            .db
            .run(move |conn| {
                let mut claimed = Vec::new();
                for id in notification::due_ids(conn, at, BATCH)? {
                    // Each claim its own token: only this attempt may end it.
                    let token = format!("{instance}:{}", uuid::Uuid::new_v4().simple());
                    if let Some(row) = notification::claim(conn, id, &token, at, lease_until)? {
                        claimed.push(row);
                    }
                }
                Ok::<_, DbError>(claimed)
            })
            .await?;
        let count = claimed.len();
        let attempts = claimed.into_iter().map(|row| async move {
            let outcome = actix_web::rt::time::timeout(self.attempt_limit(), self.send(&row))
                .await
                .unwrap_or_else(|_| Err(Failure::retry("timed out")));
            if let Err(err) = self.record(&row, outcome).await {
                tracing::warn!(error = %err, notification = row.id, "could not record a delivery attempt");
            }
        });
        futures_util::future::join_all(attempts).await;
        Ok(count)
    }

    async fn send(&self, row: &notification::NotificationRow) -> Result<(), Failure> {
        match Channel::parse(&row.channel) {
            Some(Channel::Email) => self.send_email(row).await,
            Some(Channel::AppWebhook) => self.send_app_webhook(row).await,
            Some(Channel::AlertWebhook) => self.send_alert(row).await,
            None => Err(Failure::Final(Status::Dead, "unknown channel".into())),
        }
    }

    async fn send_email(&self, row: &notification::NotificationRow) -> Result<(), Failure> {
        let Some(mailer) = &self.mailer else {
            return Err(Failure::Final(
                Status::NotSent,
                "not sent: SMTP not configured".into(),
            ));
        };
        let message: Email = serde_json::from_str(&row.payload)
            .map_err(|_| Failure::Final(Status::Dead, "unreadable e-mail in the outbox".into()))?;
        mailer.send(&row.message_id, &row.recipient, &message).await
    }

    async fn send_app_webhook(&self, row: &notification::NotificationRow) -> Result<(), Failure> {
        let Some(endpoint_id) = row.endpoint_id else {
            return Err(Failure::Final(Status::Dead, "no endpoint".into()));
        };
        let endpoint = self
            .db
            .run(move |conn| webhook_endpoint::find(conn, endpoint_id))
            .await
            .map_err(|_| Failure::retry("database unavailable"))?;
        let Some(endpoint) = endpoint else {
            return Err(Failure::Final(
                Status::Dead,
                "the endpoint was deleted".into(),
            ));
        };
        if !endpoint.enabled {
            return Err(Failure::Final(
                Status::Dead,
                "the endpoint is disabled".into(),
            ));
        }
        let timestamp = chrono::Utc::now().timestamp();
        let secrets = endpoints::secrets_in_force(&self.keyring, &endpoint, now()).map_err(|err| {
            tracing::error!(endpoint = %endpoint.public_id, error = %err, "cannot sign for a webhook endpoint");
            Failure::Final(Status::Dead, "the endpoint's secret cannot be opened".into())
        })?;
        let signature = endpoints::signature_header(
            &secrets,
            &row.message_id,
            timestamp,
            row.payload.as_bytes(),
        )
        .map_err(|_| Failure::Final(Status::Dead, "signing failed".into()))?;
        let request = self
            .client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, &row.message_id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(row.payload.clone());
        http_outcome(request.send().await)
    }

    async fn send_alert(&self, row: &notification::NotificationRow) -> Result<(), Failure> {
        let (Some(alert), Some(client)) = (&self.alert, &self.alert_client) else {
            return Err(Failure::Final(
                Status::NotSent,
                "not sent: ALERT_WEBHOOK_URL not configured".into(),
            ));
        };
        let t = chrono::Utc::now().timestamp();
        let mut request = client
            .post(alert.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(row.payload.clone());
        if let Some(secret) = &alert.secret {
            let signed =
                crate::audit::alerts::delivery::signature(secret, t, row.payload.as_bytes())
                    .ok_or_else(|| Failure::Final(Status::Dead, "signing failed".into()))?;
            request = request.header(crate::audit::alerts::delivery::SIGNATURE_HEADER, signed);
        }
        http_outcome(request.send().await)
    }

    /// When the attempt after `attempts` failed ones is due: `retry_base` × 2^(attempts − 1),
    /// scaled by a random factor in [0.5, 1.5) so that failures do not retry in lockstep.
    fn backoff(policy: Policy, attempts: i64) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        let base = policy
            .retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(MAX_BACKOFF);
        let jitter = getrandom::u32().map_or(0.5, |r| f64::from(r) / f64::from(u32::MAX));
        let wait = base.mul_f64(0.5 + jitter);
        Duration::from_std(wait).unwrap_or(Duration::hours(1))
    }

    async fn record(
        &self,
        row: &notification::NotificationRow,
        outcome: Result<(), Failure>,
    ) -> Result<(), DbError> {
        let channel = Channel::parse(&row.channel).unwrap_or(Channel::Email);
        let policy = self.policy(channel);
        let at = now();
        let (status, error, next): (Status, Option<String>, Option<NaiveDateTime>) = match outcome {
            Ok(()) => (Status::Sent, None, None),
            Err(Failure::Final(status, error)) => (status, Some(error), None),
            Err(Failure::Retry(error)) if row.attempts < i64::from(policy.max_attempts) => (
                Status::Retrying,
                Some(error),
                Some(at + Self::backoff(policy, row.attempts)),
            ),
            Err(Failure::Retry(error)) => (Status::Dead, Some(error), None),
        };
        let result = match status {
            Status::Sent => "sent",
            Status::Retrying => "retried",
            Status::NotSent => "not_sent",
            _ => "dead",
        };
        self.metrics.notification(channel.as_str(), result);
        match status {
            Status::Sent => tracing::info!(
                notification = row.id, channel = channel.as_str(), event = %row.event_type,
                attempts = row.attempts, "notification sent"
            ),
            Status::Retrying => tracing::warn!(
                notification = row.id, channel = channel.as_str(), event = %row.event_type,
                attempts = row.attempts, error = error.as_deref().unwrap_or_default(),
                "notification attempt failed; will retry"
            ),
            _ => tracing::error!(
                notification = row.id, channel = channel.as_str(), event = %row.event_type,
                attempts = row.attempts, error = error.as_deref().unwrap_or_default(),
                "notification not delivered: {}", status.label()
            ),
        }
        let id = row.id;
        let token = row.claimed_by.clone().unwrap_or_default();
        let current = self
            .db
            .run(move |conn| {
                notification::finish(
                    conn,
                    id,
                    &token,
                    status.as_str(),
                    error.as_deref(),
                    next,
                    at,
                )
            })
            .await?;
        if !current {
            tracing::warn!(
                notification = id,
                "a delivery attempt outlived its claim; another worker has the notification"
            );
        }
        Ok(())
    }
}

/// A 2xx is delivered; anything else is retried. The reason never holds the URL (Slack's carry
/// their credential) or the receiver's body.
fn http_outcome(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), Failure> {
    match result {
        Ok(res) if res.status().is_success() => Ok(()),
        Ok(res) => Err(Failure::retry(format!(
            "answered {}",
            res.status().as_u16()
        ))),
        Err(err) if err.is_timeout() => Err(Failure::retry("timed out")),
        Err(err) if err.is_connect() => Err(Failure::retry("could not connect")),
        Err(_) => Err(Failure::retry("request failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = Policy {
            max_attempts: 8,
            retry_base: StdDuration::from_secs(10),
        };
        for attempts in 1..=4 {
            let base = 10 * 2i64.pow(u32::try_from(attempts - 1).unwrap());
            for _ in 0..50 {
                let wait = Worker::backoff(policy, attempts).num_milliseconds();
                assert!(
                    (base * 500..base * 1500).contains(&wait),
                    "attempt {attempts}: {wait} ms"
                );
            }
        }
        let capped = Worker::backoff(policy, 60).num_seconds();
        assert!(capped < 6 * 3600 * 3 / 2, "{capped}");
    }
}
