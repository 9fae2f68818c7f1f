//! Notifications: one durable outbox (`notifications`) for customer e-mail, the product's own
//! services' webhooks (Standard Webhooks) and alert webhooks.
//!
//! Domain code calls [`publish`], [`email`] or [`alert_webhook`] inside the transaction of the
//! change that causes the notification, naming its cause (a Stripe event id, an operation's
//! idempotency key): the row commits with the change or not at all, and a second write of the
//! same cause (a duplicate Stripe delivery, a retried request) adds nothing. The delivery
//! [`worker`] sends due rows, retries with backoff and jitter, and marks them dead after
//! `NOTIFY_MAX_ATTEMPTS`; receivers deduplicate by the row's message id.

pub mod email;
pub mod endpoints;
pub mod worker;

use chrono::NaiveDateTime;
use serde_json::{Value, json};

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::db::models::notification::{self, NewNotification};
use crate::db::models::webhook_endpoint;
use crate::db::{DbConnection, DbError};

pub use email::Email;

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum Channel {
    /// A customer (or, for alerts, `ALERT_EMAIL_TO`), over SMTP.
    Email,
    /// A webhook endpoint of the product's own services, signed per Standard Webhooks.
    AppWebhook,
    /// `ALERT_WEBHOOK_URL` (Slack-compatible), signed `X-Tollgate-Signature`.
    AlertWebhook,
}

impl Channel {
    pub const ALL: [Self; 3] = [Self::Email, Self::AppWebhook, Self::AlertWebhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::AppWebhook => "app_webhook",
            Self::AlertWebhook => "alert_webhook",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Email => "E-mail",
            Self::AppWebhook => "App webhooks",
            Self::AlertWebhook => "Alert webhook",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

/// Where a notification is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its first attempt.
    Pending,
    /// Claimed by a worker, being sent (until its lease runs out).
    Sending,
    /// An attempt failed; another is due at `next_attempt_at`.
    Retrying,
    Sent,
    /// Every attempt failed (`NOTIFY_MAX_ATTEMPTS`), or the receiver refused it for good.
    Dead,
    /// An e-mail recorded while SMTP is not configured: kept, never sent by itself.
    NotSent,
}

impl Status {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Sending,
        Self::Retrying,
        Self::Sent,
        Self::Dead,
        Self::NotSent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Retrying => "retrying",
            Self::Sent => "sent",
            Self::Dead => "dead",
            Self::NotSent => "not_sent",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::NotSent => "not sent",
            other => other.as_str(),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The events the product's own services can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEvent {
    SubscriptionActivated,
    SubscriptionUpdated,
    SubscriptionCanceled,
    EntitlementsChanged,
    InvoicePaid,
    InvoicePaymentFailed,
    ByokKeyChanged,
    /// Usage spend reached 80 % or 100 % of the customer's spend alert.
    UsageThresholdReached,
}

impl AppEvent {
    pub const ALL: [Self; 8] = [
        Self::SubscriptionActivated,
        Self::SubscriptionUpdated,
        Self::SubscriptionCanceled,
        Self::EntitlementsChanged,
        Self::InvoicePaid,
        Self::InvoicePaymentFailed,
        Self::ByokKeyChanged,
        Self::UsageThresholdReached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubscriptionActivated => "subscription.activated",
            Self::SubscriptionUpdated => "subscription.updated",
            Self::SubscriptionCanceled => "subscription.canceled",
            Self::EntitlementsChanged => "entitlements.changed",
            Self::InvoicePaid => "invoice.paid",
            Self::InvoicePaymentFailed => "invoice.payment_failed",
            Self::ByokKeyChanged => "byok_key.changed",
            Self::UsageThresholdReached => "usage.threshold_reached",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

/// A fresh message id (`msg_` + 32 hex digits): what receivers deduplicate by.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The Standard Webhooks payload: `{"type", "timestamp", "data"}`, `data` holding the user
/// id and the event's fields (keys in alphabetical order, as serialised).
pub fn app_payload(event: AppEvent, user_id: UserId, at: NaiveDateTime, data: Value) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("user_id".into(), json!(user_id));
    if let Value::Object(fields) = data {
        body.extend(fields);
    }
    json!({
        "type": event.as_str(),
        "timestamp": at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": body,
    })
}

/// Queues `event` for `user_id` to every enabled endpoint that receives it, once per `cause`
/// and endpoint. Rows of one customer at one endpoint go out in the order they were written.
/// Returns how many rows were added.
pub fn publish(
    conn: &mut DbConnection,
    event: AppEvent,
    user_id: UserId,
    data: Value,
    cause: &str,
) -> Result<usize, DbError> {
    let endpoints = webhook_endpoint::enabled_for(conn, event.as_str())?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let at = crate::db::now();
    let payload = app_payload(event, user_id, at, data).to_string();
    let mut added = 0;
    for endpoint in endpoints {
        let message_id = new_message_id();
        let new = NewNotification {
            message_id: &message_id,
            dedupe_key: &format!(
                "app_webhook:{}:{}:{cause}",
                endpoint.public_id,
                event.as_str()
            ),
            channel: Channel::AppWebhook.as_str(),
            event_type: event.as_str(),
            user_id: Some(user_id.get()),
            endpoint_id: Some(endpoint.id),
            recipient: &endpoint.public_id,
            order_key: &format!("app_webhook:{}:user:{user_id}", endpoint.public_id),
            payload: &payload,
            status: Status::Pending.as_str(),
            next_attempt_at: at,
            created_at: at,
            updated_at: at,
        };
        added += usize::from(notification::insert_once(conn, &new)?);
    }
    Ok(added)
}

/// Queues `message` to `to` (for `user_id`, when it is a customer's), once per `cause`.
/// E-mails to one address go out in the order they were written.
pub fn email(
    conn: &mut DbConnection,
    user_id: Option<UserId>,
    to: &str,
    message: &Email,
    cause: &str,
) -> Result<bool, DbError> {
    let at = crate::db::now();
    let message_id = new_message_id();
    let template = message.template();
    let payload = serde_json::to_string(message)
        .map_err(|err| DbError::Query(diesel::result::Error::SerializationError(Box::new(err))))?;
    let new = NewNotification {
        message_id: &message_id,
        dedupe_key: &format!("email:{template}:{cause}:{to}"),
        channel: Channel::Email.as_str(),
        event_type: template,
        user_id: user_id.map(UserId::get),
        endpoint_id: None,
        recipient: to,
        order_key: &format!("email:{to}"),
        payload: &payload,
        status: Status::Pending.as_str(),
        next_attempt_at: at,
        created_at: at,
        updated_at: at,
    };
    notification::insert_once(conn, &new)
}

/// Queues an alert's JSON `body` for `ALERT_WEBHOOK_URL`. Alerts are not held back by each
/// other: each is its own order key.
pub fn alert_webhook(conn: &mut DbConnection, rule: &str, body: &str) -> Result<bool, DbError> {
    let at = crate::db::now();
    let message_id = new_message_id();
    let new = NewNotification {
        message_id: &message_id,
        dedupe_key: &format!("alert_webhook:{message_id}"),
        channel: Channel::AlertWebhook.as_str(),
        event_type: rule,
        user_id: None,
        endpoint_id: None,
        recipient: "ALERT_WEBHOOK_URL",
        order_key: &format!("alert_webhook:{message_id}"),
        payload: body,
        status: Status::Pending.as_str(),
        next_attempt_at: at,
        created_at: at,
        updated_at: at,
    };
    notification::insert_once(conn, &new)
}

/// What a redelivery request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivered {
    /// Back in the queue for a fresh round of attempts.
    Queued,
    NotFound,
    /// Only dead and not-sent notifications are redelivered: this one is on its way or sent.
    NotRedeliverable(Status),
}

/// Puts a dead or not-sent notification back in the outbox (attempts start again), audited as
/// `actor`'s in the same transaction. It keeps its message id: a receiver that saw it already
/// recognises it.
pub fn redeliver(conn: &mut DbConnection, actor: &Actor, id: i64) -> Result<Redelivered, DbError> {
    use diesel::Connection as _;

    conn.transaction(|conn| {
        let Some(row) = notification::requeue(
            conn,
            id,
            &[Status::Dead, Status::NotSent].map(Status::as_str),
            crate::db::now(),
        )?
        else {
            return Ok(match notification::find(conn, id)? {
                None => Redelivered::NotFound,
                Some(row) => Redelivered::NotRedeliverable(
                    Status::parse(&row.status).unwrap_or(Status::Pending),
                ),
            });
        };
        audit::write(
            conn,
            &actor.event(Kind::NotificationRedelivered).details(json!({
                "notification": row.id,
                "channel": row.channel,
                "event_type": row.event_type,
                "previous_status": row.status,
                "attempts": row.attempts,
            })),
        )?;
        Ok(Redelivered::Queued)
    })
}
