//! `HEAD` on every `GET` route. The request is routed as the `GET` it stands for, so it gets
//! exactly the `GET` answer's status and headers; the HTTP/1 codec, which remembers that the
//! request was a `HEAD`, sends them without the body (RFC 9110 §9.3.2).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}
