//! The admin console's front page: accounts and the latest security events (a repeated
//! refusal shows its count and when it was first and last seen).

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::db::DbError;
use crate::db::models::{security_event, user};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::pages::{PageContext, datetime_seconds, render};
use crate::web::session::{AdminUser, TypedSession};

/// One audit row as the console shows it.
struct EventView {
    /// When it was last seen.
    at: String,
    /// How many times; with the first time when more than once.
    count: i64,
    first_seen: String,
    kind: String,
    severity: String,
    actor: String,
    ip: String,
    details: String,
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct Dashboard {
    ctx: PageContext,
    user_count: i64,
    events: Vec<EventView>,
}

const RECENT_EVENTS: i64 = 50;

pub async fn dashboard(
    state: web::Data<AppState>,
    session: TypedSession,
    admin: AdminUser,
) -> Result<HttpResponse, AppError> {
    let (user_count, rows) = state
        .db
        .run(|conn| {
            Ok::<_, DbError>((
                user::count(conn)?,
                security_event::recent(conn, RECENT_EVENTS)?,
            ))
        })
        .await?;
    let events = rows
        .into_iter()
        .map(|row| EventView {
            at: datetime_seconds(&row.last_seen_at),
            count: row.count,
            first_seen: datetime_seconds(&row.occurred_at),
            kind: row.kind,
            severity: row.severity,
            actor: row.actor.unwrap_or_else(|| "—".into()),
            ip: row.ip.unwrap_or_else(|| "—".into()),
            details: row.details,
        })
        .collect();
    render(&Dashboard {
        ctx: PageContext::new(&session, Some(&admin.0))?,
        user_count,
        events,
    })
}
