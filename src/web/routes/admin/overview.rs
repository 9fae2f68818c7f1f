//! `/admin/security/overview`: the security dashboard — events per severity per hour and per
//! day as server-rendered SVG charts, webhook verification, the sources refused most, rate
//! limiting by route, active alerts, encryption keys (age, values sealed, rotation warnings)
//! and service tokens.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::NaiveDateTime;

use crate::audit::Severity;
use crate::audit::overview::{self, BucketCounts, Overview, OverviewSettings};
use crate::crypto::rotation::KeyRole;
use crate::error::AppError;
use crate::web::AppState;
use crate::web::charts::{Series, StackedBars};
use crate::web::console::ConsoleUser;
use crate::web::pages::{PageContext, datetime, render};
use crate::web::session::TypedSession;

struct KeyView {
    key_id: String,
    role: &'static str,
    first_seen: String,
    age: String,
    /// A count, or "all the rest" for the primary key (not counted).
    sealed: String,
    /// Too old (primary) or still sealing values (old, missing).
    attention: bool,
}

struct TokenView {
    name: String,
    scopes: String,
    display_id: String,
    last_used: String,
    status: &'static str,
}

struct RouteView {
    limiter: String,
    path: String,
    count: i64,
}

#[derive(Template)]
#[template(path = "admin/security_overview.html")]
struct OverviewPage {
    ctx: PageContext,
    as_of: String,
    events_24h: i64,
    serious_24h: i64,
    success_rate: Option<String>,
    validated: i64,
    refused: i64,
    webhook_refusals: Vec<(String, i64)>,
    hourly: StackedBars,
    daily: StackedBars,
    refused_sources: Vec<(String, i64, String)>,
    rate_limited: Vec<RouteView>,
    alerts: Vec<(String, String)>,
    key_warnings: Vec<String>,
    keys: Vec<KeyView>,
    tokens: Vec<TokenView>,
    rotation_days: u32,
}

const SEVERITY_CLASSES: [&str; 4] = ["sev-low", "sev-medium", "sev-high", "sev-critical"];

/// A chart of `buckets`, one bar each, stacked by severity.
fn chart(
    id: &'static str,
    title: &str,
    buckets: &[BucketCounts],
    name: impl Fn(&NaiveDateTime) -> String,
    label_every: usize,
    label: impl Fn(&NaiveDateTime) -> String,
) -> StackedBars {
    let series: Vec<Series> = Severity::ALL
        .iter()
        .zip(SEVERITY_CLASSES)
        .enumerate()
        .rev()
        .map(|(i, (severity, class))| Series {
            class,
            name: severity.as_str(),
            values: buckets.iter().map(|b| b.by_severity[i]).collect(),
        })
        .collect();
    let totals: Vec<String> = Severity::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let sum: i64 = buckets.iter().map(|b| b.by_severity[i]).sum();
            format!("{sum} {}", s.as_str())
        })
        .collect();
    let peak = buckets
        .iter()
        .max_by_key(|b| b.total())
        .filter(|b| b.total() > 0)
        .map(|b| format!(" The busiest was {} with {}.", name(&b.start), b.total()))
        .unwrap_or_default();
    let desc = format!(
        "Stacked bars of security events per severity: {} in all.{peak}",
        totals.join(", ")
    );
    let count = buckets.len();
    let names: Vec<String> = buckets.iter().map(|b| name(&b.start)).collect();
    let labels: Vec<Option<String>> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (count - 1 - i)
                .is_multiple_of(label_every)
                .then(|| label(&b.start))
        })
        .collect();
    StackedBars::new(id, title.to_owned(), desc, &names, &labels, &series)
}

fn key_view(key: &crate::encryption_keys::KeyStatus, rotation_days: u32) -> KeyView {
    let (role, attention) = match key.role {
        KeyRole::Primary => (
            "primary",
            key.age_days.is_some_and(|d| d > i64::from(rotation_days)),
        ),
        KeyRole::Old => ("old", key.sealed.is_some_and(|n| n > 0)),
        KeyRole::Missing => ("not configured", true),
    };
    KeyView {
        key_id: key.key_id.clone(),
        role,
        first_seen: key.first_seen.as_ref().map_or("—".into(), datetime),
        age: key.age_days.map_or("—".into(), |days| {
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        }),
        sealed: key
            .sealed
            .map_or_else(|| "all the rest".to_owned(), |n| n.to_string()),
        attention,
    }
}

fn page(ctx: PageContext, data: Overview, rotation_days: u32) -> OverviewPage {
    let hour_name = |at: &NaiveDateTime| at.format("%d %b %H:00").to_string();
    let day_name = |at: &NaiveDateTime| at.format("%a %d %b").to_string();
    let sum = |buckets: &[BucketCounts], from: usize| -> i64 {
        buckets
            .iter()
            .map(|b| b.by_severity[from..].iter().sum::<i64>())
            .sum()
    };
    OverviewPage {
        ctx,
        as_of: data.now.format("%Y-%m-%d %H:%M UTC").to_string(),
        events_24h: sum(&data.hourly, 0),
        serious_24h: sum(&data.hourly, 2),
        success_rate: data.webhooks.success_percent().map(|p| format!("{p:.1} %")),
        validated: data.webhooks.validated,
        refused: data.webhooks.refused_total(),
        webhook_refusals: data.webhooks.refused.clone(),
        hourly: chart(
            "chart-hourly",
            "Security events per hour, last 24 hours (UTC)",
            &data.hourly,
            hour_name,
            3,
            |at| at.format("%H:00").to_string(),
        ),
        daily: chart(
            "chart-daily",
            "Security events per day, last 30 days (UTC)",
            &data.daily,
            day_name,
            5,
            |at| at.format("%d %b").to_string(),
        ),
        refused_sources: data
            .refused_sources
            .into_iter()
            .map(|(ip, n)| {
                let href = format!(
                    "/admin/security?{}",
                    serde_urlencoded::to_string([("ip", ip.as_str())]).unwrap_or_default()
                );
                (ip, n, href)
            })
            .collect(),
        rate_limited: data
            .rate_limited
            .into_iter()
            .map(|r| RouteView {
                limiter: r.limiter.unwrap_or_else(|| "—".into()),
                path: r.path.unwrap_or_else(|| "—".into()),
                count: r.occurrences,
            })
            .collect(),
        alerts: data
            .alerts
            .into_iter()
            .map(|a| (a.rule, datetime(&a.raised_at)))
            .collect(),
        key_warnings: data.keys.warnings.iter().map(ToString::to_string).collect(),
        keys: data
            .keys
            .keys
            .iter()
            .map(|k| key_view(k, rotation_days))
            .collect(),
        tokens: data
            .tokens
            .into_iter()
            .map(|t| TokenView {
                status: if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                },
                last_used: t.last_used_at.as_ref().map_or("never".into(), datetime),
                name: t.name,
                scopes: t.scopes,
                display_id: t.display_id,
            })
            .collect(),
        rotation_days,
    }
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    viewer: ConsoleUser,
) -> Result<HttpResponse, AppError> {
    let settings = OverviewSettings {
        key_rotation_days: state.config.key_rotation_days,
    };
    let st = state.clone();
    let data = state
        .db
        .run(move |conn| overview::overview(conn, &st.keyring, settings, crate::db::now()))
        .await?;
    render(&page(
        PageContext::new(&session, Some(&viewer.0))?,
        data,
        settings.key_rotation_days,
    ))
}
