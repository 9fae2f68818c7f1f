//! Group commit for webhook ingest. Deliveries arriving together are stored and applied by a
//! few dedicated writer threads, many events to one transaction: one commit (one fsync, one
//! round of lock handover) for a whole batch instead of one per event. Each delivery is
//! answered only after the transaction holding its event has committed, so the guarantee is
//! the same as one transaction per event: a 200 means stored and applied.
//!
//! If anything in a batch fails, the batch rolls back as a whole and each of its events is
//! retried in a transaction of its own, so one bad event never takes its neighbours down.
//! A panic (a bug) in a batch is caught: that batch's deliveries are answered 500, so Stripe
//! retries them, its connection is dropped, and the writer goes on with the next batch.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use diesel::Connection as _;
use diesel::r2d2::R2D2Connection as _;
use tokio::sync::{mpsc, oneshot};

use super::{Context, Delivery, IngestError, Ingested, StripeEvent};
use crate::config::Config;
use crate::db::{Db, DbConnection, DbError};
use crate::metrics::Metrics;

/// Events one transaction may hold.
const MAX_BATCH: usize = 64;
/// Deliveries that may wait for a writer before senders wait too (back-pressure).
const QUEUE: usize = 1024;

struct Job {
    event: StripeEvent,
    raw: actix_web::web::Bytes,
    ip: String,
    signature_digest: String,
    /// The delivering request's `X-Request-Id`, for its `webhook_validated` audit row.
    request_id: Option<String>,
    reply: oneshot::Sender<Result<Ingested, IngestError>>,
}

impl Job {
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            event: &self.event,
            raw: &self.raw,
            ip: &self.ip,
            signature_digest: &self.signature_digest,
            request_id: self.request_id.as_deref(),
        }
    }
}

/// The handle request handlers submit verified events to.
#[derive(Clone)]
pub struct WebhookWriter {
    jobs: mpsc::Sender<Job>,
}

impl WebhookWriter {
    /// Starts `threads` writers on `db`, counting batches and events into `metrics`. SQLite has
    /// one writer at a time anyway: one thread there; PostgreSQL overlaps one batch's commit
    /// with the next batch's work.
    pub fn start(
        db: Db,
        config: Arc<Config>,
        threads: usize,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let (db, config, queue) = (db.clone(), Arc::clone(&config), Arc::clone(&queue));
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("webhook-writer-{n}"))
                .spawn(move || metrics.scope(|| write_batches(&db, &config, &queue, &metrics)))?;
        }
        Ok(Self { jobs })
    }

    /// Stores and applies a verified event (with the digest of the signature it came with and
    /// the id of the request that delivered it); returns once it is committed.
    pub async fn ingest(
        &self,
        event: StripeEvent,
        raw: actix_web::web::Bytes,
        ip: String,
        signature_digest: String,
        request_id: Option<String>,
    ) -> Result<Ingested, IngestError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            event,
            raw,
            ip,
            signature_digest,
            request_id,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| IngestError::Db(DbError::Blocking))?;
        answer
            .await
            .map_err(|_| IngestError::Db(DbError::Blocking))?
    }
}

/// Takes whatever is waiting, up to a batch; blocks for the first. `None` once every sender
/// is gone. A lock poisoned by a panicking writer is still usable: the queue itself is intact.
fn next_batch(queue: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
    let first = queue.blocking_recv()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A writer thread: takes whatever is waiting (up to a batch), commits it, answers, repeats,
/// until the application (every sender) is gone.
fn write_batches(db: &Db, config: &Config, queue: &Mutex<mpsc::Receiver<Job>>, metrics: &Metrics) {
    let keyring = config.keyring();
    let hasher = config.token_hasher();
    let cx = Context {
        keyring: &keyring,
        hasher: &hasher,
        alerts: &config.alerts,
        faults: &config.faults,
        past_due_grace_days: config.stripe.past_due_grace_days,
    };
    // Kept across batches (no pool round trip per batch); replaced when it breaks.
    let mut conn = None;
    while let Some(batch) = next_batch(queue) {
        let mut connection = match conn.take() {
            Some(connection) => connection,
            None => match db.connection() {
                Ok(connection) => connection,
                Err(err) => {
                    tracing::error!(error = %err, "the webhook writer has no database connection");
                    for job in batch {
                        let _ = job.reply.send(Err(DbError::Unavailable.into()));
                    }
                    continue;
                }
            },
        };
        let events = batch.len();
        let started = std::time::Instant::now();
        // Unwinding drops the batch, and with it every reply channel: each waiting delivery
        // is answered 500. The connection may be mid-transaction: it is not kept.
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            commit(&mut connection, cx, batch, metrics);
        }));
        metrics.ingest_batch(events, started.elapsed());
        match committed {
            Ok(()) if !connection.is_broken() => conn = Some(connection),
            Ok(()) => {}
            Err(_) => tracing::error!(
                events,
                "a webhook batch panicked; its deliveries were answered 500 and Stripe will retry them"
            ),
        }
    }
}

/// Counts a newly stored event's result (a duplicate is counted by the webhook route).
fn count(metrics: &Metrics, outcome: &Result<Ingested, IngestError>) {
    match outcome {
        Ok(Ingested::Stored(status)) => metrics.webhook_event(status.as_str()),
        Ok(Ingested::Duplicate) => {}
        Err(_) => metrics.webhook_event("error"),
    }
}

fn commit(conn: &mut DbConnection, cx: Context<'_>, batch: Vec<Job>, metrics: &Metrics) {
    if batch.len() > 1 {
        let together = conn.transaction(|conn| {
            let deliveries: Vec<Delivery<'_>> = batch.iter().map(Job::delivery).collect();
            super::store_and_apply(conn, cx, &deliveries)
        });
        match together {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let outcome = Ok(outcome);
                    count(metrics, &outcome);
                    let _ = job.reply.send(outcome);
                }
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, events = batch.len(), "a webhook batch failed; retrying its events one by one");
            }
        }
    }
    for job in batch {
        let outcome = super::ingest(conn, cx, job.delivery());
        if let Err(err) = &outcome {
            tracing::error!(event = %job.event.id, error = %err, "could not store a webhook event");
        }
        count(metrics, &outcome);
        // The requester may have gone (client timeout): the event is stored all the same.
        let _ = job.reply.send(outcome);
    }
}
