//! `/account/usage` (the signed-in customer's usage this period, the bill so far, a daily
//! chart, BYOK usage apart, the spend alert and cap form, the CSV export) and the same view of
//! any customer for the console (`/admin/customers/{id}/usage`).

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;

use crate::accounts::{User, UserId};
use crate::audit::Actor;
use crate::billing::plans::format_amount;
use crate::db::models::usage_view::DailyTotal;
use crate::error::AppError;
use crate::usage::settings::{self, MAX_INPUT};
use crate::usage::spend::FeatureUsage;
use crate::usage::summary::{self, ByokUsage, Summary};
use crate::usage::{Rate, estimate};
use crate::web::AppState;
use crate::web::charts::{Series, StackedBars};
use crate::web::csrf::CsrfForm;
use crate::web::forms::FormErrors;
use crate::web::pages::{PageContext, datetime, render_with_status, see_other};
use crate::web::session::{CurrentUser, FlashKind, TypedSession};

/// Most days a chart draws (a yearly period shows its latest two months).
const CHART_DAYS: u64 = 62;

/// `1234567` → `1,234,567`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// "10,000 tokens included, then $2.00 per 1,000 tokens".
fn rate_text(rate: &Rate, unit: &str, currency: &str) -> String {
    let price = format_amount(rate.package_amount, currency);
    let per = if rate.package_size <= 1 {
        format!("{price} per {}", unit.trim_end_matches('s'))
    } else {
        format!("{price} per {} {unit}", grouped(rate.package_size))
    };
    if rate.included > 0 {
        format!("{} {unit} included, then {per}", grouped(rate.included))
    } else {
        per
    }
}

struct FeatureView {
    feature: String,
    unit_name: String,
    used: String,
    included: String,
    quota: Option<String>,
    /// The progress bar: used against the quota (or the included quantity without one).
    bar_max: i64,
    bar_value: i64,
    bar_label: String,
    over_included: bool,
    reserved: Option<String>,
    overage: String,
    rate: String,
}

impl FeatureView {
    fn new(usage: &FeatureUsage, currency: &str) -> Self {
        let c = &usage.component;
        let limit = c.quota.unwrap_or(c.rate.included).max(1);
        let percent = usage.used.saturating_mul(100) / limit;
        let against = if c.quota.is_some() {
            "of the quota"
        } else {
            "of the included quantity"
        };
        Self {
            feature: c.feature.clone(),
            unit_name: c.unit_name.clone(),
            used: grouped(usage.used),
            included: grouped(c.rate.included),
            quota: c.quota.map(grouped),
            bar_max: limit,
            bar_value: usage.used.clamp(0, limit),
            bar_label: format!("{percent} % {against}"),
            over_included: usage.used > c.rate.included,
            reserved: (usage.reserved > 0).then(|| grouped(usage.reserved)),
            overage: format_amount(usage.charge(), currency),
            rate: rate_text(&c.rate, &c.unit_name, currency),
        }
    }
}

/// One feature's daily chart and, for screen readers, its numbers.
struct ChartView {
    /// Unique on the page (the SVG's title and description ids).
    id: String,
    unit_name: String,
    chart: StackedBars,
    rows: Vec<(String, String)>,
}

fn day_of(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// The days the charts draw: from the period's start to today (or its end), at most
/// [`CHART_DAYS`] of them, the latest.
fn chart_days(summary: &Summary) -> Vec<NaiveDate> {
    let last = Utc::now()
        .date_naive()
        .min(summary.period.end.date())
        .max(summary.period.start.date());
    let first = summary.period.start.date().max(
        last.checked_sub_days(Days::new(CHART_DAYS - 1))
            .unwrap_or(last),
    );
    first.iter_days().take_while(|d| *d <= last).collect()
}

fn chart(
    index: usize,
    feature: &FeatureUsage,
    days: &[NaiveDate],
    daily: &[DailyTotal],
) -> ChartView {
    let unit = feature.component.unit_name.clone();
    let values: Vec<i64> = days
        .iter()
        .map(|day| {
            daily
                .iter()
                .filter(|d| !d.byok && d.feature == feature.component.feature)
                .filter(|d| day_of(&d.day) == Some(*day))
                .map(|d| d.quantity)
                .fold(0, i64::saturating_add)
        })
        .collect();
    let names: Vec<String> = days
        .iter()
        .map(|d| d.format("%b %-d").to_string())
        .collect();
    let labels: Vec<Option<String>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (i % 7 == 0).then(|| name.clone()))
        .collect();
    let total: i64 = values.iter().copied().fold(0, i64::saturating_add);
    let title = format!("{unit} per day", unit = capitalised(&unit));
    let desc = format!(
        "Daily platform usage of {}: {} {unit} in {} days, {} of them with usage.",
        feature.component.feature,
        grouped(total),
        days.len(),
        values.iter().filter(|v| **v > 0).count(),
    );
    let mut chart = StackedBars::new(
        "usage",
        title,
        desc,
        &names,
        &labels,
        &[Series {
            class: "usage-bar",
            name: "",
            values: values.clone(),
        }],
    );
    for (bar, (name, value)) in chart.bars.iter_mut().zip(names.iter().zip(&values)) {
        // Early in a period there are few days: a bar stays a bar, not a wall.
        if bar.width > MAX_BAR_WIDTH {
            bar.x += (bar.width - MAX_BAR_WIDTH) / 2.0;
            bar.width = MAX_BAR_WIDTH;
        }
        for segment in &mut bar.segments {
            segment.label = format!("{name}: {} {unit}", grouped(*value));
        }
    }
    for tick in &mut chart.y_ticks {
        if let Ok(n) = tick.text.parse::<i64>() {
            tick.text = compact(n);
        }
    }
    let rows = names
        .into_iter()
        .zip(values)
        .filter(|(_, v)| *v > 0)
        .map(|(name, v)| (name, grouped(v)))
        .collect();
    ChartView {
        id: format!("usage-chart-{}", index + 1),
        unit_name: unit,
        chart,
        rows,
    }
}

/// The widest a day's bar is drawn (in the chart's units, 720 wide).
const MAX_BAR_WIDTH: f64 = 48.0;

/// A tick's number as it fits beside the axis: 950, 2.5k, 20k, 1.5M.
fn compact(n: i64) -> String {
    let short = |value: f64, suffix: &str| {
        let text = format!("{value:.1}");
        format!("{}{suffix}", text.trim_end_matches(".0"))
    };
    match n.unsigned_abs() {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => short(n as f64 / 1_000.0, "k"),
        1_000_000..1_000_000_000 => short(n as f64 / 1_000_000.0, "M"),
        _ => short(n as f64 / 1_000_000_000.0, "B"),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

struct ByokView {
    feature: String,
    unit_name: String,
    quantity: String,
}

impl From<&ByokUsage> for ByokView {
    fn from(usage: &ByokUsage) -> Self {
        Self {
            feature: usage.feature.clone(),
            unit_name: usage.unit_name.clone(),
            quantity: grouped(usage.quantity),
        }
    }
}

/// What the page shows of a period with metered features.
struct PeriodView {
    plan_name: String,
    currency: String,
    starts: String,
    ends: String,
    features: Vec<FeatureView>,
    byok: Vec<ByokView>,
    charts: Vec<ChartView>,
    spent: String,
    alert: Option<String>,
    /// The cap in force and whose it is.
    cap: Option<(String, &'static str)>,
    plan_cap: Option<String>,
    /// The saved values, as the form shows them.
    saved_alert: String,
    saved_cap: String,
    /// A cap below the alert: said, not refused.
    cap_below_alert: bool,
}

impl PeriodView {
    fn new(summary: &Summary) -> Self {
        let currency = summary.currency.clone();
        let money = |amount: i64| format_amount(amount, &currency);
        let days = chart_days(summary);
        let limits = summary.limits;
        let cap = limits.cap().map(|amount| {
            let whose = match (limits.own_cap, limits.plan_cap) {
                (Some(own), Some(plan)) if own == plan => "your cap and your plan's",
                (Some(own), Some(plan)) if plan < own => "your plan's cap, lower than yours",
                (Some(_), _) => "your cap",
                _ => "your plan's cap",
            };
            (money(amount), whose)
        });
        Self {
            plan_name: summary.plan_name.clone(),
            starts: datetime(&summary.period.start),
            ends: datetime(&summary.period.end),
            features: summary
                .features
                .iter()
                .map(|f| FeatureView::new(f, &currency))
                .collect(),
            byok: summary.byok.iter().map(ByokView::from).collect(),
            charts: summary
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| chart(i, f, &days, &summary.daily))
                .collect(),
            spent: money(summary.spent()),
            alert: limits.alert.map(money),
            cap,
            plan_cap: limits.plan_cap.map(money),
            saved_alert: limits
                .alert
                .map(|a| settings::major_text(a, &currency))
                .unwrap_or_default(),
            saved_cap: limits
                .own_cap
                .map(|a| settings::major_text(a, &currency))
                .unwrap_or_default(),
            cap_below_alert: matches!((limits.alert, limits.own_cap), (Some(a), Some(c)) if c < a),
            currency,
        }
    }
}

/// Whose usage a console viewer is looking at.
struct Viewed {
    user_id: i64,
    email: String,
}

#[derive(Template)]
#[template(path = "account/usage.html")]
struct UsagePage {
    ctx: PageContext,
    /// `Some` on the console's view of a customer (no form there).
    viewed: Option<Viewed>,
    period: Option<PeriodView>,
    /// A subscription whose plan has no metered features.
    no_metered_features: bool,
    estimate: Option<String>,
    estimate_unavailable: bool,
    csv_href: String,
    /// What the form shows: the typed values after an error, else the saved ones.
    alert_value: String,
    cap_value: String,
    errors: FormErrors,
}

/// Reads the user's usage (one connection, released), then asks Stripe for the estimate.
async fn load(
    state: &AppState,
    user_id: UserId,
) -> Result<(Option<Summary>, Option<String>, bool), AppError> {
    let summary = state
        .db
        .run(move |conn| summary::current(conn, user_id))
        .await?;
    let Some(summary) = summary else {
        return Ok((None, None, false));
    };
    if summary.features.is_empty() {
        return Ok((Some(summary), None, false));
    }
    let subscription = summary.period.subscription.clone();
    match estimate::preview(state.billing(), user_id, &subscription).await {
        Ok(e) => Ok((
            Some(summary),
            Some(format_amount(e.total, &e.currency)),
            false,
        )),
        Err(err) => {
            tracing::warn!(error = %err, "the usage page shows no estimate");
            Ok((Some(summary), None, true))
        }
    }
}

struct Typed {
    alert: String,
    cap: String,
    errors: FormErrors,
}

async fn page(
    state: &AppState,
    ctx: PageContext,
    user_id: UserId,
    viewed: Option<Viewed>,
    typed: Option<Typed>,
) -> Result<HttpResponse, AppError> {
    let (summary, estimate, estimate_unavailable) = load(state, user_id).await?;
    let no_metered_features = summary.as_ref().is_some_and(|s| s.features.is_empty());
    let period = summary
        .as_ref()
        .filter(|s| !s.features.is_empty())
        .map(PeriodView::new);
    let csv_href = match &viewed {
        Some(v) => format!("/admin/customers/{}/usage.csv", v.user_id),
        None => "/account/usage.csv".into(),
    };
    let (alert_value, cap_value, errors) = match typed {
        Some(t) => (t.alert, t.cap, t.errors),
        None => period.as_ref().map_or_else(
            || (String::new(), String::new(), FormErrors::new()),
            |p| {
                (
                    p.saved_alert.clone(),
                    p.saved_cap.clone(),
                    FormErrors::new(),
                )
            },
        ),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_with_status(
        status,
        &UsagePage {
            ctx,
            viewed,
            period,
            no_metered_features,
            estimate,
            estimate_unavailable,
            csv_href,
            alert_value,
            cap_value,
            errors,
        },
    )
}

/// `GET /account/usage`.
pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
) -> Result<HttpResponse, AppError> {
    let ctx = PageContext::with_form(&session, Some(&user))?;
    page(&state, ctx, user.id, None, None).await
}

#[derive(Deserialize)]
pub struct LimitsForm {
    #[serde(default)]
    alert: String,
    #[serde(default)]
    cap: String,
}

/// `POST /account/usage/limits`: the signed-in customer's own alert and cap (audited).
pub async fn save_limits(
    state: web::Data<AppState>,
    session: TypedSession,
    CurrentUser(user): CurrentUser,
    actor: Actor,
    form: CsrfForm<LimitsForm>,
) -> Result<HttpResponse, AppError> {
    let alert: String = form.alert.chars().take(MAX_INPUT + 1).collect();
    let cap: String = form.cap.chars().take(MAX_INPUT + 1).collect();
    let user_id = user.id;
    let currency = state
        .db
        .run(move |conn| summary::current(conn, user_id))
        .await?
        .filter(|s| !s.features.is_empty())
        .map(|s| s.currency);
    let mut errors = FormErrors::new();
    let Some(currency) = currency else {
        errors.form("Spend limits apply to a subscription with usage-based pricing.");
        let ctx = PageContext::with_form(&session, Some(&user))?;
        let typed = Typed { alert, cap, errors };
        return page(&state, ctx, user.id, None, Some(typed)).await;
    };
    let parsed_alert =
        settings::parse_amount(&alert, &currency).map_err(|message| errors.field("alert", message));
    let parsed_cap =
        settings::parse_amount(&cap, &currency).map_err(|message| errors.field("cap", message));
    let (Ok(new_alert), Ok(new_cap)) = (parsed_alert, parsed_cap) else {
        let ctx = PageContext::with_form(&session, Some(&user))?;
        let typed = Typed { alert, cap, errors };
        return page(&state, ctx, user.id, None, Some(typed)).await;
    };
    state
        .db
        .run(move |conn| settings::set_limits(conn, &actor, user_id, new_alert, new_cap))
        .await?;
    session.flash(FlashKind::Success, "Your spend settings are saved.")?;
    Ok(see_other("/account/usage"))
}

fn csv_response(
    records: &[crate::db::models::usage::UsageRecordRow],
    name: &str,
) -> Result<HttpResponse, AppError> {
    let body = summary::csv(records).map_err(AppError::internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .body(body))
}

/// `GET /account/usage.csv`: the current period's records of the signed-in customer.
pub async fn export(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<HttpResponse, AppError> {
    let user_id = user.id;
    let records = state
        .db
        .run(move |conn| summary::current_records(conn, user_id))
        .await?;
    csv_response(&records, "usage.csv")
}

/// The console's view of customer `id` (any account with that id; 404 without one).
pub async fn console_page(
    state: &AppState,
    session: &TypedSession,
    viewer: &User,
    id: i64,
) -> Result<HttpResponse, AppError> {
    let customer = find_user(state, id).await?;
    let ctx = PageContext::with_form(session, Some(viewer))?;
    let viewed = Viewed {
        user_id: customer.id.get(),
        email: customer.email,
    };
    page(state, ctx, customer.id, Some(viewed), None).await
}

/// The console's CSV of customer `id`'s current period.
pub async fn console_export(state: &AppState, id: i64) -> Result<HttpResponse, AppError> {
    let customer = find_user(state, id).await?;
    let user_id = customer.id;
    let records = state
        .db
        .run(move |conn| summary::current_records(conn, user_id))
        .await?;
    csv_response(&records, &format!("usage-customer-{id}.csv"))
}

async fn find_user(state: &AppState, id: i64) -> Result<User, AppError> {
    let id = UserId::from(id);
    state
        .db
        .run(move |conn| crate::db::models::user::find(conn, id))
        .await?
        .map(User::from)
        .ok_or(AppError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn chart_ticks_are_short_round_numbers() {
        let ticks: Vec<String> = [0, 5, 950, 2_500, 20_000, 1_500_000, 3_000_000_000]
            .into_iter()
            .map(compact)
            .collect();
        assert_eq!(ticks, ["0", "5", "950", "2.5k", "20k", "1.5M", "3B"]);
    }
}
