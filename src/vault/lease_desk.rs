//! BYOK leases in group commit ([`crate::db::group_commit`]): leases asked for together are
//! served together by one thread. For a batch it reads which of its service tokens are still
//! live and each key, opens the keys, then records every lease in one transaction, which also
//! reads the emergency switch: each key's last use and each lease's `byok_leased` audit row
//! (one turn on the audit chain's head, one commit).
//!
//! A key is handed out only once its lease's row has committed: no key ever leaves without its
//! audit row, even if the process is killed (SIGKILL) mid-batch; those callers got no key. On
//! SIGTERM the server drains its requests, and with them every pending lease.
//!
//! The route may take its service token from the instance's short-lived cache: the batch's
//! read of the tokens (one statement) comes after every lease in it was asked for, so a token
//! revoked anywhere before a lease is asked for is refused for it, at once. (A revocation that
//! commits while a batch is being served races with it, as it would with a lease answered a
//! moment earlier: that batch's leases may still be recorded and answered.)

use diesel::Connection as _;
use tokio::sync::oneshot;

use super::{Lease, LeaseOutcome, Provider, VaultError, leases_disabled, open_key};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::crypto::Keyring;
use crate::db::group_commit::GroupCommit;
use crate::db::models::{byok_key, service_token};
use crate::db::{Db, DbConnection, DbError};

/// Leases one batch may hold.
const MAX_BATCH: usize = 256;

struct Job {
    actor: Actor,
    token_id: i64,
    user_id: UserId,
    provider: Provider,
    reply: oneshot::Sender<Result<LeaseOutcome, VaultError>>,
}

/// Where the lease route asks for a customer's key.
#[derive(Clone)]
pub struct LeaseDesk {
    jobs: GroupCommit<Job>,
}

impl LeaseDesk {
    /// Starts the desk's `threads` on `db`, opening keys with `keyring`. Every batch takes the
    /// audit chain's head in turn, but a second thread reads its batch's keys while the first
    /// commits (PostgreSQL; SQLite has one writer anyway).
    pub fn start(db: Db, keyring: Keyring, threads: usize) -> std::io::Result<Self> {
        let jobs = GroupCommit::start(db, "lease-desk", threads, MAX_BATCH, move |conn, batch| {
            serve(conn, &keyring, batch);
        })?;
        Ok(Self { jobs })
    }

    /// `user_id`'s `provider` key for `actor` (who presented the service token `token_id`),
    /// once its lease is recorded (the key's last use and the lease's audit row, the key
    /// masked); or why there is none. An error means the lease is not recorded and no key is
    /// handed out.
    pub async fn lease(
        &self,
        actor: Actor,
        token_id: i64,
        user_id: UserId,
        provider: Provider,
    ) -> Result<LeaseOutcome, VaultError> {
        let (reply, served) = oneshot::channel();
        self.jobs
            .submit(Job {
                actor,
                token_id,
                user_id,
                provider,
                reply,
            })
            .await?;
        served.await.map_err(|_| DbError::Blocking)?
    }
}

/// Serves a batch: the reads (the live tokens, each key), then the writes in one transaction
/// (which starts with them, so SQLite takes its lock at once): each key used once is touched
/// once, every lease gets its row, in the order they came. The emergency switch is read in
/// that transaction, under the writes (a batch that leases nothing reads it on its own): when
/// leases are off, every request of the batch is told so and no key leaves.
fn serve(conn: &mut DbConnection, keyring: &Keyring, batch: Vec<Job>) {
    let (live_tokens, keys) = match read_tokens_and_keys(conn, &batch) {
        Ok(read) => read,
        Err(err) => {
            tracing::error!(error = %err, leases = batch.len(), "could not read the tokens or keys: no key is handed out");
            return answer_all(batch, || Err(DbError::Unavailable.into()));
        }
    };
    let mut outcomes: Vec<Result<LeaseOutcome, VaultError>> = batch
        .iter()
        .map(|job| {
            if !live_tokens.contains(&job.token_id) {
                return Ok(LeaseOutcome::TokenRevoked);
            }
            let row = keys
                .iter()
                .find(|row| row.user_id == job.user_id && row.provider == job.provider.as_str());
            match row {
                Some(row) => open_key(keyring, row, job.provider).map(LeaseOutcome::Leased),
                None => Ok(LeaseOutcome::NoKey),
            }
        })
        .collect();
    let leased: Vec<(&Job, &Lease)> = batch
        .iter()
        .zip(&outcomes)
        .filter_map(|(job, outcome)| match outcome {
            Ok(LeaseOutcome::Leased(lease)) => Some((job, lease)),
            _ => None,
        })
        .collect();
    let leased_count = leased.len();
    if leased.is_empty() {
        match leases_disabled(conn) {
            Ok(false) => {}
            Ok(true) => return answer_all(batch, || Ok(LeaseOutcome::Disabled)),
            Err(err) => {
                tracing::error!(error = %err, leases = batch.len(), "could not read the lease switch");
                return answer_all(batch, || Err(DbError::Unavailable.into()));
            }
        }
    } else {
        let mut keys: Vec<i64> = leased.iter().map(|(_, lease)| lease.key_id).collect();
        keys.sort_unstable();
        keys.dedup();
        // The writes first (so SQLite takes its lock at once), then, under them, the switch and
        // what the reads above decided: a key deleted or a switch thrown since is honoured.
        let recorded = conn.transaction::<_, Abort, _>(|conn| {
            let kept = byok_key::touch_all(conn, &keys)?;
            if leases_disabled(conn)? {
                return Err(Abort::Disabled);
            }
            let events: Vec<SecurityEvent> = leased
                .iter()
                .filter(|(_, lease)| kept.contains(&lease.key_id))
                .map(|(job, lease)| {
                    job.actor
                        .event(Kind::ByokLeased)
                        .details(serde_json::json!({
                            "user_id": job.user_id,
                            "provider": job.provider.as_str(),
                            "key": lease.masked,
                        }))
                })
                .collect();
            audit::write_many_in_transaction(conn, &events)?;
            Ok(kept)
        });
        let kept = match recorded {
            Ok(kept) => Some(kept),
            Err(Abort::Disabled) => return answer_all(batch, || Ok(LeaseOutcome::Disabled)),
            Err(Abort::Db(err)) => {
                tracing::error!(error = %err, leases = leased_count, "could not record BYOK leases: none of them is handed out");
                None
            }
        };
        for outcome in &mut outcomes {
            let Ok(LeaseOutcome::Leased(lease)) = outcome else {
                continue;
            };
            *outcome = match &kept {
                Some(kept) if kept.contains(&lease.key_id) => continue,
                // Deleted since it was read.
                Some(_) => Ok(LeaseOutcome::NoKey),
                None => Err(DbError::Unavailable.into()),
            };
        }
    }
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        // A caller that went away (client timeout) has its lease recorded all the same.
        let _ = job.reply.send(outcome);
    }
}

/// Answers every request of `batch` with `outcome()`.
fn answer_all(batch: Vec<Job>, outcome: impl Fn() -> Result<LeaseOutcome, VaultError>) {
    for job in batch {
        let _ = job.reply.send(outcome());
    }
}

/// Which of the batch's service tokens are live, and the keys of the leases they ask for.
fn read_tokens_and_keys(
    conn: &mut DbConnection,
    batch: &[Job],
) -> Result<(Vec<i64>, Vec<byok_key::ByokKeyRow>), DbError> {
    let mut tokens: Vec<i64> = batch.iter().map(|job| job.token_id).collect();
    tokens.sort_unstable();
    tokens.dedup();
    let live = service_token::live_of(conn, &tokens)?;
    let users: Vec<UserId> = batch
        .iter()
        .filter(|job| live.contains(&job.token_id))
        .map(|job| job.user_id)
        .collect();
    let keys = match users.is_empty() {
        true => Vec::new(),
        false => byok_key::of_users(conn, &users)?,
    };
    Ok((live, keys))
}

/// Why a batch's transaction was rolled back.
enum Abort {
    /// Leases were switched off after the batch read the switch.
    Disabled,
    Db(DbError),
}

impl From<DbError> for Abort {
    fn from(err: DbError) -> Self {
        Self::Db(err)
    }
}

impl From<diesel::result::Error> for Abort {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}
