//! Ties within one second (issue 15, point 11): Stripe's events carry whole-second `created`
//! times, so two events of one second about one object cannot be ordered by time. A webhook
//! handler that meets one whose content differs from what is stored (as of that very second)
//! records the object ([`request`], inside the ingest transaction: handlers never call
//! Stripe); [`run_pending`], after the commit, reads the object from Stripe through the gateway
//! and stores what Stripe says now. Subscriptions and invoices are read again this way.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use stripe::StripeRequest;

use crate::accounts::UserId;
use crate::billing::{GatewayError, OperationClass, invoices, subscriptions};
use crate::db::models::stripe_refetch::{self, RefetchRow};
use crate::db::{Db, DbConnection, DbError, now};
use crate::stripe_id::{InvoiceId, SubscriptionId};

use super::Reconciler;

/// The object type of a subscription to read again.
pub const SUBSCRIPTION: &str = "subscription";

/// The object type of an invoice to read again.
pub const INVOICE: &str = "invoice";

/// Pending objects read per pass.
const BATCH: i64 = 20;

/// Attempts after which an object is parked for `tollgate sync` (which reads everything
/// anyway, and drops the requests it settled).
pub const MAX_ATTEMPTS: i64 = 5;

/// One refetch task at a time per process: webhooks that find one running ask it for another
/// pass instead of starting their own. It also knows whether objects may be waiting: ties
/// this process committed ([`Gate::note`]) since the last pass that read the queue and left
/// nothing behind.
#[derive(Debug)]
pub struct Gate {
    running: AtomicBool,
    again: AtomicBool,
    /// Ties noted (a count). Starts at one: a new process may find some a previous one left.
    noted: AtomicU64,
    /// The count of ties noted before the last pass that read the queue and left nothing.
    settled: AtomicU64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            running: AtomicBool::new(false),
            again: AtomicBool::new(false),
            noted: AtomicU64::new(1),
            settled: AtomicU64::new(0),
        }
    }
}

impl Gate {
    /// Records that objects wait to be read again: a tie was committed (called after the
    /// commit), or a pass left some behind.
    pub fn note(&self) {
        self.noted.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether objects may be waiting: a tie noted that no clean pass has read since (a pass
    /// that failed, was throttled or stopped on an error settles nothing). Every webhook
    /// delivery asks, so a tie whose own request went away is still read with the next one.
    pub fn has_leftovers(&self) -> bool {
        self.settled.load(Ordering::SeqCst) < self.noted.load(Ordering::SeqCst)
    }

    /// What a pass has seen noted, read before it reads the queue.
    fn seen(&self) -> u64 {
        self.noted.load(Ordering::SeqCst)
    }

    /// A pass that read the queue after `seen` left nothing behind: those ties are settled
    /// (not one noted since).
    fn settle(&self, seen: u64) {
        self.settled.fetch_max(seen, Ordering::SeqCst);
    }
}

/// Whether the events applied with it met a same-second tie (and asked for an object to be
/// read again): their writer notes it on the [`Gate`] after the commit, and the webhook path
/// starts a refetch pass only then, not for every event. Marked by [`request`] and
/// [`request_invoice`], which every tie goes through.
#[derive(Debug, Default)]
pub struct Ties(Cell<bool>);

impl Ties {
    /// Whether a tie was met.
    pub fn any(&self) -> bool {
        self.0.get()
    }
}

/// Lets the gate go when the task ends, errors included.
struct Running<'a>(&'a Gate);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// Records that `subscription` must be read again from Stripe (inside the caller's transaction).
pub fn request(
    conn: &mut DbConnection,
    ties: &Ties,
    subscription: &SubscriptionId,
    user_id: UserId,
) -> Result<(), DbError> {
    stripe_refetch::request(conn, SUBSCRIPTION, subscription.expose(), user_id)?;
    ties.0.set(true);
    Ok(())
}

/// Records that `invoice` must be read again from Stripe (inside the caller's transaction).
pub fn request_invoice(
    conn: &mut DbConnection,
    ties: &Ties,
    invoice: &InvoiceId,
    user_id: UserId,
) -> Result<(), DbError> {
    stripe_refetch::request(conn, INVOICE, invoice.expose(), user_id)?;
    ties.0.set(true);
    Ok(())
}

/// `GET /v1/invoices/{id}` as JSON (read as a webhook's invoice object is).
#[derive(Debug, Clone)]
struct RetrieveInvoiceJson {
    path: String,
}

impl StripeRequest for RetrieveInvoiceJson {
    type Output = miniserde::json::Value;

    fn build(&self) -> stripe_client_core::RequestBuilder {
        stripe_client_core::RequestBuilder::new(
            stripe_client_core::StripeMethod::Get,
            self.path.clone(),
        )
    }
}

/// Reads every pending object from Stripe and stores what it says; returns how many were
/// stored. Failures are counted and kept for a later pass; a throttled read is not a failure.
/// When a run is already under way in this process, it is asked for one more pass instead.
pub async fn run_pending(reconciler: &Reconciler) -> Result<usize, DbError> {
    let gate = &*reconciler.refetching;
    gate.again.store(true, Ordering::SeqCst);
    let mut done = 0;
    loop {
        if gate.running.swap(true, Ordering::SeqCst) {
            return Ok(done);
        }
        let running = Running(gate);
        while gate.again.swap(false, Ordering::SeqCst) {
            let (stored, more) = pass(reconciler).await?;
            done += stored;
            if more {
                gate.again.store(true, Ordering::SeqCst);
            }
        }
        drop(running);
        // Asked again between the last pass and the release: take it (unless another did).
        if !gate.again.load(Ordering::SeqCst) {
            return Ok(done);
        }
    }
}

/// What reading one object again came to.
enum Read {
    Stored,
    Throttled,
    Failed(String),
}

/// One batch: (objects stored, whether another pass may find more).
async fn pass(reconciler: &Reconciler) -> Result<(usize, bool), DbError> {
    let db: &Db = &reconciler.db;
    let gate = &*reconciler.refetching;
    // Before the read: a tie committed after it is noted after this, so it stays unsettled.
    let seen = gate.seen();
    let pending = db
        .run(|conn| stripe_refetch::pending(conn, BATCH, MAX_ATTEMPTS))
        .await?;
    let full = pending.len() as i64 == BATCH;
    let mut done = 0;
    let mut failed = false;
    for row in pending {
        let id = row.stripe_object_id.clone();
        let requested_at = row.requested_at;
        match read_again(reconciler, &row).await {
            Read::Stored => {
                done += 1;
                db.run(move |conn| stripe_refetch::finish(conn, &id, requested_at))
                    .await?;
            }
            // Tollgate's own limit, not a failure of the object: kept as it is for a later
            // pass (the next webhook's, or `tollgate sync`).
            Read::Throttled => {
                gate.note();
                return Ok((done, false));
            }
            Read::Failed(err) => {
                failed = true;
                tracing::warn!(error = %err, kind = %row.object_type, "could not read an object again from Stripe");
                db.run(move |conn| stripe_refetch::failed(conn, &id))
                    .await?;
            }
        }
    }
    // A failed object is tried again (until it is parked); the next batch, if any, is read by
    // the next pass. Otherwise every tie noted before the read is settled.
    if failed {
        gate.note();
    } else if !full {
        gate.settle(seen);
    }
    Ok((done, full))
}

/// Reads `row`'s object from Stripe and stores it as of the moment before the read (a webhook
/// of a later second that arrives meanwhile is never overwritten by this older read).
async fn read_again(reconciler: &Reconciler, row: &RefetchRow) -> Read {
    let db = &reconciler.db;
    let id = row.stripe_object_id.clone();
    let observed_at = now();
    let stored = match row.object_type.as_str() {
        SUBSCRIPTION => {
            let fetched = reconciler
                .gateway
                .call(OperationClass::Subscription, row.user_id, None, || {
                    stripe_billing::subscription::RetrieveSubscription::new(id.as_str())
                })
                .await;
            match fetched {
                Ok(sub) => subscriptions::record(db, row.user_id, &sub, observed_at)
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string()),
                Err(err) => return gateway_failure(err),
            }
        }
        INVOICE => {
            let path = format!("/invoices/{id}");
            let fetched = reconciler
                .gateway
                .call(OperationClass::Default, row.user_id, None, || {
                    RetrieveInvoiceJson { path: path.clone() }
                })
                .await;
            match fetched {
                Ok(value) => {
                    let text = miniserde::json::to_string(&value);
                    let parsed = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| {
                            v.as_object()
                                .and_then(crate::webhooks::handlers::invoice_of)
                        });
                    match parsed {
                        Some(invoice) if invoice.id.expose() == id => {
                            let user_id = row.user_id;
                            db.run(move |conn| {
                                invoices::store(conn, user_id, &invoice, observed_at)
                            })
                            .await
                            .map(|_| ())
                            .map_err(|err| err.to_string())
                        }
                        _ => Err("Stripe's invoice could not be read".to_owned()),
                    }
                }
                Err(err) => return gateway_failure(err),
            }
        }
        other => Err(format!("unknown object type {other}")),
    };
    match stored {
        Ok(()) => Read::Stored,
        Err(err) => Read::Failed(err),
    }
}

fn gateway_failure(err: GatewayError) -> Read {
    match err {
        GatewayError::Throttled { .. } => Read::Throttled,
        other => Read::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn a_new_process_looks_once_then_only_after_a_tie() {
        let gate = Gate::default();
        assert!(
            gate.has_leftovers(),
            "a previous process may have left some"
        );
        gate.settle(gate.seen());
        assert!(!gate.has_leftovers());
        gate.note();
        assert!(gate.has_leftovers());
        gate.settle(gate.seen());
        assert!(!gate.has_leftovers());
    }

    #[test]
    fn a_tie_noted_while_a_pass_reads_stays_unsettled() {
        let gate = Gate::default();
        gate.settle(gate.seen());
        // The pass reads what was noted, then the queue; meanwhile a tie commits and is noted.
        let seen = gate.seen();
        gate.note();
        gate.settle(seen);
        assert!(
            gate.has_leftovers(),
            "the tie committed after the read is still to read"
        );
        // An older pass settling late never undoes a newer one.
        let newer = gate.seen();
        gate.settle(newer);
        gate.settle(seen);
        assert!(!gate.has_leftovers());
    }
}
