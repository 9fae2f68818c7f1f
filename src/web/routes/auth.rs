//! Sign-up, sign-in and sign-out.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::accounts::{
    self, Email, NewPassword, PasswordPolicyError, SignIn, SignInGuards, SignUpError,
};
use crate::audit::{self, Actor, Kind, Principal};
use crate::error::AppError;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::forms::FormErrors;
use crate::web::middleware::form_budget::Submission;
use crate::web::pages::{PageContext, render, render_with_status, see_other};
use crate::web::routes::billing::{ChosenPlan, chosen_plan};
use crate::web::routes::two_factor;
use crate::web::session::{FlashKind, MaybeUser, TypedSession};
use crate::web::{AppState, client_ip};

/// Where sign-out lands: the home page, saying so.
pub const SIGNED_OUT: &str = "/?signed_out";

/// The one message a failed sign-in ever gets.
pub const INVALID_CREDENTIALS: &str = "Invalid email or password.";

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
        (_, Some(plan)) if !user.role.is_console() => plan.checkout_path(),
        (Some(path), _) => path.to_owned(),
        (None, _) if user.role.is_console() => "/admin".to_owned(),
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

    /// What a form refused before any work (over its budget) carries on unchecked, so the
    /// choice survives the wait: only a slug-shaped plan and a real interval. The next
    /// submission checks it against the plans on offer.
    fn shaped(&self) -> Option<PlanCarry> {
        let slug = self.plan.as_deref()?;
        let interval = match self.interval.as_deref() {
            Some("year") => "year",
            _ => "month",
        };
        let shaped = !slug.is_empty()
            && slug.len() <= 40
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        shaped.then(|| PlanCarry {
            slug: slug.to_owned(),
            interval,
        })
    }
}

/// The hidden `plan` and `interval` fields a sign-up or sign-in form carries.
pub struct PlanCarry {
    slug: String,
    interval: &'static str,
}

impl From<&ChosenPlan> for PlanCarry {
    fn from(plan: &ChosenPlan) -> Self {
        Self {
            slug: plan.slug.clone(),
            interval: plan.interval,
        }
    }
}

/// A checked plan choice as the sign-up and sign-in pages show it: named (when checked) and
/// carried in hidden fields.
#[derive(Default)]
struct PlanShown {
    plan: Option<ChosenPlan>,
    carry: Option<PlanCarry>,
}

impl PlanShown {
    fn checked(plan: Option<ChosenPlan>) -> Self {
        let carry = plan.as_ref().map(PlanCarry::from);
        Self { plan, carry }
    }

    fn unchecked(choice: &PlanChoice) -> Self {
        Self {
            plan: None,
            carry: choice.shaped(),
        }
    }

    /// `?plan=…&interval=…` for the link to the other form.
    fn query(&self) -> String {
        self.carry
            .as_ref()
            .map(|c| format!("?plan={}&interval={}", c.slug, c.interval))
            .unwrap_or_default()
    }
}

/// What the sign-up form shows again when it is refused: everything but the passwords.
#[derive(Deserialize, Default)]
pub struct SignupShown {
    #[serde(default)]
    email: String,
    #[serde(flatten)]
    choice: PlanChoice,
}

#[derive(Template)]
#[template(path = "auth/signup.html")]
struct SignupPage {
    ctx: PageContext,
    shown: SignupShown,
    errors: FormErrors,
    /// The plan chosen on the pricing page, carried on to its checkout confirmation.
    chosen: PlanShown,
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
        shown: SignupShown::default(),
        errors: FormErrors::new(),
        chosen: PlanShown::checked(plan),
    })
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(flatten)]
    shown: SignupShown,
    password: SecretString,
    password_confirm: SecretString,
}

/// The sign-up form's messages for what was typed: the account it would make, or what to fix.
fn parse_signup(form: SignupForm) -> Result<(Email, NewPassword, SignupShown), SignupRefusal> {
    let mut errors = FormErrors::new();
    let email = Email::parse(&form.shown.email)
        .map_err(|_| errors.field("email", email_message(&form.shown.email)))
        .ok();
    let confirmed = form.password.expose_secret() == form.password_confirm.expose_secret();
    let password = if form.password.expose_secret().is_empty() {
        errors.field("password", "Enter a password.");
        None
    } else {
        NewPassword::parse(form.password)
            .map_err(|err| errors.field("password", password_message(&err)))
            .ok()
    };
    if !confirmed {
        errors.field(
            "password_confirm",
            "The passwords do not match. Type the same password in both fields.",
        );
    }
    match (email, password, errors.is_empty()) {
        (Some(email), Some(password), true) => Ok((email, password, form.shown)),
        _ => Err(SignupRefusal {
            shown: form.shown,
            errors,
        }),
    }
}

struct SignupRefusal {
    shown: SignupShown,
    errors: FormErrors,
}

impl SignupRefusal {
    /// A refusal with one message about the whole form.
    fn form(shown: SignupShown, message: impl Into<String>) -> Self {
        let mut errors = FormErrors::new();
        errors.form(message);
        Self { shown, errors }
    }
}

/// What a taken email gets: the same as any refusal that must not say whether it exists.
const EMAIL_TAKEN: &str =
    "We could not create an account with these details. If you already have one, sign in instead.";

/// Specific, sentence-case messages for the email field.
fn email_message(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        "Enter your email address.".into()
    } else if raw.len() > accounts::email::MAX_LEN {
        format!(
            "Email addresses are at most {} characters. Enter a shorter one.",
            accounts::email::MAX_LEN
        )
    } else {
        "Enter an email address in the form name@example.com.".into()
    }
}

fn password_message(err: &PasswordPolicyError) -> String {
    use accounts::password::{MAX_LEN, MIN_LEN};
    match err {
        PasswordPolicyError::TooShort => {
            format!("Your password must be at least {MIN_LEN} characters long.")
        }
        PasswordPolicyError::TooLong => {
            format!("Your password must be at most {MAX_LEN} characters long.")
        }
    }
}

pub async fn signup(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    form: Submission<SignupForm, SignupShown>,
) -> Result<HttpResponse, AppError> {
    let form = match form {
        Submission::Accepted(form) => form,
        Submission::OverBudget {
            shown,
            retry_after_secs,
        } => {
            let chosen = PlanShown::unchecked(&shown.choice);
            let refusal = SignupRefusal::form(shown, too_many_attempts(retry_after_secs));
            return signup_refused(&session, refusal, chosen, StatusCode::TOO_MANY_REQUESTS);
        }
    };
    let plan = form.shown.choice.check(&state).await?;
    match create_account(&state, &visitor(&req), form).await? {
        Ok(user) => {
            session.log_in(&user)?;
            let welcome = "Welcome to Tollgate. Your account is ready.";
            session.flash(FlashKind::Success, welcome)?;
            Ok(see_other(&landing(None, plan.as_ref(), &user)))
        }
        Err(refusal) => {
            let chosen = PlanShown::checked(plan);
            signup_refused(&session, refusal, chosen, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

/// The account a sign-up form asks for (created and audited by the domain), or what to fix.
async fn create_account(
    state: &AppState,
    actor: &Actor,
    form: SignupForm,
) -> Result<Result<accounts::User, SignupRefusal>, AppError> {
    let (email, password, shown) = match parse_signup(form) {
        Ok(parsed) => parsed,
        Err(refusal) => return Ok(Err(refusal)),
    };
    match accounts::sign_up(&state.db, &state.password_work, actor, email, password).await {
        Ok(user) => Ok(Ok(user)),
        Err(SignUpError::EmailTaken) => Ok(Err(SignupRefusal::form(shown, EMAIL_TAKEN))),
        Err(SignUpError::Work(err)) => Err(err.into()),
        Err(other) => Err(AppError::internal(other)),
    }
}

/// Who submits a sign-up or sign-in form: nobody yet, from the client's address. (Not the
/// `Actor` extractor: a submission refused over its budget must cost no session lookup.)
fn visitor(req: &HttpRequest) -> Actor {
    Actor::new(Principal::Anonymous, Some(client_ip::of(req)))
        .in_request(crate::web::request_id::of(req))
}

/// The sign-up form again, with what was typed (never the passwords) and what to fix.
fn signup_refused(
    session: &TypedSession,
    refusal: SignupRefusal,
    chosen: PlanShown,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(session, None)?;
    let SignupRefusal { shown, errors } = refusal;
    render_with_status(
        status,
        &SignupPage {
            ctx,
            shown,
            errors,
            chosen,
        },
    )
}

/// What the sign-in form shows again when it is refused: everything but the password.
#[derive(Deserialize, Default)]
pub struct LoginShown {
    #[serde(default)]
    email: String,
    /// Only ever a local path (see [`LoginShown::local`]).
    #[serde(default)]
    next: String,
    #[serde(flatten)]
    choice: PlanChoice,
}

impl LoginShown {
    /// Drops a `next` that is not a path on this site.
    fn local(self) -> Self {
        let next = local_path(Some(&self.next)).unwrap_or("").to_owned();
        Self { next, ..self }
    }
}

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    ctx: PageContext,
    shown: LoginShown,
    errors: FormErrors,
    /// The plan chosen on the pricing page, carried on to its checkout confirmation.
    chosen: PlanShown,
}

pub async fn login_form(
    state: web::Data<AppState>,
    session: TypedSession,
    user: MaybeUser,
    query: web::Query<LoginShown>,
) -> Result<HttpResponse, AppError> {
    // The email, if any, is not taken from a link.
    let shown = LoginShown {
        email: String::new(),
        ..query.into_inner()
    }
    .local();
    let plan = shown.choice.check(&state).await?;
    if let Some(user) = &user.0 {
        return Ok(see_other(&landing(Some(&shown.next), plan.as_ref(), user)));
    }
    let ctx = PageContext::with_form(&session, None)?;
    render(&LoginPage {
        ctx,
        shown,
        errors: FormErrors::new(),
        chosen: PlanShown::checked(plan),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(flatten)]
    shown: LoginShown,
    password: SecretString,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: TypedSession,
    form: Submission<LoginForm, LoginShown>,
) -> Result<HttpResponse, AppError> {
    let LoginForm { shown, password } = match form {
        Submission::Accepted(form) => form,
        Submission::OverBudget {
            shown,
            retry_after_secs,
        } => {
            let chosen = PlanShown::unchecked(&shown.choice);
            return login_refused(&session, shown.local(), chosen, Some(retry_after_secs));
        }
    };
    let shown = shown.local();
    let plan = shown.choice.check(&state).await?;
    let guards = SignInGuards {
        failures: &state.login_failures,
        work: &state.password_work,
    };
    let actor = visitor(&req);
    let (kind, account, retry_after) =
        match accounts::authenticate(&state.db, guards, &actor, &shown.email, password).await? {
            SignIn::Succeeded(user) => {
                let landing = landing(Some(&shown.next), plan.as_ref(), &user);
                // An account with two-factor sign-in is only half signed in until its code.
                if two_factor::is_due(&state, &user).await? {
                    session.begin_second_factor(&user, &landing)?;
                    return Ok(see_other(two_factor::SIGN_IN_STEP));
                }
                session.log_in(&user)?;
                return Ok(see_other(&landing));
            }
            SignIn::Failed { account } => (Kind::LoginFailed, account, None),
            SignIn::Locked { account, locked } => {
                (Kind::LoginLocked, account, Some(locked.retry_after_secs))
            }
        };
    audit_refused_login(&state, &actor, &shown.email, kind, account).await?;
    login_refused(&session, shown, PlanShown::checked(plan), retry_after)
}

/// A refused sign-in, counted on the row of the account the email names (or of nobody, for an
/// email without one).
async fn audit_refused_login(
    state: &AppState,
    actor: &Actor,
    email: &str,
    kind: Kind,
    account: Option<Principal>,
) -> Result<(), AppError> {
    let event = actor
        .acting_as(account.unwrap_or(Principal::Anonymous))
        .event(kind)
        .details(serde_json::json!({ "email": crate::secret::mask_email(email.trim()) }))
        .aggregate(state.config.audit.aggregate_window, "");
    audit::record(&state.db, event).await?;
    Ok(())
}

/// The sign-in form again: the one message every failed attempt gets, or, when attempts are
/// locked out, how long to wait (with `Retry-After`).
fn login_refused(
    session: &TypedSession,
    shown: LoginShown,
    chosen: PlanShown,
    retry_after: Option<u64>,
) -> Result<HttpResponse, AppError> {
    let mut errors = FormErrors::new();
    let status = match retry_after {
        Some(secs) => {
            errors.form(too_many_attempts(secs));
            StatusCode::TOO_MANY_REQUESTS
        }
        None => {
            errors.field("email", INVALID_CREDENTIALS);
            StatusCode::UNAUTHORIZED
        }
    };
    let ctx = PageContext::with_form(session, None)?;
    let page = LoginPage {
        ctx,
        shown,
        errors,
        chosen,
    };
    let mut res = render_with_status(status, &page)?;
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(res)
}

/// What a refused form says when its budget (or the account's) is spent.
pub fn too_many_attempts(secs: u64) -> String {
    let unit = if secs == 1 { "second" } else { "seconds" };
    format!("Too many attempts. Please wait {secs} {unit} and try again.")
}

pub async fn logout(
    state: web::Data<AppState>,
    session: TypedSession,
    actor: Actor,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    if actor.account().is_some() {
        audit::record(&state.db, actor.event(Kind::Logout)).await?;
    }
    session.log_out();
    Ok(see_other(SIGNED_OUT))
}

/// The sign-in form and its second step, relative to `/login` (its budget wraps both:
/// `routes::configure`).
pub fn sign_in(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("")
            .route(web::get().to(login_form))
            .route(web::post().to(login)),
    )
    .service(
        web::resource("/2fa")
            .route(web::get().to(two_factor::code_form))
            .route(web::post().to(two_factor::submit_code)),
    );
}

/// The sign-up form, relative to `/signup`.
pub fn sign_up(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("")
            .route(web::get().to(signup_form))
            .route(web::post().to(signup)),
    );
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
