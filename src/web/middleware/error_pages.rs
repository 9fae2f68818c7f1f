//! Writes the body of every error response: a generic HTML page, or JSON for API paths.
//! Never a stack trace, SQL error or secret: the text comes from `PublicError` only.

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use askama::Template;

use crate::error::PublicError;
use crate::web::pages::PageContext;

/// Paths whose clients are programs: they get `{"error": "…"}`.
const JSON_PREFIXES: [&str; 3] = ["/api/", "/webhooks/", "/internal/"];

pub fn wants_json(path: &str) -> bool {
    JSON_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

#[derive(Template)]
#[template(path = "errors/error.html")]
struct ErrorPage {
    ctx: PageContext,
    status: u16,
    title: &'static str,
    message: &'static str,
}

pub async fn render_error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(res);
    }
    let public = res.response().extensions().get::<PublicError>().copied();
    let from_error = res.response().error().is_some();
    let empty = matches!(
        res.response().body().size(),
        BodySize::None | BodySize::Sized(0)
    );
    if public.is_none() && !from_error && !empty {
        // A handler wrote its own body on purpose (e.g. a form re-rendered with messages).
        return Ok(res);
    }
    let public = public.unwrap_or_else(|| PublicError::for_status(status));
    let (content_type, body) = if wants_json(res.request().path()) {
        (
            "application/json",
            serde_json::json!({ "error": public.message }).to_string(),
        )
    } else {
        let page = ErrorPage {
            ctx: PageContext::bare(),
            status: status.as_u16(),
            title: public.title,
            message: public.message,
        };
        (
            "text/html; charset=utf-8",
            page.render().unwrap_or_else(|_| public.message.to_owned()),
        )
    };
    Ok(res.map_body(|head, _| {
        head.headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        BoxBody::new(body)
    }))
}
