//! `job_leases`: which instance runs a periodic job this period. A job whose work must not be
//! done twice at once nor skipped (retention, the reservation sweep) runs only on the instance
//! that takes its lease; every instance tries each period, so one that stops is replaced.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::job_leases;
use crate::db::{DbConnection, DbError, per_backend};

/// Takes `name`'s lease for `holder` until `until` if it has expired at `at`, counting a run.
/// Exactly one caller wins while the lease is out, on any instance.
pub fn take(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
    at: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<bool, DbError> {
    let never = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let row = (
        job_leases::name.eq(name),
        job_leases::holder.eq(""),
        job_leases::expires_at.eq(never),
    );
    let insert = diesel::insert_into(job_leases::table).values(row);
    per_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    let taken = diesel::update(
        job_leases::table
            .filter(job_leases::name.eq(name))
            .filter(job_leases::expires_at.le(at)),
    )
    .set((
        job_leases::holder.eq(holder),
        job_leases::expires_at.eq(until),
        job_leases::runs.eq(job_leases::runs + 1),
    ));
    Ok(per_backend!(conn, |c| taken.execute(c))? == 1)
}

/// How many times `name` has run (0 if never).
pub fn runs(conn: &mut DbConnection, name: &str) -> Result<i64, DbError> {
    let query = job_leases::table
        .filter(job_leases::name.eq(name))
        .select(job_leases::runs);
    Ok(per_backend!(conn, |c| query.first::<i64>(c).optional())?.unwrap_or(0))
}
