//! The admin console's front page: accounts and the latest security events (a repeated
//! refusal shows its count and when it was first and last seen).

use std::collections::HashMap;

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
    /// The account's email when the actor is an account, else the actor as recorded.
    actor: String,
    /// The customer search for that account.
    actor_href: Option<String>,
    ip: String,
    /// The details' fields (by name), as text.
    details: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct Dashboard {
    ctx: PageContext,
    user_count: i64,
    events: Vec<EventView>,
}

const RECENT_EVENTS: i64 = 50;

/// The account an actor such as `user:42` or `admin:42` names.
fn actor_account(actor: &str) -> Option<user::UserId> {
    let (role, id) = actor.split_once(':')?;
    matches!(role, "user" | "admin")
        .then(|| id.parse().ok())
        .flatten()
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
    admin: AdminUser,
) -> Result<HttpResponse, AppError> {
    let (user_count, rows, emails) = state
        .db
        .run(|conn| {
            let rows = security_event::recent(conn, RECENT_EVENTS)?;
            let mut ids: Vec<user::UserId> = rows
                .iter()
                .filter_map(|row| row.actor.as_deref().and_then(actor_account))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let emails: HashMap<user::UserId, String> =
                user::emails_by_id(conn, &ids)?.into_iter().collect();
            Ok::<_, DbError>((user::count(conn)?, rows, emails))
        })
        .await?;
    let events = rows
        .into_iter()
        .map(|row| {
            let email = row
                .actor
                .as_deref()
                .and_then(actor_account)
                .and_then(|id| emails.get(&id));
            EventView {
                at: datetime_seconds(&row.last_seen_at),
                count: row.count,
                first_seen: datetime_seconds(&row.occurred_at),
                kind: row.kind,
                severity: row.severity,
                actor_href: email.map(|email| {
                    format!(
                        "/admin/customers?{}",
                        serde_urlencoded::to_string([("q", email)]).unwrap_or_default()
                    )
                }),
                actor: email.cloned().or(row.actor).unwrap_or_else(|| "—".into()),
                ip: row.ip.unwrap_or_else(|| "—".into()),
                details: detail_fields(&row.details),
            }
        })
        .collect();
    render(&Dashboard {
        ctx: PageContext::new(&session, Some(&admin.0))?,
        user_count,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_details_read_as_people_and_fields() {
        assert_eq!(actor_account("user:42"), Some(user::UserId::from(42)));
        assert_eq!(actor_account("admin:7"), Some(user::UserId::from(7)));
        assert_eq!(actor_account("stripe"), None);
        assert_eq!(actor_account("user:x"), None);
        assert_eq!(actor_account("token:3"), None);
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
