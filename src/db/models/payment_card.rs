//! `payment_cards`: each user's card on file as Stripe shows it, sealed (brand, last 4 and
//! expiry together), with the Stripe time it is as of. A detached card stays as a `removed`
//! row with the detach's time: an older event arriving after it never brings the card back.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::Swap;
use crate::db::models::user::UserId;
use crate::db::schema::payment_cards;
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payment_cards)]
pub struct PaymentCardRow {
    pub user_id: UserId,
    pub card_sealed: Vec<u8>,
    pub key_id: String,
    pub stripe_updated_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub removed: bool,
}

/// The user's card on file (not a removed one).
pub fn for_user(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Option<PaymentCardRow>, DbError> {
    Ok(payment_cards::table
        .find(user_id)
        .filter(payment_cards::removed.eq(false))
        .select(PaymentCardRow::as_select())
        .first(conn)
        .optional()?)
}

/// Stores the sealed card as of `as_of`, unless a card as of a later time is stored, or was
/// removed later (events arrive out of order). Returns whether it was written.
pub fn upsert_if_newer(
    conn: &mut DbConnection,
    user_id: UserId,
    sealed: &[u8],
    key_id: &str,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let at = now();
    let update = |conn: &mut DbConnection| {
        diesel::update(
            payment_cards::table
                .find(user_id)
                .filter(payment_cards::stripe_updated_at.le(as_of)),
        )
        .set((
            payment_cards::card_sealed.eq(sealed),
            payment_cards::key_id.eq(key_id),
            payment_cards::stripe_updated_at.eq(as_of),
            payment_cards::updated_at.eq(at),
            payment_cards::removed.eq(false),
        ))
        .execute(conn)
    };
    if update(conn)? > 0 {
        return Ok(true);
    }
    let insert = diesel::insert_into(payment_cards::table)
        .values((
            payment_cards::user_id.eq(user_id),
            payment_cards::card_sealed.eq(sealed),
            payment_cards::key_id.eq(key_id),
            payment_cards::stripe_updated_at.eq(as_of),
            payment_cards::updated_at.eq(at),
        ))
        .on_conflict_do_nothing();
    if crate::db::per_backend!(conn, |c| insert.execute(c))? > 0 {
        return Ok(true);
    }
    Ok(update(conn)? > 0)
}

/// Marks the card removed as of `as_of` (detached), unless a later card is stored. The row
/// stays, with the detach's time, so that an older event cannot bring the card back.
pub fn remove_if_not_newer(
    conn: &mut DbConnection,
    user_id: UserId,
    as_of: NaiveDateTime,
) -> Result<bool, DbError> {
    let removed = diesel::update(
        payment_cards::table
            .find(user_id)
            .filter(payment_cards::removed.eq(false))
            .filter(payment_cards::stripe_updated_at.le(as_of)),
    )
    .set((
        payment_cards::removed.eq(true),
        payment_cards::stripe_updated_at.eq(as_of),
        payment_cards::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(removed > 0)
}

pub fn not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_user: i64,
    limit: i64,
) -> Result<Vec<PaymentCardRow>, DbError> {
    Ok(payment_cards::table
        .filter(payment_cards::key_id.ne(primary))
        .filter(payment_cards::user_id.gt(after_user))
        .order(payment_cards::user_id.asc())
        .limit(limit)
        .select(PaymentCardRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed cards, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_sealed(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        payment_cards {
            user_id,
            card_sealed: diesel::sql_types::Binary,
            key_id
        },
        swaps,
        key_id
    )
}

pub fn count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    key_counts_beside!(conn, payment_cards::table, payment_cards::key_id, beside)
}
