//! The security audit log: every security-relevant event, with a severity, an actor and the
//! client IP, in the `security_events` table (and mirrored to the log).
//!
//! Details are JSON built by the caller from already-masked values: no secret, password,
//! token or full email ever goes in.

pub mod alerts;

use serde_json::Value;

use crate::db::models::security_event::{self, NewSecurityEvent};
use crate::db::{Db, DbError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        }
    }
}

/// What happened. The string forms are stable: operators filter and alert on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signup,
    LoginSucceeded,
    LoginFailed,
    /// Sign-in refused unchecked: too many recent failures for the account.
    LoginLocked,
    Logout,
    RateLimited,
    CsrfRejected,
    AdminCreated,
    ByokKeySaved,
    ByokKeyDeleted,
    ByokLeased,
    ServiceTokenRejected,
    ServiceTokenCreated,
    ServiceTokenRevoked,
    SessionsRevoked,
    LeasesDisabled,
    LeasesEnabled,
    KeyRotated,
    PlanCreated,
    PlanUpdated,
    PlanArchived,
    SubscriptionCancelRequested,
    SubscriptionResumed,
    StripeRateLimited,
    WebhookValidated,
    WebhookInvalidSignature,
    WebhookInvalidPayload,
    WebhookInvalidIp,
    WebhookRateLimitExceeded,
    PaymentFailed,
    DisputeCreated,
    WebhookReprocessed,
    /// Failures piled up (see [`alerts`]).
    Alert,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginLocked => "login_locked",
            Self::Logout => "logout",
            Self::RateLimited => "rate_limited",
            Self::CsrfRejected => "csrf_rejected",
            Self::AdminCreated => "admin_created",
            Self::ByokKeySaved => "byok_key_saved",
            Self::ByokKeyDeleted => "byok_key_deleted",
            Self::ByokLeased => "byok_leased",
            Self::ServiceTokenRejected => "service_token_rejected",
            Self::ServiceTokenCreated => "service_token_created",
            Self::ServiceTokenRevoked => "service_token_revoked",
            Self::SessionsRevoked => "sessions_revoked",
            Self::LeasesDisabled => "byok_leases_disabled",
            Self::LeasesEnabled => "byok_leases_enabled",
            Self::KeyRotated => "encryption_key_rotated",
            Self::PlanCreated => "plan_created",
            Self::PlanUpdated => "plan_updated",
            Self::PlanArchived => "plan_archived",
            Self::SubscriptionCancelRequested => "subscription_cancel_requested",
            Self::SubscriptionResumed => "subscription_resumed",
            Self::StripeRateLimited => "stripe_rate_limited",
            Self::WebhookValidated => "webhook_validated",
            Self::WebhookInvalidSignature => "webhook_invalid_signature",
            Self::WebhookInvalidPayload => "webhook_invalid_payload",
            Self::WebhookInvalidIp => "webhook_invalid_ip",
            Self::WebhookRateLimitExceeded => "webhook_rate_limit_exceeded",
            Self::PaymentFailed => "payment_failed",
            Self::DisputeCreated => "charge_dispute_created",
            Self::WebhookReprocessed => "webhook_reprocessed",
            Self::Alert => "alert",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Self::Signup | Self::LoginSucceeded | Self::Logout | Self::WebhookValidated => {
                Severity::Low
            }
            Self::WebhookRateLimitExceeded | Self::WebhookInvalidPayload => Severity::Medium,
            Self::WebhookInvalidSignature
            | Self::WebhookInvalidIp
            | Self::PaymentFailed
            | Self::DisputeCreated => Severity::High,
            Self::LoginFailed | Self::RateLimited => Severity::Medium,
            Self::ByokKeySaved | Self::ByokKeyDeleted | Self::ByokLeased => Severity::Medium,
            Self::SubscriptionCancelRequested
            | Self::SubscriptionResumed
            | Self::StripeRateLimited => Severity::Medium,
            Self::PlanCreated | Self::PlanUpdated | Self::PlanArchived => Severity::Medium,
            Self::CsrfRejected | Self::AdminCreated | Self::ServiceTokenRejected => Severity::High,
            // Ten wrong passwords for one account: someone is guessing.
            Self::LoginLocked => Severity::High,
            Self::ServiceTokenCreated | Self::ServiceTokenRevoked | Self::KeyRotated => {
                Severity::High
            }
            Self::WebhookReprocessed => Severity::Medium,
            Self::SessionsRevoked | Self::LeasesDisabled | Self::LeasesEnabled | Self::Alert => {
                Severity::Critical
            }
        }
    }
}

/// One audit record, built with [`SecurityEvent::new`] and the `actor`/`ip`/`details` setters.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    pub kind: Kind,
    pub severity: Severity,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub details: Value,
}

impl SecurityEvent {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            severity: kind.severity(),
            actor: None,
            ip: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn ip(mut self, ip: impl ToString) -> Self {
        self.ip = Some(ip.to_string());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Writes one event (on the calling thread: use inside `Db::run` or from the CLI).
pub fn write(conn: &mut crate::db::DbConnection, event: &SecurityEvent) -> Result<(), DbError> {
    write_many(conn, std::slice::from_ref(event))
}

/// Writes several events at once (one statement where the backend allows).
pub fn write_many(
    conn: &mut crate::db::DbConnection,
    events: &[SecurityEvent],
) -> Result<(), DbError> {
    let at = now();
    let details: Vec<String> = events.iter().map(|e| e.details.to_string()).collect();
    let rows: Vec<NewSecurityEvent<'_>> = events
        .iter()
        .zip(&details)
        .map(|(event, details)| NewSecurityEvent {
            occurred_at: at,
            kind: event.kind.as_str(),
            severity: event.severity.as_str(),
            actor: event.actor.as_deref(),
            ip: event.ip.as_deref(),
            details,
        })
        .collect();
    security_event::insert_many(conn, &rows)?;
    for event in events {
        tracing::info!(
            target: "tollgate::audit",
            kind = event.kind.as_str(),
            severity = event.severity.as_str(),
            actor = event.actor.as_deref().unwrap_or("-"),
            ip = event.ip.as_deref().unwrap_or("-"),
            "security event"
        );
    }
    Ok(())
}

/// Records an event from a request handler.
pub async fn record(db: &Db, event: SecurityEvent) -> Result<(), DbError> {
    db.run(move |conn| write(conn, &event)).await
}
