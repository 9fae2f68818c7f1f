//! `users`: accounts that sign in with an email and password, and their roles.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::db::schema::users;
use crate::db::text::stored_as_text;
use crate::db::{DbConnection, DbError, now};

/// What an account may do (stored as text, under a CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = Infallible;

    /// Only `admin` is an admin: anything unexpected gets the least privilege.
    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(if text == "admin" {
            Self::Admin
        } else {
            Self::Customer
        })
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
    pub id: i64,
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

pub fn find_by_email(conn: &mut DbConnection, email: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn set_role(conn: &mut DbConnection, id: i64, role: Role) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::role.eq(role), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn set_password_hash(conn: &mut DbConnection, id: i64, hash: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now())))
        .execute(conn)?;
    Ok(())
}

pub fn record_login(conn: &mut DbConnection, id: i64) -> Result<(), DbError> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(Some(now())))
        .execute(conn)?;
    Ok(())
}

/// The emails of the given accounts, as `(id, email)` (one query, for lists that name people).
pub fn emails_by_id(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<(i64, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::email))
        .load(conn)?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(users::table.count().get_result(conn)?)
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
}

/// Accounts whose email contains `needle` (already lower-case; `%`, `_` and `\` are dropped),
/// newest first, at most `limit`, each with its masked Stripe customer and its current
/// subscription's status and plan: one query, however many accounts.
pub fn customer_listing(
    conn: &mut DbConnection,
    needle: &str,
    limit: i64,
) -> Result<Vec<CustomerListing>, DbError> {
    use crate::db::models::subscription::SubscriptionStatus;
    use crate::db::schema::{billing_customers, plans, subscriptions};
    let pattern = format!("%{}%", needle.replace(['\\', '%', '_'], ""));
    // The page of accounts, as a subquery (`users` aliased: it appears twice).
    let listed = diesel::alias!(users as listed);
    let page = listed
        .filter(listed.field(users::email).like(pattern))
        .order((
            listed.field(users::created_at).desc(),
            listed.field(users::id).desc(),
        ))
        .limit(limit)
        .select(listed.field(users::id));
    type Row = (
        i64,
        String,
        NaiveDateTime,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = users::table
        .left_join(billing_customers::table)
        .left_join(subscriptions::table.left_join(plans::table))
        .filter(users::id.eq_any(page))
        .order((
            users::created_at.desc(),
            users::id.desc(),
            subscriptions::created_at.desc(),
        ))
        .select((
            users::id,
            users::email,
            users::created_at,
            billing_customers::stripe_customer_masked.nullable(),
            subscriptions::status.nullable(),
            plans::name.nullable(),
        ))
        .load(conn)?;
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
                },
                live,
            )),
        }
    }
    Ok(listed.into_iter().map(|(_, listing, _)| listing).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_stored_as_their_names_and_only_admin_is_an_admin() {
        for role in [Role::Customer, Role::Admin] {
            assert_eq!(role.as_str().parse(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::Customer.as_str(), "customer");
        assert_eq!(Role::Admin.as_str(), "admin");
        for odd in ["Admin", "root", ""] {
            assert_eq!(odd.parse(), Ok(Role::Customer), "{odd}");
        }
    }
}
