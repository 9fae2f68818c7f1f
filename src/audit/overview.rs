//! The security dashboard's numbers (`/admin/security/overview`): events per severity per hour
//! (24 h) and per day (30 days), webhook verification success, the sources refused most, rate
//! limiting by route, active alerts, encryption keys and service tokens. Every aggregation is a
//! GROUP BY in the database returning at most a few hundred rows, however large the log.

use chrono::{Duration, NaiveDateTime, Timelike as _};

use super::alerts::{self, ActiveAlert};
use super::{Kind, Severity};
use crate::crypto::Keyring;
use crate::db::models::security_event_search::{self as search, Bucket, RouteCount};
use crate::db::models::service_token::{self, ServiceTokenRow};
use crate::db::{DbConnection, DbError};
use crate::encryption_keys::{self, KeyReport};

/// Occurrences in one time bucket, per severity (indexed like [`Severity::ALL`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCounts {
    /// When the bucket starts.
    pub start: NaiveDateTime,
    pub by_severity: [i64; 4],
}

impl BucketCounts {
    pub fn total(&self) -> i64 {
        self.by_severity.iter().sum()
    }
}

/// Webhook deliveries over the last 24 hours: verified or refused (by kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookVerification {
    pub validated: i64,
    /// `(kind, occurrences)` of each refusal kind that happened.
    pub refused: Vec<(String, i64)>,
}

impl WebhookVerification {
    pub fn refused_total(&self) -> i64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    /// Verified share of all deliveries, in percent; `None` without any.
    pub fn success_percent(&self) -> Option<f64> {
        let total = self.validated + self.refused_total();
        (total > 0).then(|| self.validated as f64 * 100.0 / total as f64)
    }
}

/// What the dashboard shows.
#[derive(Debug)]
pub struct Overview {
    pub now: NaiveDateTime,
    /// 24 hourly buckets, oldest first, the last one holding the current hour.
    pub hourly: Vec<BucketCounts>,
    /// 30 daily buckets, oldest first, the last one holding today.
    pub daily: Vec<BucketCounts>,
    pub webhooks: WebhookVerification,
    /// Source addresses with the most refusals in 24 h, most first.
    pub refused_sources: Vec<(String, i64)>,
    /// Rate-limit refusals in 24 h per limiter and path, most first.
    pub rate_limited: Vec<RouteCount>,
    /// Alerts still within the window they were raised for (each rule has its own).
    pub alerts: Vec<ActiveAlert>,
    pub keys: KeyReport,
    pub tokens: Vec<ServiceTokenRow>,
}

/// The refusals whose sources the dashboard ranks.
pub const REFUSAL_KINDS: [Kind; 4] = [
    Kind::WebhookInvalidIp,
    Kind::RateLimited,
    Kind::WebhookRateLimitExceeded,
    Kind::ServiceTokenRejected,
];

/// Webhook deliveries Tollgate refused before processing them.
pub const WEBHOOK_REFUSAL_KINDS: [Kind; 4] = [
    Kind::WebhookInvalidSignature,
    Kind::WebhookInvalidPayload,
    Kind::WebhookInvalidIp,
    Kind::WebhookRateLimitExceeded,
];

const TOP_SOURCES: i64 = 10;
const TOP_ROUTES: i64 = 10;

/// What the overview needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct OverviewSettings {
    pub key_rotation_days: u32,
}

fn kinds(list: &[Kind]) -> Vec<&'static str> {
    list.iter().map(|kind| kind.as_str()).collect()
}

/// `count` buckets of `width` ending with the one holding `now`, filled from the database's
/// per-bucket counts (keys formatted as `key_format`).
fn series(
    conn: &mut DbConnection,
    bucket: Bucket,
    now: NaiveDateTime,
    count: i64,
) -> Result<Vec<BucketCounts>, DbError> {
    let (current, width, key_format) = match bucket {
        Bucket::Hour => (
            now.date().and_hms_opt(now.hour(), 0, 0).unwrap_or(now),
            Duration::hours(1),
            "%Y-%m-%d %H",
        ),
        Bucket::Day => (
            now.date().and_time(chrono::NaiveTime::MIN),
            Duration::days(1),
            "%Y-%m-%d",
        ),
    };
    let first = current - width * i32::try_from(count - 1).unwrap_or(0);
    let rows = search::occurrences_by_bucket(conn, bucket, first)?;
    Ok((0..count)
        .map(|i| {
            let start = first + width * i32::try_from(i).unwrap_or(0);
            let key = start.format(key_format).to_string();
            let mut by_severity = [0; 4];
            for row in rows.iter().filter(|row| row.bucket == key) {
                if let Some(at) = Severity::ALL
                    .iter()
                    .position(|s| s.as_str() == row.severity)
                {
                    by_severity[at] += row.occurrences;
                }
            }
            BucketCounts { start, by_severity }
        })
        .collect())
}

pub fn overview(
    conn: &mut DbConnection,
    keyring: &Keyring,
    settings: OverviewSettings,
    now: NaiveDateTime,
) -> Result<Overview, DbError> {
    let day_ago = now - Duration::hours(24);
    let mut webhook_kinds = kinds(&WEBHOOK_REFUSAL_KINDS);
    webhook_kinds.push(Kind::WebhookValidated.as_str());
    let mut webhooks = WebhookVerification::default();
    for (kind, n) in search::occurrences_by_kind(conn, &webhook_kinds, day_ago)? {
        if kind == Kind::WebhookValidated.as_str() {
            webhooks.validated = n;
        } else {
            webhooks.refused.push((kind, n));
        }
    }
    webhooks
        .refused
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Overview {
        now,
        hourly: series(conn, Bucket::Hour, now, 24)?,
        daily: series(conn, Bucket::Day, now, 30)?,
        webhooks,
        refused_sources: search::top_addresses(conn, &kinds(&REFUSAL_KINDS), day_ago, TOP_SOURCES)?,
        rate_limited: search::rate_limited_by_route(conn, day_ago, TOP_ROUTES)?,
        alerts: alerts::active(conn, now)?,
        keys: encryption_keys::report(conn, keyring, settings.key_rotation_days, now)?,
        tokens: service_token::all(conn)?,
    })
}
