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

/// A request for a page of the list, checked: a prefix (lower-case, no control characters, at
/// most an email's length) and the cursor that goes with it (`before` an id for the whole list,
/// `after` an email for a search; the other is ignored).
struct PageRequest {
    prefix: String,
    before: Option<i64>,
    after: Option<String>,
}

impl PageRequest {
    fn parse(query: CustomerQuery) -> Result<Self, AppError> {
        let printable =
            |text: &str| text.chars().count() <= QUERY_MAX && !text.chars().any(char::is_control);
        let prefix = query.q.unwrap_or_default().trim().to_lowercase();
        if !printable(&prefix) {
            return Err(AppError::BadRequest(
                "Search for the start of an email address (at most 254 characters).",
            ));
        }
        let before = query.before.filter(|_| prefix.is_empty());
        let after = query
            .after
            .filter(|after| !after.is_empty() && !prefix.is_empty());
        if before.is_some_and(|id| id <= 0) || after.as_deref().is_some_and(|a| !printable(a)) {
            return Err(AppError::BadRequest("Unknown page."));
        }
        Ok(Self {
            prefix,
            before,
            after,
        })
    }

    /// The link to the page after one that ended at `next`.
    fn next_href(&self, next: NextCustomers) -> String {
        let query: Vec<(&str, String)> = match next {
            NextCustomers::Before(id) => vec![("before", id.to_string())],
            NextCustomers::After(email) => vec![("q", self.prefix.clone()), ("after", email)],
        };
        format!(
            "/admin/customers?{}",
            serde_urlencoded::to_string(query).unwrap_or_default()
        )
    }
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, AppError> {
    let request = PageRequest::parse(query.into_inner())?;
    let (prefix, before, after) = (
        request.prefix.clone(),
        request.before,
        request.after.clone(),
    );
    let page = state
        .db
        .run(move |conn| {
            let search = CustomerSearch {
                prefix: &prefix,
                before,
                after: after.as_deref(),
                limit: CUSTOMER_PAGE,
            };
            user::customer_listing(conn, &search)
        })
        .await?;
    render(&CustomersPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        next_href: page.next.map(|next| request.next_href(next)),
        paged: request.before.is_some() || request.after.is_some(),
        customers: page.customers.into_iter().map(CustomerView::from).collect(),
        query: request.prefix,
    })
}
