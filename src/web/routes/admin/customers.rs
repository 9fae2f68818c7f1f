//! `/admin/customers`: accounts with their Stripe customer and current subscription, newest
//! first, or searched by the start of their email (in email order), a page at a time
//! (`?before=` the last id shown, or `?after=` the last email: keyset pagination, as fast on
//! the thousandth page as on the first). One query for the whole page:
//! [`user::customer_listing`].

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::db::models::user::{self, CustomerListing, CustomerSearch, NextCustomers};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::pages::{PageContext, datetime_seconds, render};
use crate::web::session::TypedSession;

/// Most accounts one page lists.
const CUSTOMER_PAGE: i64 = 100;

struct CustomerView {
    user_id: i64,
    email: String,
    created: String,
    plan: String,
    status: String,
    stripe_customer: String,
}

impl From<CustomerListing> for CustomerView {
    fn from(listing: CustomerListing) -> Self {
        Self {
            user_id: listing.user_id.get(),
            email: listing.email,
            created: datetime_seconds(&listing.created_at),
            plan: listing.plan.unwrap_or_else(|| "—".into()),
            status: listing.status.unwrap_or_else(|| "none".into()),
            stripe_customer: listing.stripe_customer_masked.unwrap_or_else(|| "—".into()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/customers.html")]
struct CustomersPage {
    ctx: PageContext,
    query: String,
    customers: Vec<CustomerView>,
    /// The next page's link (none: this is the last).
    next_href: Option<String>,
    /// Whether this is a later page (it links back to the first).
    paged: bool,
}

/// Longest search accepted (an email address is at most 254 characters).
const QUERY_MAX: usize = 254;

#[derive(Deserialize)]
pub struct CustomerQuery {
    q: Option<String>,
    before: Option<i64>,
    after: Option<String>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.q.as_deref().unwrap_or_default().trim().to_lowercase();
    if q.chars().count() > QUERY_MAX {
        return Err(AppError::BadRequest("Search for at most 254 characters."));
    }
    let before = match query.before {
        Some(id) if id <= 0 => return Err(AppError::BadRequest("Unknown page.")),
        before => before,
    };
    let after = query.after.clone().filter(|after| !after.is_empty());
    if after.as_ref().is_some_and(|after| after.len() > QUERY_MAX) {
        return Err(AppError::BadRequest("Unknown page."));
    }
    let (prefix, after_email) = (q.clone(), after.clone());
    let page = state
        .db
        .run(move |conn| {
            user::customer_listing(
                conn,
                &CustomerSearch {
                    prefix: &prefix,
                    before,
                    after: after_email.as_deref(),
                    limit: CUSTOMER_PAGE,
                },
            )
        })
        .await?;
    let next_href = page.next.map(|next| {
        let query: Vec<(&str, String)> = match next {
            NextCustomers::Before(id) => vec![("before", id.to_string())],
            NextCustomers::After(email) => vec![("q", q.clone()), ("after", email)],
        };
        format!(
            "/admin/customers?{}",
            serde_urlencoded::to_string(query).unwrap_or_default()
        )
    });
    render(&CustomersPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        query: q,
        customers: page.customers.into_iter().map(CustomerView::from).collect(),
        next_href,
        paged: before.is_some() || after.is_some(),
    })
}
