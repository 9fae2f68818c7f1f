//! Ties within one second (issue 15, point 11): Stripe's events carry whole-second `created`
//! times, so two events of one second about one object cannot be ordered by time. A webhook
//! handler that meets one whose content differs from what is stored (as of that very second)
//! records the object ([`request`], inside the ingest transaction: handlers never call
//! Stripe); [`run_pending`], after the commit, reads the object from Stripe through the gateway
//! and stores what Stripe says now.

use crate::accounts::UserId;
use crate::billing::subscriptions;
use crate::db::models::stripe_refetch;
use crate::db::{Db, DbConnection, DbError, now};
use crate::stripe_id::SubscriptionId;

use super::Reconciler;

/// The object type of a subscription to read again.
pub const SUBSCRIPTION: &str = "subscription";

/// Pending objects read per pass.
const BATCH: i64 = 20;

/// Attempts after which an object is left for `tollgate sync` (which reads everything anyway).
const MAX_ATTEMPTS: i64 = 5;

/// Records that `subscription` must be read again from Stripe (inside the caller's transaction).
pub fn request(
    conn: &mut DbConnection,
    subscription: &SubscriptionId,
    user_id: UserId,
) -> Result<(), DbError> {
    stripe_refetch::request(conn, SUBSCRIPTION, subscription.expose(), user_id)
}

/// Reads every pending object from Stripe and stores what it says; returns how many were
/// stored. Failures are counted and kept for a later pass.
pub async fn run_pending(reconciler: &Reconciler) -> Result<usize, DbError> {
    let db: &Db = &reconciler.db;
    let pending = db.run(|conn| stripe_refetch::pending(conn, BATCH)).await?;
    let mut done = 0;
    for row in pending {
        let id = row.stripe_object_id.clone();
        if row.attempts >= MAX_ATTEMPTS || row.object_type != SUBSCRIPTION {
            continue;
        }
        let fetched = reconciler
            .gateway
            .call(
                crate::billing::OperationClass::Subscription,
                row.user_id,
                None,
                || stripe_billing::subscription::RetrieveSubscription::new(id.as_str()),
            )
            .await;
        let stored = match fetched {
            Ok(sub) => subscriptions::record(db, row.user_id, &sub, now())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let key = id.clone();
        match stored {
            Ok(_) => {
                done += 1;
                db.run(move |conn| stripe_refetch::finish(conn, &key))
                    .await?;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read a subscription again from Stripe");
                db.run(move |conn| stripe_refetch::failed(conn, &key))
                    .await?;
            }
        }
    }
    Ok(done)
}
