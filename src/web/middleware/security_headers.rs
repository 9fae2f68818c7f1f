//! Security headers on every response, including error pages and 404s.

use std::rc::Rc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

use crate::config::SecuritySettings;

/// The header set, computed once from the configuration.
#[derive(Clone)]
pub struct SecurityHeaders {
    headers: Rc<Vec<(HeaderName, HeaderValue)>>,
}

/// Scripts and frames from ourselves and Stripe.js; forms may post to ourselves and redirect
/// to Stripe Checkout and the Billing Portal; nobody may frame us.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
script-src 'self' https://js.stripe.com; \
frame-src 'self' https://js.stripe.com https://checkout.stripe.com; \
form-action 'self' https://checkout.stripe.com https://billing.stripe.com; \
connect-src 'self' https://api.stripe.com; \
img-src 'self' data:; style-src 'self'; font-src 'self'; \
object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

pub const PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()";

impl SecurityHeaders {
    /// `stripe_origin`: a non-Stripe API base (the simulator) whose hosted pages forms may
    /// redirect to; it is added to `form-action`.
    pub fn new(settings: &SecuritySettings, stripe_origin: Option<&str>) -> Self {
        let csp = stripe_origin
            .and_then(|origin| {
                let policy = CONTENT_SECURITY_POLICY.replace(
                    "form-action 'self'",
                    &format!("form-action 'self' {origin}"),
                );
                HeaderValue::from_str(&policy).ok()
            })
            .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        let mut headers = vec![
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static(PERMISSIONS_POLICY),
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ];
        if settings.hsts_max_age > 0 {
            let value = format!("max-age={}; includeSubDomains", settings.hsts_max_age);
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.push((header::STRICT_TRANSPORT_SECURITY, value));
            }
        }
        Self {
            headers: Rc::new(headers),
        }
    }

    fn apply(&self, res: &mut ServiceResponse<BoxBody>) {
        let headers = res.headers_mut();
        for (name, value) in self.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        // Pages carry CSRF tokens and personal data: never cache unless a handler says so.
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        headers.remove(header::SERVER);
        headers.remove("x-powered-by");
    }

    /// The middleware function, for `middleware::from_fn`.
    pub async fn handle(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        let mut res = next.call(req).await?.map_into_boxed_body();
        self.apply(&mut res);
        Ok(res)
    }
}
