//! What every page shares: the layout context (navigation, CSRF token, flash message) and one
//! way to turn an askama template into a response.

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use askama::Template;

use crate::accounts::User;
use crate::error::AppError;
use crate::web::routes::assets;
use crate::web::session::{Flash, TypedSession};

/// The signed-in person as the navigation shows them.
pub struct NavUser {
    pub email: String,
    pub is_admin: bool,
    /// Support or admin: the console link, and the role shown beside it.
    pub is_console: bool,
    pub role: &'static str,
    /// A renewal's payment failed: the hosted page of the invoice to pay.
    pub past_due_invoice_url: Option<String>,
}

/// Layout data for `templates/base.html`.
pub struct PageContext {
    pub user: Option<NavUser>,
    pub csrf_token: String,
    pub flash: Option<Flash>,
    pub stylesheet: &'static str,
}

impl PageContext {
    /// For a page rendered in a request: takes the flash message. Signed-in pages get a CSRF
    /// token (the navigation has a sign-out form); anonymous visitors get no session from it.
    pub fn new(session: &TypedSession, user: Option<&User>) -> Result<Self, AppError> {
        let csrf_token = match user {
            Some(_) => session.csrf_token()?,
            None => session.existing_csrf_token().unwrap_or_default(),
        };
        Ok(Self {
            user: user.map(|user| NavUser {
                email: user.email.clone(),
                is_admin: user.is_admin(),
                is_console: user.role.is_console(),
                role: user.role.as_str(),
                past_due_invoice_url: user.past_due_invoice_url.clone(),
            }),
            csrf_token,
            flash: session.take_flash(),
            stylesheet: assets::stylesheet_url(),
        })
    }

    /// Whether the signed-in account may change things in the console (an admin): the
    /// console's pages hide what a support account cannot do.
    pub fn can_manage(&self) -> bool {
        self.user.as_ref().is_some_and(|user| user.is_admin)
    }

    /// For a page with a form: always has a CSRF token.
    pub fn with_form(session: &TypedSession, user: Option<&User>) -> Result<Self, AppError> {
        Ok(Self {
            csrf_token: session.csrf_token()?,
            ..Self::new(session, user)?
        })
    }

    /// For error pages, which know nothing about the session.
    pub fn bare() -> Self {
        Self {
            user: None,
            csrf_token: String::new(),
            flash: None,
            stylesheet: assets::stylesheet_url(),
        }
    }
}

/// Renders a template as an HTML response with the given status.
pub fn render_with_status(
    status: actix_web::http::StatusCode,
    template: &impl Template,
) -> Result<HttpResponse, AppError> {
    let body = template.render().map_err(AppError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(body))
}

pub fn render(template: &impl Template) -> Result<HttpResponse, AppError> {
    render_with_status(actix_web::http::StatusCode::OK, template)
}

/// `303 See Other` to a local page: where every form submission leads.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location))
        .finish()
}

/// Formats a stored UTC timestamp for display.
pub fn datetime(at: &chrono::NaiveDateTime) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// To the second, for admin lists (events a second apart must not look simultaneous).
pub fn datetime_seconds(at: &chrono::NaiveDateTime) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The step before a destructive action, and it works without JavaScript: what will happen,
/// a button that does it (a CSRF-protected POST to `action`), and a link that leaves
/// everything as it is.
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub ctx: PageContext,
    pub title: String,
    /// What the action changes, one paragraph each.
    pub consequences: Vec<String>,
    pub action: String,
    /// The billing operation id the action's form carries, if it calls Stripe.
    pub operation_id: Option<String>,
    pub confirm: &'static str,
    pub keep: &'static str,
    pub keep_href: &'static str,
    /// Shown inside the admin console (with its navigation).
    pub admin: bool,
}
