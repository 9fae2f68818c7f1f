//! `plan_trial_options`: whether a plan's trial is taken without a card.

use diesel::prelude::*;

use crate::db::schema::plan_trial_options;
use crate::db::{DbConnection, DbError, now};

/// Whether plan `plan_id`'s trial needs no card (false when never set).
pub fn without_card(conn: &mut DbConnection, plan_id: i64) -> Result<bool, DbError> {
    Ok(plan_trial_options::table
        .find(plan_id)
        .select(plan_trial_options::without_card)
        .first(conn)
        .optional()?
        .unwrap_or(false))
}

/// The plans whose trial needs no card.
pub fn plans_without_card(conn: &mut DbConnection) -> Result<Vec<i64>, DbError> {
    Ok(plan_trial_options::table
        .filter(plan_trial_options::without_card.eq(true))
        .select(plan_trial_options::plan_id)
        .load(conn)?)
}

/// Sets whether plan `plan_id`'s trial needs no card.
pub fn set_without_card(
    conn: &mut DbConnection,
    plan_id: i64,
    without_card: bool,
) -> Result<(), DbError> {
    let at = now();
    let updated = diesel::update(plan_trial_options::table.find(plan_id))
        .set((
            plan_trial_options::without_card.eq(without_card),
            plan_trial_options::updated_at.eq(at),
        ))
        .execute(conn)?;
    if updated == 0 {
        let insert = diesel::insert_into(plan_trial_options::table)
            .values((
                plan_trial_options::plan_id.eq(plan_id),
                plan_trial_options::without_card.eq(without_card),
                plan_trial_options::updated_at.eq(at),
            ))
            .on_conflict_do_nothing();
        crate::db::per_backend!(conn, |c| insert.execute(c))?;
    }
    Ok(())
}
