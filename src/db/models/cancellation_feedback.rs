//! `cancellation_feedback`: why customers cancelled (Stripe's feedback value and a comment).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::user::UserId;
use crate::db::schema::cancellation_feedback;
use crate::db::{DbConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = cancellation_feedback)]
pub struct CancellationFeedbackRow {
    pub id: i64,
    pub user_id: UserId,
    pub stripe_subscription_id: String,
    pub feedback: Option<String>,
    pub comment: Option<String>,
    pub operation_key: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = cancellation_feedback)]
pub struct NewCancellationFeedback<'a> {
    pub user_id: UserId,
    pub stripe_subscription_id: &'a str,
    pub feedback: Option<&'a str>,
    pub comment: Option<&'a str>,
    /// The cancel operation's key: a replayed request records its reason once.
    pub operation_key: &'a str,
    pub created_at: NaiveDateTime,
}

/// Records the reason once per operation; returns whether it was new.
pub fn insert_once(
    conn: &mut DbConnection,
    row: &NewCancellationFeedback<'_>,
) -> Result<bool, DbError> {
    let insert = diesel::insert_into(cancellation_feedback::table)
        .values(row)
        .on_conflict_do_nothing();
    Ok(crate::db::per_backend!(conn, |c| insert.execute(c))? > 0)
}

/// How many cancellations gave each reason (`None`: no reason given), most first.
pub fn counts(conn: &mut DbConnection) -> Result<Vec<(Option<String>, i64)>, DbError> {
    let mut counts: Vec<(Option<String>, i64)> = cancellation_feedback::table
        .group_by(cancellation_feedback::feedback)
        .select((cancellation_feedback::feedback, diesel::dsl::count_star()))
        .load(conn)?;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counts)
}

/// The newest `limit` rows (with or without a comment), newest first, with the account email.
pub fn latest(
    conn: &mut DbConnection,
    limit: i64,
) -> Result<Vec<(CancellationFeedbackRow, String)>, DbError> {
    use crate::db::schema::users;
    Ok(cancellation_feedback::table
        .inner_join(users::table.on(users::id.eq(cancellation_feedback::user_id)))
        .order((
            cancellation_feedback::created_at.desc(),
            cancellation_feedback::id.desc(),
        ))
        .limit(limit)
        .select((CancellationFeedbackRow::as_select(), users::email))
        .load(conn)?)
}
