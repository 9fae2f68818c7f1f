//! `users`: accounts that sign in with an email and password, and their roles.

use std::convert::Infallible;
use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Text};
use serde::{Deserialize, Serialize};

use crate::db::schema::users;
use crate::db::text::stored_as_text;
use crate::db::{DbConnection, DbError, now};

/// An account's id (the `users` key), as every layer above this table passes it: it cannot be
/// mistaken for a plan's or a token's id. It shows as the bare number wherever ids appeared
/// before it was a type: `Display` (URLs, `user:42` audit actors and AADs), serde (the session,
/// JSON bodies and answers) and the database (a `BigInt`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    AsExpression,
    FromSqlRow,
)]
#[serde(transparent)]
#[diesel(sql_type = BigInt)]
pub struct UserId(i64);

impl UserId {
    /// The number, for what only takes numbers (a rate limiter's key, a cursor).
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for UserId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The number as text (a Stripe `client_reference_id`, a stored session value).
impl FromStr for UserId {
    type Err = ParseIntError;

    fn from_str(text: &str) -> Result<Self, ParseIntError> {
        text.parse().map(Self)
    }
}

impl<DB> ToSql<BigInt, DB> for UserId
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        <i64 as ToSql<BigInt, DB>>::to_sql(&self.0, out)
    }
}

impl<DB> FromSql<BigInt, DB> for UserId
where
    DB: Backend,
    i64: FromSql<BigInt, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        <i64 as FromSql<BigInt, DB>>::from_sql(bytes).map(Self)
    }
}

/// What an account may do (stored as text, under a CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum Role {
    Customer,
    /// Reads the console (customers, subscriptions, webhook list, audit log); changes nothing.
    Support,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Customer, Role::Support, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Support => "support",
            Self::Admin => "admin",
        }
    }

    /// The role named exactly (`set-role --role`): `None` for anything else.
    pub fn parse_exact(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether the account may open the console at all (read-only or not).
    pub fn is_console(self) -> bool {
        matches!(self, Self::Support | Self::Admin)
    }
}

impl FromStr for Role {
    type Err = Infallible;

    /// Only the exact names count: anything unexpected gets the least privilege.
    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(Self::parse_exact(text).unwrap_or(Self::Customer))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

stored_as_text!(Role);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Inserts a user and returns the stored row (a unique violation means the email is taken).
pub fn insert(conn: &mut DbConnection, new: &NewUser<'_>) -> Result<UserRow, DbError> {
    diesel::insert_into(users::table)
        .values(new)
        .execute(conn)?;
    find_by_email(conn, new.email)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// Inserts `new` in one statement and returns each row's `(id, email)` (`tollgate bench seed`).
pub fn insert_many(
    conn: &mut DbConnection,
    new: &[NewUser<'_>],
) -> Result<Vec<(i64, String)>, DbError> {
    let insert = diesel::insert_into(users::table).values(new);
    Ok(match conn {
        DbConnection::Postgresql(pg) => insert
            .returning((users::id, users::email))
            .get_results(pg)?,
        DbConnection::Sqlite(sqlite) => insert
            .returning((users::id, users::email))
            .get_results(sqlite)?,
    })
}

pub fn find_by_email(conn: &mut DbConnection, email: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// Locks the account's row for the rest of the transaction (PostgreSQL), or takes the write
/// lock (SQLite): an `UPDATE` that changes nothing. Changes to one customer's billing state
/// are serialised by it, whether or not their own rows exist yet.
pub fn lock(conn: &mut DbConnection, id: UserId) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set(users::updated_at.eq(users::updated_at))
        .execute(conn)?;
    Ok(())
}

/// Locks the users among `ids` that exist, in id order (two batches never wait on each
/// other's users in opposite orders), to the end of the transaction; their ids, ascending. On
/// SQLite the statement writes, so the transaction holds the write lock from here on.
pub fn lock_all(conn: &mut DbConnection, ids: &[UserId]) -> Result<Vec<UserId>, DbError> {
    let existing = users::table
        .filter(users::id.eq_any(ids))
        .order(users::id)
        .select(users::id);
    match conn {
        // As an UPDATE locks: foreign-key checks (FOR KEY SHARE) of rows that reference
        // these users, such as a reservation's insert, do not wait for it.
        DbConnection::Postgresql(pg) => Ok(existing.for_no_key_update().load(pg)?),
        DbConnection::Sqlite(sqlite) => {
            diesel::update(users::table.filter(users::id.eq_any(ids)))
                .set(users::updated_at.eq(users::updated_at))
                .execute(sqlite)?;
            Ok(existing.load(sqlite)?)
        }
    }
}

pub fn find(conn: &mut DbConnection, id: UserId) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn set_role(conn: &mut DbConnection, id: UserId, role: Role) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::role.eq(role), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

/// Sets the role of the account `email`, returning its id and the role it had before; `None`
/// when no account has that email. Written first, read after, in the caller's transaction: the
/// old role is kept by the update itself (`updated_at` only moves when the role changes).
pub fn set_role_by_email(
    conn: &mut DbConnection,
    email: &str,
    role: Role,
) -> Result<Option<(UserId, Role)>, DbError> {
    // Touch the row first (a write opens the transaction), then read what it was.
    let touched = diesel::update(users::table.filter(users::email.eq(email)))
        .set(users::email.eq(email))
        .execute(conn)?;
    if touched == 0 {
        return Ok(None);
    }
    let (id, old): (UserId, Role) = users::table
        .filter(users::email.eq(email))
        .select((users::id, users::role))
        .first(conn)?;
    if old != role {
        set_role(conn, id, role)?;
    }
    Ok(Some((id, old)))
}

pub fn set_password_hash(conn: &mut DbConnection, id: UserId, hash: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn record_login(conn: &mut DbConnection, id: UserId) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(Some(now())))
        .execute(conn)?;
    Ok(())
}

/// The emails of the given accounts, as `(id, email)` (one query, for lists that name people).
pub fn emails_by_id(
    conn: &mut DbConnection,
    ids: &[UserId],
) -> Result<Vec<(UserId, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email))
        .load(conn)?)
}

/// How many accounts there are: one row the database's triggers keep (`row_counts`), not a
/// scan of every account.
pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    use crate::db::schema::row_counts;
    let kept = row_counts::table
        .find("users")
        .select(row_counts::total)
        .first(conn)
        .optional()?;
    match kept {
        Some(total) => Ok(total),
        // The migration writes the row; a restore that left it out is counted the slow way.
        None => Ok(users::table.count().get_result(conn)?),
    }
}

/// Whether there is any account at all (read from the table itself, not a kept count).
pub fn any(conn: &mut DbConnection) -> Result<bool, DbError> {
    Ok(diesel::select(diesel::dsl::exists(users::table.select(users::id))).get_result(conn)?)
}

/// One account as the admin's customer list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerListing {
    pub email: String,
    pub created_at: NaiveDateTime,
    pub stripe_customer_masked: Option<String>,
    /// The current subscription (a live one if any, else the newest): its status and plan.
    pub status: Option<String>,
    pub plan: Option<String>,
    /// The account's id (the console's per-customer actions).
    pub user_id: UserId,
}

/// Which accounts the admin's customer list shows, at most `limit`, a page at a time (keyset
/// pagination: each page starts where the last one ended, as fast deep down as on top):
/// - no `prefix`: every account, newest first, older than the account `before`;
/// - a `prefix` (already lower-case, as emails are stored): the accounts whose email starts
///   with it, in email order, after the email `after`.
#[derive(Debug, Clone, Copy)]
pub struct CustomerSearch<'a> {
    pub prefix: &'a str,
    pub before: Option<i64>,
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// Where the page after a [`CustomerPage`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextCustomers {
    /// `before=` this account id (the list of every account).
    Before(i64),
    /// `after=` this email (a search).
    After(String),
}

/// One page of the customer list, and where the next page starts (none: this is the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPage {
    pub customers: Vec<CustomerListing>,
    pub next: Option<NextCustomers>,
}

/// The least string greater than every string that starts with `prefix`, under a byte-wise
/// order (SQLite's BINARY collation, PostgreSQL's "C", which `users.email` uses; UTF-8's byte
/// order is code-point order): the prefix with its last character replaced by the next one
/// (the last characters that have none dropped first). `None` when no such string exists (a
/// prefix of U+10FFFF only): the range then has no end.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value: past the surrogates, none after char::MAX.
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            next => char::from_u32(next),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A page of accounts as [`CustomerSearch`] selects them, each with its masked Stripe customer
/// and its current subscription's status and plan: one query, however many accounts, served
/// by an index whatever the page (the primary key, or the unique index on `email`, whose
/// byte-wise order makes a prefix a range).
pub fn customer_listing(
    conn: &mut DbConnection,
    search: &CustomerSearch<'_>,
) -> Result<CustomerPage, DbError> {
    use crate::db::models::subscription::SubscriptionStatus;
    use crate::db::schema::{billing_customers, plans, subscriptions};
    let limit = search.limit.max(1);
    type Row = (
        i64,
        String,
        NaiveDateTime,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    // The accounts of `$page` (a subquery), with their customer and subscriptions, grouped by
    // account, each account's subscriptions newest first.
    macro_rules! listing {
        ($page:expr) => {
            users::table
                .left_join(billing_customers::table)
                .left_join(subscriptions::table.on(subscriptions::user_id.eq(users::id)))
                .left_join(plans::table.on(subscriptions::plan_id.eq(plans::id.nullable())))
                .filter(users::id.eq_any($page))
                .order((users::id.desc(), subscriptions::created_at.desc()))
                .select((
                    users::id,
                    users::email,
                    users::created_at,
                    billing_customers::stripe_customer_masked.nullable(),
                    subscriptions::status.nullable(),
                    plans::name.nullable(),
                ))
                .load::<Row>(conn)?
        };
    }
    // The page (and one account more, to know whether there is a next page) as a subquery:
    // `users` aliased, as it appears twice.
    let listed = diesel::alias!(users as listed);
    let email = listed.field(users::email);
    let rows: Vec<Row> = if search.prefix.is_empty() {
        listing!(
            listed
                .filter(
                    listed
                        .field(users::id)
                        .lt(search.before.unwrap_or(i64::MAX))
                )
                .order(listed.field(users::id).desc())
                .limit(limit + 1)
                .select(listed.field(users::id))
        )
    } else {
        listing!(
            listed
                .filter(email.ge(search.prefix))
                // Without an end (never for an email), a bound every email is below.
                .filter(email.lt(
                    prefix_end(search.prefix).unwrap_or_else(|| char::MAX.to_string().repeat(255))
                ))
                .filter(email.gt(search.after.unwrap_or_default()))
                .order(email.asc())
                .limit(limit + 1)
                .select(listed.field(users::id))
        )
    };
    // Rows come grouped by account, its subscriptions newest first: keep the first live one,
    // else the first.
    let mut listed: Vec<(i64, CustomerListing, bool)> = Vec::new();
    for (id, email, created_at, masked, status, plan) in rows {
        let live = status
            .as_deref()
            .is_some_and(|status| SubscriptionStatus::from(status).is_live());
        match listed.last_mut() {
            Some((last, listing, found_live)) if *last == id => {
                if live && !*found_live {
                    (listing.status, listing.plan, *found_live) = (status, plan, true);
                }
            }
            _ => listed.push((
                id,
                CustomerListing {
                    email,
                    created_at,
                    stripe_customer_masked: masked,
                    status,
                    plan,
                    user_id: UserId::from(id),
                },
                live,
            )),
        }
    }
    let mut customers: Vec<CustomerListing> =
        listed.into_iter().map(|(_, listing, _)| listing).collect();
    // The page's own order (the rows came by id, newest first).
    if !search.prefix.is_empty() {
        customers.sort_by(|a, b| a.email.as_bytes().cmp(b.email.as_bytes()));
    }
    if customers.len() as i64 <= limit {
        return Ok(CustomerPage {
            customers,
            next: None,
        });
    }
    customers.truncate(limit as usize);
    let next = customers.last().map(|last| {
        if search.prefix.is_empty() {
            NextCustomers::Before(last.user_id.get())
        } else {
            NextCustomers::After(last.email.clone())
        }
    });
    Ok(CustomerPage { customers, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_string_in_byte_order() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a_").as_deref(), Some("a`"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
        // Everything that starts with the prefix sorts below its end, byte-wise.
        for (prefix, email) in [("ab", "ab\u{10FFFF}\u{10FFFF}z"), ("é", "éz@example.com")] {
            let end = prefix_end(prefix).unwrap();
            assert!(email.as_bytes() < end.as_bytes(), "{email} < {end}");
            assert!(email.as_bytes() >= prefix.as_bytes());
        }
    }

    #[test]
    fn a_user_id_shows_and_travels_as_its_bare_number() {
        let id = UserId::from(42);
        assert_eq!(id.to_string(), "42");
        assert_eq!(format!("user:{id}"), "user:42");
        assert_eq!(UserId::from(-7).to_string(), "-7");
        assert_eq!(UserId::from(i64::MAX).to_string(), i64::MAX.to_string());
        assert_eq!(id.get(), 42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(
            serde_json::json!({ "user_id": id }).to_string(),
            r#"{"user_id":42}"#
        );
        assert_eq!(serde_json::from_str::<UserId>("123").unwrap(), 123.into());
        #[derive(serde::Deserialize)]
        struct Body {
            user_id: UserId,
        }
        let body: Body = serde_json::from_str(r#"{"user_id": 123}"#).unwrap();
        assert_eq!(body.user_id, UserId::from(123));
        for odd in [r#""123""#, "1.5", "null", r#"{"id":1}"#] {
            assert!(serde_json::from_str::<UserId>(odd).is_err(), "{odd}");
        }
        assert_eq!("123".parse(), Ok(UserId::from(123)));
        assert!("12a".parse::<UserId>().is_err());
        assert!("".parse::<UserId>().is_err());
    }

    #[test]
    fn roles_are_stored_as_their_names_and_only_admin_is_an_admin() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::Customer.as_str(), "customer");
        assert_eq!(Role::Admin.as_str(), "admin");
        assert_eq!(Role::Support.as_str(), "support");
        assert!(Role::Support.is_console() && Role::Admin.is_console());
        assert!(!Role::Customer.is_console());
        assert_eq!(Role::parse_exact("Support"), None);
        for odd in ["Admin", "SUPPORT", "root", ""] {
            assert_eq!(odd.parse(), Ok(Role::Customer), "{odd}");
        }
    }
}
