//! The admin console's service tokens: the list (never a token or its hash) and revoking one,
//! after a confirmation step. Creating tokens stays on the command line, where the token can
//! be printed once and piped into a secret store.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::audit::Actor;
use crate::error::AppError;
use crate::service_tokens::{self, Revoked, TokenSummary};
use crate::web::AppState;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::pages::{ConfirmPage, PageContext, datetime_seconds, render, see_other};
use crate::web::session::{AdminUser, FlashKind, TypedSession};

struct TokenView {
    id: i64,
    name: String,
    scopes: Vec<String>,
    created: String,
    last_used: Option<String>,
    active: bool,
}

impl From<TokenSummary> for TokenView {
    fn from(token: TokenSummary) -> Self {
        Self {
            id: token.id,
            scopes: token.scopes.split_whitespace().map(str::to_owned).collect(),
            name: token.name,
            created: datetime_seconds(&token.created_at),
            last_used: token.last_used_at.as_ref().map(datetime_seconds),
            active: token.revoked_at.is_none(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    ctx: PageContext,
    tokens: Vec<TokenView>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
) -> Result<HttpResponse, AppError> {
    let tokens = state.db.run(service_tokens::list).await?;
    render(&TokensPage {
        ctx: PageContext::new(&session, Some(&admin.0))?,
        tokens: tokens.into_iter().map(TokenView::from).collect(),
    })
}

/// `GET /admin/tokens/{id}/revoke`: what revoking means, before it happens.
pub async fn confirm_revoke(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = *id;
    let token = state
        .db
        .run(move |conn| service_tokens::find(conn, id))
        .await?
        .ok_or(AppError::NotFound)?;
    if token.revoked_at.is_some() {
        session.flash(
            FlashKind::Info,
            format!("The token “{}” is already revoked.", token.name),
        )?;
        return Ok(see_other("/admin/tokens"));
    }
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&admin.0))?,
        title: format!("Revoke the token “{}”?", token.name),
        consequences: vec![
            format!("Services using it lose access at once ({}).", token.scopes),
            "A revoked token cannot be restored: the service needs a new one (tollgate service-token create).".into(),
        ],
        action: format!("/admin/tokens/{id}/revoke"),
        operation_id: None,
        confirm: "Revoke token",
        keep: "Keep the token",
        keep_href: "/admin/tokens",
        admin: true,
    })
}

pub async fn revoke(
    state: web::Data<AppState>,
    session: TypedSession,
    _admin: AdminUser,
    actor: Actor,
    id: web::Path<i64>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let id = *id;
    let revoked = state
        .db
        .run(move |conn| service_tokens::revoke_by_id(conn, &actor, id))
        .await?;
    // Revoked here: refused from the next request on, not after the cache's TTL.
    state.token_cache.forget_all();
    let (kind, message) = match revoked {
        Revoked::Now(name) => (
            FlashKind::Success,
            format!("The token “{name}” is revoked."),
        ),
        Revoked::Already(name) => (
            FlashKind::Info,
            format!("The token “{name}” was already revoked."),
        ),
        Revoked::NoSuchToken => return Err(AppError::NotFound),
    };
    session.flash(kind, message)?;
    Ok(see_other("/admin/tokens"))
}
