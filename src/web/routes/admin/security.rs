//! The admin console's front page: accounts and the latest security events (a repeated
//! refusal shows its count and when it was first and last seen).

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::audit::{self, RecordedEvent};
use crate::db::DbError;
use crate::db::models::user;
use crate::error::AppError;
use crate::web::AppState;
use crate::web::console::ConsoleUser;
use crate::web::pages::{PageContext, datetime_seconds, render};
use crate::web::session::TypedSession;

/// One audit row as the console shows it.
pub(super) struct EventView {
    pub(super) id: i64,
    /// When it was last seen.
    pub(super) at: String,
    /// How many times; with the first time when more than once.
    pub(super) count: i64,
    pub(super) first_seen: String,
    pub(super) kind: String,
    pub(super) severity: String,
    /// The account's email when the actor is an account, else the actor as recorded.
    pub(super) actor: String,
    /// The customer search for that account.
    pub(super) actor_href: Option<String>,
    pub(super) ip: String,
    /// The details' fields (by name), as text.
    pub(super) details: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct Dashboard {
    ctx: PageContext,
    user_count: i64,
    events: Vec<EventView>,
}

const RECENT_EVENTS: i64 = 50;

impl From<RecordedEvent> for EventView {
    fn from(event: RecordedEvent) -> Self {
        let RecordedEvent { row, account_email } = event;
        Self {
            id: row.id,
            at: datetime_seconds(&row.last_seen_at),
            count: row.count,
            first_seen: datetime_seconds(&row.occurred_at),
            kind: row.kind,
            severity: row.severity,
            actor_href: account_email.as_ref().map(|email| {
                format!(
                    "/admin/customers?{}",
                    serde_urlencoded::to_string([("q", email)]).unwrap_or_default()
                )
            }),
            actor: account_email.or(row.actor).unwrap_or_else(|| "—".into()),
            ip: row.ip.unwrap_or_else(|| "—".into()),
            details: detail_fields(&row.details),
        }
    }
}

/// A details object as `(field, value)` pairs; strings shown bare, anything else as JSON.
fn detail_fields(details: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(details) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                (key.replace('_', " "), text)
            })
            .collect(),
        Ok(serde_json::Value::Null) | Err(_) if details.trim().is_empty() => Vec::new(),
        _ => vec![("details".into(), details.to_owned())],
    }
}

pub async fn dashboard(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let (user_count, events) = state
        .db
        .run(|conn| Ok::<_, DbError>((user::count(conn)?, audit::recent(conn, RECENT_EVENTS)?)))
        .await?;
    render(&Dashboard {
        ctx: PageContext::new(&session, Some(&viewer.0))?,
        user_count,
        events: events.into_iter().map(EventView::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_as_fields() {
        assert_eq!(
            detail_fields(r#"{"reason":"unknown","sessions_ended":1,"promoted":true}"#),
            vec![
                ("promoted".to_owned(), "true".to_owned()),
                ("reason".to_owned(), "unknown".to_owned()),
                ("sessions ended".to_owned(), "1".to_owned()),
            ]
        );
        assert!(detail_fields("{}").is_empty());
        assert!(detail_fields("").is_empty());
        assert_eq!(
            detail_fields("not json"),
            vec![("details".to_owned(), "not json".to_owned())]
        );
    }
}
