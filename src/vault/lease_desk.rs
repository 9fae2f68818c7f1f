//! BYOK leases in group commit ([`crate::db::group_commit`]): leases asked for together are
//! served together by one thread, in one transaction: it reads which of the batch's service
//! tokens are still live and each key, opens the keys, then records every lease and reads the
//! emergency switch: each key's last use and each lease's `byok_leased` audit row (one turn on
//! the audit chain's head, one commit).
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

use tokio::sync::oneshot;

use super::{Lease, LeaseOutcome, Provider, VaultError, leases_disabled, open_key};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::crypto::Keyring;
use crate::db::group_commit::GroupCommit;
use crate::db::models::{byok_key, service_token};
use crate::db::{self, Db, DbConnection, DbError};

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

/// Serves a batch in one transaction ([`db::batch_transaction`]: the write lock at once on
/// SQLite, statements planned once on PostgreSQL): the reads (the live tokens, each key), then
/// the writes: each key used once is touched once, every lease gets its row, in the order they
/// came. The emergency switch is read under the writes (a batch that leases nothing reads it
/// on its own): when leases are off, every request of the batch is told so and no key leaves.
fn serve(conn: &mut DbConnection, keyring: &Keyring, batch: Vec<Job>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let recorded = db::batch_transaction(conn, |conn| {
        decide_and_record(conn, keyring, &batch, &mut outcomes)
    });
    let kept = match recorded {
        Ok(kept) => Some(kept),
        Err(Abort::Disabled) => return answer_all(batch, || Ok(LeaseOutcome::Disabled)),
        Err(Abort::Unread(err)) => return unread(batch, &err),
        // The transaction did not even begin: nothing was decided.
        Err(Abort::Db(err)) if outcomes.len() < batch.len() => return unread(batch, &err),
        Err(Abort::Db(err)) => {
            let leased = outcomes
                .iter()
                .filter(|outcome| matches!(outcome, Ok(LeaseOutcome::Leased(_))))
                .count();
            tracing::error!(error = %err, leases = leased, "could not record BYOK leases: none of them is handed out");
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
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        // A caller that went away (client timeout) has its lease recorded all the same.
        let _ = job.reply.send(outcome);
    }
}

/// Decides each lease of `batch` into `outcomes` (in order) and records the leased ones: the
/// ids of the keys still there when they were touched (a key deleted since it was read is
/// not).
fn decide_and_record(
    conn: &mut DbConnection,
    keyring: &Keyring,
    batch: &[Job],
    outcomes: &mut Vec<Result<LeaseOutcome, VaultError>>,
) -> Result<Vec<i64>, Abort> {
    let (live_tokens, keys) = read_tokens_and_keys(conn, batch).map_err(Abort::Unread)?;
    outcomes.extend(batch.iter().map(|job| {
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
    }));
    let leased: Vec<(&Job, &Lease)> = batch
        .iter()
        .zip(outcomes.iter())
        .filter_map(|(job, outcome)| match outcome {
            Ok(LeaseOutcome::Leased(lease)) => Some((job, lease)),
            _ => None,
        })
        .collect();
    if leased.is_empty() {
        return match leases_disabled(conn).map_err(Abort::Unread)? {
            true => Err(Abort::Disabled),
            false => Ok(Vec::new()),
        };
    }
    let mut keys: Vec<i64> = leased.iter().map(|(_, lease)| lease.key_id).collect();
    keys.sort_unstable();
    keys.dedup();
    // The writes, then, under them, the switch and what the reads above decided: a key deleted
    // or a switch thrown since is honoured.
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
}

/// Answers every request of `batch` with an error: what it needed could not be read.
fn unread(batch: Vec<Job>, err: &DbError) {
    tracing::error!(error = %err, leases = batch.len(), "could not read the tokens, keys or lease switch: no key is handed out");
    answer_all(batch, || Err(DbError::Unavailable.into()));
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
    /// Leases are switched off.
    Disabled,
    /// The tokens, keys or switch could not be read: nothing was decided.
    Unread(DbError),
    /// The leases could not be recorded.
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
