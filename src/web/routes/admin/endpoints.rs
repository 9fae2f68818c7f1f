//! `/admin/endpoints`: the product's own services' webhook endpoints (Standard Webhooks). Support
//! and admins see the list and each endpoint; admins add them, turn them on and off, rotate
//! their secrets and delete them. A secret is shown once, in the response to the form that made
//! it (never in an address, a flash cookie or a later page).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use secrecy::{ExposeSecret as _, SecretString};

use crate::accounts::User;
use crate::audit::Actor;
use crate::error::AppError;
use crate::notify::AppEvent;
use crate::notify::endpoints::{self, Endpoint, EndpointDraft, EndpointError, EndpointErrors};
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::forms::FormErrors;
use crate::web::pages::{
    ConfirmPage, PageContext, datetime_seconds, render, render_with_status, see_other,
};
use crate::web::session::{AdminUser, FlashKind, TypedSession};

const LIST: &str = "/admin/endpoints";

/// The form's fields in page order (for the error summary).
const FIELDS: [&str; 3] = ["url", "description", "events"];

struct EndpointView {
    public_id: String,
    url: String,
    description: String,
    events: Vec<String>,
    enabled: bool,
    created: String,
    updated: String,
    /// "Rotated: the previous secret also signs until …", during an overlap.
    overlap_until: Option<String>,
}

impl From<Endpoint> for EndpointView {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            created: datetime_seconds(&endpoint.created_at),
            updated: datetime_seconds(&endpoint.updated_at),
            overlap_until: endpoint.previous_signs_until.as_ref().map(datetime_seconds),
            public_id: endpoint.public_id,
            url: endpoint.url,
            description: endpoint.description,
            events: endpoint.events,
            enabled: endpoint.enabled,
        }
    }
}

/// One checkbox of the event types.
struct EventChoice {
    value: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "admin/endpoints.html")]
struct ListPage {
    ctx: PageContext,
    endpoints: Vec<EndpointView>,
    url: String,
    description: String,
    choices: Vec<EventChoice>,
    errors: FormErrors,
    max_url: usize,
    max_description: usize,
}

/// Why a secret is on the page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    Created,
    Rotated,
}

#[derive(Template)]
#[template(path = "admin/endpoint.html")]
struct EndpointPage {
    ctx: PageContext,
    endpoint: EndpointView,
    /// The secret, in the response to the form that made it only.
    new_secret: Option<(Shown, String)>,
}

fn list_page(
    session: &TypedSession,
    viewer: &User,
    endpoints: Vec<Endpoint>,
    draft: &EndpointDraft,
    errors: EndpointErrors,
) -> Result<ListPage, AppError> {
    let ctx = if viewer.is_admin() {
        PageContext::with_form(session, Some(viewer))?
    } else {
        PageContext::new(session, Some(viewer))?
    };
    Ok(ListPage {
        ctx,
        endpoints: endpoints.into_iter().map(EndpointView::from).collect(),
        url: draft.url.clone(),
        description: draft.description.clone(),
        choices: AppEvent::ALL
            .iter()
            .map(|event| EventChoice {
                value: event.as_str(),
                checked: draft.event_types.iter().any(|t| t == event.as_str()),
            })
            .collect(),
        errors: FormErrors::from_map(errors, &FIELDS),
        max_url: endpoints::MAX_URL_LEN,
        max_description: endpoints::MAX_DESCRIPTION_CHARS,
    })
}

/// What the endpoint pages answer for a domain failure.
fn endpoint_failure(err: EndpointError) -> AppError {
    match err {
        EndpointError::NotFound => AppError::NotFound,
        other => AppError::internal(other),
    }
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let endpoints = state.db.run(endpoints::list).await?;
    render(&list_page(
        &session,
        &viewer.0,
        endpoints,
        &EndpointDraft::default(),
        EndpointErrors::new(),
    )?)
}

/// The form's fields; `events` repeats, one per ticked box (so the form is read as pairs).
fn draft_from(fields: Vec<(String, String)>) -> EndpointDraft {
    let mut draft = EndpointDraft::default();
    for (name, value) in fields {
        match name.as_str() {
            "url" => draft.url = value,
            "description" => draft.description = value,
            "events" => draft.event_types.push(value),
            _ => {}
        }
    }
    draft
}

/// The endpoint's page with its new secret on it (the only time it is shown).
fn secret_page(
    session: &TypedSession,
    admin: &User,
    endpoint: Endpoint,
    shown: Shown,
    secret: &SecretString,
) -> Result<HttpResponse, AppError> {
    render(&EndpointPage {
        ctx: PageContext::with_form(session, Some(admin))?,
        endpoint: endpoint.into(),
        new_secret: Some((shown, secret.expose_secret().to_owned())),
    })
}

/// `POST /admin/endpoints`: registers an endpoint and shows its secret, once.
pub async fn create(
    state: web::Data<AppState>,
    session: TypedSession,
    (admin, actor): (AdminUser, Actor),
    form: CsrfForm<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let draft = draft_from(form.0);
    let input = match draft.validate(state.config.environment) {
        Ok(input) => input,
        Err(errors) => {
            let endpoints = state.db.run(endpoints::list).await?;
            let page = list_page(&session, &admin.0, endpoints, &draft, errors)?;
            return render_with_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let st = state.clone();
    let (endpoint, secret) = state
        .db
        .run(move |conn| endpoints::create(conn, &st.keyring, &actor, &input))
        .await
        .map_err(endpoint_failure)?;
    secret_page(&session, &admin.0, endpoint, Shown::Created, &secret)
}

async fn endpoint_or_404(state: &AppState, public_id: String) -> Result<Endpoint, AppError> {
    state
        .db
        .run(move |conn| endpoints::find(conn, &public_id))
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let endpoint = endpoint_or_404(&state, id.into_inner()).await?;
    let ctx = if viewer.0.is_admin() {
        PageContext::with_form(&session, Some(&viewer.0))?
    } else {
        PageContext::new(&session, Some(&viewer.0))?
    };
    render(&EndpointPage {
        ctx,
        endpoint: endpoint.into(),
        new_secret: None,
    })
}

async fn switch(
    state: &AppState,
    session: &TypedSession,
    actor: Actor,
    public_id: String,
    enabled: bool,
) -> Result<HttpResponse, AppError> {
    let (endpoint, changed) = state
        .db
        .run(move |conn| endpoints::set_enabled(conn, &actor, &public_id, enabled))
        .await
        .map_err(endpoint_failure)?;
    let message = match (enabled, changed) {
        (true, true) => "The endpoint is enabled: new events go to it again.",
        (false, true) => "The endpoint is disabled: it receives no new events.",
        (true, false) => "The endpoint was already enabled.",
        (false, false) => "The endpoint was already disabled.",
    };
    let kind = if changed {
        FlashKind::Success
    } else {
        FlashKind::Info
    };
    session.flash(kind, message)?;
    Ok(see_other(&format!("{LIST}/{}", endpoint.public_id)))
}

pub async fn enable(
    state: web::Data<AppState>,
    session: TypedSession,
    (_admin, actor): (AdminUser, Actor),
    id: web::Path<String>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    switch(&state, &session, actor, id.into_inner(), true).await
}

pub async fn disable(
    state: web::Data<AppState>,
    session: TypedSession,
    (_admin, actor): (AdminUser, Actor),
    id: web::Path<String>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    switch(&state, &session, actor, id.into_inner(), false).await
}

/// `GET /admin/endpoints/{id}/rotate`: what rotating means, before it happens.
pub async fn confirm_rotate(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let endpoint = endpoint_or_404(&state, id.into_inner()).await?;
    let hours = state.config.notify.secret_overlap.as_secs().div_ceil(3600);
    let mut consequences = vec![
        "A new signing secret is made and shown once, on the next page.".to_owned(),
        format!(
            "For the next {hours} hour(s) every delivery carries two signatures, one with the new secret and one with the current one, so the receiving service can switch without missing an event. After that only the new secret signs."
        ),
    ];
    if endpoint.previous_signs_until.is_some() {
        consequences.push(
            "The secret before the current one stops signing now (its overlap is cut short)."
                .into(),
        );
    }
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&admin.0))?,
        title: format!("Rotate the secret of {}?", endpoint.url),
        consequences,
        action: format!("{LIST}/{}/rotate", endpoint.public_id),
        operation_id: None,
        confirm: "Rotate secret",
        keep: "Keep the current secret",
        keep_href: LIST,
        admin: true,
    })
}

/// `POST /admin/endpoints/{id}/rotate`: a new secret, shown once; the old one overlaps.
pub async fn rotate(
    state: web::Data<AppState>,
    session: TypedSession,
    (admin, actor): (AdminUser, Actor),
    id: web::Path<String>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let public_id = id.into_inner();
    let st = state.clone();
    let overlap = state.config.notify.secret_overlap;
    let rotated = state
        .db
        .run(move |conn| endpoints::rotate_secret(conn, &st.keyring, &actor, &public_id, overlap))
        .await;
    match rotated {
        Ok((endpoint, secret)) => {
            secret_page(&session, &admin.0, endpoint, Shown::Rotated, &secret)
        }
        Err(EndpointError::Conflict) => {
            session.flash(
                FlashKind::Error,
                "The secret was changed by someone else meanwhile; nothing was rotated. Try again.",
            )?;
            Ok(see_other(LIST))
        }
        Err(err) => Err(endpoint_failure(err)),
    }
}

/// `GET /admin/endpoints/{id}/delete`: what deleting means, before it happens.
pub async fn confirm_delete(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let endpoint = endpoint_or_404(&state, id.into_inner()).await?;
    render(&ConfirmPage {
        ctx: PageContext::with_form(&session, Some(&admin.0))?,
        title: format!("Delete the endpoint {}?", endpoint.url),
        consequences: vec![
            "It receives no more events, and deliveries still queued for it are dropped.".into(),
            "Its secret is destroyed: to receive events again, register the endpoint anew and configure the new secret.".into(),
        ],
        action: format!("{LIST}/{}/delete", endpoint.public_id),
        operation_id: None,
        confirm: "Delete endpoint",
        keep: "Keep the endpoint",
        keep_href: LIST,
        admin: true,
    })
}

pub async fn delete(
    state: web::Data<AppState>,
    session: TypedSession,
    (_admin, actor): (AdminUser, Actor),
    id: web::Path<String>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let public_id = id.into_inner();
    state
        .db
        .run(move |conn| endpoints::delete(conn, &actor, &public_id))
        .await
        .map_err(endpoint_failure)?;
    // Not the URL: a flash travels in the session cookie, and a URL may carry a token.
    session.flash(FlashKind::Info, "The endpoint is deleted.")?;
    Ok(see_other(LIST))
}
