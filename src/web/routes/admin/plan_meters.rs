//! `/admin/plans/{id}/meters`: a plan's metered components (feature, unit, included quantity,
//! price per package above it, quota, and what happens when Tollgate cannot decide), added,
//! changed and removed by admins; the rules and the Stripe sync are in `usage::admin`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::billing::plans::{self, Plan};
use crate::error::AppError;
use crate::usage::admin::{self, ComponentForm, MeterError};
use crate::usage::describe;
use crate::web::AppState;
use crate::web::csrf::CsrfForm;
use crate::web::forms::FormErrors;
use crate::web::pages::{PageContext, render_with_status, see_other};
use crate::web::routes::billing::billing_failure;
use crate::web::session::{AdminUser, FlashKind, TypedSession};

struct ComponentView {
    feature: String,
    unit_name: String,
    price: String,
    quota: String,
    undecided: &'static str,
    stripe_price_id: String,
}

#[derive(Template)]
#[template(path = "admin/plan_meters.html")]
struct MetersPage {
    ctx: PageContext,
    plan_id: i64,
    plan_name: String,
    currency: String,
    components: Vec<ComponentView>,
    form: ComponentForm,
    errors: FormErrors,
}

async fn page(
    state: &AppState,
    session: &TypedSession,
    admin: &AdminUser,
    plan: Plan,
    form: Option<ComponentForm>,
    errors: FormErrors,
) -> Result<HttpResponse, AppError> {
    let components = admin::components(&state.db, plan.id)
        .await?
        .into_iter()
        .map(|c| ComponentView {
            price: describe::price_line(&c, &plan.currency),
            quota: describe::quota_line(&c, plan.interval).unwrap_or_else(|| "no limit".into()),
            undecided: if c.fail_open { "allow" } else { "refuse" },
            stripe_price_id: c.stripe_price_id.clone().unwrap_or_default(),
            feature: c.feature,
            unit_name: c.unit_name,
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let form = form.unwrap_or_else(|| ComponentForm {
        package_size: "1".into(),
        included: "0".into(),
        undecided: "closed".into(),
        ..ComponentForm::default()
    });
    render_with_status(
        status,
        &MetersPage {
            ctx: PageContext::with_form(session, Some(&admin.0))?,
            plan_id: plan.id,
            plan_name: plan.name,
            currency: plan.currency.to_uppercase(),
            components,
            form,
            errors,
        },
    )
}

async fn active_plan(state: &AppState, id: i64) -> Result<Plan, AppError> {
    plans::find(&state.db, id)
        .await?
        .filter(|p| p.active)
        .ok_or(AppError::NotFound)
}

/// `GET /admin/plans/{id}/meters`.
pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = active_plan(&state, *id).await?;
    page(&state, &session, &admin, plan, None, FormErrors::new()).await
}

/// `POST /admin/plans/{id}/meters`: adds a component, or changes the one of the same feature.
pub async fn save(
    (state, session, req): (web::Data<AppState>, TypedSession, HttpRequest),
    (admin, actor): (AdminUser, Actor),
    id: web::Path<i64>,
    form: CsrfForm<ComponentForm>,
) -> Result<HttpResponse, AppError> {
    let plan = active_plan(&state, *id).await?;
    let typed = form.0.truncated();
    let input = match admin::parse(&typed, &plan.currency) {
        Ok(input) => input,
        Err(messages) => {
            let errors = FormErrors::from_map(messages.into_iter().collect(), &admin::FIELDS);
            return page(&state, &session, &admin, plan, Some(typed), errors).await;
        }
    };
    let feature = input.feature.clone();
    let failure = match admin::save(&state.db, &state.gateway, &actor, &plan, input).await {
        Ok(()) => {
            state.active_plans.invalidate();
            let message = format!("“{}” bills {feature} as set.", plan.name);
            session.flash(FlashKind::Success, message)?;
            return Ok(see_other(&format!("/admin/plans/{}/meters", plan.id)));
        }
        Err(MeterError::TooMany) => format!(
            "A plan has at most {} metered components: remove one first.",
            admin::MAX_COMPONENTS
        ),
        Err(MeterError::NotSynced | MeterError::Currency) => {
            "This plan is not on Stripe yet: save the plan again, then add components.".into()
        }
        Err(MeterError::HasSubscribers(n)) => format!(
            "{n} customers are subscribed to this plan and are billed its current usage prices. \
             You can change the quota and what happens when Tollgate cannot decide; for new \
             prices or components, create a new plan."
        ),
        Err(MeterError::Billing(err)) => {
            return Err(billing_failure(&state, &req, &actor, err).await);
        }
    };
    let mut errors = FormErrors::new();
    errors.form(failure);
    page(&state, &session, &admin, plan, Some(typed), errors).await
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    feature: String,
}

/// `POST /admin/plans/{id}/meters/remove`: removes the plan's component of a feature.
pub async fn remove(
    (state, session, req): (web::Data<AppState>, TypedSession, HttpRequest),
    actor: Actor,
    id: web::Path<i64>,
    form: CsrfForm<RemoveForm>,
) -> Result<HttpResponse, AppError> {
    let plan = active_plan(&state, *id).await?;
    let feature: String = form
        .0
        .feature
        .chars()
        .take(admin::MAX_KEY_CHARS + 1)
        .collect();
    match admin::remove(&state.db, &state.gateway, &actor, &plan, feature.clone()).await {
        Ok(true) => {
            state.active_plans.invalidate();
            let message = format!("“{}” no longer bills {feature}.", plan.name);
            session.flash(FlashKind::Success, message)?;
        }
        Ok(false) => return Err(AppError::NotFound),
        Err(MeterError::HasSubscribers(n)) => {
            let message = format!(
                "{n} customers are subscribed to this plan and are billed for {feature}: \
                 it cannot be removed while they are."
            );
            session.flash(FlashKind::Error, message)?;
        }
        Err(MeterError::Billing(err)) => {
            return Err(billing_failure(&state, &req, &actor, err).await);
        }
        Err(other) => return Err(AppError::Internal(other.to_string())),
    }
    Ok(see_other(&format!("/admin/plans/{}/meters", plan.id)))
}
