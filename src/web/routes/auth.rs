//! Sign-up, sign-in and sign-out.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::accounts::{self, Email, NewPassword, SignIn, SignInError, SignInGuards, SignUpError};
use crate::audit::{self, Kind, SecurityEvent};
use crate::error::AppError;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::pages::{PageContext, render, render_with_status};
use crate::web::routes::billing::{ChosenPlan, chosen_plan};
use crate::web::session::{FlashKind, MaybeUser, TypedSession};
use crate::web::{AppState, client_ip};

/// Where sign-out lands: the home page, saying so.
pub const SIGNED_OUT: &str = "/?signed_out";

/// The one message a failed sign-in ever gets.
pub const INVALID_CREDENTIALS: &str = "invalid email or password";

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, location))
        .finish()
}

/// `next` when it is a path on this site, and nothing else.
fn local_path(next: Option<&str>) -> Option<&str> {
    next.filter(|path| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path.contains('\\')
            && !path.chars().any(char::is_control)
    })
}

/// Follows `next` only when it is a path on this site; anything else goes to the account page.
pub fn safe_next(next: Option<&str>) -> &str {
    local_path(next).unwrap_or("/account")
}

/// Where a sign-in lands: the confirmation page of a plan a customer chose on the way in, else
/// the page that asked for it, else the console for an admin and the account page for everyone
/// else. Admins are not customers: a carried plan does not move them.
fn landing(next: Option<&str>, plan: Option<&ChosenPlan>, user: &accounts::User) -> String {
    match (local_path(next), plan) {
        (_, Some(plan)) if !user.is_admin() => plan.checkout_path(),
        (Some(path), _) => path.to_owned(),
        (None, _) if user.is_admin() => "/admin".to_owned(),
        (None, _) => "/account".to_owned(),
    }
}

/// The plan a sign-up or sign-in page carries (unchecked, from the link or the form).
#[derive(Deserialize, Default)]
pub struct PlanChoice {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    interval: Option<String>,
}

impl PlanChoice {
    async fn check(&self, state: &AppState) -> Result<Option<ChosenPlan>, AppError> {
        chosen_plan(state, self.plan.as_deref(), self.interval.as_deref()).await
    }
}

#[derive(Default)]
struct SignupErrors {
    email: Option<String>,
    password: Option<String>,
    confirm: Option<String>,
    form: Option<&'static str>,
}

impl SignupErrors {
    fn any(&self) -> bool {
        self.email.is_some()
            || self.password.is_some()
            || self.confirm.is_some()
            || self.form.is_some()
    }
}

#[derive(Template)]
#[template(path = "auth/signup.html")]
struct SignupPage {
    ctx: PageContext,
    email: String,
    errors: SignupErrors,
    /// The plan chosen on the pricing page, carried on to its checkout confirmation.
    plan: Option<ChosenPlan>,
}

pub async fn signup_form(
    state: web::Data<AppState>,
    session: TypedSession,
    user: MaybeUser,
    query: web::Query<PlanChoice>,
) -> Result<HttpResponse, AppError> {
    let plan = query.check(&state).await?;
    if let Some(user) = &user.0 {
        return Ok(see_other(&landing(None, plan.as_ref(), user)));
    }
    let ctx = PageContext::with_form(&session, None)?;
    render(&SignupPage {
        ctx,
        email: String::new(),
        errors: SignupErrors::default(),
        plan,
    })
}

#[derive(Deserialize)]
pub struct SignupForm {
    email: String,
    password: SecretString,
    password_confirm: SecretString,
    #[serde(flatten)]
    plan: PlanChoice,
}

pub async fn signup(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    form: CsrfForm<SignupForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.0;
    let plan = form.plan.check(&state).await?;
    let mut errors = SignupErrors::default();
    let email = Email::parse(&form.email)
        .map_err(|e| errors.email = Some(e.to_string()))
        .ok();
    if form.password.expose_secret() != form.password_confirm.expose_secret() {
        errors.confirm = Some("the passwords do not match".into());
    }
    let password = NewPassword::parse(form.password)
        .map_err(|e| errors.password = Some(e.to_string()))
        .ok();
    let (Some(email), Some(password), false) = (email, password, errors.any()) else {
        return signup_failed(&session, form.email, errors, plan);
    };
    let user = match accounts::sign_up(&state.db, &state.password_work, email, password).await {
        Ok(user) => user,
        Err(SignUpError::EmailTaken) => {
            errors.form = Some(
                "We could not create an account with these details. If you already have one, sign in instead.",
            );
            return signup_failed(&session, form.email, errors, plan);
        }
        Err(SignUpError::Work(accounts::WorkError::Busy)) => return Err(AppError::Unavailable),
        Err(other) => return Err(AppError::internal(other)),
    };
    let event = SecurityEvent::new(Kind::Signup)
        .actor(format!("user:{}", user.id))
        .ip(client_ip::of(&req))
        .details(serde_json::json!({ "email": user.masked_email() }));
    audit::record(&state.db, event).await?;
    session.log_in(&user)?;
    session.flash(
        FlashKind::Success,
        "Welcome to Tollgate. Your account is ready.",
    )?;
    Ok(see_other(&landing(None, plan.as_ref(), &user)))
}

fn signup_failed(
    session: &TypedSession,
    email: String,
    errors: SignupErrors,
    plan: Option<ChosenPlan>,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(session, None)?;
    render_with_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &SignupPage {
            ctx,
            email,
            errors,
            plan,
        },
    )
}

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    ctx: PageContext,
    email: String,
    next: String,
    error: Option<&'static str>,
    /// The plan chosen on the pricing page, carried on to its checkout confirmation.
    plan: Option<ChosenPlan>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    #[serde(flatten)]
    plan: PlanChoice,
}

pub async fn login_form(
    state: web::Data<AppState>,
    session: TypedSession,
    user: MaybeUser,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, AppError> {
    let plan = query.plan.check(&state).await?;
    if let Some(user) = &user.0 {
        return Ok(see_other(&landing(
            query.next.as_deref(),
            plan.as_ref(),
            user,
        )));
    }
    // Empty when no page asked: the landing then depends on who signs in.
    let next = local_path(query.next.as_deref()).unwrap_or("").to_owned();
    let ctx = PageContext::with_form(&session, None)?;
    render(&LoginPage {
        ctx,
        email: String::new(),
        next,
        error: None,
        plan,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: SecretString,
    next: Option<String>,
    #[serde(flatten)]
    plan: PlanChoice,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    form: CsrfForm<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let LoginForm {
        email,
        password,
        next,
        plan,
    } = form.0;
    let next = local_path(next.as_deref()).unwrap_or("").to_owned();
    let plan = plan.check(&state).await?;
    let ip = client_ip::of(&req);
    let guards = SignInGuards {
        failures: &state.login_failures,
        work: &state.password_work,
    };
    let outcome = match accounts::authenticate(&state.db, guards, &email, password).await {
        Ok(outcome) => outcome,
        Err(SignInError::Work(accounts::WorkError::Busy)) => return Err(AppError::Unavailable),
        Err(other) => return Err(AppError::internal(other)),
    };
    let (kind, account, status, retry_after) = match outcome {
        SignIn::Succeeded(user) => {
            let event = SecurityEvent::new(Kind::LoginSucceeded)
                .actor(format!("user:{}", user.id))
                .ip(ip);
            audit::record(&state.db, event).await?;
            session.log_in(&user)?;
            return Ok(see_other(&landing(Some(&next), plan.as_ref(), &user)));
        }
        SignIn::Failed { account } => (Kind::LoginFailed, account, StatusCode::UNAUTHORIZED, None),
        SignIn::Locked { account, locked } => (
            Kind::LoginLocked,
            account,
            StatusCode::TOO_MANY_REQUESTS,
            Some(locked.retry_after_secs),
        ),
    };
    let mut event = SecurityEvent::new(kind)
        .ip(ip)
        .details(serde_json::json!({ "email": crate::secret::mask_email(email.trim()) }))
        .aggregate(state.config.audit.aggregate_window, "");
    if let Some(id) = account {
        event = event.actor(format!("user:{id}"));
    }
    audit::record(&state.db, event).await?;
    login_refused(&session, email, next, plan, status, retry_after)
}

/// The sign-in form again, with the one message every refusal gets.
fn login_refused(
    session: &TypedSession,
    email: String,
    next: String,
    plan: Option<ChosenPlan>,
    status: StatusCode,
    retry_after: Option<u64>,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(session, None)?;
    let page = LoginPage {
        ctx,
        email,
        next,
        error: Some(INVALID_CREDENTIALS),
        plan,
    };
    let mut res = render_with_status(status, &page)?;
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(res)
}

pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    if let Some(user_id) = session.user_id()? {
        let event = SecurityEvent::new(Kind::Logout)
            .actor(format!("user:{user_id}"))
            .ip(client_ip::of(&req));
        audit::record(&state.db, event).await?;
    }
    session.log_out();
    Ok(see_other(SIGNED_OUT))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_only_ever_follows_local_paths() {
        assert_eq!(safe_next(Some("/account?tab=keys")), "/account?tab=keys");
        for hostile in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "account",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/account", "{hostile}");
        }
        assert_eq!(safe_next(None), "/account");
    }
}
