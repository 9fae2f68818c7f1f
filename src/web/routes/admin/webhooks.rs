//! The admin console's webhook pages: every stored Stripe event with its processing status, a
//! detail view with the (decrypted, masked) payload, and reprocessing of failed events.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::db::models::webhook_event::{self, WebhookEventRow, WebhookEventStatus};
use crate::error::AppError;
use crate::reconcile::refetch::Ties;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::pages::{PageContext, datetime_seconds, render, see_other};
use crate::web::session::{AdminUser, FlashKind, TypedSession};
use crate::webhooks::{self, Reprocessed, mask};

const PAGE: i64 = 200;

struct EventView {
    id: i64,
    stripe_event_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    received: String,
    processed: String,
    last_error: String,
    livemode: bool,
}

impl From<WebhookEventRow> for EventView {
    fn from(row: WebhookEventRow) -> Self {
        Self {
            id: row.id,
            stripe_event_id: row.stripe_event_id,
            event_type: row.event_type,
            status: row.status.to_string(),
            attempts: row.attempts,
            received: datetime_seconds(&row.received_at),
            processed: row
                .processed_at
                .as_ref()
                .map(datetime_seconds)
                .unwrap_or_else(|| "—".into()),
            last_error: row.last_error.unwrap_or_default(),
            livemode: row.livemode,
        }
    }
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
struct ListPage {
    ctx: PageContext,
    events: Vec<EventView>,
    statuses: [&'static str; 4],
    filter: String,
    /// The next page's link (none: nothing older matches).
    older_href: Option<String>,
    /// Whether this is a later page (it links back to the first).
    paged: bool,
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    /// Keyset pagination: events older than this id.
    before: Option<i64>,
}

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let filter = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(status) => Some(
            status
                .parse::<WebhookEventStatus>()
                .map_err(|_| AppError::BadRequest("Unknown status filter."))?,
        ),
    };
    let before = match query.before {
        Some(id) if id <= 0 => return Err(AppError::BadRequest("Unknown page.")),
        before => before,
    };
    let mut rows = state
        .db
        .run(move |conn| webhook_event::list(conn, filter, before, PAGE + 1))
        .await?;
    let older = (rows.len() as i64 > PAGE).then(|| {
        rows.truncate(PAGE as usize);
        rows.last().map(|row| row.id)
    });
    let filter = filter
        .map(WebhookEventStatus::as_str)
        .unwrap_or_default()
        .to_owned();
    render(&ListPage {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        events: rows.into_iter().map(EventView::from).collect(),
        statuses: WebhookEventStatus::ALL.map(WebhookEventStatus::as_str),
        older_href: older.flatten().map(|id| match filter.as_str() {
            "" => format!("/admin/webhooks?before={id}"),
            status => format!("/admin/webhooks?before={id}&status={status}"),
        }),
        paged: before.is_some(),
        filter,
    })
}

#[derive(Template)]
#[template(path = "admin/webhook.html")]
struct DetailPage {
    ctx: PageContext,
    event: EventView,
    /// The masked payload, pretty-printed; `None` when it cannot be opened.
    payload: Option<String>,
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let row = state
        .db
        .run(move |conn| webhook_event::find_by_id(conn, id))
        .await?
        .ok_or(AppError::NotFound)?;
    let payload = match webhooks::open_payload(&state.keyring, &row) {
        Ok(raw) => serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&mask::masked(&value)).ok()),
        Err(err) => {
            tracing::error!(event = %row.stripe_event_id, error = %err, "a stored webhook payload cannot be opened");
            None
        }
    };
    render(&DetailPage {
        ctx: PageContext::with_form(&session, Some(&admin.0))?,
        event: row.into(),
        payload,
    })
}

pub async fn reprocess(
    state: web::Data<AppState>,
    session: TypedSession,
    _admin: AdminUser,
    actor: Actor,
    id: web::Path<i64>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let (id, st) = (id.into_inner(), state.clone());
    let (outcome, tied) = state
        .db
        .run(move |conn| {
            let ties = Ties::default();
            let outcome = webhooks::reprocess(conn, st.webhooks(&ties), &actor, id)?;
            Ok::<_, webhooks::IngestError>((outcome, ties.any()))
        })
        .await
        .map_err(AppError::internal)?;
    if tied {
        state.refetching.note();
        crate::web::routes::webhooks::read_ties_again(&state);
    }
    match outcome {
        Reprocessed::NotFound => return Err(AppError::NotFound),
        Reprocessed::Done(WebhookEventStatus::Failed) => session.flash(
            FlashKind::Error,
            "The event was reprocessed and failed again; the reason is shown below.",
        )?,
        Reprocessed::Done(status) => session.flash(
            FlashKind::Success,
            format!("The event was reprocessed: {status}."),
        )?,
        Reprocessed::NotFailed(status) => session.flash(
            FlashKind::Info,
            format!(
                "Only failed events are reprocessed; this one is {status}. Nothing was changed."
            ),
        )?,
    }
    Ok(see_other(&format!("/admin/webhooks/{id}")))
}
