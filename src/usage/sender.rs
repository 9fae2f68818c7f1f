//! The usage sender: one per instance (`serve`). Every `USAGE_SENDER_INTERVAL_MS` it claims a
//! batch of due rows of `usage_outbox` (oldest first; a claim is a lease, so two senders never
//! send one row at once and a row whose sender died is due again when its lease runs out),
//! sends each as a Stripe meter event with no database connection held, and records the
//! outcome: forwarded (the row goes, the record gets `forwarded_at`), or failed (attempts + 1,
//! due again after an exponential backoff capped at an hour, the failure in a few redacted
//! words). A row is never dropped.
//!
//! Each event's `identifier` is `tg_usage_<record id>`: a resend after a crash, a timeout or a
//! lost answer is recognised by Stripe and counted once. The calls go through the gateway as
//! [`OperationClass::System`]: the per-user throttle is for customers' own actions and would
//! otherwise hold a heavy user's billing back; the sender bounds itself (one batch at a time,
//! [`CONCURRENCY`] calls in flight).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDateTime};
use futures_util::StreamExt as _;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;

use crate::accounts::UserId;
use crate::billing::customers::customer_aad;
use crate::billing::{Gateway, GatewayError, OperationClass};
use crate::config::{Config, UsageSenderSettings};
use crate::crypto::Keyring;
use crate::db::models::{billing_customer, usage};
use crate::db::{Db, DbError, now};
use crate::metrics::Metrics;

/// Rows one pass claims.
const BATCH: i64 = 100;
/// Meter events in flight at once.
const CONCURRENCY: usize = 8;
/// How long a claim lasts: longer than the gateway's attempts at one call (3 × 20 s).
const LEASE: StdDuration = StdDuration::from_secs(120);
/// The longest wait between two attempts.
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(3600);

/// The identifier of a record's meter event: stable, so Stripe counts a resend once. It names
/// the record's id and the microsecond it was stored, so that a database restored from a
/// backup (its ids counting again from an older value) or a second installation on the same
/// Stripe account never reuses an identifier Stripe has seen: that usage would be taken for a
/// resend and never billed.
pub fn identifier(record_id: i64, stored_at: chrono::NaiveDateTime) -> String {
    format!(
        "tg_usage_{record_id}_{}",
        stored_at.and_utc().timestamp_micros()
    )
}

pub struct Sender {
    db: Db,
    gateway: Gateway,
    keyring: Arc<Keyring>,
    settings: UsageSenderSettings,
    metrics: Metrics,
}

/// One claimed row, ready to send.
struct Outgoing {
    record_id: i64,
    attempts: i64,
    user_id: UserId,
    event_name: String,
    quantity: i64,
    occurred_at: NaiveDateTime,
    created_at: NaiveDateTime,
    /// The user's sealed Stripe customer id (opened just before sending).
    sealed_customer: Option<Vec<u8>>,
}

impl Sender {
    pub fn new(db: Db, config: &Config, metrics: Metrics) -> Self {
        Self {
            db,
            gateway: Gateway::new(&config.stripe).with_metrics(metrics.clone()),
            keyring: Arc::new(config.keyring()),
            settings: config.usage_sender,
            metrics,
        }
    }

    /// Sends forever (spawned with the server; it ends with it).
    pub async fn run(self) {
        if !self.gateway.configured() {
            tracing::info!(
                "STRIPE_SECRET_KEY is not set: usage waits in the outbox, nothing is forwarded"
            );
            return;
        }
        let mut every = actix_web::rt::time::interval(self.settings.interval);
        loop {
            every.tick().await;
            loop {
                match self.send_due().await {
                    Ok(n) if n == usize::try_from(BATCH).unwrap_or(usize::MAX) => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not read the usage outbox");
                        break;
                    }
                }
            }
            if let Ok(depth) = self.db.run(usage::outbox_depth).await {
                self.metrics.usage_outbox(depth);
            }
        }
    }

    /// One pass: claims up to a batch of due rows and sends them. Returns how many it claimed.
    pub async fn send_due(&self) -> Result<usize, DbError> {
        let at = now();
        let lease_until = at + Duration::from_std(LEASE).unwrap_or(Duration::minutes(2));
        let claimed = self
            .db
            .run(move |conn| {
                let due = usage::claim_due(conn, at, lease_until, BATCH)?;
                let users: BTreeSet<UserId> = due.iter().map(|d| d.user_id).collect();
                let mut sealed = HashMap::new();
                for user_id in users {
                    if let Some(row) = billing_customer::for_user(conn, user_id)? {
                        sealed.insert(user_id, row.stripe_customer_sealed);
                    }
                }
                Ok::<_, DbError>(
                    due.into_iter()
                        .map(|d| Outgoing {
                            record_id: d.record_id,
                            attempts: d.attempts,
                            user_id: d.user_id,
                            event_name: d.event_name,
                            quantity: d.quantity,
                            occurred_at: d.occurred_at,
                            created_at: d.created_at,
                            sealed_customer: sealed.get(&d.user_id).cloned(),
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        let count = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(CONCURRENCY, |row| async move {
                let outcome = self.send(&row).await;
                if let Err(err) = self.record(&row, outcome).await {
                    tracing::warn!(error = %err, usage_record = row.record_id, "could not record a meter event attempt");
                }
            })
            .await;
        Ok(count)
    }

    async fn send(&self, row: &Outgoing) -> Result<(), String> {
        let sealed = row
            .sealed_customer
            .as_deref()
            .ok_or_else(|| "no Stripe customer".to_owned())?;
        let customer = self
            .keyring
            .open(sealed, &customer_aad(row.user_id))
            .ok()
            .and_then(|opened| String::from_utf8(opened.to_vec()).ok())
            .ok_or_else(|| "the customer id cannot be opened".to_owned())?;
        let identifier = identifier(row.record_id, row.created_at);
        let payload: HashMap<String, String> = HashMap::from([
            ("stripe_customer_id".to_owned(), customer),
            ("value".to_owned(), row.quantity.to_string()),
        ]);
        let timestamp = row.occurred_at.and_utc().timestamp();
        let sent = self
            .gateway
            .call(
                OperationClass::System,
                row.user_id,
                Some(&identifier),
                || {
                    CreateBillingMeterEvent::new(row.event_name.clone(), payload.clone())
                        .identifier(identifier.clone())
                        .timestamp(timestamp)
                },
            )
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Stripe has this identifier already: the earlier attempt got through.
            Err(GatewayError::Refused {
                status: 400,
                message,
            }) if message.contains("already exists") => Ok(()),
            // Stripe's messages may name the customer: only the status is kept.
            Err(GatewayError::Refused { status, .. }) => {
                Err(format!("Stripe refused: HTTP {status}"))
            }
            Err(GatewayError::Unavailable(_)) => Err("Stripe unavailable".to_owned()),
            Err(GatewayError::NotConfigured) => Err("billing not configured".to_owned()),
            Err(GatewayError::Throttled { .. }) => Err("throttled".to_owned()),
        }
    }

    /// When the attempt after `attempts` failed ones is due: `retry_base` × 2^attempts, capped.
    fn backoff(&self, attempts: i64) -> Duration {
        let exponent = u32::try_from(attempts).unwrap_or(u32::MAX).min(20);
        let wait = self
            .settings
            .retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(MAX_BACKOFF);
        Duration::from_std(wait).unwrap_or(Duration::hours(1))
    }

    async fn record(&self, row: &Outgoing, outcome: Result<(), String>) -> Result<(), DbError> {
        let id = row.record_id;
        let at = now();
        match outcome {
            Ok(()) => {
                self.metrics.usage_meter_event("sent");
                self.db
                    .run(move |conn| usage::forwarded(conn, id, at))
                    .await
            }
            Err(error) => {
                self.metrics.usage_meter_event("failed");
                tracing::warn!(
                    usage_record = id,
                    attempts = row.attempts + 1,
                    error = %error,
                    "meter event not sent; will retry"
                );
                let next = at + self.backoff(row.attempts);
                self.db
                    .run(move |conn| usage::failed(conn, id, next, &error))
                    .await
            }
        }
    }
}
