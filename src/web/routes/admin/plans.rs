//! `/admin/plans`: the plans on sale, created, edited and archived by admins (synced to Stripe).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts::User;
use crate::audit::Actor;
use crate::billing::plans::{self, Plan, PlanDraft, PlanError, PlanErrors};
use crate::billing::{self, BillingError};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::csrf::{CsrfForm, OperationForm, SubmittedOperation};
use crate::web::forms::FormErrors;
use crate::web::pages::{ConfirmPage, PageContext, render, render_with_status, see_other};
use crate::web::routes::billing::billing_failure;
use crate::web::session::{AdminUser, FlashKind, TypedSession};

struct PlanRowView {
    plan: Plan,
    price: String,
    features: String,
    trial_without_card: bool,
}

#[derive(Template)]
#[template(path = "admin/plans.html")]
struct PlansPage {
    ctx: PageContext,
    plans: Vec<PlanRowView>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
) -> Result<HttpResponse, AppError> {
    let plans = plans::list_all(&state.db).await?;
    let card_free = plans::plans_with_card_free_trials(&state.db).await?;
    let plans = plans
        .into_iter()
        .map(|plan| PlanRowView {
            price: plan.price_label(),
            features: plan.entitlements.join(", "),
            trial_without_card: plan.trial_days > 0 && card_free.contains(&plan.id),
            plan,
        })
        .collect();
    render(&PlansPage {
        ctx: PageContext::new(&session, Some(&admin.0))?,
        plans,
    })
}

/// One text input of the plan form.
struct TextField {
    name: &'static str,
    label: &'static str,
    value: String,
    help: &'static str,
}

#[derive(Template)]
#[template(path = "admin/plan_form.html")]
struct PlanFormPage {
    ctx: PageContext,
    action: String,
    title: &'static str,
    text_fields: Vec<TextField>,
    draft: PlanDraft,
    errors: FormErrors,
    operation_id: String,
}

/// The plan form's fields in page order, so the error summary lists them as they appear.
/// A field missing here is still listed, after these.
const PLAN_FIELDS: [&str; 11] = [
    "name",
    "slug",
    "amount",
    "currency",
    "trial_days",
    "trial_without_card",
    "interval",
    "description",
    "features",
    "seats_min",
    "seats_max",
];

/// The plan form's text inputs, in page order, filled from `draft`.
fn text_fields(draft: &PlanDraft) -> Vec<TextField> {
    vec![
        TextField {
            name: "name",
            label: "Name",
            value: draft.name.clone(),
            help: "Shown on the pricing page and at Checkout.",
        },
        TextField {
            name: "slug",
            label: "Slug",
            value: draft.slug.clone(),
            help: "Lowercase letters, digits and dashes; internal services see it.",
        },
        TextField {
            name: "amount",
            label: "Price (minor units)",
            value: draft.amount.clone(),
            help: "In cents: 2500 is $25.00.",
        },
        TextField {
            name: "yearly_amount",
            label: "Yearly price (minor units, optional)",
            value: draft.yearly_amount.clone(),
            help: "Offer yearly billing beside the monthly price, e.g. 25000 for $250.00. Leave empty for monthly only.",
        },
        TextField {
            name: "seats_min",
            label: "Fewest seats (per-seat plans, optional)",
            value: draft.seats_min.clone(),
            help: "For a plan priced per seat: the fewest seats a customer may choose. Leave both empty for one seat.",
        },
        TextField {
            name: "seats_max",
            label: "Most seats (per-seat plans, optional)",
            value: draft.seats_max.clone(),
            help: "The most seats a customer may choose, e.g. 50.",
        },
        TextField {
            name: "currency",
            label: "Currency",
            value: draft.currency.clone(),
            help: "Three-letter ISO code, e.g. usd.",
        },
        TextField {
            name: "trial_days",
            label: "Trial days",
            value: draft.trial_days.clone(),
            help: "0 for no trial.",
        },
    ]
}

fn form_page(
    session: &TypedSession,
    admin: &User,
    plan_id: Option<i64>,
    draft: PlanDraft,
    errors: PlanErrors,
    operation_id: Option<String>,
) -> Result<PlanFormPage, AppError> {
    let operation_id = match operation_id {
        Some(id) => id,
        None => billing::new_operation_id().map_err(AppError::internal)?,
    };
    let text_fields = text_fields(&draft);
    Ok(PlanFormPage {
        text_fields,
        ctx: PageContext::with_form(session, Some(admin))?,
        action: plan_id.map_or_else(
            || "/admin/plans".to_owned(),
            |id| format!("/admin/plans/{id}"),
        ),
        title: if plan_id.is_some() {
            "Edit plan"
        } else {
            "New plan"
        },
        draft,
        errors: FormErrors::from_map(errors, &PLAN_FIELDS),
        operation_id,
    })
}

pub async fn new_form(session: TypedSession, admin: AdminUser) -> Result<HttpResponse, AppError> {
    let draft = PlanDraft {
        currency: "usd".into(),
        interval: "month".into(),
        trial_days: "0".into(),
        ..PlanDraft::default()
    };
    render(&form_page(
        &session,
        &admin.0,
        None,
        draft,
        PlanErrors::new(),
        None,
    )?)
}

/// Every field defaults, so a malformed submission reaches the handler (after the admin check)
/// and gets its messages there.
#[derive(Deserialize)]
pub struct PlanSubmission {
    #[serde(default)]
    operation_id: SubmittedOperation,
    #[serde(flatten)]
    draft: PlanDraft,
}

/// The form's messages for a change the plans domain refused; billing failures (Stripe down,
/// throttled) are the request's error.
async fn plan_failure(
    state: &AppState,
    req: &HttpRequest,
    actor: &Actor,
    err: PlanError,
) -> Result<PlanErrors, AppError> {
    match err {
        PlanError::SlugTaken => Ok(PlanErrors::from([(
            "slug",
            "Another plan already uses this slug.".to_owned(),
        )])),
        PlanError::Currency => Ok(PlanErrors::from([(
            "currency",
            "Stripe does not support this currency.".to_owned(),
        )])),
        PlanError::Billing(BillingError::Gateway(billing::GatewayError::Refused {
            message,
            ..
        })) => {
            tracing::warn!(%message, "Stripe refused a plan change");
            Ok(PlanErrors::from([(
                "form",
                "Stripe refused this plan. Check the amount and currency.".to_owned(),
            )]))
        }
        PlanError::Billing(err) => Err(billing_failure(state, req, actor, err).await),
    }
}

/// The plan `id`, or 404.
async fn plan_or_404(state: &AppState, id: i64) -> Result<Plan, AppError> {
    plans::find(&state.db, id).await?.ok_or(AppError::NotFound)
}

/// What a plan form changes: a new plan, or the plan being edited.
enum Target<'a> {
    New,
    Edit(&'a Plan),
}

/// Validates a plan form and applies it (create or update, audited by the domain); the form
/// again with its messages (422) when it cannot be.
async fn submit(
    (req, state, session): (&HttpRequest, &AppState, &TypedSession),
    (admin, actor): (&User, &Actor),
    target: Target<'_>,
    submission: PlanSubmission,
) -> Result<HttpResponse, AppError> {
    let PlanSubmission {
        operation_id,
        draft,
    } = submission;
    let operation = operation_id.parse()?;
    let plan_id = match &target {
        Target::New => None,
        Target::Edit(plan) => Some(plan.id),
    };
    let refused = |draft, errors| {
        let op = Some(operation.as_str().to_owned());
        render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &form_page(session, admin, plan_id, draft, errors, op)?,
        )
    };
    let input = match draft.validate() {
        Ok(input) => input,
        Err(errors) => return refused(draft, errors),
    };
    let (db, gateway) = (&state.db, &state.gateway);
    let applied = match &target {
        Target::New => plans::create(db, gateway, actor, &operation, input)
            .await
            .map(|plan| format!("Plan “{}” is live on the pricing page.", plan.name)),
        // The flash names the plan as it is now called.
        Target::Edit(plan) => {
            let name = input.name.clone();
            plans::update(db, gateway, actor, &operation, plan, input)
                .await
                .map(|()| format!("Plan “{name}” is updated."))
        }
    };
    match applied {
        Ok(message) => {
            state.active_plans.invalidate();
            session.flash(FlashKind::Success, message)?;
            Ok(see_other("/admin/plans"))
        }
        Err(err) => refused(draft, plan_failure(state, req, actor, err).await?),
    }
}

pub async fn create(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    form: CsrfForm<PlanSubmission>,
) -> Result<HttpResponse, AppError> {
    let cx = (&req, state.get_ref(), &session);
    submit(cx, (&admin.0, &actor), Target::New, form.0).await
}

pub async fn edit_form(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = plan_or_404(&state, *id).await?;
    let mut draft = PlanDraft::from_plan(&plan);
    if plans::trial_without_card(&state.db, plan.id).await? {
        draft.trial_without_card = "on".into();
    }
    if let Some((min, max)) = crate::billing::plans::seats(&state.db, plan.id).await? {
        (draft.seats_min, draft.seats_max) = (min.to_string(), max.to_string());
    }
    render(&form_page(
        &session,
        &admin.0,
        Some(plan.id),
        draft,
        PlanErrors::new(),
        None,
    )?)
}

pub async fn update(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    id: web::Path<i64>,
    form: CsrfForm<PlanSubmission>,
) -> Result<HttpResponse, AppError> {
    let plan = plan_or_404(&state, *id).await?;
    let cx = (&req, state.get_ref(), &session);
    submit(cx, (&admin.0, &actor), Target::Edit(&plan), form.0).await
}

/// `GET /admin/plans/{id}/archive`: what archiving means, before it happens.
pub async fn confirm_archive(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = plan_or_404(&state, *id).await?;
    if !plan.active {
        session.flash(
            FlashKind::Info,
            format!("Plan “{}” is already archived.", plan.name),
        )?;
        return Ok(see_other("/admin/plans"));
    }
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&admin.0))?,
        title: format!("Archive the plan “{}”?", plan.name),
        consequences: vec![
            "It leaves the pricing page: new customers can no longer choose it.".into(),
            "Existing subscribers keep it and are billed as before.".into(),
        ],
        action: format!("/admin/plans/{}/archive", plan.id),
        operation_id: Some(billing::new_operation_id().map_err(AppError::internal)?),
        confirm: "Archive plan",
        keep: "Keep the plan",
        keep_href: "/admin/plans",
        admin: true,
    })
}

pub async fn archive(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (_admin, actor): (AdminUser, Actor),
    id: web::Path<i64>,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let plan = plan_or_404(&state, *id).await?;
    let operation = form.0.operation_id.parse()?;
    let archived = plans::archive(&state.db, &state.gateway, &actor, &operation, &plan).await;
    if let Err(err) = archived {
        let errors = plan_failure(&state, &req, &actor, err).await?;
        tracing::warn!(?errors, "archiving a plan failed");
        session.flash(
            FlashKind::Error,
            "Stripe did not accept the change; the plan is unchanged.",
        )?;
        return Ok(see_other("/admin/plans"));
    }
    state.active_plans.invalidate();
    let message = format!(
        "Plan “{}” is archived: existing subscribers keep it.",
        plan.name
    );
    session.flash(FlashKind::Info, message)?;
    Ok(see_other("/admin/plans"))
}
