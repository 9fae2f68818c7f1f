//! Each user's Stripe customer: created on first checkout, its id sealed (bound to the user by
//! AAD) with an HMAC blind index for lookups by id, and shown only masked.
//!
//! The index is made under the primary `TOKEN_PEPPER` and records that pepper's id; lookups
//! also try the digests of the older peppers, so a pepper rotation never loses a customer
//! while `rotate-key` rebuilds the indexes.

use std::cell::RefCell;
use std::collections::HashMap;

use stripe_core::customer::CreateCustomer;

use super::{BillingError, Gateway, OperationClass};
use crate::accounts::{User, UserId};
use crate::crypto::hashing::Domain;
use crate::crypto::rotation::{self, Batch, RotationError, SealedColumn};
use crate::crypto::{Aad, CryptoError, Keyring, TokenHasher};
use crate::db::models::billing_customer::{self, BillingCustomerRow};
use crate::db::{Db, DbConnection, DbError, now};
use crate::stripe_id::CustomerId;

pub fn customer_aad(user_id: UserId) -> Aad {
    Aad::new(
        "billing_customers",
        "stripe_customer_sealed",
        format!("user:{user_id}"),
    )
}

/// `billing_customers.stripe_customer_sealed` as `rotate-key` re-seals it.
pub const SEALED_CUSTOMER_IDS: SealedColumn<BillingCustomerRow> = SealedColumn {
    name: "billing_customers.stripe_customer_sealed",
    not_under_key: billing_customer::not_under_key,
    id: |row| row.user_id.get(),
    sealed: |row| &row.stripe_customer_sealed,
    aad: |row| Ok(customer_aad(row.user_id)),
    replace: billing_customer::replace_sealed,
    count_by_key_id: billing_customer::count_by_key_id,
};

/// The user's Stripe customer id, opened, if they have one.
pub async fn customer_id(
    db: &Db,
    keyring: &Keyring,
    user_id: UserId,
) -> Result<Option<CustomerId>, BillingError> {
    let row = db
        .run(move |conn| billing_customer::for_user(conn, user_id))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let opened = keyring.open(&row.stripe_customer_sealed, &customer_aad(user_id))?;
    String::from_utf8(opened.to_vec())
        .map(|id| Some(CustomerId::new(id)))
        .map_err(|_| BillingError::Unexpected("customer id is not text".into()))
}

/// The row of a Stripe customer id, by blind index under any configured pepper (without
/// decrypting anything).
pub fn find_by_customer_id(
    conn: &mut DbConnection,
    hasher: &TokenHasher,
    customer: &CustomerId,
) -> Result<Option<BillingCustomerRow>, DbError> {
    billing_customer::by_any_index(conn, &index_candidates(hasher, customer))
}

/// Every index `customer` may be stored under (primary pepper first).
fn index_candidates(hasher: &TokenHasher, customer: &CustomerId) -> Vec<String> {
    hasher
        .candidates(Domain::StripeCustomerId, customer.expose().as_bytes())
        .into_iter()
        .map(|candidate| candidate.digest)
        .collect()
}

/// The users of the Stripe customers a batch of webhook events names, looked up together
/// ([`billing_customer::users_by_any_index`]: on PostgreSQL one statement for the whole batch
/// instead of a round trip per event; on SQLite one lookup per distinct customer, in process,
/// instead of one per event). Valid for one transaction only (it is what that transaction
/// saw): a customer the transaction links is noted with [`Self::linked`], and a customer the
/// batch did not name is looked up on its own.
#[derive(Debug)]
pub struct KnownCustomers(RefCell<HashMap<CustomerId, Option<UserId>>>);

impl KnownCustomers {
    /// Looks up every customer in `customers` at once, in `conn`'s transaction.
    pub fn look_up(
        conn: &mut DbConnection,
        hasher: &TokenHasher,
        customers: impl IntoIterator<Item = CustomerId>,
    ) -> Result<Self, DbError> {
        let mut wanted: Vec<(CustomerId, Vec<String>)> = Vec::new();
        for customer in customers {
            if !wanted.iter().any(|(seen, _)| *seen == customer) {
                let candidates = index_candidates(hasher, &customer);
                wanted.push((customer, candidates));
            }
        }
        let groups: Vec<&[String]> = wanted.iter().map(|(_, c)| c.as_slice()).collect();
        let users = billing_customer::users_by_any_index(conn, &groups)?;
        let known = wanted
            .into_iter()
            .map(|(customer, _)| customer)
            .zip(users)
            .collect();
        Ok(Self(RefCell::new(known)))
    }

    /// The user `customer` belongs to: as looked up with the batch, or else now, by its own
    /// statement.
    pub fn user(
        &self,
        conn: &mut DbConnection,
        hasher: &TokenHasher,
        customer: &CustomerId,
    ) -> Result<Option<UserId>, DbError> {
        if let Some(known) = self.0.borrow().get(customer) {
            return Ok(*known);
        }
        Ok(find_by_customer_id(conn, hasher, customer)?.map(|row| row.user_id))
    }

    /// `customer` was just linked to `user` in this transaction.
    pub fn linked(&self, customer: &CustomerId, user: UserId) {
        self.0.borrow_mut().insert(customer.clone(), Some(user));
    }
}

/// The user a Stripe customer id belongs to (by blind index, without decrypting anything).
pub async fn user_for_customer(
    db: &Db,
    hasher: &TokenHasher,
    customer: &CustomerId,
) -> Result<Option<UserId>, DbError> {
    let indexes = index_candidates(hasher, customer);
    Ok(db
        .run(move |conn| billing_customer::by_any_index(conn, &indexes))
        .await?
        .map(|row| row.user_id))
}

/// A new row for `user_id`'s customer: the id sealed under the primary key, indexed under the
/// primary pepper.
pub fn new_row(
    keyring: &Keyring,
    hasher: &TokenHasher,
    user_id: UserId,
    customer: &CustomerId,
) -> Result<BillingCustomerRow, CryptoError> {
    let raw = customer.expose().as_bytes();
    Ok(BillingCustomerRow {
        user_id,
        stripe_customer_sealed: keyring.seal(raw, &customer_aad(user_id))?,
        key_id: keyring.primary_id().to_string(),
        stripe_customer_index: hasher.digest(Domain::StripeCustomerId, raw),
        stripe_customer_masked: customer.to_string(),
        created_at: now(),
        index_key_id: Some(hasher.primary_id().to_string()),
    })
}

/// The user's Stripe customer, created (once, whatever the retries) if they have none yet.
pub async fn ensure_customer(
    db: &Db,
    keyring: &Keyring,
    hasher: &TokenHasher,
    gateway: &Gateway,
    user: &User,
) -> Result<CustomerId, BillingError> {
    if let Some(existing) = customer_id(db, keyring, user.id).await? {
        return Ok(existing);
    }
    // One customer per user, ever: the key is derived from the user id.
    let key = format!("customer-create-user-{}", user.id);
    let customer = gateway
        .call(OperationClass::Customer, user.id, Some(&key), || {
            CreateCustomer::new()
                .email(user.email.clone())
                .metadata(HashMap::from([(
                    "tollgate_user_id".to_owned(),
                    user.id.to_string(),
                )]))
        })
        .await?;
    let id = CustomerId::new(customer.id.as_str());
    let row = new_row(keyring, hasher, user.id, &id)?;
    let user_id = user.id;
    db.run(move |conn| match billing_customer::insert(conn, &row) {
        // A concurrent first checkout stored the same customer (same idempotency key) first.
        Err(err) if err.is_unique_violation() => {
            billing_customer::for_user(conn, user_id).map(|_| ())
        }
        other => other,
    })
    .await?;
    Ok(id)
}

/// Rebuilds, in one transaction, up to `limit` blind indexes that are not under the primary
/// pepper (for users after `after_user`): each customer id is opened and indexed again, and the
/// row replaced only if its index is still the one read (compare-and-swap), so the running
/// application's own writes are never overwritten. Rows already under the primary pepper are
/// never selected: a rerun after an interruption just finishes the job. `fail_after` aborts
/// the transaction after that many rows (to test crash safety).
pub fn reindex_batch(
    conn: &mut DbConnection,
    keyring: &Keyring,
    hasher: &TokenHasher,
    after_user: i64,
    limit: usize,
    fail_after: Option<usize>,
) -> Result<Batch, RotationError> {
    let primary = hasher.primary_id().to_string();
    let limit = rotation::sql_limit(limit);
    let load = |conn: &mut DbConnection| {
        Ok(billing_customer::index_not_under_key(
            conn, &primary, after_user, limit,
        )?)
    };
    let reindex = |row: &BillingCustomerRow| {
        let opened = keyring
            .open(&row.stripe_customer_sealed, &customer_aad(row.user_id))
            .map_err(|source| RotationError::Crypto {
                column: INDEX_COLUMN,
                id: row.user_id.get(),
                source,
            })?;
        Ok(Some(hasher.digest(Domain::StripeCustomerId, &opened)))
    };
    rotation::swap_batch(
        conn,
        fail_after,
        load,
        |row| row.user_id.get(),
        |row| row.stripe_customer_index.as_str(),
        reindex,
        |conn, swaps| billing_customer::replace_index(conn, swaps, &primary),
    )
}

/// The blind-index column, as `rotate-key` names it.
pub const INDEX_COLUMN: &str = "billing_customers.stripe_customer_index";
