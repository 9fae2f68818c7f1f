//! Group commit for webhook ingest ([`crate::db::group_commit`]). Deliveries arriving
//! together are stored and applied by a dedicated writer thread, many events to one
//! transaction. Each delivery is answered only after the transaction holding its event has
//! committed, so the guarantee is the same as one transaction per event: a 200 means stored
//! and applied.
//!
//! If anything in a batch fails, the batch rolls back as a whole and each of its events is
//! retried in a transaction of its own, so one bad event never takes its neighbours down.
//! A panic (a bug) in a batch is caught: that batch's deliveries are answered 500, so Stripe
//! retries them, and the writer goes on with the next batch.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Context, Delivery, IngestError, Ingested, StripeEvent};
use crate::config::Config;
use crate::db::group_commit::GroupCommit;
use crate::db::{Db, DbConnection, DbError};
use crate::metrics::Metrics;
use crate::reconcile::refetch::{Gate, Ties};

/// Events one transaction may hold.
const MAX_BATCH: usize = 64;

/// How many threads store webhook events, on either backend. SQLite has one writer at a time.
/// On PostgreSQL a second thread overlaps one batch's commit with the next batch's work, but
/// halves the batches, and each batch costs eight statements whatever its size. Measured side
/// by side (2026-12-07, loopback, every run of the session): one thread 0.096–0.120 ms of
/// server CPU per event (PostgreSQL's share 0.059–0.068 ms), two 0.165–0.175 ms (0.103–0.107
/// ms); 8,400–10,100 against 8,700–9,300 events/s at concurrency 16, and at 32 12,800–15,700
/// against 12,300–12,700 events/s with a p99 of 3.0–3.1 against 4.3–5.7 ms. (On a slower
/// machine, an earlier session measured a quarter fewer events/s with one: README.)
const WRITERS: usize = 1;

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
    jobs: GroupCommit<Job>,
}

impl WebhookWriter {
    /// Starts the writer (`WRITERS`) on `db`, counting batches and events into `metrics` and
    /// noting committed same-second ties on `refetching` (before the deliveries are answered).
    pub fn start(
        db: Db,
        config: Arc<Config>,
        metrics: Metrics,
        refetching: Arc<Gate>,
    ) -> std::io::Result<Self> {
        let keyring = config.keyring();
        let hasher = config.token_hasher();
        let jobs = GroupCommit::start(
            db,
            "webhook-writer",
            WRITERS,
            MAX_BATCH,
            move |conn, batch| {
                let ties = Ties::default();
                // Customers are looked up per transaction, by `store_and_apply`.
                let cx = Context::new(&config, &keyring, &hasher, &ties);
                let events = batch.len();
                let started = std::time::Instant::now();
                commit(conn, cx, batch, &metrics, &refetching);
                metrics.ingest_batch(events, started.elapsed());
            },
        )?;
        Ok(Self { jobs })
    }

    /// Stores and applies a verified event (with the digest of the signature it came with and
    /// the id of the request that delivered it); answers once it is committed.
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
        self.jobs.submit(job).await?;
        answer
            .await
            .map_err(|_| IngestError::Db(DbError::Blocking))?
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

/// Counts `outcome` and answers `job` with it.
fn answer(metrics: &Metrics, job: Job, outcome: Result<Ingested, IngestError>) {
    count(metrics, &outcome);
    // The requester may have gone (client timeout): the event is stored all the same.
    let _ = job.reply.send(outcome);
}

/// After a commit, before its deliveries are answered: a tie it met is noted, so that the
/// refetch pass starts even if the delivery's request has gone (a flag left from a rolled-back
/// batch only costs a pass).
fn note_ties(cx: Context<'_>, refetching: &Gate) {
    if cx.ties.any() {
        refetching.note();
    }
}

fn commit(
    conn: &mut DbConnection,
    cx: Context<'_>,
    batch: Vec<Job>,
    metrics: &Metrics,
    refetching: &Gate,
) {
    if batch.len() > 1 {
        let together = crate::db::writer_transaction(conn, |conn| {
            let deliveries: Vec<Delivery<'_>> = batch.iter().map(Job::delivery).collect();
            super::store_and_apply(conn, cx, &deliveries)
        });
        match together {
            Ok(outcomes) => {
                note_ties(cx, refetching);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    answer(metrics, job, Ok(outcome));
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
        note_ties(cx, refetching);
        if let Err(err) = &outcome {
            tracing::error!(event = %job.event.id, error = %err, "could not store a webhook event");
        }
        answer(metrics, job, outcome);
    }
}
