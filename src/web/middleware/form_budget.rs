//! Per-client budgets for the sign-in and sign-up submissions, one each: a sign-up flood does
//! not lock anyone out of signing in, nor the other way round. Showing a form (GET) is free.
//!
//! Unlike the other limiters, a spent budget does not answer with the generic 429 page. The
//! request goes on to its handler marked [`OverBudget`], and the handler shows its form again —
//! the typed email kept, "Too many attempts. Please wait N seconds and try again." — with a 429;
//! this middleware adds `Retry-After` and the `X-RateLimit-*` headers, and marks the refusal for
//! the audit ([`super::rate_limit::finish_rate_limit`]). The [`Submission`] extractor makes sure
//! such a request costs nothing more: the budget is checked before the body is read, and then
//! only the fields the form shows again are parsed — no CSRF check (so no audit row per
//! request), no database, no password work.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::rate_limit::{Budgeted, LIMIT, REMAINING, RESET, Refused, Window, unix_now};
use crate::config::RateLimit;
use crate::error::AppError;
use crate::limits::{self, KeyedLimiter, Limited, SharedLimits, Sweep};
use crate::web::client_ip;
use crate::web::csrf::{CsrfForm, FORM_LIMIT};

/// One form's budget: so many submissions per client address (an IPv6 client by its /64).
pub struct FormBudget {
    name: &'static str,
    limiter: Arc<KeyedLimiter<IpAddr>>,
    trusted: Arc<Vec<IpNet>>,
}

impl FormBudget {
    /// `name` is the limiter's name in audit rows, the periodic sweep and Redis (`shared`).
    pub fn new(
        name: &'static str,
        limit: RateLimit,
        trusted: &Arc<Vec<IpNet>>,
        shared: Option<&Arc<SharedLimits>>,
    ) -> Self {
        Self {
            name,
            limiter: Arc::new(KeyedLimiter::new(limit).shared(shared, name)),
            trusted: Arc::clone(trusted),
        }
    }

    /// The keyed state, for the periodic sweep.
    pub fn swept(&self) -> Arc<dyn Sweep> {
        self.limiter.clone()
    }
}

/// The sign-in and sign-up budgets of one application.
#[derive(Clone)]
pub struct FormBudgets {
    pub sign_in: Arc<FormBudget>,
    pub sign_up: Arc<FormBudget>,
}

/// On a request whose client has spent the form's budget: how long until one more is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub retry_after_secs: u64,
}

/// Counts a submission against the client's budget before anything else reads the request
/// (wrapped outside the scope's default limiter, which then leaves the submission alone).
pub async fn enforce<B: MessageBody + 'static>(
    budget: Arc<FormBudget>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if req.method() != Method::POST {
        return next.call(req).await;
    }
    let peer = req.peer_addr().map(|addr| addr.ip());
    let client = limits::client_key(client_ip::resolve(peer, req.headers(), &budget.trusted));
    let verdict = match budget.limiter.check_allowance(&client).await {
        Ok(allowance) => Ok(allowance),
        Err(Limited::Wait(wait)) => Err(wait),
        // Shared in Redis, which cannot be reached, with REDIS_FAIL=closed.
        Err(Limited::Unavailable) => return Err(AppError::Unavailable.into()),
    };
    // Counted here: the scope's default limiter, inside, leaves it alone.
    req.extensions_mut().insert(Budgeted);
    req.extensions_mut().insert(Window {
        per_request: budget.limiter.per_request(),
        limiter: budget.name,
    });
    if let Err(retry_after_secs) = verdict {
        req.extensions_mut().insert(OverBudget { retry_after_secs });
    }
    let mut res = next.call(req).await?;
    let refused =
        verdict.is_err() && res.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS;
    let headers = res.headers_mut();
    match verdict {
        Ok(allowance) => {
            headers.insert(LIMIT, HeaderValue::from(allowance.limit));
            headers.insert(REMAINING, HeaderValue::from(allowance.remaining));
        }
        Err(wait) => {
            headers.insert(LIMIT, HeaderValue::from(budget.limiter.burst()));
            headers.insert(REMAINING, HeaderValue::from(0));
            headers.insert(RESET, HeaderValue::from(unix_now() + wait));
            headers.insert(RETRY_AFTER, HeaderValue::from(wait));
        }
    }
    if refused {
        res.response_mut().extensions_mut().insert(Refused);
    }
    Ok(res)
}

/// A submission of a form with a budget: the whole form, CSRF-checked, when the client is
/// within budget; otherwise only what the form shows again (`S`, never a password), read from
/// the body without any check, and how long to wait.
pub enum Submission<F, S> {
    Accepted(F),
    OverBudget { shown: S, retry_after_secs: u64 },
}

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, AppError>>>>;

impl<F, S> FromRequest for Submission<F, S>
where
    F: DeserializeOwned + 'static,
    S: DeserializeOwned + Default + 'static,
{
    type Error = AppError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let over = req.extensions().get::<OverBudget>().copied();
        let Some(OverBudget { retry_after_secs }) = over else {
            let form = CsrfForm::<F>::from_request(req, payload);
            return Box::pin(async move { Ok(Self::Accepted(form.await?.0)) });
        };
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = body.await.map_err(|_| AppError::PayloadTooLarge)?;
            if body.len() > FORM_LIMIT {
                return Err(AppError::PayloadTooLarge);
            }
            // A malformed body still gets its form back, empty.
            let shown = serde_urlencoded::from_bytes::<S>(&body).unwrap_or_default();
            Ok(Self::OverBudget {
                shown,
                retry_after_secs,
            })
        })
    }
}
