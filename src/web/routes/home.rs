//! The landing page.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::error::AppError;
use crate::web::pages::{PageContext, render};
use crate::web::session::{Flash, FlashKind, MaybeUser, TypedSession};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    ctx: PageContext,
}

#[derive(Deserialize)]
pub struct HomeQuery {
    signed_out: Option<String>,
}

/// The landing page. After signing out (`/?signed_out`, where sign-out sends people: the
/// session is gone, so the notice travels in the URL) an anonymous visitor is told so.
pub async fn index(
    session: TypedSession,
    user: MaybeUser,
    query: web::Query<HomeQuery>,
) -> Result<HttpResponse, AppError> {
    let mut ctx = PageContext::new(&session, user.0.as_ref())?;
    if query.signed_out.is_some() && user.0.is_none() && ctx.flash.is_none() {
        ctx.flash = Some(Flash {
            kind: FlashKind::Info,
            message: "You are signed out.".into(),
        });
    }
    render(&HomePage { ctx })
}
