//! CSRF protection with the synchronizer-token pattern: each session holds a random token,
//! every state-changing form sends it back as `csrf_token`, and [`CsrfForm`] compares the two
//! in constant time before the handler runs. A mismatch is a 403, audited, and changes nothing.

use actix_session::SessionExt as _;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use crate::audit::{self, Actor, Kind, Principal};
use crate::billing::OperationId;
use crate::error::AppError;
use crate::web::session::TypedSession;
use crate::web::{AppState, client_ip};

/// Largest form Tollgate accepts.
pub(crate) const FORM_LIMIT: usize = 64 * 1024;

/// A urlencoded form whose CSRF token has been checked. Derefs to the form fields.
pub struct CsrfForm<T>(pub T);

impl<T> std::ops::Deref for CsrfForm<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A form with nothing but its CSRF token (a button).
#[derive(Deserialize)]
pub struct NoFields {}

/// What a form that cannot be read is told.
pub const INCOMPLETE_FORM: &str = "The form was incomplete. Reload the page and try again.";

/// A billing form's `operation_id` as submitted (missing is empty). The handler turns it into
/// an [`OperationId`] with [`SubmittedOperation::parse`] once the account is known: extractors
/// are polled together, so a form that failed to parse here could answer 400 before the account
/// check answers 403.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct SubmittedOperation(String);

impl SubmittedOperation {
    pub fn parse(self) -> Result<OperationId, AppError> {
        OperationId::try_from(self.0).map_err(|_| AppError::BadRequest(INCOMPLETE_FORM))
    }
}

/// A form that is only a button with its operation id.
#[derive(Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    pub operation_id: SubmittedOperation,
}

#[derive(Deserialize)]
struct TokenField {
    csrf_token: Option<String>,
}

/// Does `submitted` equal the session's token? Constant-time; absent tokens never match.
pub fn token_matches(expected: Option<&str>, submitted: Option<&str>) -> bool {
    match (expected, submitted) {
        (Some(expected), Some(submitted)) if !expected.is_empty() => {
            expected.as_bytes().ct_eq(submitted.as_bytes()).into()
        }
        _ => false,
    }
}

/// Audits a refused form by whoever sent it (the signed-in account, or nobody) and answers 403.
async fn reject(req: &HttpRequest) -> AppError {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let actor = Actor::from_request(req, &mut Payload::None)
            .await
            .unwrap_or_else(|_| {
                Actor::new(Principal::Anonymous, Some(client_ip::of(req)))
                    .in_request(crate::web::request_id::of(req))
            });
        // Repeats are told apart by route, not by path (which the client chooses freely).
        let route = req.match_pattern().unwrap_or_default();
        let event = actor
            .event(Kind::CsrfRejected)
            .details(serde_json::json!({ "path": req.path(), "method": req.method().as_str() }))
            .aggregate(
                state.config.audit.aggregate_window,
                format!("{} {route}", req.method()),
            );
        if let Err(err) = audit::record(&state.db, event).await {
            tracing::error!(error = %err, "could not record csrf_rejected");
        }
    }
    AppError::Csrf
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let session = TypedSession::from(req.get_session());
            let is_form = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
            let body = body.await.map_err(|_| AppError::PayloadTooLarge)?;
            if body.len() > FORM_LIMIT {
                return Err(AppError::PayloadTooLarge);
            }
            let submitted = if is_form {
                serde_urlencoded::from_bytes::<TokenField>(&body)
                    .ok()
                    .and_then(|f| f.csrf_token)
            } else {
                None
            };
            let expected = session.existing_csrf_token();
            if !token_matches(expected.as_deref(), submitted.as_deref()) {
                return Err(reject(&req).await);
            }
            serde_urlencoded::from_bytes::<T>(&body)
                .map(CsrfForm)
                .map_err(|_| AppError::BadRequest(INCOMPLETE_FORM))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn only_an_identical_present_token_matches() {
        assert!(token_matches(Some("abc"), Some("abc")));
        assert!(!token_matches(Some("abc"), Some("abd")));
        assert!(!token_matches(Some("abc"), None));
        assert!(!token_matches(None, Some("abc")));
        assert!(!token_matches(None, None));
        assert!(!token_matches(Some(""), Some("")));
    }
}
