//! `two_factor` and `recovery_codes`: an account's sealed TOTP secret (one per account; a row
//! not yet confirmed is an enrolment in progress) and the hashes of its one-time recovery codes.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::Swap;
use crate::db::models::user::UserId;
use crate::db::schema::{recovery_codes, two_factor};
use crate::db::{DbConnection, DbError, now};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = two_factor)]
pub struct TwoFactorRow {
    pub user_id: UserId,
    pub secret: Vec<u8>,
    pub key_id: String,
    pub confirmed_at: Option<NaiveDateTime>,
    pub last_used_step: Option<i64>,
    /// While unconfirmed: the digest of the enrolling session's binding value.
    pub pending_binding: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn find(conn: &mut DbConnection, user_id: UserId) -> Result<Option<TwoFactorRow>, DbError> {
    Ok(two_factor::table
        .find(user_id)
        .select(TwoFactorRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn is_confirmed(conn: &mut DbConnection, user_id: UserId) -> Result<bool, DbError> {
    let confirmed: i64 = two_factor::table
        .filter(two_factor::user_id.eq(user_id))
        .filter(two_factor::confirmed_at.is_not_null())
        .count()
        .get_result(conn)?;
    Ok(confirmed > 0)
}

/// Stores a new, unconfirmed secret for the account (bound to the session whose binding digest
/// is `binding`), replacing an unconfirmed one. A confirmed secret is never replaced here: false
/// when the account already has one.
pub fn put_pending(
    conn: &mut DbConnection,
    user_id: UserId,
    secret: &[u8],
    key_id: &str,
    binding: &str,
) -> Result<bool, DbError> {
    let at = now();
    diesel::delete(
        two_factor::table
            .filter(two_factor::user_id.eq(user_id))
            .filter(two_factor::confirmed_at.is_null()),
    )
    .execute(conn)?;
    let inserted = diesel::insert_into(two_factor::table)
        .values((
            two_factor::user_id.eq(user_id),
            two_factor::secret.eq(secret),
            two_factor::key_id.eq(key_id),
            two_factor::pending_binding.eq(binding),
            two_factor::created_at.eq(at),
            two_factor::updated_at.eq(at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Marks a code's time step as used, only if it is later than the last one used (so a code is
/// accepted once, even by two requests racing); `confirm` also marks the secret confirmed.
/// True when this step was taken.
pub fn take_step(
    conn: &mut DbConnection,
    user_id: UserId,
    step: i64,
    confirm: bool,
) -> Result<bool, DbError> {
    let fresh = two_factor::table
        .filter(two_factor::user_id.eq(user_id))
        .filter(
            two_factor::last_used_step
                .is_null()
                .or(two_factor::last_used_step.lt(step)),
        );
    let at = now();
    let updated = if confirm {
        diesel::update(fresh.filter(two_factor::confirmed_at.is_null()))
            .set((
                two_factor::last_used_step.eq(step),
                two_factor::confirmed_at.eq(at),
                two_factor::updated_at.eq(at),
            ))
            .execute(conn)?
    } else {
        diesel::update(fresh.filter(two_factor::confirmed_at.is_not_null()))
            .set((
                two_factor::last_used_step.eq(step),
                two_factor::updated_at.eq(at),
            ))
            .execute(conn)?
    };
    Ok(updated == 1)
}

/// Replaces the account's recovery codes with these hashes.
pub fn replace_recovery_codes(
    conn: &mut DbConnection,
    user_id: UserId,
    hashes: &[String],
) -> Result<(), DbError> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id)))
        .execute(conn)?;
    let at = now();
    for hash in hashes {
        diesel::insert_into(recovery_codes::table)
            .values((
                recovery_codes::user_id.eq(user_id),
                recovery_codes::code_hash.eq(hash),
                recovery_codes::created_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The account's unused recovery codes, as `(id, hash)`.
pub fn unused_recovery_codes(
    conn: &mut DbConnection,
    user_id: UserId,
) -> Result<Vec<(i64, String)>, DbError> {
    Ok(recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id))
        .filter(recovery_codes::used_at.is_null())
        .order(recovery_codes::id.asc())
        .select((recovery_codes::id, recovery_codes::code_hash))
        .load(conn)?)
}

/// Marks a recovery code used, only if it was not already: true when this call used it.
pub fn use_recovery_code(conn: &mut DbConnection, id: i64) -> Result<bool, DbError> {
    let updated = diesel::update(
        recovery_codes::table
            .find(id)
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(Some(now())))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Up to `limit` secrets sealed under a key other than `primary`, in user order after `after_id`.
pub fn not_under_key(
    conn: &mut DbConnection,
    primary: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<TwoFactorRow>, DbError> {
    Ok(two_factor::table
        .filter(two_factor::key_id.ne(primary))
        .filter(two_factor::user_id.gt(UserId::from(after_id)))
        .order(two_factor::user_id.asc())
        .limit(limit)
        .select(TwoFactorRow::as_select())
        .load(conn)?)
}

/// Compare-and-swap replacement of sealed secrets, a batch at once (for `rotate-key`): how many
/// were replaced.
pub fn replace_secret(
    conn: &mut DbConnection,
    swaps: &[Swap<'_, [u8]>],
    key_id: &str,
) -> Result<usize, DbError> {
    swap_values!(
        conn,
        two_factor {
            user_id,
            secret: diesel::sql_types::Binary,
            key_id
        },
        swaps,
        key_id
    )
}

/// How many secrets each key id seals.
pub fn count_by_key_id(
    conn: &mut DbConnection,
    beside: &str,
) -> Result<Vec<(String, i64)>, DbError> {
    key_counts_beside!(conn, two_factor::table, two_factor::key_id, beside)
}
