//! Alerts: when failures of one kind pile up (a rule's threshold within its window), one
//! CRITICAL `alert` audit event and one ERROR log line, at most once per window per rule,
//! however many instances share the database; and, in the same transaction, one notification
//! in the outbox per channel that is on (`ALERT_WEBHOOK_URL`, [`delivery`]'s body and
//! signature; an e-mail to each `ALERT_EMAIL_TO` address), which the outbox's worker sends.
//!
//! Most rules count rows of the audit log itself (repeats included: an aggregated row counts
//! as many failures as its `count`), with one indexed query, and are checked only on the
//! failure's own path, right after its audit row is written. The 5xx rule counts responses in
//! memory, per instance, or with every instance in Redis when they share one
//! ([`ServerErrorRate`]).

pub mod delivery;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, NaiveDateTime};
use diesel::Connection as _;

use super::{Kind, SecurityEvent, write};
pub use crate::config::AlertRule;
use crate::config::AlertSettings;
use crate::db::models::alert;
use crate::db::models::security_event;
use crate::db::{DbConnection, DbError, now};

/// The audit kinds a rule counts (none for the 5xx rule, counted in memory, or for Redis
/// outages, raised as one begins).
pub fn counted_kinds(rule: AlertRule) -> &'static [Kind] {
    match rule {
        AlertRule::WebhookSignatureFailures => &[Kind::WebhookInvalidSignature],
        AlertRule::WebhookInvalidSources => &[Kind::WebhookInvalidIp],
        AlertRule::WebhookReplays => &[Kind::WebhookReplay],
        AlertRule::RateLimitViolations => &[
            Kind::RateLimited,
            Kind::WebhookRateLimitExceeded,
            Kind::StripeRateLimited,
        ],
        AlertRule::UserRateLimitViolations => &[Kind::RateLimited, Kind::StripeRateLimited],
        AlertRule::PaymentFailures => &[Kind::PaymentFailed],
        AlertRule::ServerErrors | AlertRule::RedisUnavailable => &[],
    }
}

/// What a rule observed when it reached its threshold.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Events in the window (for the 5xx rule: 5xx responses).
    pub count: i64,
    /// For the 5xx rule: every response in the window.
    pub requests: Option<i64>,
    /// For the per-account rule: the account (`user:42`), in the audit row only.
    pub account: Option<String>,
}

/// Counts the rule's events in its window and raises the alert if they reach the threshold
/// and it was not raised within the window already. Returns whether this call raised it.
pub fn check(
    conn: &mut DbConnection,
    settings: &AlertSettings,
    rule: AlertRule,
) -> Result<bool, DbError> {
    count_and_raise(conn, settings, rule, None)
}

/// The per-account rule: rate-limit refusals of the account labelled `account` (`user:42`).
pub fn check_account(
    conn: &mut DbConnection,
    settings: &AlertSettings,
    account: &str,
) -> Result<bool, DbError> {
    count_and_raise(
        conn,
        settings,
        AlertRule::UserRateLimitViolations,
        Some(account),
    )
}

/// Writes a rate-limit refusal's audit row and checks the rate-limit rules: every refusal
/// counts towards [`AlertRule::RateLimitViolations`], and a refused account's own towards
/// [`AlertRule::UserRateLimitViolations`].
pub fn record_rate_limit_refusal(
    conn: &mut DbConnection,
    settings: &AlertSettings,
    event: &SecurityEvent,
) -> Result<(), DbError> {
    write(conn, event)?;
    check(conn, settings, AlertRule::RateLimitViolations)?;
    let account = event
        .actor
        .as_deref()
        .filter(|label| super::labelled_account(label).is_some());
    if let Some(account) = account {
        check_account(conn, settings, account)?;
    }
    Ok(())
}

fn count_and_raise(
    conn: &mut DbConnection,
    settings: &AlertSettings,
    rule: AlertRule,
    actor: Option<&str>,
) -> Result<bool, DbError> {
    let limit = settings.limit(rule);
    let since = now() - Duration::seconds(limit.window_secs.into());
    let kinds: Vec<&str> = counted_kinds(rule).iter().map(|k| k.as_str()).collect();
    let count = security_event::occurrences_of_kinds_since(conn, &kinds, actor, since)?;
    if count < i64::from(limit.threshold) {
        return Ok(false);
    }
    let observed = Observed {
        count,
        requests: None,
        account: actor.map(str::to_owned),
    };
    raise(conn, settings, rule, &observed)
}

/// Raises `rule`'s alert unless it was raised within its window already: claims the window
/// (exactly one caller per window wins, on any instance), writes the CRITICAL `alert` audit
/// row and its notifications (alert webhook, alert e-mail), all in one transaction.
pub fn raise(
    conn: &mut DbConnection,
    settings: &AlertSettings,
    rule: AlertRule,
    observed: &Observed,
) -> Result<bool, DbError> {
    let limit = settings.limit(rule);
    let at = now();
    let since = at - Duration::seconds(limit.window_secs.into());
    // A per-account rule claims its window per account: one account tripping it must not
    // silence it for every other account.
    let state = match &observed.account {
        Some(account) => format!("{}:{account}", rule.name()),
        None => rule.name().to_owned(),
    };
    let raised = conn.transaction(|conn| {
        // Writes first: on SQLite the transaction takes the write lock at once.
        alert::ensure_state(conn, &state)?;
        if !alert::claim(
            conn,
            &state,
            since,
            at,
            observed.count,
            limit.window_secs.into(),
        )? {
            return Ok::<_, DbError>(false);
        }
        let mut details = message_fields(settings, rule, observed, at);
        if let (Some(account), Some(map)) = (&observed.account, details.as_object_mut()) {
            map.insert("account".into(), account.clone().into());
        }
        write(
            conn,
            &SecurityEvent::new(Kind::Alert)
                .actor("tollgate")
                .details(details),
        )?;
        let body = delivery::body(settings, rule, observed, at);
        if settings.webhook.is_some() {
            crate::notify::alert_webhook(conn, rule.name(), &body.to_string())?;
        }
        if !settings.email_to.is_empty() {
            let message = crate::notify::Email::SecurityAlert {
                rule: rule.name().to_owned(),
                summary: body["text"].as_str().unwrap_or_default().to_owned(),
                raised_at: at,
                instance: settings.instance.clone(),
            };
            // Each alert is its own cause: the window's claim above makes it once per window.
            let cause = format!("alert:{state}:{}", at.and_utc().timestamp_micros());
            for to in &settings.email_to {
                crate::notify::email(conn, None, to, &message, &cause)?;
            }
        }
        Ok(true)
    })?;
    if raised {
        tracing::error!(
            alert = rule.name(),
            count = observed.count,
            threshold = limit.threshold,
            window_secs = limit.window_secs,
            "ALERT: {} reached {} ({} within {} s)",
            rule.name(),
            limit.threshold,
            observed.count,
            limit.window_secs
        );
    }
    Ok(raised)
}

/// The alert's facts, without the account: what both the audit row and the notification say.
fn message_fields(
    settings: &AlertSettings,
    rule: AlertRule,
    observed: &Observed,
    at: NaiveDateTime,
) -> serde_json::Value {
    let limit = settings.limit(rule);
    let mut fields = serde_json::json!({
        "alert": rule.name(),
        "count": observed.count,
        "threshold": limit.threshold,
        "window_secs": limit.window_secs,
        "instance": settings.instance,
        "raised_at": at.and_utc().to_rfc3339(),
    });
    if let (Some(requests), Some(map)) = (observed.requests, fields.as_object_mut()) {
        map.insert("requests".into(), requests.into());
    }
    fields
}

/// An alert raised within its window (the security dashboard lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert {
    /// The rule's stable name (`webhook_signature_failures`, …).
    pub rule: String,
    pub raised_at: NaiveDateTime,
    /// What it counted when raised.
    pub count: i64,
    pub window_secs: i64,
}

/// The alerts still within the window they were raised for at `at`, newest first.
pub fn active(conn: &mut DbConnection, at: NaiveDateTime) -> Result<Vec<ActiveAlert>, DbError> {
    let mut active: Vec<ActiveAlert> = alert::states(conn)?
        .into_iter()
        .filter(|s| s.last_raised_at + Duration::seconds(s.window_secs) > at)
        .map(|s| ActiveAlert {
            rule: s.name,
            raised_at: s.last_raised_at,
            count: s.last_count,
            window_secs: s.window_secs,
        })
        .collect();
    active.sort_by_key(|alert| std::cmp::Reverse(alert.raised_at));
    Ok(active)
}

/// Raises the `redis_unavailable` alert whenever this instance has seen its threshold of Redis
/// outages begin within its window (by default: the first one); the window's claim makes it
/// once per window however many instances see the same outage. Runs as long as the server.
pub async fn raise_on_redis_outages(
    limits: Arc<crate::limits::SharedLimits>,
    db: crate::db::Db,
    settings: Arc<AlertSettings>,
) {
    let limit = settings.limit(AlertRule::RedisUnavailable);
    let window = StdDuration::from_secs(limit.window_secs.into());
    let mut begun: VecDeque<Instant> = VecDeque::new();
    loop {
        limits.outage_begun().await;
        let at = Instant::now();
        begun.retain(|then| at.duration_since(*then) < window);
        begun.push_back(at);
        if begun.len() < limit.threshold as usize {
            continue;
        }
        let observed = Observed {
            count: i64::try_from(begun.len()).unwrap_or(i64::MAX),
            ..Observed::default()
        };
        let settings = Arc::clone(&settings);
        let raised = db
            .run(move |conn| raise(conn, &settings, AlertRule::RedisUnavailable, &observed))
            .await;
        if let Err(err) = raised {
            tracing::error!(error = %err, "could not raise the Redis outage alert");
        }
    }
}

/// Requests and 5xx responses answered, in time buckets over the 5xx rule's window: a constant
/// amount of memory, a short lock per response. Alone, an instance compares its own counts with
/// the threshold on each 5xx. Sharing Redis (`REDIS_URL`), every instance adds its counts to
/// the shared buckets (once a second, and at once after a 5xx, by [`ServerErrorRate::share`])
/// and the rule compares the totals of every instance; while Redis cannot be reached, each
/// instance's own counts again.
pub struct ServerErrorRate {
    window: StdDuration,
    bucket_secs: u64,
    threshold_percent: u32,
    min_requests: u32,
    shared: Option<Arc<crate::limits::SharedLimits>>,
    /// Told on a 5xx while the counts are shared: they are shared at once.
    error_seen: tokio::sync::Notify,
    state: Mutex<RateState>,
}

#[derive(Default)]
struct RateState {
    /// (bucket number, requests, 5xx), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    /// Counts not yet added to the shared buckets, in the same form.
    unshared: VecDeque<(u64, u64, u64)>,
    /// When this instance last asked for the alert (no second ask within the window).
    last_alert: Option<Instant>,
}

/// Buckets a window is split into.
const BUCKETS: u32 = 10;

/// How often an instance adds its counts to the shared ones when it has no 5xx to report.
const SHARE_EVERY: StdDuration = StdDuration::from_secs(1);

/// The least time between two shares: a storm of 5xx is shared a few times a second, not once
/// per response.
const SHARE_GAP: StdDuration = StdDuration::from_millis(200);

impl ServerErrorRate {
    /// Counts on their own (`shared` none) or with every instance that shares the Redis.
    pub fn new(
        settings: &AlertSettings,
        shared: Option<&Arc<crate::limits::SharedLimits>>,
    ) -> Self {
        let limit = settings.limit(AlertRule::ServerErrors);
        let window = StdDuration::from_secs(limit.window_secs.into());
        Self {
            window,
            bucket_secs: (window / BUCKETS).as_secs().max(1),
            threshold_percent: limit.threshold,
            min_requests: settings.server_errors_min_requests,
            shared: shared.cloned(),
            error_seen: tokio::sync::Notify::new(),
            state: Mutex::default(),
        }
    }

    /// The bucket the wall clock is in now (every instance numbers them alike).
    fn slot(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since_epoch.as_secs() / self.bucket_secs
    }

    /// Counts one response. Alone, when it is a 5xx that takes the rate to the threshold (with
    /// at least the minimum number of requests in the window), returns what to raise, once per
    /// window on this instance. Shared, returns nothing: [`ServerErrorRate::share`] decides.
    pub fn record(&self, status: u16) -> Option<Observed> {
        let slot = self.slot();
        let oldest = slot.saturating_sub(u64::from(BUCKETS) - 1);
        let error = (500..600).contains(&status);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        count_into(&mut state.buckets, slot, oldest, error);
        if self.shared.is_some() {
            count_into(&mut state.unshared, slot, oldest, error);
            drop(state);
            if error {
                self.error_seen.notify_one();
            }
            return None;
        }
        if !error {
            return None;
        }
        let (requests, errors) = totals(&state.buckets);
        self.reached(&mut state, requests, errors)
    }

    /// Whether `requests` with `errors` in the window reach the threshold, and this instance did
    /// not ask for the alert within the window: what to raise (and the ask is remembered).
    fn reached(&self, state: &mut RateState, requests: u64, errors: u64) -> Option<Observed> {
        let at = Instant::now();
        let reached = errors > 0
            && requests >= u64::from(self.min_requests)
            && errors.saturating_mul(100)
                >= u64::from(self.threshold_percent).saturating_mul(requests);
        let quiet = state
            .last_alert
            .is_some_and(|last| at.duration_since(last) < self.window);
        if !reached || quiet {
            return None;
        }
        state.last_alert = Some(at);
        Some(Observed {
            count: i64::try_from(errors).unwrap_or(i64::MAX),
            requests: Some(i64::try_from(requests).unwrap_or(i64::MAX)),
            account: None,
        })
    }

    /// While the counts are shared: adds this instance's counts to every instance's, once a
    /// second and at once after a 5xx, and raises the alert when the totals reach the threshold
    /// after a 5xx anywhere (the alert's claim on its window makes it once, whoever sees it).
    /// While Redis cannot be reached, compares this instance's own counts instead. Runs as long
    /// as the server.
    pub async fn share(self: Arc<Self>, db: crate::db::Db, settings: Arc<AlertSettings>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let mut errors_seen = 0;
        loop {
            let _ = actix_web::rt::time::timeout(SHARE_EVERY, self.error_seen.notified()).await;
            let (counts, local, slot) = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let counts: Vec<_> = state.unshared.drain(..).collect();
                // Read under the lock: no count is newer than the window's newest bucket.
                (counts, totals(&state.buckets), self.slot())
            };
            let new_errors = counts.iter().any(|(_, _, errors)| *errors > 0);
            let shared_totals = shared
                .count_responses(&counts, slot, BUCKETS.into(), self.bucket_secs)
                .await;
            let (requests, errors) = match shared_totals {
                Ok(totals) => totals,
                Err(_) => {
                    // Kept for when Redis is back (older buckets drop out as they age), and
                    // meanwhile this instance's own counts decide.
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    let oldest = slot.saturating_sub(u64::from(BUCKETS) - 1);
                    for (at, requests, errors) in counts.into_iter().rev() {
                        if at >= oldest {
                            state.unshared.push_front((at, requests, errors));
                        }
                    }
                    local
                }
            };
            // Only a 5xx (here or elsewhere) asks whether the rate is reached, as alone.
            let more = new_errors || errors > errors_seen;
            errors_seen = errors;
            if !more {
                continue;
            }
            let observed = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                self.reached(&mut state, requests, errors)
            };
            if let Some(observed) = observed {
                let settings = Arc::clone(&settings);
                let raised = db
                    .run(move |conn| raise(conn, &settings, AlertRule::ServerErrors, &observed))
                    .await;
                if let Err(err) = raised {
                    tracing::error!(error = %err, "could not raise the server-error alert");
                }
            }
            actix_web::rt::time::sleep(SHARE_GAP).await;
        }
    }
}

/// Counts a response (an `error` or not) into `buckets`' bucket `slot`, dropping the buckets
/// older than `oldest`. A slot before the newest bucket (the wall clock stepped back) counts
/// in the newest.
fn count_into(buckets: &mut VecDeque<(u64, u64, u64)>, slot: u64, oldest: u64, error: bool) {
    while buckets.front().is_some_and(|(s, ..)| *s < oldest) {
        buckets.pop_front();
    }
    match buckets.back_mut() {
        Some((s, requests, errors)) if *s >= slot => {
            *requests += 1;
            *errors += u64::from(error);
        }
        _ => buckets.push_back((slot, 1, u64::from(error))),
    }
}

/// (requests, errors) in `buckets`.
fn totals(buckets: &VecDeque<(u64, u64, u64)>) -> (u64, u64) {
    buckets
        .iter()
        .fold((0, 0), |(r, e), (_, br, be)| (r + br, e + be))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertLimit;

    fn rate(threshold: u32, min: u32) -> ServerErrorRate {
        let mut settings = AlertSettings::default();
        settings.set_limit(
            AlertRule::ServerErrors,
            AlertLimit {
                threshold,
                window_secs: 300,
            },
        );
        settings.server_errors_min_requests = min;
        ServerErrorRate::new(&settings, None)
    }

    #[test]
    fn the_5xx_rate_needs_its_minimum_of_requests_and_asks_once_per_window() {
        let rate = rate(5, 20);
        assert!(rate.record(200).is_none());
        assert!(rate.record(500).is_none(), "1 of 2 is under the minimum");
        for _ in 0..17 {
            assert!(rate.record(200).is_none());
        }
        let observed = rate.record(503).expect("2 of 20 is 10 %");
        assert_eq!((observed.count, observed.requests), (2, Some(20)));
        assert!(rate.record(500).is_none(), "once per window");
    }

    #[test]
    fn a_low_rate_does_not_alert() {
        let rate = rate(50, 4);
        for _ in 0..3 {
            assert!(rate.record(200).is_none());
        }
        assert!(rate.record(500).is_none(), "1 of 4 is 25 %, under 50 %");
        assert!(rate.record(500).is_none(), "2 of 5 is 40 %");
        assert!(rate.record(500).is_some(), "3 of 6 is 50 %");
    }
}
