//! `AppError`: every failure a request can end in, mapped to an HTTP status in ONE place.
//!
//! Users see a generic message chosen here; the cause is logged once (redacted) when the error
//! is turned into a response. The body itself (HTML page or JSON) is written by
//! `web::middleware::error_pages`, which knows whether the request was for a page or an API.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("sign-in required")]
    SignInRequired { next: String },
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("CSRF token missing or invalid")]
    Csrf,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A billing form's operation id that another account submitted first.
    #[error("operation id already used by another account")]
    OperationTaken,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("too many requests")]
    RateLimited { retry_after: u64 },
    #[error("service unavailable")]
    Unavailable,
    #[error("billing is not configured")]
    BillingOff,
    #[error("the payment provider failed: {0}")]
    Upstream(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a user may be told about an error; stored on the response for the page renderer.
#[derive(Debug, Clone, Copy)]
pub struct PublicError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: &'static str,
}

impl PublicError {
    /// The generic text for a status that did not come from an `AppError` (405, 413, …).
    pub fn for_status(status: StatusCode) -> Self {
        let (title, message) = match status.as_u16() {
            400 => ("Bad request", "The request could not be understood."),
            401 => ("Unauthorized", "Authentication is required."),
            403 => ("Forbidden", "You do not have access to this resource."),
            404 => ("Page not found", "There is nothing at this address."),
            405 => (
                "Method not allowed",
                "This address does not accept that method.",
            ),
            413 => ("Too large", "The request body is too large."),
            415 => (
                "Unsupported media type",
                "The request body has an unsupported type.",
            ),
            429 => (
                "Too many requests",
                "Too many requests. Please wait a moment and try again.",
            ),
            503 => ("Unavailable", "The service is temporarily unavailable."),
            s if s >= 500 => (
                "Something went wrong",
                "An internal error occurred. It has been logged.",
            ),
            _ => ("Request failed", "The request could not be completed."),
        };
        Self {
            status,
            title,
            message,
        }
    }
}

impl AppError {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    fn public(&self) -> PublicError {
        match self {
            Self::Csrf => PublicError {
                status: StatusCode::FORBIDDEN,
                title: "Form expired",
                message: "This form has expired or was not sent by Tollgate. Reload the page and try again.",
            },
            Self::BillingOff => PublicError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Billing is not set up",
                message: "Billing is not configured on this Tollgate yet. Please try again later.",
            },
            Self::Upstream(_) => PublicError {
                status: StatusCode::BAD_GATEWAY,
                title: "Payment provider unavailable",
                message: "The payment provider could not complete the request. Nothing was charged; please try again.",
            },
            Self::OperationTaken => PublicError {
                status: StatusCode::CONFLICT,
                title: "Form already used",
                message: "This form has already been used. Reload the page and try again.",
            },
            Self::BadRequest(message) => PublicError {
                status: StatusCode::BAD_REQUEST,
                title: "Bad request",
                message,
            },
            other => PublicError::for_status(other.status_code()),
        }
    }
}

impl From<crate::billing::BillingError> for AppError {
    fn from(err: crate::billing::BillingError) -> Self {
        use crate::billing::{BillingError, GatewayError};
        match err {
            BillingError::Gateway(GatewayError::NotConfigured) => Self::BillingOff,
            BillingError::Gateway(GatewayError::Throttled { retry_after, .. }) => {
                Self::RateLimited { retry_after }
            }
            BillingError::Gateway(other) => Self::Upstream(other.to_string()),
            BillingError::Unexpected(what) => Self::Upstream(what),
            BillingError::OperationTaken => Self::OperationTaken,
            BillingError::Db(err) => err.into(),
            BillingError::Crypto(err) => Self::internal(err),
        }
    }
}

impl From<crate::accounts::WorkError> for AppError {
    fn from(err: crate::accounts::WorkError) -> Self {
        match err {
            // Every argon2 slot stayed taken: the server is busy, not broken.
            crate::accounts::WorkError::Busy => Self::Unavailable,
            other => Self::internal(other),
        }
    }
}

impl From<crate::accounts::SignInError> for AppError {
    fn from(err: crate::accounts::SignInError) -> Self {
        match err {
            crate::accounts::SignInError::Work(err) => err.into(),
            crate::accounts::SignInError::Db(err) => err.into(),
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            // The database is there, only busy: a moment later may do (503, not 500).
            DbError::Busy => {
                tracing::warn!(error = %err, "a write gave up waiting for SQLite's writer");
                Self::Unavailable
            }
            err => Self::Internal(err.to_string()),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::SignInRequired { .. } => StatusCode::SEE_OTHER,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::OperationTaken => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::BillingOff => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignInRequired { next } => {
                let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, format!("/login?{query}")))
                    .finish();
            }
            Self::Internal(cause) => tracing::error!(error.cause = %cause, "request failed"),
            Self::Upstream(cause) => {
                tracing::error!(error.cause = %cause, "payment provider call failed")
            }
            other => tracing::debug!(error = %other, "request rejected"),
        }
        let public = self.public();
        let mut response = HttpResponse::new(public.status);
        match self {
            Self::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            Self::RateLimited { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response.extensions_mut().insert(public);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_redirect_encodes_the_return_path() {
        let response = AppError::SignInRequired {
            next: "/account?tab=a b".into(),
        }
        .error_response();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers().get(header::LOCATION).unwrap(),
            "/login?next=%2Faccount%3Ftab%3Da+b"
        );
    }

    #[test]
    fn a_busy_database_is_unavailable_not_an_internal_error() {
        let response = AppError::from(DbError::Busy).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let other = AppError::from(DbError::Unavailable).error_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internal_errors_never_reach_the_public_message() {
        let response = AppError::internal("UNIQUE constraint failed: users.email").error_response();
        let public = response.extensions().get::<PublicError>().copied().unwrap();
        assert_eq!(public.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!public.message.contains("UNIQUE"));
    }
}
