//! `/admin/plans/{id}/grace`: how long a plan's past-due subscribers keep their entitlements
//! after a failed payment (empty: the `PAST_DUE_GRACE_DAYS` default).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::billing::{invoices, plans};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::csrf::CsrfForm;
use crate::web::forms::FormErrors;
use crate::web::pages::{PageContext, render_with_status, see_other};
use crate::web::session::{AdminUser, FlashKind, TypedSession};

#[derive(Template)]
#[template(path = "admin/plan_grace.html")]
struct GracePage {
    ctx: PageContext,
    plan_id: i64,
    plan_name: String,
    days: String,
    default_days: u32,
    errors: FormErrors,
}

#[derive(Deserialize)]
pub struct GraceForm {
    #[serde(default)]
    days: String,
}

async fn page(
    state: &AppState,
    session: &TypedSession,
    admin: &AdminUser,
    id: i64,
    typed: Option<String>,
    errors: FormErrors,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let days = match typed {
        Some(typed) => typed,
        None => invoices::plan_grace(&state.db, id)
            .await?
            .map(|d| d.to_string())
            .unwrap_or_default(),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_with_status(
        status,
        &GracePage {
            ctx: PageContext::with_form(session, Some(&admin.0))?,
            plan_id: plan.id,
            plan_name: plan.name,
            days,
            default_days: state.config.stripe.past_due_grace_days,
            errors,
        },
    )
}

/// `GET /admin/plans/{id}/grace`.
pub async fn form(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    page(&state, &session, &admin, *id, None, FormErrors::new()).await
}

/// `POST /admin/plans/{id}/grace`: sets or clears the plan's own grace (audited).
pub async fn save(
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    id: web::Path<i64>,
    form: CsrfForm<GraceForm>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    let typed: String = form.0.days.chars().take(32).collect();
    let days = match invoices::parse_grace_days(&typed) {
        Ok(days) => days,
        Err(message) => {
            let mut errors = FormErrors::new();
            errors.field("days", message);
            return page(&state, &session, &admin, plan.id, Some(typed), errors).await;
        }
    };
    invoices::set_plan_grace(&state.db, &actor, plan.id, days).await?;
    let message = match days {
        Some(days) => format!(
            "“{}” keeps past-due subscribers for {days} days.",
            plan.name
        ),
        None => format!("“{}” uses the default past-due grace.", plan.name),
    };
    session.flash(FlashKind::Success, message)?;
    Ok(see_other("/admin/plans"))
}
