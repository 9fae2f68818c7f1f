//! Cached entitlements ([`AppState::entitlements`]) never outlive a write made on this
//! instance: once a request that may change them has been answered (a Stripe webhook, a
//! checkout, a plan change, a cancellation, an admin's edit: any POST, PUT, PATCH or DELETE
//! outside the service API), every cached answer is forgotten. The service API's own writes
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
    // After the handler: whatever it wrote is committed by now.
    if let Some(state) = state {
        state.entitlements.forget_all();
    }
    res
}
