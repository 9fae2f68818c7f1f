//! Counts every response, and its 5xx, for the server-error alert rule
//! ([`crate::audit::alerts::ServerErrorRate`]: per instance, or with every instance sharing
//! Redis). The alert itself is raised in a spawned task: the response that tipped the rate is
//! not held up by it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::audit::alerts::{self, AlertRule};
use crate::web::AppState;

pub async fn count_server_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    let status = match &res {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let observed = state
        .as_ref()
        .and_then(|state| state.server_errors.record(status.as_u16()));
    if let (Some(state), Some(observed)) = (state, observed) {
        actix_web::rt::spawn(async move {
            let config = state.config.clone();
            let raised = state
                .db
                .run(move |conn| {
                    alerts::raise(conn, &config.alerts, AlertRule::ServerErrors, &observed)
                })
                .await;
            if let Err(err) = raised {
                tracing::error!(error = %err, "could not raise the server-error alert");
            }
        });
    }
    res
}
