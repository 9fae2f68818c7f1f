//! Quotas held by reservations (issue 16, point 3) and the hard spend cap they respect
//! (point 4): `reserve` checks what is left of a feature's quota and holds part of it,
//! `commit` turns a hold into usage (through [`records::store`](super::records::store)),
//! `release` frees it, and holds past their expiry free themselves.
//!
//! **The check-and-hold is one conditional statement** on the user's `usage_counters` row
//! (`INSERT … ON CONFLICT DO UPDATE SET reserved = reserved + q WHERE used + reserved + q <=
//! limit`, see [`rows::hold_and_insert`]): the database serialises concurrent holds on that row
//! and re-evaluates the condition for each, so concurrent reservations never exceed the limit,
//! on any number of instances.
//!
//! **The hot path is short.** A reserve reads what it needs (the subscription, the plan's
//! component, the spend caps) in one query and holds in one more. On PostgreSQL the plainest
//! case (an active or trialing customer without a spend cap, with room in the quota) is one
//! statement that reads, holds and inserts the reservation ([`rows::fast_hold`]); the token
//! is not looked up again within `SERVICE_TOKEN_CACHE_MS`. On SQLite the reserve runs in the
//! instance's writer turn ([`Db::write`]), and its first statement writes (the user's row),
//! so every read is under SQLite's write lock.
//!
//! **Spend caps** depend on every feature's counter, not one row. A user with a cap is
//! serialised: on PostgreSQL the reserve locks the user's row (`UPDATE users …`, held to the end
//! of the transaction) before reading the counters, so two reserves of one capped user never
//! both see the room one of them takes; on SQLite every reserve already holds the write lock.
//! The cap counts, per feature, the charge of everything used and held (plus the quantity asked
//! for); usage reported directly through `POST /internal/v1/usage` is counted as it lands.
//!
//! **Undecidable**: a reserve whose database work does not finish within the deadline
//! (`RESERVE_DEADLINE_MS`) or fails answers by the feature's policy (`plan_meters.fail_open`):
//! the one seen at the user's last decision for that feature, else the one every plan agrees
//! on (closed if any plan says closed), else closed. Either answer is audited
//! (`usage_undecided`), from a task that retries until the row lands. An answer of
//! "undecided" never leaves a hold behind: a late transaction is rolled back (it checks the
//! deadline before committing), and one that commits while the answer is already given has its
//! hold released as soon as it lands.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::db::models::usage_reservation::{
    self as rows, COMMITTED, EXPIRED, HELD, NewReservation, RELEASED,
};
use crate::db::models::{billing_customer, usage, user};
use crate::db::{Db, DbConnection, DbError, now};

use super::records::{self, Destination, NewUsage, Stored};
use super::{Component, meters, period, spend};

/// The longest a reservation may be held, and the default (seconds).
pub const MAX_TTL_SECS: i64 = 3600;
pub const DEFAULT_TTL_SECS: i64 = 300;
/// The most units one reservation may hold.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Stale holds expired per pass (a reserve's retry, or one round of the sweep).
const EXPIRE_BATCH: i64 = 500;
/// User+feature policies remembered; the map starts over beyond this.
const POLICY_MEMORY: usize = 100_000;

/// Where a user stands on one metered feature in the current period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limit {
    pub feature: String,
    /// What one unit is called (`tokens`).
    pub unit: String,
    /// Units per period that cost nothing.
    pub included: i64,
    /// The quota (`None`: no quota).
    pub limit: Option<i64>,
    pub used: i64,
    /// Units held by live reservations.
    pub reserved: i64,
    /// `limit - used - reserved`, never below zero (`None` without a quota).
    pub remaining: Option<i64>,
    /// When the period ends and the counters start again (Unix seconds).
    pub resets_at: i64,
}

impl Limit {
    fn of(component: &Component, used: i64, reserved: i64, period_end: NaiveDateTime) -> Self {
        Self {
            feature: component.feature.clone(),
            unit: component.unit_name.clone(),
            included: component.rate.included,
            ..Self::counted(component.quota, used, reserved, period_end)
        }
    }

    /// The counts of a standing (feature, unit and included units left blank).
    fn counted(quota: Option<i64>, used: i64, reserved: i64, period_end: NaiveDateTime) -> Self {
        Self {
            feature: String::new(),
            unit: String::new(),
            included: 0,
            limit: quota,
            used,
            reserved,
            remaining: quota
                .map(|quota| quota.saturating_sub(used).saturating_sub(reserved).max(0)),
            resets_at: period_end.and_utc().timestamp(),
        }
    }
}

/// The live plan's metered features with the user's counters for the current period (none
/// without a live subscription).
pub fn limits_in(conn: &mut DbConnection, user_id: UserId) -> Result<Vec<Limit>, DbError> {
    let Some(period) = period::current(conn, user_id)? else {
        return Ok(Vec::new());
    };
    let components = meters::of_plan(conn, period.plan_id)?;
    Ok(spend::usage_by_feature(conn, user_id, &period, components)?
        .into_iter()
        .map(|f| Limit::of(&f.component, f.used, f.reserved, period.end))
        .collect())
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NoSubscription,
    PastDue,
    NotInPlan,
    QuotaExceeded,
    SpendCap,
}

impl Refusal {
    /// The refusal for an entitlement's `reason` (access off): a payment problem is
    /// `past_due`, anything else (no, ended or incomplete subscription) `no_subscription`.
    fn inactive(reason: &str) -> Self {
        match reason {
            "past_due" | "unpaid" => Self::PastDue,
            _ => Self::NoSubscription,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSubscription => "no_subscription",
            Self::PastDue => "past_due",
            Self::NotInPlan => "not_in_plan",
            Self::QuotaExceeded => "quota_exceeded",
            Self::SpendCap => "spend_cap",
        }
    }
}

/// A service's request to hold `quantity` units of `feature` for `ttl_secs`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    pub user_id: UserId,
    pub feature: String,
    pub quantity: i64,
    pub ttl_secs: i64,
    /// The requesting service token's name.
    pub service: String,
}

/// What a reserve answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    Allowed {
        id: String,
        expires_at: NaiveDateTime,
        limit: Limit,
    },
    Refused {
        reason: Refusal,
        /// Where the user stands on the feature, when it is in their plan.
        limit: Option<Limit>,
    },
    /// The database did not answer in time (or failed): the feature's policy answered.
    Undecided { allowed: bool },
    /// No such user.
    UnknownUser,
}

/// The policies undecidable reserves fall back on, and the audit rows still to be written.
/// Shared by every worker of an instance (cheap to clone).
#[derive(Clone, Default)]
pub struct Policies {
    inner: Arc<PolicyMemory>,
}

#[derive(Default)]
struct PolicyMemory {
    /// `fail_open` as the user's last decision on the feature saw it (false when that decision
    /// found no entitlement to the feature).
    by_user: Mutex<HashMap<(i64, String), bool>>,
    /// Per feature over every plan: open only if every plan metering it says open.
    by_feature: RwLock<HashMap<String, bool>>,
    /// Undecided audits being written (one task per user, feature and policy at a time).
    pending: Mutex<HashSet<(i64, String, bool)>>,
}

impl Policies {
    fn remember(&self, user_id: UserId, feature: &str, open: bool) {
        let mut by_user = self
            .inner
            .by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if by_user.len() >= POLICY_MEMORY {
            by_user.clear();
        }
        by_user.insert((user_id.get(), feature.to_owned()), open);
    }

    /// Learns every plan's `(feature, fail_open)`.
    pub fn learn_features(&self, components: &[(String, bool)]) {
        let mut by_feature: HashMap<String, bool> = HashMap::new();
        for (feature, open) in components {
            let entry = by_feature.entry(feature.clone()).or_insert(true);
            *entry = *entry && *open;
        }
        *self
            .inner
            .by_feature
            .write()
            .unwrap_or_else(PoisonError::into_inner) = by_feature;
    }

    /// Whether an undecidable reserve of `feature` by `user_id` is allowed.
    pub fn allows(&self, user_id: UserId, feature: &str) -> bool {
        let known = self
            .inner
            .by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(user_id.get(), feature.to_owned()))
            .copied();
        known.unwrap_or_else(|| {
            self.inner
                .by_feature
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(feature)
                .copied()
                .unwrap_or(false)
        })
    }

    fn start_audit(&self, key: &(i64, String, bool)) -> bool {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
    }

    fn finish_audit(&self, key: &(i64, String, bool)) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Why a reserve's database work gave no decision.
#[derive(Debug, thiserror::Error)]
enum Undecided {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the reserve deadline passed")]
    Late,
    #[error("no randomness for a reservation id")]
    Entropy,
}

impl From<diesel::result::Error> for Undecided {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

/// Reserves, answering within `deadline` whatever the database does (see the module doc).
pub async fn reserve(
    db: &Db,
    policies: &Policies,
    actor: &Actor,
    request: Reserve,
    deadline: Duration,
) -> Reserved {
    let due = Instant::now() + deadline;
    let work = request.clone();
    let worker = db.clone();
    let mut decided = actix_web::rt::spawn(async move {
        worker
            .write(Some(due), move |conn| reserve_before(conn, &work, due))
            .await
    });
    let cause = match actix_web::rt::time::timeout(deadline, &mut decided).await {
        Ok(Ok(Ok((decided, open)))) => {
            policies.remember(request.user_id, &request.feature, open);
            return decided;
        }
        Ok(Ok(Err(Undecided::Late | Undecided::Db(DbError::Busy)))) => "deadline",
        Err(_) => {
            // The answer is "undecided" now; a hold the late transaction still commits is
            // known to nobody, so it is released as soon as it lands.
            release_late_hold(db.clone(), request.user_id, decided);
            "deadline"
        }
        Ok(Ok(Err(err))) => {
            tracing::warn!(error = %err, "a reserve could not be decided");
            "database_error"
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "a reserve's task failed");
            "database_error"
        }
    };
    let allowed = policies.allows(request.user_id, &request.feature);
    audit_undecided(db, policies, actor, &request, allowed, cause);
    Reserved::Undecided { allowed }
}

/// Waits for a reserve answered "undecided" after its deadline and releases the hold it made
/// anyway, if it made one: no service knows that reservation's id.
fn release_late_hold(
    db: Db,
    user_id: UserId,
    decided: actix_web::rt::task::JoinHandle<Result<(Reserved, bool), Undecided>>,
) {
    actix_web::rt::spawn(async move {
        if let Ok(Ok((Reserved::Allowed { id, .. }, _))) = decided.await
            && let Err(err) = release(&db, user_id, id).await
        {
            tracing::warn!(error = %err, "a late hold could not be released; it expires");
        }
    });
}

/// Writes the `usage_undecided` row from a task that retries until it lands (the database
/// that could not decide may not take the row either, for a while).
fn audit_undecided(
    db: &Db,
    policies: &Policies,
    actor: &Actor,
    request: &Reserve,
    allowed: bool,
    cause: &str,
) {
    let key = (request.user_id.get(), request.feature.clone(), allowed);
    if !policies.start_audit(&key) {
        return;
    }
    let event = actor
        .event(Kind::UsageUndecided)
        .details(serde_json::json!({
            "user_id": request.user_id,
            "feature": request.feature,
            "quantity": request.quantity,
            "policy": if allowed { "fail_open" } else { "fail_closed" },
            "allowed": allowed,
            "cause": cause,
        }));
    let (db, policies) = (db.clone(), policies.clone());
    actix_web::rt::spawn(async move {
        let mut wait = Duration::from_millis(100);
        while let Err(err) = audit::record(&db, event.clone()).await {
            tracing::warn!(error = %err, "usage_undecided not recorded yet; retrying");
            actix_web::rt::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        policies.finish_audit(&key);
    });
}

/// The reserve's database work, given up once `due` has passed (a transaction is rolled back
/// when it would commit after it). With the decision, the policy it saw: the feature's
/// `fail_open` when the user is entitled to it, else closed.
///
/// On SQLite it runs in the instance's writer turn (see [`Db::write`]). On PostgreSQL the
/// plainest case is one statement ([`fast_hold`], atomic on its own) that waits for row locks
/// no longer than the time left; anything else is decided the long way ([`decide`]) in a
/// transaction where no lock or statement waits past `due`. A statement that still lands after
/// the answer was given (it waited for a table lock, taken only by schema changes) has its
/// hold released as it lands ([`release_late_hold`]).
fn reserve_before(
    conn: &mut DbConnection,
    request: &Reserve,
    due: Instant,
) -> Result<(Reserved, bool), Undecided> {
    let ms = time_left_ms(due)?;
    match conn {
        DbConnection::Postgresql(pg) => {
            let at = now();
            if let Some(allowed) = fast_hold(pg, request, at, ms)? {
                return Ok(allowed);
            }
            conn.transaction(|conn| {
                if let DbConnection::Postgresql(pg) = conn {
                    // No lock or statement waits past the deadline (one round trip for both).
                    let ms = time_left_ms(due)?;
                    pg.batch_execute(&format!(
                        "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
                    ))?;
                }
                let decided = decide(conn, request, at)?;
                time_left_ms(due)?;
                Ok(decided)
            })
        }
        DbConnection::Sqlite(sqlite) => {
            sqlite.batch_execute(&format!("PRAGMA busy_timeout = {ms}"))?;
            let decided = conn.transaction(|conn| {
                // The first statement writes: the transaction holds SQLite's write lock from
                // here on, and every read below is under it.
                user::lock(conn, request.user_id)?;
                let decided = decide(conn, request, now())?;
                time_left_ms(due)?;
                Ok(decided)
            });
            if let DbConnection::Sqlite(sqlite) = conn {
                let restore = format!(
                    "PRAGMA busy_timeout = {}",
                    crate::db::SQLITE_BUSY_TIMEOUT_MS
                );
                sqlite.batch_execute(&restore)?;
            }
            decided
        }
    }
}

/// The one-statement reserve of the plainest case (see [`rows::fast_hold`]): the answer and
/// policy when it held, `None` when the long way must decide.
fn fast_hold(
    pg: &mut diesel::PgConnection,
    request: &Reserve,
    at: NaiveDateTime,
    lock_timeout_ms: u128,
) -> Result<Option<(Reserved, bool)>, Undecided> {
    let id = reservation_id()?;
    let expires_at = at + chrono::Duration::seconds(request.ttl_secs);
    let row = NewReservation {
        id: &id,
        user_id: request.user_id,
        feature: &request.feature,
        quantity: request.quantity,
        // The subscription's, read in the statement.
        period_end: at,
        state: HELD,
        expires_at,
        service: &request.service,
        created_at: at,
        updated_at: at,
    };
    let Some(held) = rows::fast_hold(pg, &row, lock_timeout_ms)? else {
        return Ok(None);
    };
    let limit = Limit {
        feature: request.feature.clone(),
        unit: held.unit_name,
        included: held.included,
        ..Limit::counted(held.quota, held.used, held.reserved, held.period_end)
    };
    let allowed = Reserved::Allowed {
        id,
        expires_at,
        limit,
    };
    Ok(Some((allowed, held.fail_open)))
}

/// Milliseconds left until `due` (at least 1), or [`Undecided::Late`].
fn time_left_ms(due: Instant) -> Result<u128, Undecided> {
    let left = due
        .checked_duration_since(Instant::now())
        .ok_or(Undecided::Late)?;
    Ok(left.as_millis().clamp(1, 60_000))
}

/// The decision the long way, in [`reserve_before`]'s transaction: the context, then the
/// hold (which explains a refusal).
fn decide(
    conn: &mut DbConnection,
    request: &Reserve,
    at: NaiveDateTime,
) -> Result<(Reserved, bool), Undecided> {
    let refused = |reason| {
        let refused = Reserved::Refused {
            reason,
            limit: None,
        };
        (refused, false)
    };
    let context = rows::reserve_context(conn, request.user_id, &request.feature)?;
    let current = context.as_ref().map(|c| {
        (
            &c.subscription.status,
            &c.subscription.stripe_subscription_id,
        )
    });
    if let Some(reason) = crate::billing::subscriptions::inactive_reason_of(conn, current)? {
        if context.is_none() && user::find(conn, request.user_id)?.is_none() {
            return Ok((Reserved::UnknownUser, false));
        }
        return Ok(refused(Refusal::inactive(&reason)));
    }
    let Some(rows::ReserveContext {
        subscription,
        component,
        own_cap,
        plan_cap,
    }) = context
    else {
        return Ok(refused(Refusal::NoSubscription));
    };
    let (Some(period_end), Some(plan_id)) = (subscription.current_period_end, subscription.plan_id)
    else {
        return Ok(refused(Refusal::NoSubscription));
    };
    let Some(component) = component.map(|(row, meter)| Component::from_rows(row, meter)) else {
        return Ok(refused(Refusal::NotInPlan));
    };
    let held = Held {
        request,
        component: &component,
        period_end,
        at,
    };
    let cap = spend::SpendLimits {
        alert: None,
        own_cap,
        plan_cap,
    }
    .cap();
    let decided = match cap {
        None => held.hold(conn, None)?,
        Some(cap) => {
            if matches!(conn, DbConnection::Postgresql(_)) {
                // The cap reads every counter of the user: holding the user's row to the end
                // of the transaction serialises their capped reserves, so two never both see
                // the room one takes (SQLite's write lock already does).
                user::lock(conn, request.user_id)?;
            }
            held.hold(conn, Some((cap, plan_id)))?
        }
    };
    Ok((decided, component.fail_open))
}

/// A reserve entitled to its feature, about to hold.
struct Held<'a> {
    request: &'a Reserve,
    component: &'a Component,
    period_end: NaiveDateTime,
    at: NaiveDateTime,
}

impl Held<'_> {
    /// Holds the quantity within the quota and (given `(cap, plan_id)`) the spend cap,
    /// expiring the user's stale holds and trying once more when refused.
    fn hold(
        &self,
        conn: &mut DbConnection,
        cap: Option<(i64, i64)>,
    ) -> Result<Reserved, Undecided> {
        let request = self.request;
        let (user_id, feature) = (request.user_id, self.component.feature.as_str());
        let id = reservation_id()?;
        let expires_at = self.at + chrono::Duration::seconds(request.ttl_secs);
        let row = NewReservation {
            id: &id,
            user_id,
            feature,
            quantity: request.quantity,
            period_end: self.period_end,
            state: HELD,
            expires_at,
            service: &request.service,
            created_at: self.at,
            updated_at: self.at,
        };
        let mut retried = false;
        loop {
            let over_cap = match cap {
                Some((cap, plan_id)) => {
                    let components = meters::of_plan(conn, plan_id)?;
                    let charge = charge_with(
                        conn,
                        user_id,
                        self.period_end,
                        &components,
                        feature,
                        request.quantity,
                    )?;
                    charge > cap
                }
                None => false,
            };
            let refusal = if over_cap {
                Refusal::SpendCap
            } else if let Some((used, reserved)) =
                rows::hold_and_insert(conn, &row, self.component.quota)?
            {
                return Ok(Reserved::Allowed {
                    id: id.clone(),
                    expires_at,
                    limit: Limit::of(self.component, used, reserved, self.period_end),
                });
            } else {
                Refusal::QuotaExceeded
            };
            if !retried {
                retried = true;
                // A spend cap counts every feature's holds; a quota only this one's.
                let only = (refusal == Refusal::QuotaExceeded).then_some(feature);
                if expire_stale(conn, Some((user_id, only)), self.at)? > 0 {
                    continue;
                }
            }
            let (used, reserved) = rows::counter(conn, user_id, feature, self.period_end)?;
            return Ok(Reserved::Refused {
                reason: refusal,
                limit: Some(Limit::of(self.component, used, reserved, self.period_end)),
            });
        }
    }
}

/// What the period's usage would cost with `quantity` more units of `feature` held: every
/// feature's used and held units, charged at its rate.
fn charge_with(
    conn: &mut DbConnection,
    user_id: UserId,
    period_end: NaiveDateTime,
    components: &[Component],
    feature: &str,
    quantity: i64,
) -> Result<i64, DbError> {
    let counters = usage::counters(conn, user_id, period_end)?;
    Ok(components
        .iter()
        .map(|component| {
            let (used, reserved) = counters
                .iter()
                .find(|(f, _, _)| *f == component.feature)
                .map_or((0, 0), |(_, used, reserved)| (*used, *reserved));
            let extra = if component.feature == feature {
                quantity
            } else {
                0
            };
            component
                .rate
                .charge(used.saturating_add(reserved).saturating_add(extra))
        })
        .fold(0i64, i64::saturating_add))
}

/// `rsv_` and 128 random bits.
fn reservation_id() -> Result<String, Undecided> {
    let bytes = crate::secret::random_bytes::<16>().map_err(|_| Undecided::Entropy)?;
    Ok(format!("rsv_{}", crate::secret::encode_token(&bytes)))
}

/// Expires held reservations past their expiry (of one user, and one feature, when given),
/// freeing their holds; how many it expired. Each is moved by a conditional update, so two
/// expirers (or an expirer and a commit) never both free one hold.
fn expire_stale(
    conn: &mut DbConnection,
    scope: Option<(UserId, Option<&str>)>,
    at: NaiveDateTime,
) -> Result<usize, DbError> {
    let mut expired = 0;
    for row in rows::stale(conn, scope, at, EXPIRE_BATCH)? {
        if conn.transaction(|conn| expire(conn, &row, at))? {
            expired += 1;
        }
    }
    Ok(expired)
}

fn expire(
    conn: &mut DbConnection,
    row: &rows::ReservationRow,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    if !rows::settle(conn, &row.id, row.user_id, EXPIRED, None, at, false)? {
        return Ok(false);
    }
    rows::unhold(
        conn,
        row.user_id,
        &row.feature,
        row.period_end,
        row.quantity,
    )?;
    Ok(true)
}

/// One round of the periodic sweep: expires every stale hold (a batch at a time, each in its
/// own transaction that starts with the reservation's update). How many it expired. One
/// instance at a time does this (the job's lease); each refreshes its own policies
/// ([`refresh_policies`]).
pub async fn sweep_expired(db: &Db) -> Result<usize, DbError> {
    let mut expired = 0;
    // Batch after batch until one is not full: a backlog is cleared in one round, and each
    // batch gives its connection back.
    loop {
        let (freed, full) = db
            .run(|conn| {
                let at = now();
                let stale = rows::stale(conn, None, at, EXPIRE_BATCH)?;
                let full = stale.len() >= usize::try_from(EXPIRE_BATCH).unwrap_or(usize::MAX);
                let mut freed = 0;
                for row in stale {
                    if conn.transaction(|conn| expire(conn, &row, at))? {
                        freed += 1;
                    }
                }
                Ok::<_, DbError>((freed, full))
            })
            .await?;
        expired += freed;
        if !full || freed == 0 {
            break;
        }
    }
    Ok(expired)
}

/// Learns every plan's per-feature fail-open policy (this instance's memory).
pub async fn refresh_policies(db: &Db, policies: &Policies) -> Result<(), DbError> {
    let components = db.run(rows::fail_open_policies).await?;
    policies.learn_features(&components);
    Ok(())
}

/// What a commit or release answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Committed `quantity` units (now or by an earlier identical request).
    Committed {
        quantity: i64,
        limit: Option<Limit>,
    },
    Released {
        limit: Option<Limit>,
    },
    /// No reservation of this user with that id.
    NotFound,
    /// The reservation is no longer held: `committed`, `released` or `expired`.
    NotHeld(&'static str),
    /// More than the reservation holds, or less than one unit.
    BadQuantity,
}

fn not_held(state: &str) -> Settled {
    Settled::NotHeld(match state {
        COMMITTED => COMMITTED,
        RELEASED => RELEASED,
        _ => EXPIRED,
    })
}

/// The user's standing on `feature` now (none when it is no longer in their plan).
fn standing(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
) -> Result<Option<Limit>, DbError> {
    Ok(limits_in(conn, user_id)?
        .into_iter()
        .find(|limit| limit.feature == feature))
}

/// Commits reservation `id` of `user_id` for `quantity` units (default: all it holds): the
/// usage is stored as a record keyed by the reservation's id, the hold is freed. A repeated
/// commit answers what the first did.
pub async fn commit(
    db: &Db,
    user_id: UserId,
    id: String,
    quantity: Option<i64>,
    service: String,
) -> Result<Settled, DbError> {
    db.write(None, move |conn| {
        conn.transaction(|conn| {
            let at = now();
            // Writes first (SQLite), and orders this user's commits and releases.
            user::lock(conn, user_id)?;
            let Some(row) = rows::find(conn, &id)?.filter(|r| r.user_id == user_id) else {
                return Ok(Settled::NotFound);
            };
            match row.state.as_str() {
                COMMITTED => {
                    return Ok(Settled::Committed {
                        quantity: row.committed_quantity.unwrap_or_default(),
                        limit: standing(conn, user_id, &row.feature)?,
                    });
                }
                HELD => {}
                other => return Ok(not_held(other)),
            }
            if row.expires_at <= at {
                expire(conn, &row, at)?;
                return Ok(Settled::NotHeld(EXPIRED));
            }
            let quantity = quantity.unwrap_or(row.quantity);
            if quantity < 1 || quantity > row.quantity {
                return Ok(Settled::BadQuantity);
            }
            if !rows::settle(conn, &id, user_id, COMMITTED, Some(quantity), at, true)? {
                // The sweep expired it a moment ago.
                return Ok(Settled::NotHeld(EXPIRED));
            }
            rows::unhold(conn, user_id, &row.feature, row.period_end, row.quantity)?;
            let usage = NewUsage {
                user_id,
                feature: row.feature.clone(),
                quantity,
                idempotency_key: id.clone(),
                occurred_at: at,
                byok: false,
                reservation_id: Some(id.clone()),
                service,
            };
            let destination = Destination {
                period: period::current(conn, user_id)?,
                has_customer: billing_customer::for_user(conn, user_id)?.is_some(),
            };
            if records::store(conn, &usage, &destination)? == Stored::Conflict {
                // The reservation's id is the record's key: taken by another record, which
                // a reservation id (random, 128 bits) never is. Nothing is committed.
                return Err(DbError::Unavailable);
            }
            // Committed usage crosses spend-alert thresholds as reported usage does.
            if let Some(period) = &destination.period {
                super::thresholds::check(conn, user_id, period)?;
            }
            Ok(Settled::Committed {
                quantity,
                limit: standing(conn, user_id, &row.feature)?,
            })
        })
    })
    .await
}

/// Releases reservation `id` of `user_id`, freeing its hold. Releasing what is already
/// released or expired answers the same; a committed reservation cannot be released.
pub async fn release(db: &Db, user_id: UserId, id: String) -> Result<Settled, DbError> {
    db.write(None, move |conn| {
        conn.transaction(|conn| {
            let at = now();
            user::lock(conn, user_id)?;
            let Some(row) = rows::find(conn, &id)?.filter(|r| r.user_id == user_id) else {
                return Ok(Settled::NotFound);
            };
            match row.state.as_str() {
                HELD => {
                    if rows::settle(conn, &id, user_id, RELEASED, None, at, false)? {
                        rows::unhold(conn, user_id, &row.feature, row.period_end, row.quantity)?;
                    }
                }
                RELEASED | EXPIRED => {}
                other => return Ok(not_held(other)),
            }
            Ok(Settled::Released {
                limit: standing(conn, user_id, &row.feature)?,
            })
        })
    })
    .await
}
