//! Typed access to the session, and the extractors that guard pages: `CurrentUser` (signed
//! in) and `AdminUser` (signed in with the admin role).

use std::future::{Ready, ready};

use actix_session::{Session, SessionExt as _};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use futures_util::FutureExt as _;
use futures_util::future::{LocalBoxFuture, Shared};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, User, UserId};
use crate::audit::{Actor, Principal};
use secrecy::SecretString;

use crate::error::AppError;
use crate::secret::{encode_token, random_bytes};
use crate::web::AppState;
use crate::web::middleware::session_store::{
    CREDENTIAL_KEY, CSRF_KEY, ENROLMENT_BINDING_KEY, PENDING_SECOND_FACTOR_KEY, USER_ID_KEY,
};

const FLASH_KEY: &str = "flash";

/// A one-time message shown on the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Success,
    Info,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Info => "info",
            Self::Error => "error",
        }
    }
}

/// How long a sign-in may wait for its second factor.
pub const SECOND_FACTOR_WINDOW_SECS: i64 = 5 * 60;

/// A sign-in whose password was right, waiting for its second factor (kept server-side, in
/// the session's state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSecondFactor {
    pub user_id: UserId,
    /// The account's credential stamp when the password was checked.
    pub credential: String,
    pub started_at: i64,
    /// Where the sign-in lands once the code is accepted (a local path).
    pub next: String,
}

impl PendingSecondFactor {
    /// Whether `user` still has the credential this sign-in checked.
    pub fn still_matches(&self, user: &User) -> bool {
        use subtle::ConstantTimeEq as _;
        self.user_id == user.id
            && bool::from(self.credential.as_bytes().ct_eq(user.credential.as_bytes()))
    }
}

/// The session, with Tollgate's keys behind typed methods.
pub struct TypedSession(Session);

fn session_error(err: impl std::fmt::Display) -> AppError {
    AppError::internal(format!("session: {err}"))
}

impl TypedSession {
    /// Signs `user` in: a new session id (no fixation), a new CSRF token, and the credential
    /// stamp the sign-in was made with.
    pub fn log_in(&self, user: &User) -> Result<(), AppError> {
        self.0.renew();
        self.0.insert(USER_ID_KEY, user.id).map_err(session_error)?;
        self.0
            .insert(CREDENTIAL_KEY, &user.credential)
            .map_err(session_error)?;
        self.0.remove(CSRF_KEY);
        self.0.remove(PENDING_SECOND_FACTOR_KEY);
        Ok(())
    }

    /// Half signs `user` in: the password was right, the second factor is still to come. A new
    /// session id and CSRF token; nobody is signed in until [`TypedSession::log_in`].
    pub fn begin_second_factor(&self, user: &User, next: &str) -> Result<(), AppError> {
        self.0.renew();
        self.0.remove(USER_ID_KEY);
        self.0.remove(CREDENTIAL_KEY);
        self.0.remove(CSRF_KEY);
        let pending = PendingSecondFactor {
            user_id: user.id,
            credential: user.credential.clone(),
            started_at: chrono::Utc::now().timestamp(),
            next: next.to_owned(),
        };
        self.0
            .insert(PENDING_SECOND_FACTOR_KEY, pending)
            .map_err(session_error)
    }

    /// The sign-in waiting for its second factor, if it is still fresh (a stale one is dropped).
    pub fn pending_second_factor(&self) -> Option<PendingSecondFactor> {
        let pending = self
            .0
            .get::<PendingSecondFactor>(PENDING_SECOND_FACTOR_KEY)
            .ok()
            .flatten()?;
        let age = chrono::Utc::now().timestamp() - pending.started_at;
        if (0..=SECOND_FACTOR_WINDOW_SECS).contains(&age) {
            Some(pending)
        } else {
            self.0.remove(PENDING_SECOND_FACTOR_KEY);
            None
        }
    }

    pub fn clear_second_factor(&self) {
        self.0.remove(PENDING_SECOND_FACTOR_KEY);
    }

    pub fn user_id(&self) -> Result<Option<UserId>, AppError> {
        self.0.get::<UserId>(USER_ID_KEY).map_err(session_error)
    }

    /// Whether the session was signed in with the account's current credential.
    fn credential_matches(&self, user: &User) -> bool {
        self.0
            .get::<String>(CREDENTIAL_KEY)
            .ok()
            .flatten()
            .is_some_and(|stamp| {
                use subtle::ConstantTimeEq as _;
                bool::from(stamp.as_bytes().ct_eq(user.credential.as_bytes()))
            })
    }

    /// Ends the session: the server-side state is deleted and the cookie removed.
    pub fn log_out(&self) {
        self.0.purge();
    }

    /// The session's CSRF token, created on first use.
    pub fn csrf_token(&self) -> Result<String, AppError> {
        if let Some(token) = self.existing_csrf_token() {
            return Ok(token);
        }
        let token = encode_token(&random_bytes::<32>().map_err(session_error)?);
        self.0.insert(CSRF_KEY, &token).map_err(session_error)?;
        Ok(token)
    }

    /// The random value this session's two-factor enrolment is bound to (made on first use): a
    /// pending secret is shown to, and confirmed by, the session that asked for it only.
    pub fn enrolment_binding(&self) -> Result<SecretString, AppError> {
        if let Some(binding) = self
            .0
            .get::<String>(ENROLMENT_BINDING_KEY)
            .map_err(session_error)?
        {
            return Ok(SecretString::from(binding));
        }
        let binding = encode_token(&random_bytes::<32>().map_err(session_error)?);
        self.0
            .insert(ENROLMENT_BINDING_KEY, &binding)
            .map_err(session_error)?;
        Ok(SecretString::from(binding))
    }

    pub fn existing_csrf_token(&self) -> Option<String> {
        self.0.get::<String>(CSRF_KEY).ok().flatten()
    }

    pub fn flash(&self, kind: FlashKind, message: impl Into<String>) -> Result<(), AppError> {
        let flash = Flash {
            kind,
            message: message.into(),
        };
        self.0.insert(FLASH_KEY, flash).map_err(session_error)
    }

    pub fn take_flash(&self) -> Option<Flash> {
        self.0.remove_as::<Flash>(FLASH_KEY).and_then(Result::ok)
    }
}

impl From<Session> for TypedSession {
    fn from(session: Session) -> Self {
        Self(session)
    }
}

impl FromRequest for TypedSession {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(req.get_session())))
    }
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::internal("application state missing"))
}

/// Where to come back to after signing in: this request's path and query.
fn return_path(req: &HttpRequest) -> String {
    match req.uri().query() {
        Some(query) => format!("{}?{query}", req.path()),
        None => req.path().to_owned(),
    }
}

/// The request's signed-in account (`None`: nobody, or a session that outlived its account's
/// credential, which is then ended), looked up once per request however many extractors ask.
type SignedIn = Shared<LocalBoxFuture<'static, Result<Option<User>, String>>>;

fn signed_in(req: &HttpRequest) -> SignedIn {
    if let Some(lookup) = req.extensions().get::<SignedIn>() {
        return lookup.clone();
    }
    // Holds the session and the database, never the request: the future is kept in the
    // request's own extensions.
    let session = TypedSession(req.get_session());
    let db = app_state(req).map(|state| state.db.clone());
    let lookup = async move {
        let db = db.map_err(|err| err.to_string())?;
        let Some(user_id) = session.user_id().map_err(|err| err.to_string())? else {
            return Ok(None);
        };
        match accounts::find_user(&db, user_id).await {
            Ok(Some(mut user)) if session.credential_matches(&user) => {
                // One indexed query: the banner a past-due customer sees on every page.
                user.past_due_invoice_url = crate::billing::invoices::past_due_link(&db, user.id)
                    .await
                    .map_err(|err| err.to_string())?;
                Ok(Some(user))
            }
            Ok(_) => {
                // The account is gone, or its password or role changed since this session
                // signed in (a reset, a promotion): the session must not outlive what it was
                // made with.
                session.log_out();
                Ok(None)
            }
            Err(err) => Err(err.to_string()),
        }
    }
    .boxed_local()
    .shared();
    req.extensions_mut().insert(lookup.clone());
    lookup
}

pub(crate) async fn signed_in_user(req: HttpRequest) -> Result<User, AppError> {
    let lookup = signed_in(&req);
    match lookup.await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(AppError::SignInRequired {
            next: return_path(&req),
        }),
        Err(cause) => Err(AppError::Internal(cause)),
    }
}

/// Who makes the request, for the audit: the signed-in account in its role (or nobody) and the
/// client's address. Shares the sign-in lookup with [`CurrentUser`] and [`AdminUser`], which are
/// what guard a page.
impl FromRequest for Actor {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (lookup, ip) = (signed_in(req), crate::web::client_ip::of(req));
        let request_id = crate::web::request_id::of(req);
        Box::pin(async move {
            let principal = match lookup.await.map_err(AppError::Internal)? {
                Some(user) => user.principal(),
                None => Principal::Anonymous,
            };
            Ok(Actor::new(principal, Some(ip)).in_request(request_id))
        })
    }
}

/// A signed-in user; anonymous requests are redirected to `/login?next=…`.
pub struct CurrentUser(pub User);

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { signed_in_user(req).await.map(Self) })
    }
}

/// A signed-in admin; customers get 403, anonymous requests are sent to sign in.
pub struct AdminUser(pub User);

impl FromRequest for AdminUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let user = signed_in_user(req).await?;
            if user.is_admin() {
                Ok(Self(user))
            } else {
                Err(AppError::Forbidden)
            }
        })
    }
}

/// The signed-in user if there is one, for pages that anybody may see.
pub struct MaybeUser(pub Option<User>);

impl FromRequest for MaybeUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match signed_in_user(req).await {
                Ok(user) => Ok(Self(Some(user))),
                Err(AppError::SignInRequired { .. }) => Ok(Self(None)),
                Err(other) => Err(other),
            }
        })
    }
}
