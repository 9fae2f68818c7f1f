//! `tollgate import-stripe`: adopting Tollgate in a product already on Stripe. Each Stripe
//! customer is linked to the account with the same e-mail address (compared lower-cased,
//! exactly), when that account has no customer yet; nothing is ever guessed.

use std::collections::HashMap;
use std::fmt;

use chrono::NaiveDateTime;
use diesel::Connection as _;
use serde_json::Value;

use super::{Difference, Reconciler, Scope, SyncError};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::billing::customers;
use crate::db::DbError;
use crate::db::models::{billing_customer, user};
use crate::stripe_id::CustomerId;

/// What import decided for one Stripe customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Linked to this account (or, in a dry run, would be); when it signed up, for the
    /// operator to judge (Tollgate does not verify e-mail addresses).
    Link(UserId, NaiveDateTime),
    /// Already this account's customer: its subscriptions are synced again (with `--apply`).
    AlreadyLinked(UserId),
    NoEmail,
    NoAccount,
    /// Several Stripe customers have this address: which one is the account's is not guessed.
    Ambiguous(usize),
    /// The account has another customer already.
    AccountHasAnother(UserId),
    /// This customer is already another account's.
    CustomerTaken(UserId),
    /// The customer's `metadata.tollgate_user_id` names another account than the e-mail's.
    MetadataNamesAnother(String),
    /// The e-mail's account is staff (support or admin): billing is for customers.
    StaffAccount(UserId),
}

/// One Stripe customer's line of the import.
#[derive(Debug, Clone)]
pub struct ImportLine {
    /// The customer's id, masked.
    pub customer: String,
    pub email: Option<String>,
    pub decision: Decision,
}

impl fmt::Display for ImportLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let email = self.email.as_deref().unwrap_or("(no e-mail)");
        let customer = &self.customer;
        match &self.decision {
            Decision::Link(user, since) => write!(
                f,
                "link {customer} {email} → account {user} (signed up {})",
                since.format("%Y-%m-%d %H:%M UTC")
            ),
            Decision::AlreadyLinked(user) => {
                write!(f, "unchanged {customer} {email}: already account {user}'s")
            }
            Decision::NoEmail => write!(f, "skip {customer}: no e-mail address"),
            Decision::NoAccount => {
                write!(f, "skip {customer} {email}: no account with this e-mail")
            }
            Decision::Ambiguous(n) => write!(
                f,
                "skip {customer} {email}: {n} Stripe customers have this e-mail (not guessed)"
            ),
            Decision::AccountHasAnother(user) => write!(
                f,
                "skip {customer} {email}: account {user} is linked to another customer"
            ),
            Decision::CustomerTaken(user) => write!(
                f,
                "skip {customer} {email}: already linked to account {user}"
            ),
            Decision::MetadataNamesAnother(named) => write!(
                f,
                "skip {customer} {email}: its metadata names account {named}, not this e-mail's"
            ),
            Decision::StaffAccount(user) => write!(
                f,
                "skip {customer} {email}: account {user} is a staff account"
            ),
        }
    }
}

/// What an import found and did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub lines: Vec<ImportLine>,
    /// How many customers were linked (0 in a dry run).
    pub linked: usize,
    /// What importing the linked customers' subscriptions found.
    pub differences: Vec<Difference>,
}

fn email_of(customer: &Value) -> Option<String> {
    customer
        .get("email")
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// Decides (and, with `apply`, writes) the link of one customer, in one transaction that
/// starts with a write (the account's row locked), re-checking what the decision read.
fn decide(
    conn: &mut crate::db::DbConnection,
    hasher: &crate::crypto::TokenHasher,
    keyring: &crate::crypto::Keyring,
    (customer, email, named): (&CustomerId, &str, Option<&str>),
    apply: bool,
    actor: &Actor,
) -> Result<Decision, SyncError> {
    let Some(account) = user::find_by_email(conn, email)? else {
        return Ok(Decision::NoAccount);
    };
    if account.role != user::Role::Customer {
        return Ok(Decision::StaffAccount(account.id));
    }
    // A customer Tollgate created names its account: the e-mail never overrides that.
    if let Some(named) = named.filter(|named| *named != account.id.to_string()) {
        return Ok(Decision::MetadataNamesAnother(named.to_owned()));
    }
    let decide_in = |conn: &mut crate::db::DbConnection| -> Result<Decision, SyncError> {
        if apply {
            user::lock(conn, account.id)?;
        }
        let owner = customers::find_by_customer_id(conn, hasher, customer)?.map(|r| r.user_id);
        match owner {
            Some(owner) if owner == account.id => return Ok(Decision::AlreadyLinked(owner)),
            Some(owner) => return Ok(Decision::CustomerTaken(owner)),
            None => {}
        }
        if billing_customer::for_user(conn, account.id)?.is_some() {
            return Ok(Decision::AccountHasAnother(account.id));
        }
        if apply {
            let row = customers::new_row(keyring, hasher, account.id, customer)?;
            billing_customer::insert(conn, &row)?;
            audit::write(
                conn,
                &actor
                    .event(Kind::StripeCustomerImported)
                    .details(serde_json::json!({
                        "user_id": account.id,
                        "customer": customer.to_string(),
                    })),
            )?;
        }
        Ok(Decision::Link(account.id, account.created_at))
    };
    if apply {
        conn.transaction(|conn| decide_in(conn))
    } else {
        decide_in(conn)
    }
}

impl From<diesel::result::Error> for SyncError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::from(err))
    }
}

/// Links Stripe's customers to the accounts with their e-mail addresses; with `apply`, writes
/// the links (sealed id, blind index, audit row) and imports each linked customer's
/// subscriptions, else only reports. Running it again changes nothing.
pub async fn import(
    reconciler: &Reconciler,
    apply: bool,
    actor: &Actor,
) -> Result<ImportReport, SyncError> {
    let listed = reconciler.stripe_customers().await?;
    let mut per_email: HashMap<String, usize> = HashMap::new();
    for customer in &listed {
        if let Some(email) = email_of(customer) {
            *per_email.entry(email).or_default() += 1;
        }
    }
    let mut report = ImportReport::default();
    // Oldest first: the order customers were created in.
    for customer in listed.iter().rev() {
        let Some(id) = customer.get("id").and_then(Value::as_str) else {
            continue;
        };
        let id = CustomerId::new(id);
        let email = email_of(customer);
        let decision = match &email {
            None => Decision::NoEmail,
            Some(email) => match per_email.get(email).copied().unwrap_or(0) {
                n if n > 1 => Decision::Ambiguous(n),
                _ => {
                    let config = reconciler.config.clone();
                    let (id, email, actor) = (id.clone(), email.clone(), actor.clone());
                    let named = customer
                        .get("metadata")
                        .and_then(|m| m.get("tollgate_user_id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    reconciler
                        .db
                        .run(move |conn| {
                            let hasher = config.token_hasher();
                            let keyring = config.keyring();
                            let customer = (&id, email.as_str(), named.as_deref());
                            decide(conn, &hasher, &keyring, customer, apply, &actor)
                        })
                        .await?
                }
            },
        };
        if apply && matches!(decision, Decision::Link(..)) {
            report.linked += 1;
        }
        // A customer linked by an earlier run whose subscriptions were not imported then
        // (Stripe failed after the link committed) is synced again, not skipped.
        if let (true, Decision::Link(user, _) | Decision::AlreadyLinked(user)) = (apply, &decision)
        {
            let found = reconciler.run(Scope::Account(*user), false, actor).await?;
            report.differences.extend(found.differences);
        }
        report.lines.push(ImportLine {
            customer: id.to_string(),
            email,
            decision,
        });
    }
    Ok(report)
}
