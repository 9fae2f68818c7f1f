//! Group commit: work submitted together is committed by a few dedicated writer threads, many
//! jobs to one transaction: one commit (one fsync, one round of lock handover, one turn on the
//! audit chain's head) for a whole batch instead of one per job. Each job carries its own reply
//! channel and is answered only after the transaction holding it has committed, so a caller
//! gets the same guarantee as from a transaction of its own.
//!
//! What a batch does is the owner's (`commit`): webhook ingest ([`crate::webhooks::writer`]),
//! BYOK leases ([`crate::vault::LeaseDesk`]). This module only gathers batches, takes
//! a connection for each batch, takes SQLite's writer turn and survives a panicking batch: its jobs
//! are dropped, so each waiting caller sees its reply channel closed (an error, never a false
//! success), its connection is closed rather than given back, and the thread goes on.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::{Db, DbConnection, DbError};

/// Jobs that may wait for a writer before submitters wait too (back-pressure).
const QUEUE: usize = 1024;

/// The handle jobs are submitted through; clones share the writers.
pub struct GroupCommit<J> {
    jobs: mpsc::Sender<J>,
}

impl<J> Clone for GroupCommit<J> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<J: Send + 'static> GroupCommit<J> {
    /// Starts `threads` writer threads named `name-N`, each taking up to `max_batch` waiting
    /// jobs at a time and handing them to `commit` with its connection (in no transaction:
    /// `commit` opens it). The threads end once every handle is gone.
    pub fn start<C>(
        db: Db,
        name: &str,
        threads: usize,
        max_batch: usize,
        commit: C,
    ) -> std::io::Result<Self>
    where
        C: Fn(&mut DbConnection, Vec<J>) + Send + Sync + 'static,
    {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let commit = Arc::new(commit);
        for n in 0..threads.max(1) {
            let (db, queue, commit) = (db.clone(), Arc::clone(&queue), Arc::clone(&commit));
            let thread = format!("{name}-{n}");
            std::thread::Builder::new()
                .name(thread.clone())
                .spawn(move || {
                    db.scoped(|| write_batches(&db, &thread, &queue, max_batch.max(1), &*commit));
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `job` (waiting while the queue is full); its reply says when it is committed.
    pub async fn submit(&self, job: J) -> Result<(), DbError> {
        self.jobs.send(job).await.map_err(|_| DbError::Blocking)
    }
}

/// Takes whatever is waiting, up to `max`; blocks for the first. `None` once every sender is
/// gone. A lock poisoned by a panicking writer is still usable: the queue itself is intact.
fn next_batch<J>(queue: &Mutex<mpsc::Receiver<J>>, max: usize) -> Option<Vec<J>> {
    let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
    let first = queue.blocking_recv()?;
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A writer thread: takes whatever is waiting (up to a batch), commits it, repeats, until the
/// application (every sender) is gone.
fn write_batches<J>(
    db: &Db,
    thread: &str,
    queue: &Mutex<mpsc::Receiver<J>>,
    max_batch: usize,
    commit: &dyn Fn(&mut DbConnection, Vec<J>),
) {
    while let Some(batch) = next_batch(queue, max_batch) {
        // Taken for the batch and given back after it: a writer holds no connection while it
        // waits for work, so small pools are not starved by idle writers.
        let mut connection = match db.connection() {
            Ok(connection) => connection,
            Err(err) => {
                // Dropping the batch closes each job's reply: every caller sees an error.
                tracing::error!(writer = thread, error = %err, jobs = batch.len(), "a group-commit writer has no database connection");
                continue;
            }
        };
        let jobs = batch.len();
        // Unwinding drops the batch, and with it every reply channel.
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            db.as_writer(|| commit(&mut connection, batch));
        }));
        // Given back as it goes out of scope; the pool closes it instead if it is broken or
        // still in a transaction (a panic's).
        if committed.is_err() {
            tracing::error!(
                writer = thread,
                jobs,
                "a group-commit batch panicked; its callers were answered with an error"
            );
        }
    }
}
