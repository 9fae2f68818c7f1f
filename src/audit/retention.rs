//! Retention: what Tollgate deletes once it is old enough, in small batches (one transaction
//! each), by the periodic job `serve` runs and by `tollgate audit prune`.
//!
//! - `security_events`: rows last seen more than `AUDIT_RETENTION_DAYS` ago. A chain is pruned
//!   from its start only, up to its first row still kept, and its checkpoint (in
//!   `audit_chains`, updated in the same transaction) records the last pruned row's sequence
//!   and hash, from which `audit verify` resumes.
//! - `webhook_events`: finished events (applied or ignored) received more than
//!   `WEBHOOK_EVENT_RETENTION_DAYS` ago; never one still to apply or waiting for reprocessing.
//! - `notifications`: finished ones (sent, dead, not sent) last changed more than
//!   `NOTIFICATION_RETENTION_DAYS` ago; never one still on its way.
//! - `sessions`: expired ones.
//! - `stripe_operations` (idempotency records): operation ids recorded more than
//!   [`IDEMPOTENCY_RETENTION_DAYS`] ago. An id only guards a form's resubmission, which a
//!   session (12 h at most by default) and Stripe's own idempotency keys (kept 24 h) outlive
//!   by far.

use chrono::NaiveDateTime;

use crate::config::AuditTrailSettings;
use crate::db::models::{
    audit_chain, notification, security_event, session, stripe_operation, webhook_event,
};
use crate::db::{Db, DbConnection, DbError};

/// How long an operation id is kept, in days.
pub const IDEMPOTENCY_RETENTION_DAYS: i64 = 7;

/// Rows deleted per transaction.
pub const BATCH: i64 = 500;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit_days: u32,
    pub webhook_event_days: u32,
    pub notification_days: u32,
}

impl Retention {
    pub fn new(settings: &AuditTrailSettings) -> Self {
        Self {
            audit_days: settings.retention_days,
            webhook_event_days: settings.webhook_event_retention_days,
            notification_days: settings.notification_retention_days,
        }
    }
}

/// The tables retention prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    SecurityEvents,
    WebhookEvents,
    Notifications,
    Sessions,
    StripeOperations,
}

impl Table {
    pub const ALL: [Self; 5] = [
        Self::SecurityEvents,
        Self::WebhookEvents,
        Self::Notifications,
        Self::Sessions,
        Self::StripeOperations,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SecurityEvents => "security_events",
            Self::WebhookEvents => "webhook_events",
            Self::Notifications => "notifications",
            Self::Sessions => "sessions",
            Self::StripeOperations => "stripe_operations",
        }
    }

    /// Rows older than this (as of `now`) go.
    fn cutoff(self, retention: Retention, now: NaiveDateTime) -> NaiveDateTime {
        let days = match self {
            Self::SecurityEvents => i64::from(retention.audit_days),
            Self::WebhookEvents => i64::from(retention.webhook_event_days),
            Self::Notifications => i64::from(retention.notification_days),
            Self::Sessions => 0,
            Self::StripeOperations => IDEMPOTENCY_RETENTION_DAYS,
        };
        now - chrono::Duration::days(days)
    }
}

/// Rows per table, in [`Table::ALL`]'s order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned(pub [u64; 5]);

impl Pruned {
    pub fn of(&self, table: Table) -> u64 {
        self.0[Table::ALL
            .iter()
            .position(|t| *t == table)
            .unwrap_or_default()]
    }

    fn add(&mut self, table: Table, rows: u64) {
        if let Some(i) = Table::ALL.iter().position(|t| *t == table) {
            self.0[i] += rows;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

fn rows(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// How many rows of each table pruning would delete now.
pub fn count(
    conn: &mut DbConnection,
    retention: Retention,
    now: NaiveDateTime,
) -> Result<Pruned, DbError> {
    let mut pruned = Pruned::default();
    for table in Table::ALL {
        let cutoff = table.cutoff(retention, now);
        let n = match table {
            Table::SecurityEvents => {
                let mut n = security_event::count_unchained_before(conn, cutoff)?;
                for head in audit_chain::all(conn)? {
                    let kept = security_event::first_kept_sequence(
                        conn,
                        &head.chain_id,
                        head.checkpoint_sequence,
                        cutoff,
                    )?;
                    let before = kept
                        .unwrap_or(head.last_sequence + 1)
                        .min(head.last_sequence + 1);
                    n += security_event::count_chain_between(
                        conn,
                        &head.chain_id,
                        head.checkpoint_sequence,
                        Some(before),
                    )?;
                }
                n
            }
            Table::WebhookEvents => webhook_event::count_finished_before(conn, cutoff)?,
            Table::Notifications => notification::count_finished_before(conn, cutoff)?,
            Table::Sessions => session::count_expired(conn, cutoff)?,
            Table::StripeOperations => stripe_operation::count_before(conn, cutoff)?,
        };
        pruned.add(table, u64::try_from(n).unwrap_or_default());
    }
    Ok(pruned)
}

/// Deletes one batch (up to [`BATCH`] rows per chain or table) of `table`; 0 when nothing is
/// left to prune.
pub fn prune_batch(
    conn: &mut DbConnection,
    table: Table,
    retention: Retention,
    now: NaiveDateTime,
) -> Result<u64, DbError> {
    let cutoff = table.cutoff(retention, now);
    Ok(match table {
        Table::SecurityEvents => {
            let ids = security_event::unchained_ids_before(conn, cutoff, BATCH)?;
            let mut n = rows(security_event::delete_unchained(conn, &ids)?);
            for head in audit_chain::all(conn)? {
                n += prune_chain_batch(conn, &head.chain_id, cutoff)?;
            }
            // The dashboard's hourly counts go with the rows: the hours wholly before the cutoff.
            security_event::prune_hours(conn, cutoff)?;
            n
        }
        Table::WebhookEvents => {
            let ids = webhook_event::finished_ids_before(conn, cutoff, BATCH)?;
            rows(webhook_event::delete_finished(conn, &ids, cutoff)?)
        }
        Table::Notifications => {
            let ids = notification::finished_ids_before(conn, cutoff, BATCH)?;
            rows(notification::delete_finished(conn, &ids, cutoff)?)
        }
        Table::Sessions => {
            let keys = session::expired_keys(conn, cutoff, BATCH)?;
            rows(session::delete_expired_keys(conn, &keys, cutoff)?)
        }
        Table::StripeOperations => {
            let ids = stripe_operation::ids_before(conn, cutoff, BATCH)?;
            rows(stripe_operation::delete_ids(conn, &ids)?)
        }
    })
}

/// Prunes the start of `chain` (up to [`BATCH`] rows last seen before `cutoff`, stopping at the
/// first row kept) and moves its checkpoint past them, in one transaction with the head locked.
fn prune_chain_batch(
    conn: &mut DbConnection,
    chain: &str,
    cutoff: NaiveDateTime,
) -> Result<u64, DbError> {
    use diesel::Connection as _;
    conn.transaction(|conn| {
        let head = audit_chain::lock(conn, chain)?;
        let from = head.checkpoint_sequence;
        let kept = security_event::first_kept_sequence(conn, chain, from, cutoff)?;
        let through = kept
            .map_or(head.last_sequence, |kept| kept - 1)
            .min(head.last_sequence)
            .min(from + BATCH);
        if through <= from {
            return Ok(0);
        }
        let last = security_event::chain_rows(conn, chain, through - 1, 1)?;
        let Some(hash) = last
            .into_iter()
            .find(|row| row.chain_seq == Some(through))
            .and_then(|row| row.hash)
        else {
            // A row is missing where the checkpoint would go: leave the chain as it is for
            // `audit verify` to report.
            tracing::warn!(
                chain,
                sequence = through,
                "audit chain has a gap; not pruning it"
            );
            return Ok(0);
        };
        let deleted = security_event::delete_chain_range(conn, chain, from, through)?;
        audit_chain::set_checkpoint(conn, chain, through, &hash)?;
        Ok(rows(deleted))
    })
}

/// Prunes every table, batch after batch, on the calling thread (the CLI).
pub fn prune_blocking(
    conn: &mut DbConnection,
    retention: Retention,
    now: NaiveDateTime,
) -> Result<Pruned, DbError> {
    let mut pruned = Pruned::default();
    for table in Table::ALL {
        loop {
            let n = prune_batch(conn, table, retention, now)?;
            if n == 0 {
                break;
            }
            pruned.add(table, n);
        }
    }
    Ok(pruned)
}

/// Prunes every table, each batch on the blocking pool (the connection goes back between
/// batches, so requests are never kept waiting behind a long purge).
pub async fn prune(db: &Db, retention: Retention) -> Result<Pruned, DbError> {
    let now = crate::db::now();
    let mut pruned = Pruned::default();
    for table in Table::ALL {
        loop {
            let n = db
                .run(move |conn| prune_batch(conn, table, retention, now))
                .await?;
            if n == 0 {
                break;
            }
            pruned.add(table, n);
        }
    }
    Ok(pruned)
}
