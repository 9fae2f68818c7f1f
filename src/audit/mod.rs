//! The security audit log: every security-relevant event, with a severity, an actor and the
//! client IP, in the `security_events` table (and mirrored to the log).
//!
//! Details are JSON built by the caller from already-masked values: no secret, password,
//! token or full email ever goes in.
//!
//! Refusals of unauthenticated requests can come in floods, so they are aggregated
//! ([`SecurityEvent::aggregate`]): a repeat of the same refusal (kind, client — an IPv6 client
//! by its /64 —, actor and reason) in the same time slot (`AUDIT_AGGREGATE_WINDOW_SECS`) is
//! counted on the first one's row (`count`, `last_seen_at`) instead of adding one. A thousand
//! junk tokens from one address are one row with a count of 1,000; each distinct actor or
//! account keeps a row of its own.

pub mod alerts;
pub mod chain;
pub mod file_sink;
pub mod overview;
pub mod query;
pub mod retention;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{NaiveDateTime, Timelike as _};
use diesel::Connection as _;
use serde_json::Value;

use crate::db::models::security_event::{self, NewSecurityEvent, SecurityEventRow};
use crate::db::models::user::{self, UserId};
use crate::db::{Db, DbConnection, DbError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// `LOW`, `medium`, …: the stored spelling, in any case.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|severity| severity.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// This severity and every higher one.
    pub fn and_above(self) -> impl Iterator<Item = Self> {
        Self::ALL
            .into_iter()
            .filter(move |severity| *severity >= self)
    }

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter)]
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
    /// A free plan started without Checkout (no card).
    FreeSubscriptionStarted,
    StripeRateLimited,
    /// A billing form's operation id submitted by an account other than the one that claimed it.
    OperationIdReused,
    WebhookValidated,
    WebhookInvalidSignature,
    WebhookInvalidPayload,
    WebhookInvalidIp,
    WebhookRateLimitExceeded,
    PaymentFailed,
    DisputeCreated,
    WebhookReprocessed,
    /// A replay attempt: a valid signature with a stale timestamp (refused), or a stored event
    /// id re-sent under another signature (answered as a duplicate).
    WebhookReplay,
    /// Failures piled up (see [`alerts`]).
    Alert,
    /// `set-role` gave an account another role.
    RoleChanged,
    /// An account confirmed its TOTP secret (two-factor sign-in is on).
    TwoFactorEnrolled,
    /// A sign-in's second step passed with a TOTP code.
    TwoFactorSucceeded,
    /// A wrong, replayed or malformed code at the second step (or at enrolment).
    TwoFactorFailed,
    /// The second step refused unchecked: too many recent failures for the account.
    TwoFactorLocked,
    /// A sign-in's second step passed with a one-time recovery code.
    RecoveryCodeUsed,
    /// The audit log was exported from the console (`/admin/security/export`).
    AuditExported,
    /// An admin put a dead (or not sent) notification back in the outbox.
    NotificationRedelivered,
    /// An admin registered a webhook endpoint of the product's own services.
    WebhookEndpointCreated,
    /// An admin turned a webhook endpoint on or off.
    WebhookEndpointUpdated,
    /// An admin gave a webhook endpoint a new signing secret.
    WebhookEndpointSecretRotated,
    WebhookEndpointDeleted,
    /// A customer changed plan, interval or seats at once (Stripe applied it, prorated).
    PlanChanged,
    /// A customer asked for a change at the end of the period (a Stripe subscription schedule).
    PlanChangeScheduled,
    /// Stripe applied a scheduled change at the renewal.
    PlanChangeApplied,
    /// A customer called off a scheduled change.
    PlanChangeCanceled,
    /// A reconciliation with Stripe (`tollgate sync`, the console's resync): the differences
    /// found, the ones repaired and the missed events replayed.
    StripeSyncRun,
    /// `tollgate import-stripe --apply` linked an existing Stripe customer to an account.
    StripeCustomerImported,
    /// A past-due subscription was canceled at once (its open invoice is no longer collected).
    PastDueSubscriptionCanceled,
    /// An admin set a plan's own past-due grace.
    PlanGraceChanged,
    /// An admin created a coupon (synced to Stripe).
    CouponCreated,
    /// An admin created a customer-facing promotion code for a coupon.
    PromotionCodeCreated,
    /// An admin stopped a promotion code from being redeemed.
    PromotionCodeDeactivated,
    /// An admin added, changed or removed a plan's metered component (synced to Stripe).
    PlanMeterChanged,
    /// A customer's usage spend reached 80 % or 100 % of their spend alert (notified once).
    UsageThresholdReached,
    /// A reserve the database could not decide in time: the feature's policy (fail open or
    /// closed) answered.
    UsageUndecided,
    /// A customer set or cleared their usage spend alert or hard cap.
    UsageSpendLimitsChanged,
    /// An admin set or cleared a plan's usage spend cap per customer.
    PlanSpendCapChanged,
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
            Self::FreeSubscriptionStarted => "free_subscription_started",
            Self::StripeRateLimited => "stripe_rate_limited",
            Self::OperationIdReused => "operation_id_reused",
            Self::WebhookValidated => "webhook_validated",
            Self::WebhookInvalidSignature => "webhook_invalid_signature",
            Self::WebhookInvalidPayload => "webhook_invalid_payload",
            Self::WebhookInvalidIp => "webhook_invalid_ip",
            Self::WebhookRateLimitExceeded => "webhook_rate_limit_exceeded",
            Self::PaymentFailed => "payment_failed",
            Self::DisputeCreated => "charge_dispute_created",
            Self::WebhookReprocessed => "webhook_reprocessed",
            Self::WebhookReplay => "webhook_replay",
            Self::Alert => "alert",
            Self::RoleChanged => "role_changed",
            Self::TwoFactorEnrolled => "two_factor_enrolled",
            Self::TwoFactorSucceeded => "two_factor_succeeded",
            Self::TwoFactorFailed => "two_factor_failed",
            Self::TwoFactorLocked => "two_factor_locked",
            Self::RecoveryCodeUsed => "two_factor_recovery_code_used",
            Self::AuditExported => "audit_exported",
            Self::NotificationRedelivered => "notification_redelivered",
            Self::WebhookEndpointCreated => "webhook_endpoint_created",
            Self::WebhookEndpointUpdated => "webhook_endpoint_updated",
            Self::WebhookEndpointSecretRotated => "webhook_endpoint_secret_rotated",
            Self::WebhookEndpointDeleted => "webhook_endpoint_deleted",
            Self::PlanChanged => "plan_changed",
            Self::PlanChangeScheduled => "plan_change_scheduled",
            Self::PlanChangeApplied => "plan_change_applied",
            Self::PlanChangeCanceled => "plan_change_canceled",
            Self::StripeSyncRun => "stripe_sync_run",
            Self::StripeCustomerImported => "stripe_customer_imported",
            Self::PastDueSubscriptionCanceled => "past_due_subscription_canceled",
            Self::PlanGraceChanged => "plan_grace_changed",
            Self::CouponCreated => "coupon_created",
            Self::PromotionCodeCreated => "promotion_code_created",
            Self::PromotionCodeDeactivated => "promotion_code_deactivated",
            Self::PlanMeterChanged => "plan_meter_changed",
            Self::UsageThresholdReached => "usage_threshold_reached",
            Self::UsageUndecided => "usage_undecided",
            Self::UsageSpendLimitsChanged => "usage_spend_limits_changed",
            Self::PlanSpendCapChanged => "plan_spend_cap_changed",
        }
    }

    /// Every kind, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The kind whose stable string is `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::all().find(|kind| kind.as_str() == text)
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
            | Self::FreeSubscriptionStarted
            | Self::StripeRateLimited => Severity::Medium,
            Self::PlanCreated | Self::PlanUpdated | Self::PlanArchived | Self::PlanMeterChanged => {
                Severity::Medium
            }
            Self::CsrfRejected
            | Self::AdminCreated
            | Self::ServiceTokenRejected
            | Self::OperationIdReused => Severity::High,
            // Ten wrong passwords for one account: someone is guessing.
            Self::LoginLocked => Severity::High,
            Self::ServiceTokenCreated | Self::ServiceTokenRevoked | Self::KeyRotated => {
                Severity::High
            }
            // The whole log leaving the building in one file.
            Self::AuditExported => Severity::High,
            Self::WebhookReprocessed | Self::NotificationRedelivered => Severity::Medium,
            Self::WebhookReplay => Severity::High,
            // A new destination for customer data, or a new credential.
            Self::WebhookEndpointCreated | Self::WebhookEndpointSecretRotated => Severity::High,
            Self::WebhookEndpointUpdated | Self::WebhookEndpointDeleted => Severity::Medium,
            Self::StripeSyncRun => Severity::Medium,
            // Billing identity attached to an account.
            Self::StripeCustomerImported => Severity::High,
            Self::PastDueSubscriptionCanceled | Self::PlanGraceChanged => Severity::Medium,
            Self::TwoFactorSucceeded => Severity::Low,
            Self::TwoFactorFailed => Severity::Medium,
            Self::RoleChanged
            | Self::TwoFactorEnrolled
            | Self::TwoFactorLocked
            | Self::RecoveryCodeUsed => Severity::High,
            Self::SessionsRevoked | Self::LeasesDisabled | Self::LeasesEnabled | Self::Alert => {
                Severity::Critical
            }
            Self::PlanChanged
            | Self::PlanChangeScheduled
            | Self::PlanChangeApplied
            | Self::PlanChangeCanceled => Severity::Medium,
            // Money off for whoever holds a code.
            Self::CouponCreated | Self::PromotionCodeCreated | Self::PromotionCodeDeactivated => {
                Severity::Medium
            }
            Self::UsageThresholdReached => Severity::Low,
            // Access granted or refused without a decision: the database did not answer.
            Self::UsageUndecided => Severity::High,
            // What a customer may be billed for usage.
            Self::UsageSpendLimitsChanged | Self::PlanSpendCapChanged => Severity::Medium,
        }
    }
}

/// Who acts, in the audit log's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody signed in (a sign-up or sign-in in progress, a refused request).
    Anonymous,
    /// A signed-in customer account.
    User(UserId),
    /// A signed-in support account (the read-only console).
    Support(UserId),
    /// A signed-in admin account.
    Admin(UserId),
    /// An internal service, by its token's name.
    Service(String),
    /// Tollgate itself (start-up work such as seeding the offline demo).
    System,
    /// Stripe, delivering a webhook.
    Stripe,
}

/// Who did something and from where: handed by the web layer (an extractor) to domain
/// functions, which write it into the audit row of the change they make, in the same
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal: Principal,
    /// The client's address as Tollgate resolves it (trusted proxies only).
    pub ip: Option<IpAddr>,
    /// The request this is part of (its `X-Request-Id`), copied into every audit row it writes.
    pub request_id: Option<String>,
}

impl Actor {
    pub fn new(principal: Principal, ip: Option<IpAddr>) -> Self {
        Self {
            principal,
            ip,
            request_id: None,
        }
    }

    /// The same actor, acting within the request `request_id`.
    pub fn in_request(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// Tollgate itself, from no address.
    pub fn system() -> Self {
        Self::new(Principal::System, None)
    }

    /// The account acting, whether as a customer or as an admin.
    pub fn account(&self) -> Option<UserId> {
        match self.principal {
            Principal::User(id) | Principal::Support(id) | Principal::Admin(id) => Some(id),
            Principal::Anonymous
            | Principal::Service(_)
            | Principal::System
            | Principal::Stripe => None,
        }
    }

    /// The same client acting as `principal`: the account a sign-up creates or a sign-in
    /// names, which the audit row is about.
    pub fn acting_as(&self, principal: Principal) -> Self {
        Self::new(principal, self.ip).in_request(self.request_id.clone())
    }

    /// `user:42`, `admin:42`, a service token's name; `None` for nobody.
    pub fn label(&self) -> Option<String> {
        match &self.principal {
            Principal::Anonymous => None,
            Principal::User(id) => Some(format!("user:{id}")),
            Principal::Support(id) => Some(format!("support:{id}")),
            Principal::Admin(id) => Some(format!("admin:{id}")),
            Principal::Service(name) => Some(name.clone()),
            Principal::System => Some("tollgate".to_owned()),
            Principal::Stripe => Some("stripe".to_owned()),
        }
    }

    /// An audit record of `kind` by this actor, from its address.
    pub fn event(&self, kind: Kind) -> SecurityEvent {
        let mut event = SecurityEvent::new(kind);
        event.actor = self.label();
        event.ip = self.ip.map(|ip| ip.to_string());
        event.request_id = self.request_id.clone();
        event
    }
}

/// The account a label such as `user:42` or `admin:42` names (the inverse of
/// [`Actor::label`] for accounts).
fn labelled_account(label: &str) -> Option<UserId> {
    let (role, id) = label.split_once(':')?;
    matches!(role, "user" | "support" | "admin")
        .then(|| id.parse().ok())
        .flatten()
}

/// One audit record, built with [`SecurityEvent::new`] and the `actor`/`ip`/`details` setters.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    pub kind: Kind,
    pub severity: Severity,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub details: Value,
    /// The request it came from (`X-Request-Id`); none for the CLI and start-up work.
    pub request_id: Option<String>,
    /// Set for refusals whose repeats are counted on one row.
    pub aggregate: Option<Aggregate>,
}

/// How a repeated event is recognised and for how long repeats join its row.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Repeats in the same slot of this length (counted from the Unix epoch) share a row.
    pub window: Duration,
    /// What else must match besides kind, client and actor (e.g. the refusal's reason).
    pub reason: String,
}

impl SecurityEvent {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            severity: kind.severity(),
            actor: None,
            ip: None,
            details: Value::Object(Default::default()),
            request_id: None,
            aggregate: None,
        }
    }

    /// Counts this event on the row of the same event (same kind, client, actor and `reason`)
    /// in the same `window`-long time slot, if there is one, instead of adding a row. For
    /// refusals, whose floods must not flood the log. A zero window turns this off.
    pub fn aggregate(mut self, window: Duration, reason: impl Into<String>) -> Self {
        self.aggregate = (!window.is_zero()).then(|| Aggregate {
            window,
            reason: reason.into(),
        });
        self
    }

    /// What makes two occurrences "the same": kind, client (an IPv6 client by its /64), actor,
    /// reason and time slot, as one unambiguous string.
    fn aggregate_key(&self, aggregate: &Aggregate, at: NaiveDateTime) -> String {
        let client = self.ip.as_deref().map(|ip| match ip.parse::<IpAddr>() {
            Ok(ip) => crate::limits::client_key(ip).to_string(),
            Err(_) => ip.to_owned(),
        });
        let window = i64::try_from(aggregate.window.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let slot = at.and_utc().timestamp().div_euclid(window);
        serde_json::json!([
            self.kind.as_str(),
            client,
            self.actor,
            aggregate.reason,
            slot
        ])
        .to_string()
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
pub fn write(conn: &mut DbConnection, event: &SecurityEvent) -> Result<(), DbError> {
    write_many(conn, std::slice::from_ref(event))
}

/// Writes several events at once (one statement where the backend allows); repeats of an
/// aggregated event are counted on its row.
pub fn write_many(conn: &mut DbConnection, events: &[SecurityEvent]) -> Result<(), DbError> {
    write_many_at(conn, events, now())
}

/// [`write_many`] inside the caller's transaction, without a savepoint of its own (two round
/// trips fewer): for a caller that rolls its whole transaction back when this fails, as group
/// commit does.
pub fn write_many_in_transaction(
    conn: &mut DbConnection,
    events: &[SecurityEvent],
) -> Result<(), DbError> {
    append_many(conn, events, now())?;
    logged(events);
    Ok(())
}

/// [`write_many`] as if it were `at` (which decides the time slot of aggregated events).
///
/// Each new row is chained ([`chain`]): the chain head is locked first (in a transaction of its
/// own, or a savepoint of the caller's), the rows are inserted in order with their sequence and
/// hash, and the head moves on, all in the caller's transaction.
pub fn write_many_at(
    conn: &mut DbConnection,
    events: &[SecurityEvent],
    at: NaiveDateTime,
) -> Result<(), DbError> {
    import_at(conn, events, at)?;
    logged(events);
    Ok(())
}

/// [`write_many_at`] without logging or counting the rows: for `tollgate bench seed`, which
/// appends millions of made-up rows that happened nowhere.
pub fn import_at(
    conn: &mut DbConnection,
    events: &[SecurityEvent],
    at: NaiveDateTime,
) -> Result<(), DbError> {
    conn.transaction(|conn| append_many(conn, events, at))
}

/// Appends `events` to the chain as if they happened `at`, in whatever transaction `conn` is in.
fn append_many(
    conn: &mut DbConnection,
    events: &[SecurityEvent],
    at: NaiveDateTime,
) -> Result<(), DbError> {
    // The stored time is the hashed time: both backends keep microseconds.
    let at = at
        .with_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at);
    let details: Vec<String> = events.iter().map(|e| e.details.to_string()).collect();
    let keys: Vec<Option<String>> = events
        .iter()
        .map(|e| e.aggregate.as_ref().map(|a| e.aggregate_key(a, at)))
        .collect();
    let mut append = chain::Append::begin(conn)?;
    let chain = append.chain().to_owned();
    let mut pending = Vec::new();
    let mut hours = HourCounts::default();
    let aggregated = keys.iter().any(Option::is_some);
    for ((event, details), key) in events.iter().zip(&details).zip(&keys) {
        let content = chain::Chained {
            chain: &chain,
            sequence: append.next_sequence(),
            occurred_at: at,
            kind: event.kind.as_str(),
            severity: event.severity.as_str(),
            actor: event.actor.as_deref(),
            ip: event.ip.as_deref(),
            details,
            aggregate_key: key.as_deref(),
            request_id: event.request_id.as_deref(),
        };
        let hash = append.hash_next(&content);
        let row = NewSecurityEvent {
            occurred_at: at,
            last_seen_at: at,
            kind: content.kind,
            severity: content.severity,
            actor: content.actor,
            ip: content.ip,
            details,
            aggregate_key: content.aggregate_key,
            request_id: content.request_id,
            chain_id: Some(content.chain),
            chain_seq: Some(content.sequence),
            hash: Some(hash.clone()),
        };
        match key {
            Some(key) => {
                // Rows go in sequence order: what is pending first.
                security_event::insert_many(conn, &std::mem::take(&mut pending))?;
                security_event::insert_or_count(conn, &row)?;
                // A repeat counted on an earlier row takes no place in the chain.
                let position = security_event::chain_position(conn, key)?;
                if let Some((chain, first)) = position {
                    if chain == (Some(content.chain.to_owned()), Some(content.sequence)) {
                        append.appended(hash);
                    }
                    // A repeat counts in the hour of its first occurrence, as its row does.
                    hours.add(first, event.severity.as_str());
                }
            }
            None => {
                pending.push(row);
                append.appended(hash);
                hours.add(at, event.severity.as_str());
            }
        }
    }
    if let (DbConnection::Postgresql(pg), false, Some(head)) =
        (&mut *conn, aggregated, append.moved_to())
    {
        // Every row is in `pending`: rows, rollup and head in one round trip.
        return security_event::append_plain(pg, &pending, &hours.0, head);
    }
    security_event::insert_many(conn, &pending)?;
    security_event::count_hours(conn, &chain, &hours.0)?;
    append.finish(conn)
}

/// Occurrences per (hour, severity) of one append, for the dashboard's rollup.
#[derive(Default)]
struct HourCounts(Vec<(NaiveDateTime, &'static str, i64)>);

impl HourCounts {
    fn add(&mut self, at: NaiveDateTime, severity: &'static str) {
        let hour = at.date().and_hms_opt(at.hour(), 0, 0).unwrap_or(at);
        match self
            .0
            .iter_mut()
            .find(|(h, s, _)| *h == hour && *s == severity)
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((hour, severity, 1)),
        }
    }
}

/// Logs `events` (recorded) and counts them in the metrics.
fn logged(events: &[SecurityEvent]) {
    for event in events {
        tracing::info!(
            target: "tollgate::audit",
            kind = event.kind.as_str(),
            severity = event.severity.as_str(),
            actor = event.actor.as_deref().unwrap_or("-"),
            ip = event.ip.as_deref().unwrap_or("-"),
            request_id = event.request_id.as_deref().unwrap_or("-"),
            "security event"
        );
    }
    crate::metrics::audit_events(events);
}

/// A recorded event, with the email of the account its actor names (if it names one).
#[derive(Debug)]
pub struct RecordedEvent {
    pub row: SecurityEventRow,
    pub account_email: Option<String>,
}

/// The latest `limit` events, newest first, each with its actor's account email: one query for
/// the events, one for the emails.
pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<RecordedEvent>, DbError> {
    let rows = security_event::recent(conn, limit)?;
    with_account_emails(conn, rows)
}

/// `rows`, each with its actor's account email: one query for all the emails.
pub(crate) fn with_account_emails(
    conn: &mut DbConnection,
    rows: Vec<SecurityEventRow>,
) -> Result<Vec<RecordedEvent>, DbError> {
    let account = |row: &SecurityEventRow| row.actor.as_deref().and_then(labelled_account);
    let mut ids: Vec<UserId> = rows.iter().filter_map(account).collect();
    ids.sort_unstable();
    ids.dedup();
    let emails: HashMap<UserId, String> = user::emails_by_id(conn, &ids)?.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|row| RecordedEvent {
            account_email: account(&row).and_then(|id| emails.get(&id).cloned()),
            row,
        })
        .collect())
}

/// Records an event from a request handler.
pub async fn record(db: &Db, event: SecurityEvent) -> Result<(), DbError> {
    db.run(move |conn| write(conn, &event)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_accounts_and_nothing_else() {
        for (principal, account) in [
            (Principal::User(UserId::from(42)), Some(UserId::from(42))),
            (Principal::Admin(UserId::from(7)), Some(UserId::from(7))),
            (Principal::Support(UserId::from(9)), Some(UserId::from(9))),
            (Principal::Service("engine".into()), None),
            (Principal::Stripe, None),
            (Principal::System, None),
        ] {
            let label = Actor::new(principal, None).label().unwrap_or_default();
            assert_eq!(labelled_account(&label), account, "{label}");
        }
        assert_eq!(labelled_account("user:x"), None);
        assert_eq!(labelled_account("token:3"), None);
        assert_eq!(labelled_account("stripe"), None);
    }
}
