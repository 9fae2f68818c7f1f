//! Cached entitlements ([`AppState::entitlements`]) do not outlive a write made through this
//! instance's routes: once a request that may change them has succeeded (a Stripe webhook, a
//! checkout, a plan change, a cancellation, an admin's edit: any POST, PUT, PATCH or DELETE
//! outside the service API answered 2xx or 3xx), every cached answer is forgotten; the
//! Checkout return page forgets its customer's. Background work (the reservation sweep, a
//! refetch from Stripe after a webhook) and other instances show within the TTL. The service API's own writes
//! (usage, reservations) forget just their customers' ([`crate::web::routes::internal_usage`],
//! [`crate::web::routes::internal_quota`]), so a busy usage stream does not empty the cache.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::web::AppState;

pub async fn forget_after_writes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let writes = !req.method().is_safe() && !req.path().starts_with("/internal/");
    let state = writes
        .then(|| req.app_data::<web::Data<AppState>>().cloned())
        .flatten();
    let res = next.call(req).await;
    // After the handler: whatever it wrote is committed by now. A refused request (a bad
    // signature, a failed sign-in, a rate limit: 4xx) wrote nothing of the kind, and must not
    // let anyone empty the cache at will.
    let wrote = res.as_ref().is_ok_and(|res| {
        let status = res.status();
        status.is_success() || status.is_redirection()
    });
    if let (Some(state), true) = (state, wrote) {
        state.entitlements.forget_all();
    }
    res
}
