//! The admin console's outbox: every notification per channel with its status, attempts,
//! last error and next attempt; filters (the dead letters are `?status=dead`); and, for
//! admins, redelivery of a dead or not-sent notification.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::audit::Actor;
use crate::db::models::notification::{self, Listing, NotificationRow};
use crate::error::AppError;
use crate::notify::{self, AppEvent, Channel, Redelivered, Status};
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::csrf::{CsrfForm, NoFields};
use crate::web::pages::{PageContext, datetime_seconds, render, see_other};
use crate::web::session::{AdminUser, FlashKind, TypedSession};

const PAGE: i64 = 100;

struct Row {
    id: i64,
    created: String,
    channel: &'static str,
    event_type: String,
    recipient: String,
    status: &'static str,
    status_label: &'static str,
    attempts: i64,
    next_attempt: String,
    /// Waits for an earlier notification to the same customer and destination.
    held: bool,
    last_error: String,
    redeliverable: bool,
}

impl Row {
    /// `held`: the row waits for an earlier one of the same customer and destination.
    fn new(row: NotificationRow, held: bool) -> Self {
        let status = Status::parse(&row.status).unwrap_or(Status::Pending);
        let channel = Channel::parse(&row.channel).unwrap_or(Channel::Email);
        let waiting = matches!(status, Status::Pending | Status::Retrying | Status::Sending);
        Self {
            id: row.id,
            created: datetime_seconds(&row.created_at),
            channel: channel.label(),
            event_type: row.event_type,
            recipient: row.recipient,
            status: status.as_str(),
            status_label: status.label(),
            attempts: row.attempts,
            next_attempt: if waiting {
                datetime_seconds(&row.next_attempt_at)
            } else {
                "—".into()
            },
            held: waiting && held,
            last_error: row.last_error.unwrap_or_default(),
            redeliverable: matches!(status, Status::Dead | Status::NotSent),
        }
    }
}

struct Count {
    channel: &'static str,
    status: &'static str,
    status_label: &'static str,
    count: i64,
}

#[derive(Template)]
#[template(path = "admin/notifications.html")]
struct ListPage {
    ctx: PageContext,
    rows: Vec<Row>,
    counts: Vec<Count>,
    channels: Vec<(&'static str, &'static str)>,
    statuses: Vec<(&'static str, &'static str)>,
    event_types: Vec<&'static str>,
    channel: String,
    status: String,
    event_type: String,
    /// The query string of the next page, when there is one.
    next_page: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    channel: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    before: Option<i64>,
}

/// The e-mail templates' names: with the app events, the event types a filter may name.
const EMAIL_TEMPLATES: [&str; 7] = [
    "receipt",
    "payment_failed",
    "trial_ending",
    "plan_changed",
    "subscription_canceled",
    "security_alert",
    "usage_threshold",
];

pub async fn list(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let channel = match nonempty(query.channel) {
        None => None,
        Some(raw) => Some(Channel::parse(&raw).ok_or(AppError::BadRequest("Unknown channel."))?),
    };
    let status = match nonempty(query.status) {
        None => None,
        Some(raw) => Some(Status::parse(&raw).ok_or(AppError::BadRequest("Unknown status."))?),
    };
    let event_types: Vec<&'static str> = AppEvent::ALL
        .iter()
        .map(|e| e.as_str())
        .chain(EMAIL_TEMPLATES)
        .collect();
    let event_type = match nonempty(query.event_type) {
        None => None,
        Some(raw) => Some(
            *event_types
                .iter()
                .find(|t| **t == raw)
                .ok_or(AppError::BadRequest("Unknown event type."))?,
        ),
    };
    let before = query.before.filter(|id| *id > 0);
    let (rows, held, counts) = state
        .db
        .run(move |conn| {
            let listing = Listing {
                channel: channel.map(Channel::as_str),
                status: status.map(Status::as_str),
                event_type,
                before,
                limit: PAGE + 1,
            };
            let rows = notification::list(conn, &listing)?;
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let held = notification::held_back(conn, &ids)?;
            Ok::<_, crate::db::DbError>((rows, held, notification::counts(conn)?))
        })
        .await?;
    let more = rows.len() > usize::try_from(PAGE).unwrap_or(usize::MAX);
    let rows: Vec<Row> = rows
        .into_iter()
        .take(usize::try_from(PAGE).unwrap_or(usize::MAX))
        .map(|row| {
            let held = held.contains(&row.id);
            Row::new(row, held)
        })
        .collect();
    let filters = serde_urlencoded::to_string([
        ("channel", channel.map(Channel::as_str).unwrap_or_default()),
        ("status", status.map(Status::as_str).unwrap_or_default()),
        ("event_type", event_type.unwrap_or_default()),
    ])
    .unwrap_or_default();
    let next_page = match (more, rows.last()) {
        (true, Some(last)) => Some(format!("{filters}&before={}", last.id)),
        _ => None,
    };
    let counts = counts
        .into_iter()
        .filter_map(|(channel, status, count)| {
            let status = Status::parse(&status)?;
            Some(Count {
                channel: Channel::parse(&channel)?.label(),
                status: status.as_str(),
                status_label: status.label(),
                count,
            })
        })
        .collect();
    render(&ListPage {
        ctx: PageContext::with_form(&session, Some(&viewer.0))?,
        rows,
        counts,
        channels: Channel::ALL
            .iter()
            .map(|c| (c.as_str(), c.label()))
            .collect(),
        statuses: Status::ALL
            .iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
        event_types,
        channel: channel.map(Channel::as_str).unwrap_or_default().to_owned(),
        status: status.map(Status::as_str).unwrap_or_default().to_owned(),
        event_type: event_type.unwrap_or_default().to_owned(),
        next_page,
    })
}

pub async fn redeliver(
    state: web::Data<AppState>,
    session: TypedSession,
    _admin: AdminUser,
    actor: Actor,
    id: web::Path<i64>,
    _form: CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let outcome = state
        .db
        .run(move |conn| notify::redeliver(conn, &actor, id))
        .await?;
    match outcome {
        Redelivered::NotFound => return Err(AppError::NotFound),
        Redelivered::Queued => session.flash(
            FlashKind::Success,
            format!("Notification {id} is back in the outbox; it will be sent shortly."),
        )?,
        Redelivered::NotRedeliverable(status) => session.flash(
            FlashKind::Info,
            format!(
                "Only dead or not-sent notifications are redelivered; notification {id} is {}. Nothing was changed.",
                status.label()
            ),
        )?,
    }
    Ok(see_other("/admin/notifications"))
}
