//! `usage_reservations` and the quota side of `usage_counters`: holds on a user's quota, taken
//! by `reserve`, turned into usage by `commit`, freed by `release` or by expiry. The rules (who
//! may hold what) live in `crate::usage::quota`; this module only reads and writes rows.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use crate::db::models::subscription::{self, SubscriptionRow};
use crate::db::models::usage::{PlanMeterRow, UsageMeterRow};
use crate::db::models::user::UserId;
use crate::db::schema::{
    plan_meters, plan_spend_caps, subscriptions, usage_counters, usage_meters, usage_reservations,
    usage_spend_limits,
};
use crate::db::{DbConnection, DbError, per_backend};

/// A reservation's states, stored as text.
pub const HELD: &str = "held";
pub const COMMITTED: &str = "committed";
pub const RELEASED: &str = "released";
pub const EXPIRED: &str = "expired";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_reservations)]
pub struct ReservationRow {
    pub id: String,
    pub user_id: UserId,
    pub feature: String,
    pub quantity: i64,
    pub period_end: NaiveDateTime,
    pub state: String,
    pub expires_at: NaiveDateTime,
    pub committed_quantity: Option<i64>,
    pub service: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = usage_reservations)]
pub struct NewReservation<'a> {
    pub id: &'a str,
    pub user_id: UserId,
    pub feature: &'a str,
    pub quantity: i64,
    pub period_end: NaiveDateTime,
    pub state: &'a str,
    pub expires_at: NaiveDateTime,
    pub service: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, row: &NewReservation<'_>) -> Result<(), DbError> {
    diesel::insert_into(usage_reservations::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: &str) -> Result<Option<ReservationRow>, DbError> {
    Ok(usage_reservations::table
        .find(id)
        .select(ReservationRow::as_select())
        .first(conn)
        .optional()?)
}

/// What a reserve of one feature reads, in one query: the user's subscription that speaks for
/// them (see [`subscription::pick_current`]) and, beside it, its plan's component for the
/// feature with the feature's meter, the customer's own spend cap and the plan's.
#[derive(Debug, Clone)]
pub struct ReserveContext {
    pub subscription: SubscriptionRow,
    pub component: Option<(PlanMeterRow, UsageMeterRow)>,
    pub own_cap: Option<i64>,
    pub plan_cap: Option<i64>,
}

type ContextRow = (
    SubscriptionRow,
    Option<PlanMeterRow>,
    Option<UsageMeterRow>,
    Option<i64>,
    Option<i64>,
);

/// The [`ReserveContext`] of `user_id` for `feature` (none without any subscription).
pub fn reserve_context(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
) -> Result<Option<ReserveContext>, DbError> {
    let rows: Vec<ContextRow> = per_backend!(conn, |c| subscriptions::table
        .left_join(
            plan_meters::table.on(plan_meters::plan_id
                .nullable()
                .eq(subscriptions::plan_id)
                // Owned: a borrowed bind in a join's ON clause does not live long enough
                // for diesel's loader.
                .and(plan_meters::feature.eq(feature.to_owned()))),
        )
        .left_join(usage_meters::table.on(usage_meters::feature.eq(plan_meters::feature)))
        .left_join(
            usage_spend_limits::table.on(usage_spend_limits::user_id.eq(subscriptions::user_id)),
        )
        .left_join(
            plan_spend_caps::table.on(plan_spend_caps::plan_id
                .nullable()
                .eq(subscriptions::plan_id)),
        )
        .filter(subscriptions::user_id.eq(user_id))
        .order((subscriptions::created_at.desc(), subscriptions::id.desc()))
        .select((
            SubscriptionRow::as_select(),
            Option::<PlanMeterRow>::as_select(),
            Option::<UsageMeterRow>::as_select(),
            usage_spend_limits::cap_amount.nullable(),
            plan_spend_caps::cap_amount.nullable(),
        ))
        .load(c)?);
    Ok(subscription::pick_current(rows, |row| &row.0).map(
        |(subscription, component, meter, own_cap, plan_cap)| ReserveContext {
            subscription,
            component: component.zip(meter),
            own_cap,
            plan_cap,
        },
    ))
}

/// THE check-and-hold, with the reservation's row: adds `row.quantity` to the user's counter
/// of the feature for the period (creating it), only while `used + reserved + quantity` stays
/// within `limit` (no limit: always), and inserts `row` when it held. `(used, reserved)` after
/// the hold, or `None` when it did not hold (nothing written).
///
/// Concurrent holds on one counter are serialised by the row's lock, and each re-evaluates the
/// condition on the row as the one before it left it (`ON CONFLICT DO UPDATE … WHERE` sees the
/// latest version): concurrent reservations never exceed the limit, on any number of
/// instances. On PostgreSQL the hold and the insert are one statement (atomic without a
/// transaction, one round trip); on SQLite, two in the caller's transaction.
pub fn hold_and_insert(
    conn: &mut DbConnection,
    row: &NewReservation<'_>,
    limit: Option<i64>,
) -> Result<Option<(i64, i64)>, DbError> {
    // Room for what is already used and held; a quantity above the limit never fits.
    let room = match limit.map(|limit| limit.saturating_sub(row.quantity)) {
        Some(room) if room < 0 => return Ok(None),
        room => room,
    };
    match conn {
        DbConnection::Postgresql(pg) => Ok(HoldAndInsert { row, room }
            .get_result::<(i64, i64)>(pg)
            .optional()?),
        DbConnection::Sqlite(sqlite) => {
            let held: Option<(i64, i64)> = {
                let upsert = diesel::insert_into(usage_counters::table)
                    .values((
                        usage_counters::user_id.eq(row.user_id),
                        usage_counters::feature.eq(row.feature),
                        usage_counters::period_end.eq(row.period_end),
                        usage_counters::used.eq(0),
                        usage_counters::reserved.eq(row.quantity),
                    ))
                    .on_conflict((
                        usage_counters::user_id,
                        usage_counters::feature,
                        usage_counters::period_end,
                    ))
                    .do_update()
                    .set(usage_counters::reserved.eq(usage_counters::reserved + row.quantity));
                let returning = (usage_counters::used, usage_counters::reserved);
                match room {
                    Some(room) => diesel::query_dsl::methods::FilterDsl::filter(
                        upsert,
                        (usage_counters::used + usage_counters::reserved).le(room),
                    )
                    .returning(returning)
                    .get_result(sqlite)
                    .optional()?,
                    None => upsert.returning(returning).get_result(sqlite).optional()?,
                }
            };
            if held.is_some() {
                diesel::insert_into(usage_reservations::table)
                    .values(row)
                    .execute(sqlite)?;
            }
            Ok(held)
        }
    }
}

/// [`hold_and_insert`]'s one statement on PostgreSQL: a data-modifying CTE whose second part
/// inserts the reservation only when the first returned the held counter. Its SQL never
/// changes, so it is prepared once per connection and cached (a `sql_query` would be planned
/// on every reserve).
struct HoldAndInsert<'a> {
    row: &'a NewReservation<'a>,
    /// `limit - quantity`: the most `used + reserved` may be before the hold (none: no limit).
    room: Option<i64>,
}

/// The cache key of [`HoldAndInsert`]'s prepared statement.
struct HoldAndInsertId;

impl QueryId for HoldAndInsert<'_> {
    type QueryId = HoldAndInsertId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for HoldAndInsert<'_> {
    type SqlType = (BigInt, BigInt);
}

impl RunQueryDsl<PgConnection> for HoldAndInsert<'_> {}

impl QueryFragment<Pg> for HoldAndInsert<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let row = self.row;
        out.push_sql(
            "WITH held AS (INSERT INTO usage_counters AS c \
             (user_id, feature, period_end, used, reserved) VALUES (",
        );
        out.push_bind_param::<BigInt, _>(&row.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&row.feature)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&row.period_end)?;
        out.push_sql(", 0, ");
        out.push_bind_param::<BigInt, _>(&row.quantity)?;
        out.push_sql(
            ") ON CONFLICT (user_id, feature, period_end) DO UPDATE \
             SET reserved = c.reserved + EXCLUDED.reserved WHERE ",
        );
        out.push_bind_param::<Nullable<BigInt>, _>(&self.room)?;
        out.push_sql("::bigint IS NULL OR c.used + c.reserved <= ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.room)?;
        out.push_sql(" RETURNING c.used, c.reserved, c.period_end), ");
        push_reservation_insert(out.reborrow(), row)?;
        out.push_sql(" SELECT used, reserved FROM held");
        Ok(())
    }
}

/// The CTE both one-statement holds end with: `reservation AS (INSERT INTO usage_reservations
/// … SELECT … FROM held)`, which inserts `row` (in the held counter's period) only when
/// `held` returned the held counter.
fn push_reservation_insert<'b>(
    mut out: AstPass<'_, 'b, Pg>,
    row: &'b NewReservation<'_>,
) -> QueryResult<()> {
    out.push_sql(
        "reservation AS (INSERT INTO usage_reservations \
         (id, user_id, feature, quantity, period_end, state, expires_at, service, \
         created_at, updated_at) SELECT ",
    );
    out.push_bind_param::<Text, _>(&row.id)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(&row.user_id)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(&row.feature)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(&row.quantity)?;
    out.push_sql(", held.period_end, ");
    out.push_bind_param::<Text, _>(&row.state)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamp, _>(&row.expires_at)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, _>(&row.service)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamp, _>(&row.created_at)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamp, _>(&row.updated_at)?;
    out.push_sql(" FROM held)");
    Ok(())
}

/// What [`fast_hold`] held, with the standing it needs to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastHeld {
    pub used: i64,
    pub reserved: i64,
    pub period_end: NaiveDateTime,
    pub included: i64,
    pub quota: Option<i64>,
    pub fail_open: bool,
    pub unit_name: String,
}

/// The whole reserve in one statement, for the plainest and commonest case on PostgreSQL: the
/// user's current subscription is active or trialing, its plan meters the feature, no spend
/// cap applies, and the quota has room. Then it holds, inserts `row` (its `period_end` is
/// ignored: the subscription's is used) and answers; in any other case it writes nothing and
/// answers `None`, and the caller decides the long way ([`reserve_context`],
/// [`hold_and_insert`]), which also explains refusals. So this statement only ever allows what
/// the long way would allow: it checks a subset of the same rules (the current subscription is
/// picked as [`subscription::pick_current`] picks it; past due, which needs the grace period,
/// always goes the long way).
///
/// It waits for row locks no longer than `lock_timeout_ms` (set for this statement alone, from
/// within it: no transaction, no extra round trip); a lock wait past that is an error.
pub fn fast_hold(
    pg: &mut PgConnection,
    row: &NewReservation<'_>,
    lock_timeout_ms: u128,
) -> Result<Option<FastHeld>, DbError> {
    type Answer = (i64, i64, NaiveDateTime, i64, Option<i64>, bool, String);
    let lock_timeout = lock_timeout_ms.to_string();
    let answer: Option<Answer> = FastHold {
        row,
        lock_timeout: &lock_timeout,
    }
    .get_result(pg)
    .optional()?;
    Ok(answer.map(
        |(used, reserved, period_end, included, quota, fail_open, unit_name)| FastHeld {
            used,
            reserved,
            period_end,
            included,
            quota,
            fail_open,
            unit_name,
        },
    ))
}

/// [`fast_hold`]'s statement: the context of [`reserve_context`] as a CTE, the conditional
/// hold of [`HoldAndInsert`] fed by it, the reservation's insert, and the standing.
struct FastHold<'a> {
    row: &'a NewReservation<'a>,
    /// Milliseconds, as `set_config` takes them.
    lock_timeout: &'a str,
}

/// The cache key of [`FastHold`]'s prepared statement.
struct FastHoldId;

impl QueryId for FastHold<'_> {
    type QueryId = FastHoldId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for FastHold<'_> {
    type SqlType = (
        BigInt,
        BigInt,
        Timestamp,
        BigInt,
        Nullable<BigInt>,
        diesel::sql_types::Bool,
        Text,
    );
}

impl RunQueryDsl<PgConnection> for FastHold<'_> {}

impl QueryFragment<Pg> for FastHold<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let row = self.row;
        // The live statuses, newest first, as `SubscriptionStatus::is_live` and
        // `subscription::pick_current` have them; only active and trialing hold here.
        // `ctx` is read (and materialised: it is read several times and calls a volatile
        // function) before `held` inserts or locks anything, so its `set_config` bounds the
        // counter's row-lock wait; `true`: for this statement's transaction only.
        out.push_sql(
            "WITH ctx AS (SELECT s.status, s.current_period_end AS period_end, \
             pm.included, pm.quota, pm.fail_open, um.unit_name, \
             (l.cap_amount IS NOT NULL OR c.cap_amount IS NOT NULL) AS capped, \
             set_config('lock_timeout', ",
        );
        out.push_bind_param::<Text, _>(&self.lock_timeout)?;
        out.push_sql(
            ", true) AS guard \
             FROM subscriptions s \
             LEFT JOIN plan_meters pm ON pm.plan_id = s.plan_id AND pm.feature = ",
        );
        out.push_bind_param::<Text, _>(&row.feature)?;
        out.push_sql(
            " LEFT JOIN usage_meters um ON um.feature = pm.feature \
             LEFT JOIN usage_spend_limits l ON l.user_id = s.user_id \
             LEFT JOIN plan_spend_caps c ON c.plan_id = s.plan_id \
             WHERE s.user_id = ",
        );
        out.push_bind_param::<BigInt, _>(&row.user_id)?;
        out.push_sql(
            " ORDER BY s.status IN ('active', 'trialing', 'past_due') DESC, \
             s.created_at DESC, s.id DESC LIMIT 1), \
             held AS (INSERT INTO usage_counters AS uc \
             (user_id, feature, period_end, used, reserved) SELECT ",
        );
        out.push_bind_param::<BigInt, _>(&row.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&row.feature)?;
        out.push_sql(", ctx.period_end, 0, ");
        out.push_bind_param::<BigInt, _>(&row.quantity)?;
        out.push_sql(
            " FROM ctx WHERE ctx.guard IS NOT NULL AND ctx.status IN ('active', 'trialing') \
             AND ctx.unit_name IS NOT NULL AND NOT ctx.capped \
             AND ctx.period_end IS NOT NULL AND (ctx.quota IS NULL OR ",
        );
        out.push_bind_param::<BigInt, _>(&row.quantity)?;
        out.push_sql(
            " <= ctx.quota) \
             ON CONFLICT (user_id, feature, period_end) DO UPDATE \
             SET reserved = uc.reserved + EXCLUDED.reserved \
             WHERE (SELECT quota FROM ctx) IS NULL \
             OR uc.used + uc.reserved <= (SELECT quota FROM ctx) - EXCLUDED.reserved \
             RETURNING uc.used, uc.reserved, uc.period_end), ",
        );
        push_reservation_insert(out.reborrow(), row)?;
        out.push_sql(
            " SELECT held.used, held.reserved, held.period_end, ctx.included, ctx.quota, \
             ctx.fail_open, ctx.unit_name FROM held, ctx",
        );
        Ok(())
    }
}

/// Moves reservation `id` of `user_id` from `held` to `state` (with `committed`, for a
/// commit), only if it is still held, and for a commit or release only if it has not expired
/// by `now` (`unexpired`). True when this call moved it: the caller alone then frees its hold.
pub fn settle(
    conn: &mut DbConnection,
    id: &str,
    user_id: UserId,
    state: &str,
    committed: Option<i64>,
    now: NaiveDateTime,
    unexpired: bool,
) -> Result<bool, DbError> {
    let target = usage_reservations::table
        .filter(usage_reservations::id.eq(id))
        .filter(usage_reservations::user_id.eq(user_id))
        .filter(usage_reservations::state.eq(HELD));
    let changes = (
        usage_reservations::state.eq(state),
        usage_reservations::committed_quantity.eq(committed),
        usage_reservations::updated_at.eq(now),
    );
    let moved = if unexpired {
        diesel::update(target.filter(usage_reservations::expires_at.gt(now)))
            .set(changes)
            .execute(conn)?
    } else {
        diesel::update(target).set(changes).execute(conn)?
    };
    Ok(moved == 1)
}

/// Held reservations past their expiry (of one user, and one feature, when given), oldest
/// first, at most `limit`.
pub fn stale(
    conn: &mut DbConnection,
    user: Option<(UserId, Option<&str>)>,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<ReservationRow>, DbError> {
    let stale = usage_reservations::table
        .filter(usage_reservations::state.eq(HELD))
        .filter(usage_reservations::expires_at.le(now))
        .select(ReservationRow::as_select())
        .order(usage_reservations::expires_at.asc())
        .limit(limit);
    Ok(match user {
        None => stale.load(conn)?,
        Some((user_id, None)) => stale
            .filter(usage_reservations::user_id.eq(user_id))
            .load(conn)?,
        Some((user_id, Some(feature))) => stale
            .filter(usage_reservations::user_id.eq(user_id))
            .filter(usage_reservations::feature.eq(feature))
            .load(conn)?,
    })
}

/// Frees `quantity` held units of a counter (never below zero).
pub fn unhold(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
    quantity: i64,
) -> Result<(), DbError> {
    let counter = usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::feature.eq(feature))
        .filter(usage_counters::period_end.eq(period_end));
    diesel::update(counter.filter(usage_counters::reserved.ge(quantity)))
        .set(usage_counters::reserved.eq(usage_counters::reserved - quantity))
        .execute(conn)?;
    Ok(())
}

/// `(used, reserved)` of one counter (zeros when it does not exist).
pub fn counter(
    conn: &mut DbConnection,
    user_id: UserId,
    feature: &str,
    period_end: NaiveDateTime,
) -> Result<(i64, i64), DbError> {
    Ok(usage_counters::table
        .filter(usage_counters::user_id.eq(user_id))
        .filter(usage_counters::feature.eq(feature))
        .filter(usage_counters::period_end.eq(period_end))
        .select((usage_counters::used, usage_counters::reserved))
        .first(conn)
        .optional()?
        .unwrap_or((0, 0)))
}

/// Every plan's `(feature, fail_open)`: what a feature's policy is when the user's is unknown.
pub fn fail_open_policies(conn: &mut DbConnection) -> Result<Vec<(String, bool)>, DbError> {
    Ok(plan_meters::table
        .select((plan_meters::feature, plan_meters::fail_open))
        .load(conn)?)
}
