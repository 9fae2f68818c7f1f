//! `/admin/customers/{id}/usage` (the customer's usage page as the console sees it, without
//! the spend form) and its CSV, and `/admin/plans/{id}/spend-cap`: a plan's usage spend cap
//! per customer.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::billing::plans;
use crate::db::models::usage_view;
use crate::error::AppError;
use crate::usage::settings::{self, MAX_INPUT};
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::CsrfForm;
use crate::web::forms::FormErrors;
use crate::web::pages::{PageContext, render_with_status, see_other};
use crate::web::routes::usage;
use crate::web::session::{AdminUser, FlashKind, TypedSession};

/// `GET /admin/customers/{id}/usage` (support and admins).
pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    usage::console_page(&state, &session, &viewer.0, *id).await
}

/// `GET /admin/customers/{id}/usage.csv` (admins).
pub async fn export(
    state: web::Data<AppState>,
    _admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    usage::console_export(&state, *id).await
}

#[derive(Template)]
#[template(path = "admin/plan_spend_cap.html")]
struct SpendCapPage {
    ctx: PageContext,
    plan_id: i64,
    plan_name: String,
    currency: String,
    cap: String,
    errors: FormErrors,
}

#[derive(Deserialize)]
pub struct SpendCapForm {
    #[serde(default)]
    cap: String,
}

async fn cap_page(
    state: &AppState,
    session: &TypedSession,
    admin: &AdminUser,
    plan: plans::Plan,
    typed: Option<String>,
    errors: FormErrors,
) -> Result<HttpResponse, AppError> {
    let cap = match typed {
        Some(typed) => typed,
        None => {
            let id = plan.id;
            state
                .db
                .run(move |conn| usage_view::plan_spend_cap(conn, id))
                .await?
                .map(|c| settings::major_text(c, &plan.currency))
                .unwrap_or_default()
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_with_status(
        status,
        &SpendCapPage {
            ctx: PageContext::with_form(session, Some(&admin.0))?,
            plan_id: plan.id,
            plan_name: plan.name,
            currency: plan.currency.to_uppercase(),
            cap,
            errors,
        },
    )
}

/// `GET /admin/plans/{id}/spend-cap`.
pub async fn cap_form(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    cap_page(&state, &session, &admin, plan, None, FormErrors::new()).await
}

/// `POST /admin/plans/{id}/spend-cap`: sets or (empty) removes the plan's cap (audited).
pub async fn save_cap(
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    id: web::Path<i64>,
    form: CsrfForm<SpendCapForm>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    let typed: String = form.0.cap.chars().take(MAX_INPUT + 1).collect();
    let cap = match settings::parse_amount(&typed, &plan.currency) {
        Ok(cap) => cap,
        Err(message) => {
            let mut errors = FormErrors::new();
            errors.field("cap", message);
            return cap_page(&state, &session, &admin, plan, Some(typed), errors).await;
        }
    };
    let plan_id = plan.id;
    state
        .db
        .run(move |conn| settings::set_plan_cap(conn, &actor, plan_id, cap))
        .await?;
    let message = match cap {
        Some(cap) => format!(
            "“{}” caps each customer's usage at {} a period.",
            plan.name,
            plans::format_amount(cap, &plan.currency)
        ),
        None => format!("“{}” has no usage spend cap.", plan.name),
    };
    session.flash(FlashKind::Success, message)?;
    Ok(see_other("/admin/plans"))
}
