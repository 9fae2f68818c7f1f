//! The admin console's billing pages: plans (synced to Stripe) and customers.

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts::User;
use crate::audit::{self, Kind, SecurityEvent};
use crate::billing::plans::{self, Plan, PlanDraft, PlanError, PlanErrors};
use crate::billing::{self, BillingError};
use crate::db::schema::{billing_customers, plans as plans_table, users};
use crate::error::AppError;
use crate::web::csrf::CsrfForm;
use crate::web::forms::FormErrors;
use crate::web::pages::{ConfirmPage, PageContext, datetime_seconds, render, render_with_status};
use crate::web::routes::billing::billing_failure;
use crate::web::session::{AdminUser, FlashKind, TypedSession};
use crate::web::{AppState, client_ip};

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, location))
        .finish()
}

struct PlanRowView {
    plan: Plan,
    price: String,
    features: String,
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
    let plans = plans
        .into_iter()
        .map(|plan| PlanRowView {
            price: plan.price_label(),
            features: plan.entitlements.join(", "),
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
const PLAN_FIELDS: [&str; 8] = [
    "name",
    "slug",
    "amount",
    "currency",
    "trial_days",
    "interval",
    "description",
    "features",
];

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
    let text_fields = vec![
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
    ];
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
    operation_id: String,
    #[serde(flatten)]
    draft: PlanDraft,
}

async fn audit_admin(
    state: &AppState,
    req: &HttpRequest,
    admin: &User,
    kind: Kind,
    plan: &str,
) -> Result<(), AppError> {
    let event = SecurityEvent::new(kind)
        .actor(format!("admin:{}", admin.id))
        .ip(client_ip::of(req))
        .details(serde_json::json!({ "plan": plan }));
    audit::record(&state.db, event)
        .await
        .map_err(AppError::from)
}

async fn plan_failure(
    state: &AppState,
    req: &HttpRequest,
    admin: &User,
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
        PlanError::Billing(err) => Err(billing_failure(state, req, admin.id, err).await),
    }
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    form: CsrfForm<PlanSubmission>,
) -> Result<HttpResponse, AppError> {
    let PlanSubmission {
        operation_id,
        draft,
    } = form.0;
    if !billing::valid_operation_id(&operation_id) {
        return Err(AppError::BadRequest(
            "The form was incomplete. Reload the page and try again.",
        ));
    }
    let input = match draft.validate() {
        Ok(input) => input,
        Err(errors) => {
            let page = form_page(&session, &admin.0, None, draft, errors, Some(operation_id))?;
            return render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    match plans::create(
        &state.db,
        &state.gateway,
        Some(admin.0.id),
        &operation_id,
        input,
    )
    .await
    {
        Ok(plan) => {
            state.active_plans.invalidate();
            audit_admin(&state, &req, &admin.0, Kind::PlanCreated, &plan.slug).await?;
            session.flash(
                FlashKind::Success,
                format!("Plan “{}” is live on the pricing page.", plan.name),
            )?;
            Ok(see_other("/admin/plans"))
        }
        Err(err) => {
            let errors = plan_failure(&state, &req, &admin.0, err).await?;
            let page = form_page(&session, &admin.0, None, draft, errors, Some(operation_id))?;
            render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

pub async fn edit_form(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    render(&form_page(
        &session,
        &admin.0,
        Some(plan.id),
        PlanDraft::from_plan(&plan),
        PlanErrors::new(),
        None,
    )?)
}

pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
    form: CsrfForm<PlanSubmission>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    let PlanSubmission {
        operation_id,
        draft,
    } = form.0;
    if !billing::valid_operation_id(&operation_id) {
        return Err(AppError::BadRequest(
            "The form was incomplete. Reload the page and try again.",
        ));
    }
    let input = match draft.validate() {
        Ok(input) => input,
        Err(errors) => {
            let page = form_page(
                &session,
                &admin.0,
                Some(plan.id),
                draft,
                errors,
                Some(operation_id),
            )?;
            return render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    // The flash names the plan as it is now called.
    let name = input.name.clone();
    match plans::update(
        &state.db,
        &state.gateway,
        admin.0.id,
        &operation_id,
        &plan,
        input,
    )
    .await
    {
        Ok(()) => {
            state.active_plans.invalidate();
            audit_admin(&state, &req, &admin.0, Kind::PlanUpdated, &plan.slug).await?;
            session.flash(FlashKind::Success, format!("Plan “{name}” is updated."))?;
            Ok(see_other("/admin/plans"))
        }
        Err(err) => {
            let errors = plan_failure(&state, &req, &admin.0, err).await?;
            let page = form_page(
                &session,
                &admin.0,
                Some(plan.id),
                draft,
                errors,
                Some(operation_id),
            )?;
            render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    operation_id: String,
}

/// `GET /admin/plans/{id}/archive`: what archiving means, before it happens.
pub async fn confirm_archive(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
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
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
    form: CsrfForm<OperationForm>,
) -> Result<HttpResponse, AppError> {
    let plan = plans::find(&state.db, *id)
        .await?
        .ok_or(AppError::NotFound)?;
    if !billing::valid_operation_id(&form.operation_id) {
        return Err(AppError::BadRequest(
            "The form was incomplete. Reload the page and try again.",
        ));
    }
    if let Err(err) = plans::archive(
        &state.db,
        &state.gateway,
        admin.0.id,
        &form.operation_id,
        &plan,
    )
    .await
    {
        let errors = plan_failure(&state, &req, &admin.0, err).await?;
        tracing::warn!(?errors, "archiving a plan failed");
        session.flash(
            FlashKind::Error,
            "Stripe did not accept the change; the plan is unchanged.",
        )?;
        return Ok(see_other("/admin/plans"));
    }
    state.active_plans.invalidate();
    audit_admin(&state, &req, &admin.0, Kind::PlanArchived, &plan.slug).await?;
    session.flash(
        FlashKind::Info,
        format!(
            "Plan “{}” is archived: existing subscribers keep it.",
            plan.name
        ),
    )?;
    Ok(see_other("/admin/plans"))
}

struct CustomerView {
    email: String,
    created: String,
    plan: String,
    status: String,
    stripe_customer: String,
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

const CUSTOMER_PAGE: i64 = 100;

pub async fn customers(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, AppError> {
    use diesel::prelude::*;
    let q = query.q.clone().unwrap_or_default().trim().to_lowercase();
    let pattern = format!("%{}%", q.replace(['\\', '%', '_'], ""));
    type Row = (
        String,
        chrono::NaiveDateTime,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = state
        .db
        .run(move |conn| {
            let found: Vec<(i64, String, chrono::NaiveDateTime, Option<String>)> = users::table
                .left_join(billing_customers::table)
                .filter(users::email.like(&pattern))
                .order(users::created_at.desc())
                .limit(CUSTOMER_PAGE)
                .select((
                    users::id,
                    users::email,
                    users::created_at,
                    billing_customers::stripe_customer_masked.nullable(),
                ))
                .load(conn)?;
            found
                .into_iter()
                .map(|(id, email, created, masked)| {
                    let sub = crate::db::models::subscription::current_for_user(conn, id)?;
                    let plan = match sub.as_ref().and_then(|s| s.plan_id) {
                        Some(plan_id) => plans_table::table
                            .find(plan_id)
                            .select(plans_table::name)
                            .first::<String>(conn)
                            .optional()?,
                        None => None,
                    };
                    Ok((
                        email,
                        created,
                        plan,
                        sub.map(|s| s.status.to_string()),
                        masked,
                    ))
                })
                .collect::<Result<Vec<Row>, crate::db::DbError>>()
        })
        .await?;
    let customers = rows
        .into_iter()
        .map(|(email, created, plan, status, masked)| CustomerView {
            email,
            created: datetime_seconds(&created),
            plan: plan.unwrap_or_else(|| "—".into()),
            status: status.unwrap_or_else(|| "none".into()),
            stripe_customer: masked.unwrap_or_else(|| "—".into()),
        })
        .collect();
    render(&CustomersPage {
        ctx: PageContext::new(&session, Some(&admin.0))?,
        query: q,
        customers,
    })
}
