//! The audit side of BYOK leases, in group commit ([`crate::db::group_commit`]): leases made
//! together are recorded together, each key's last use and every lease's `byok_leased` audit
//! row in one transaction (one turn on the audit chain's head, one commit) for the whole batch.
//!
//! A lease is answered only once its row has committed: no key ever leaves without its audit
//! row, even if the process is killed (SIGKILL) mid-batch; those callers got no key. On SIGTERM
//! the server drains its requests, and with them every pending row.

use diesel::Connection as _;
use tokio::sync::oneshot;

use super::{Lease, Provider};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::db::group_commit::GroupCommit;
use crate::db::models::byok_key;
use crate::db::{Db, DbConnection, DbError};

/// Leases one transaction may record.
const MAX_BATCH: usize = 256;

struct Job {
    key_id: i64,
    event: SecurityEvent,
    reply: oneshot::Sender<Result<(), DbError>>,
}

/// Where the lease route records each lease before handing the key out.
#[derive(Clone)]
pub struct LeaseLog {
    jobs: GroupCommit<Job>,
}

impl LeaseLog {
    /// Starts the log's writer thread on `db` (one: every batch takes the audit chain's head).
    pub fn start(db: Db) -> std::io::Result<Self> {
        Ok(Self {
            jobs: GroupCommit::start(db, "lease-log", 1, MAX_BATCH, commit)?,
        })
    }

    /// Records `lease` of `user_id`'s `provider` key for `actor`: the key's last use and the
    /// lease's audit row (the key masked). Returns once they are committed; an error means
    /// they are not, and the key must not be handed out.
    pub async fn record(
        &self,
        actor: &Actor,
        user_id: UserId,
        provider: Provider,
        lease: &Lease,
    ) -> Result<(), DbError> {
        let event = actor.event(Kind::ByokLeased).details(serde_json::json!({
            "user_id": user_id,
            "provider": provider.as_str(),
            "key": lease.masked,
        }));
        let (reply, committed) = oneshot::channel();
        self.jobs
            .submit(Job {
                key_id: lease.key_id,
                event,
                reply,
            })
            .await?;
        committed.await.map_err(|_| DbError::Blocking)?
    }
}

/// Records a batch in one transaction (the write first, so SQLite takes its lock at once): each
/// key used once is touched once, every lease gets its row, in the order they came.
fn commit(conn: &mut DbConnection, batch: Vec<Job>) {
    let mut keys: Vec<i64> = batch.iter().map(|job| job.key_id).collect();
    keys.sort_unstable();
    keys.dedup();
    let (events, replies): (Vec<SecurityEvent>, Vec<_>) =
        batch.into_iter().map(|job| (job.event, job.reply)).unzip();
    let committed = conn.transaction::<_, DbError, _>(|conn| {
        byok_key::touch_all(conn, &keys)?;
        audit::write_many(conn, &events)
    });
    if let Err(err) = &committed {
        tracing::error!(error = %err, leases = events.len(), "could not record BYOK leases: none of them is handed out");
    }
    for reply in replies {
        // A caller that went away (client timeout) has its lease recorded all the same.
        let _ = reply.send(match &committed {
            Ok(()) => Ok(()),
            Err(_) => Err(DbError::Unavailable),
        });
    }
}
