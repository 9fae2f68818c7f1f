//! `/admin/customers`: accounts with their Stripe customer and current subscription, searched by
//! email (one query for the whole page: [`user::customer_listing`]).

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::db::models::user::{self, CustomerListing};
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
}

#[derive(Deserialize)]
pub struct CustomerQuery {
    q: Option<String>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.q.as_deref().unwrap_or_default().trim().to_lowercase();
    let needle = q.clone();
    let listed = state
        .db
        .run(move |conn| user::customer_listing(conn, &needle, CUSTOMER_PAGE))
        .await?;
    render(&CustomersPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        query: q,
        customers: listed.into_iter().map(CustomerView::from).collect(),
    })
}
