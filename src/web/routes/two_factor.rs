//! Two-factor sign-in pages: enrolment at `/account/2fa` (console accounts: the secret and its
//! `otpauth://` URI, confirmed with a first code, then the recovery codes, shown once) and the
//! sign-in's second step at `/login/2fa` (inside the sign-in form's budget). The codes are
//! checked, spent and audited by [`crate::accounts::two_factor`].

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use askama::Template;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::accounts::two_factor::{self as domain, Confirmation, EnrolmentState, SecondFactor};
use crate::accounts::{self, User};
use crate::audit::{self, Actor, Kind};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::CsrfForm;
use crate::web::middleware::form_budget::OverBudget;
use crate::web::pages::{PageContext, render, render_with_status, see_other};
use crate::web::routes::auth::too_many_attempts;
use crate::web::session::TypedSession;

/// The sign-in's second step.
pub const SIGN_IN_STEP: &str = "/login/2fa";
/// Wrong codes per account within the sign-in failure window before the step locks.
pub const FAILURES_PER_ACCOUNT: u32 = 5;

/// Whether `user`'s sign-in needs a second factor (it has enrolled).
pub async fn is_due(state: &AppState, user: &User) -> Result<bool, AppError> {
    let id = user.id;
    Ok(state
        .db
        .run(move |conn| domain::is_enrolled(conn, id))
        .await?)
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: SecretString,
}

/// Enrolment's confirmation: the account's password again (a session cookie alone must not
/// turn two-factor on: whoever enrols holds the account) and the app's first code.
#[derive(Deserialize)]
pub struct EnrolmentForm {
    password: SecretString,
    code: SecretString,
}

#[derive(Template)]
#[template(path = "account/two_factor.html")]
struct EnrolmentPage {
    ctx: PageContext,
    enrolled: bool,
    secret: String,
    otpauth_uri: String,
    error: Option<String>,
    /// Shown once, right after a confirmation.
    recovery_codes: Vec<String>,
}

fn enrolment_page(ctx: PageContext, state: EnrolmentState, error: Option<String>) -> EnrolmentPage {
    let (enrolled, secret, otpauth_uri) = match state {
        EnrolmentState::Enrolled => (true, String::new(), String::new()),
        EnrolmentState::Pending(pending) => (
            false,
            pending.secret_base32.expose_secret().to_owned(),
            pending.otpauth_uri.expose_secret().to_owned(),
        ),
    };
    EnrolmentPage {
        ctx,
        enrolled,
        secret,
        otpauth_uri,
        error,
        recovery_codes: Vec::new(),
    }
}

/// `GET /account/2fa`: the account's enrolment (a new secret if it has none pending).
pub async fn enrolment(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let user = viewer.0;
    let (st, shown, binding) = (state.clone(), user.clone(), session.enrolment_binding()?);
    let enrolment = state
        .db
        .run(move |conn| {
            domain::enrolment_state(conn, &st.keyring, &shown, binding.expose_secret())
        })
        .await
        .map_err(AppError::internal)?;
    let ctx = PageContext::with_form(&session, Some(&user))?;
    render(&enrolment_page(ctx, enrolment, None))
}

/// `POST /account/2fa`: confirms the pending secret with a code; shows the recovery codes once.
pub async fn confirm(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    actor: Actor,
    form: CsrfForm<EnrolmentForm>,
) -> Result<HttpResponse, AppError> {
    let user = viewer.0;
    if let Err(locked) = state.two_factor_failures.charge(user.id).await {
        return locked_out(&state, &actor, &user, locked.retry_after_secs).await;
    }
    let EnrolmentForm { password, code } = form.0;
    let matches = accounts::password_matches(&state.db, &state.password_work, user.id, password)
        .await
        .map_err(AppError::internal)?;
    if !matches {
        let event = actor
            .event(Kind::TwoFactorFailed)
            .details(serde_json::json!({
                "stage": "enrolment",
                "reason": "wrong_password",
                "user_id": user.id,
            }));
        audit::record(&state.db, event).await?;
        return enrolment_again(&state, &session, &user, WRONG_PASSWORD).await;
    }
    let (st, who, by) = (state.clone(), user.clone(), actor.clone());
    let binding = session.enrolment_binding()?;
    let confirmation = state
        .db
        .run(move |conn| {
            domain::confirm_enrolment(
                conn,
                &st.keyring,
                &st.token_hasher,
                &by,
                &who,
                binding.expose_secret(),
                code.expose_secret(),
            )
        })
        .await
        .map_err(AppError::internal)?;
    match confirmation {
        Confirmation::Enrolled(codes) => {
            state.two_factor_failures.forgive(&user.id).await;
            // Enrolment ended every session of the account: this one goes on, under a new id.
            session.log_in(&user)?;
            let ctx = PageContext::with_form(&session, Some(&user))?;
            let mut page = enrolment_page(ctx, EnrolmentState::Enrolled, None);
            page.recovery_codes = codes
                .iter()
                .map(|code| code.expose_secret().to_owned())
                .collect();
            render(&page)
        }
        Confirmation::NothingPending => Ok(see_other("/account/2fa")),
        Confirmation::WrongCode => enrolment_again(&state, &session, &user, WRONG_CODE).await,
    }
}

const WRONG_PASSWORD: &str = "That is not your password. Enter the password you sign in with, \
                              then the code your app shows.";
const WRONG_CODE: &str =
    "That code did not match. Check the clock of your device and enter the code it shows now.";

/// The enrolment page again, with what went wrong (422).
async fn enrolment_again(
    state: &web::Data<AppState>,
    session: &TypedSession,
    user: &User,
    message: &str,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(session, Some(user))?;
    let (st, shown, binding) = (state.clone(), user.clone(), session.enrolment_binding()?);
    let pending = state
        .db
        .run(move |conn| {
            domain::enrolment_state(conn, &st.keyring, &shown, binding.expose_secret())
        })
        .await
        .map_err(AppError::internal)?;
    render_with_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &enrolment_page(ctx, pending, Some(message.to_owned())),
    )
}

#[derive(Template)]
#[template(path = "auth/two_factor.html")]
struct CodePage {
    ctx: PageContext,
    error: Option<String>,
}

fn code_page(
    session: &TypedSession,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(session, None)?;
    render_with_status(status, &CodePage { ctx, error })
}

/// `GET /login/2fa`: the code form, for a sign-in whose password was right.
pub async fn code_form(session: TypedSession) -> Result<HttpResponse, AppError> {
    if session.pending_second_factor().is_none() {
        return Ok(see_other("/login"));
    }
    code_page(&session, StatusCode::OK, None)
}

/// `POST /login/2fa`: a TOTP code or a recovery code finishes the sign-in.
pub async fn submit_code(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    actor: Actor,
    form: CsrfForm<CodeForm>,
) -> Result<HttpResponse, AppError> {
    if let Some(over) = req.extensions().get::<OverBudget>().copied() {
        return code_page_locked(&session, over.retry_after_secs);
    }
    let Some(pending) = session.pending_second_factor() else {
        return Ok(see_other("/login"));
    };
    let user = match accounts::find_user(&state.db, pending.user_id).await? {
        Some(user) if pending.still_matches(&user) => user,
        _ => {
            session.clear_second_factor();
            return Ok(see_other("/login"));
        }
    };
    let actor = actor.acting_as(user.principal());
    if let Err(locked) = state.two_factor_failures.charge(user.id).await {
        let event = actor
            .event(Kind::TwoFactorLocked)
            .details(serde_json::json!({ "user_id": user.id }))
            .aggregate(state.config.audit.aggregate_window, "");
        audit::record(&state.db, event).await?;
        return code_page_locked(&session, locked.retry_after_secs);
    }
    let code = form.0.code;
    let (st, who) = (state.clone(), user.clone());
    let outcome = state
        .db
        .run(move |conn| {
            domain::verify(
                conn,
                &st.keyring,
                &st.token_hasher,
                &actor,
                &who,
                code.expose_secret(),
            )
        })
        .await
        .map_err(AppError::internal)?;
    match outcome {
        SecondFactor::Code | SecondFactor::RecoveryCode => {
            state.two_factor_failures.forgive(&user.id).await;
            session.log_in(&user)?;
            Ok(see_other(&pending.next))
        }
        SecondFactor::Refused => code_page(
            &session,
            StatusCode::UNAUTHORIZED,
            Some("That code is not valid. Enter the current code, or a recovery code.".into()),
        ),
    }
}

fn code_page_locked(session: &TypedSession, secs: u64) -> Result<HttpResponse, AppError> {
    let mut res = code_page(
        session,
        StatusCode::TOO_MANY_REQUESTS,
        Some(too_many_attempts(secs)),
    )?;
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    Ok(res)
}

/// Enrolment refused unchecked: too many wrong codes for the account lately.
async fn locked_out(
    state: &AppState,
    actor: &Actor,
    user: &User,
    secs: u64,
) -> Result<HttpResponse, AppError> {
    let event = actor
        .event(Kind::TwoFactorLocked)
        .details(serde_json::json!({ "user_id": user.id, "stage": "enrolment" }))
        .aggregate(state.config.audit.aggregate_window, "");
    audit::record(&state.db, event).await?;
    Err(AppError::RateLimited { retry_after: secs })
}
