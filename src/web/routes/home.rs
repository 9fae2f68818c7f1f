//! The landing page.

use actix_web::HttpResponse;
use askama::Template;

use crate::error::AppError;
use crate::web::pages::{PageContext, render};
use crate::web::session::{MaybeUser, TypedSession};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    ctx: PageContext,
}

pub async fn index(session: TypedSession, user: MaybeUser) -> Result<HttpResponse, AppError> {
    render(&HomePage {
        ctx: PageContext::new(&session, user.0.as_ref())?,
    })
}
