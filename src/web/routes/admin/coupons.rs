//! `/admin/coupons` and `/admin/promotion-codes`: coupons (percent or amount off, for once, some
//! months or forever) and the codes customers type at Checkout. Support sees the list; admins
//! create coupons and codes (at Stripe, then here) and deactivate codes.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts::User;
use crate::audit::Actor;
use crate::billing::promotions::{
    self, CodeDraft, CouponDraft, CouponView, PromotionError, PromotionErrors,
};
use crate::billing::{self, BillingError, GatewayError};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::{CsrfForm, SubmittedOperation};
use crate::web::forms::FormErrors;
use crate::web::pages::{PageContext, datetime, render, render_with_status, see_other};
use crate::web::routes::billing::billing_failure;
use crate::web::session::{AdminUser, FlashKind, TypedSession};

const LIST: &str = "/admin/coupons";
const COUPON_FIELDS: [&str; 8] = [
    "name",
    "percent_off",
    "amount_off",
    "currency",
    "duration",
    "duration_in_months",
    "redeem_by",
    "max_redemptions",
];
const CODE_FIELDS: [&str; 4] = ["coupon_id", "code", "expires_at", "max_redemptions"];

struct CodeRow {
    id: i64,
    code: String,
    active: bool,
    expires: Option<String>,
    max_redemptions: Option<i64>,
}

struct CouponRowView {
    name: String,
    stripe_id: String,
    off: String,
    duration: String,
    redeem_by: Option<String>,
    max_redemptions: Option<i64>,
    codes: Vec<CodeRow>,
}

impl From<CouponView> for CouponRowView {
    fn from(view: CouponView) -> Self {
        Self {
            name: view.coupon.name,
            stripe_id: view.coupon.stripe_coupon_id,
            off: view.off,
            duration: view.duration,
            redeem_by: view.coupon.redeem_by.as_ref().map(datetime),
            max_redemptions: view.coupon.max_redemptions,
            codes: view
                .codes
                .into_iter()
                .map(|c| CodeRow {
                    id: c.id,
                    code: c.code,
                    active: c.active,
                    expires: c.expires_at.as_ref().map(datetime),
                    max_redemptions: c.max_redemptions,
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/coupons.html")]
struct ListPage {
    ctx: PageContext,
    coupons: Vec<CouponRowView>,
    operation_id: String,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let coupons = promotions::list(&state.db).await?;
    render(&ListPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        coupons: coupons.into_iter().map(CouponRowView::from).collect(),
        operation_id: billing::new_operation_id().map_err(AppError::internal)?,
    })
}

#[derive(Template)]
#[template(path = "admin/coupon_form.html")]
struct CouponFormPage {
    ctx: PageContext,
    draft: CouponDraft,
    errors: FormErrors,
    operation_id: String,
}

fn operation_or_new(operation_id: Option<String>) -> Result<String, AppError> {
    match operation_id {
        Some(id) => Ok(id),
        None => billing::new_operation_id().map_err(AppError::internal),
    }
}

fn coupon_form(
    session: &TypedSession,
    admin: &User,
    draft: CouponDraft,
    errors: PromotionErrors,
    operation_id: Option<String>,
) -> Result<CouponFormPage, AppError> {
    Ok(CouponFormPage {
        ctx: PageContext::with_form(session, Some(admin))?,
        draft,
        errors: FormErrors::from_map(errors, &COUPON_FIELDS),
        operation_id: operation_or_new(operation_id)?,
    })
}

pub async fn new_coupon(session: TypedSession, admin: AdminUser) -> Result<HttpResponse, AppError> {
    let draft = CouponDraft {
        duration: "once".into(),
        currency: "usd".into(),
        ..CouponDraft::default()
    };
    render(&coupon_form(
        &session,
        &admin.0,
        draft,
        PromotionErrors::new(),
        None,
    )?)
}

/// Every field defaults, so a malformed submission gets its messages from the handler.
#[derive(Deserialize)]
pub struct CouponSubmission {
    #[serde(default)]
    operation_id: SubmittedOperation,
    #[serde(flatten)]
    draft: CouponDraft,
}

/// The form's message for a change Stripe or the domain refused; other billing failures
/// (Stripe down, throttled, an operation id of another account) are the request's error.
async fn refusal(
    state: &AppState,
    req: &HttpRequest,
    actor: &Actor,
    err: PromotionError,
) -> Result<PromotionErrors, AppError> {
    let (field, message) = match err {
        PromotionError::UnknownCoupon => ("coupon_id", "Choose a coupon."),
        PromotionError::CodeTaken => ("code", "Another promotion code already uses this code."),
        PromotionError::Billing(BillingError::Gateway(GatewayError::Refused {
            message, ..
        })) => {
            tracing::warn!(%message, "Stripe refused a promotion");
            (
                "form",
                "Stripe refused this. Check the values and try again.",
            )
        }
        PromotionError::Billing(err) => return Err(billing_failure(state, req, actor, err).await),
    };
    Ok(PromotionErrors::from([(field, message.to_owned())]))
}

pub async fn create_coupon(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    form: CsrfForm<CouponSubmission>,
) -> Result<HttpResponse, AppError> {
    let CouponSubmission {
        operation_id,
        draft,
    } = form.0;
    let operation = operation_id.parse()?;
    let refused = |draft, errors| {
        let page = coupon_form(
            &session,
            &admin.0,
            draft,
            errors,
            Some(operation.as_str().to_owned()),
        )?;
        render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    let input = match draft.validate() {
        Ok(input) => input,
        Err(errors) => return refused(draft, errors),
    };
    match promotions::create_coupon(&state.db, &state.gateway, &actor, &operation, input).await {
        Ok(coupon) => {
            session.flash(
                FlashKind::Success,
                format!(
                    "Coupon “{}” is created. Add a code customers can type.",
                    coupon.name
                ),
            )?;
            Ok(see_other(LIST))
        }
        Err(err) => refused(draft, refusal(&state, &req, &actor, err).await?),
    }
}

struct CouponChoice {
    id: i64,
    label: String,
}

#[derive(Template)]
#[template(path = "admin/promotion_code_form.html")]
struct CodeFormPage {
    ctx: PageContext,
    draft: CodeDraft,
    coupons: Vec<CouponChoice>,
    errors: FormErrors,
    operation_id: String,
}

async fn code_form(
    state: &AppState,
    session: &TypedSession,
    admin: &User,
    draft: CodeDraft,
    errors: PromotionErrors,
    operation_id: Option<String>,
) -> Result<CodeFormPage, AppError> {
    let coupons = promotions::list(&state.db)
        .await?
        .into_iter()
        .map(|view| CouponChoice {
            id: view.coupon.id,
            label: format!("{} ({}, {})", view.coupon.name, view.off, view.duration),
        })
        .collect();
    Ok(CodeFormPage {
        ctx: PageContext::with_form(session, Some(admin))?,
        draft,
        coupons,
        errors: FormErrors::from_map(errors, &CODE_FIELDS),
        operation_id: operation_or_new(operation_id)?,
    })
}

#[derive(Deserialize)]
pub struct NewCodeQuery {
    #[serde(default)]
    coupon: Option<i64>,
}

pub async fn new_code(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    query: web::Query<NewCodeQuery>,
) -> Result<HttpResponse, AppError> {
    let draft = CodeDraft {
        coupon_id: query.coupon.map(|id| id.to_string()).unwrap_or_default(),
        ..CodeDraft::default()
    };
    let page = code_form(
        &state,
        &session,
        &admin.0,
        draft,
        PromotionErrors::new(),
        None,
    )
    .await?;
    render(&page)
}

#[derive(Deserialize)]
pub struct CodeSubmission {
    #[serde(default)]
    operation_id: SubmittedOperation,
    #[serde(flatten)]
    draft: CodeDraft,
}

pub async fn create_code(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (admin, actor): (AdminUser, Actor),
    form: CsrfForm<CodeSubmission>,
) -> Result<HttpResponse, AppError> {
    let CodeSubmission {
        operation_id,
        draft,
    } = form.0;
    let operation = operation_id.parse()?;
    let op = Some(operation.as_str().to_owned());
    let errors = match draft.validate() {
        Ok(input) => {
            let created =
                promotions::create_code(&state.db, &state.gateway, &actor, &operation, input).await;
            match created {
                Ok(code) => {
                    let message = format!(
                        "Code {} is live: customers can type it at Checkout.",
                        code.code
                    );
                    session.flash(FlashKind::Success, message)?;
                    return Ok(see_other(LIST));
                }
                Err(err) => refusal(&state, &req, &actor, err).await?,
            }
        }
        Err(errors) => errors,
    };
    let page = code_form(&state, &session, &admin.0, draft, errors, op).await?;
    render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

#[derive(Deserialize)]
pub struct DeactivateForm {
    #[serde(default)]
    operation_id: SubmittedOperation,
    #[serde(default)]
    code_id: String,
}

pub async fn deactivate_code(
    req: HttpRequest,
    (state, session): (web::Data<AppState>, TypedSession),
    (_admin, actor): (AdminUser, Actor),
    form: CsrfForm<DeactivateForm>,
) -> Result<HttpResponse, AppError> {
    let DeactivateForm {
        operation_id,
        code_id,
    } = form.0;
    let operation = operation_id.parse()?;
    let id: i64 = code_id.trim().parse().map_err(|_| AppError::NotFound)?;
    let code = promotions::find_code(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    if !code.active {
        session.flash(
            FlashKind::Info,
            format!("Code {} is already inactive.", code.code),
        )?;
        return Ok(see_other(LIST));
    }
    match promotions::deactivate_code(&state.db, &state.gateway, &actor, &operation, &code).await {
        Ok(()) => session.flash(
            FlashKind::Info,
            format!(
                "Code {} is deactivated: Checkout refuses it from now on.",
                code.code
            ),
        )?,
        Err(err) => {
            let errors = refusal(&state, &req, &actor, err).await?;
            tracing::warn!(?errors, "deactivating a promotion code failed");
            session.flash(
                FlashKind::Error,
                "Stripe did not accept the change; the code is unchanged.",
            )?;
        }
    }
    Ok(see_other(LIST))
}
