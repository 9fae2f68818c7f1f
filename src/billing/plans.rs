//! Plans: validated input, display, and the Stripe Product and Price behind each plan.

use std::collections::HashMap;

use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::{CreateProduct, UpdateProduct};

use diesel::Connection as _;

use super::{BillingError, Gateway, Operation, OperationClass, OperationId, operations};
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::db::models::plan::{self, PlanFields, PlanRow, StripeIds};
use crate::db::{Db, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }
}

/// A plan as the rest of Tollgate sees it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub amount: i64,
    pub currency: String,
    pub interval: Interval,
    pub trial_days: i64,
    /// Entitlement keys, for the internal entitlements API (never shown to customers).
    pub entitlements: Vec<String>,
    /// What the pricing page lists.
    pub feature_lines: Vec<String>,
    /// Shown as "most popular".
    pub highlighted: bool,
    /// A yearly price beside the monthly one, if offered.
    pub yearly_amount: Option<i64>,
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
    pub stripe_yearly_price_id: Option<String>,
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::to_owned)
        .filter(|f| !f.is_empty())
        .collect()
}

impl From<PlanRow> for Plan {
    fn from(row: PlanRow) -> Self {
        Self {
            id: row.id,
            interval: Interval::parse(&row.billing_interval).unwrap_or(Interval::Month),
            entitlements: lines(&row.features),
            feature_lines: lines(&row.feature_lines),
            highlighted: row.highlighted,
            yearly_amount: row.yearly_amount,
            stripe_yearly_price_id: row.stripe_yearly_price_id,
            slug: row.slug,
            name: row.name,
            description: row.description,
            amount: row.amount,
            currency: row.currency,
            trial_days: row.trial_days,
            active: row.active,
            stripe_product_id: row.stripe_product_id,
            stripe_price_id: row.stripe_price_id,
        }
    }
}

/// `$25.00`, `€9.50`, `1200 JPY`-style amounts from minor units.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let zero_decimal = matches!(currency, "jpy" | "krw" | "vnd" | "clp" | "isk" | "ugx");
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    let number = if zero_decimal {
        amount.to_string()
    } else {
        format!("{}.{:02}", amount / 100, amount.rem_euclid(100))
    };
    if symbol.is_empty() {
        format!("{number} {}", currency.to_uppercase())
    } else {
        format!("{symbol}{number}")
    }
}

/// One way to pay for a plan: its interval, amount and the Stripe Price behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPrice {
    pub interval: Interval,
    pub amount: i64,
    pub currency: String,
    pub stripe_price_id: Option<String>,
}

impl PlanPrice {
    pub fn is_free(&self) -> bool {
        self.amount == 0
    }

    /// `$25.00 / month`, or `Free`.
    pub fn label(&self) -> String {
        if self.is_free() {
            return "Free".to_owned();
        }
        format!(
            "{} / {}",
            format_amount(self.amount, &self.currency),
            self.interval.as_str()
        )
    }
}

/// Why a plan cannot be bought as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// The interval is neither `month` nor `year` (a forged form).
    UnknownInterval,
    /// No such active plan, or it is not offered on that interval.
    NotOffered,
}

impl Plan {
    /// The plan's own price (the one every plan has).
    pub fn base_price(&self) -> PlanPrice {
        PlanPrice {
            interval: self.interval,
            amount: self.amount,
            currency: self.currency.clone(),
            stripe_price_id: self.stripe_price_id.clone(),
        }
    }

    /// Every way to pay for the plan: its own price, then the yearly one if offered.
    pub fn prices(&self) -> Vec<PlanPrice> {
        let mut prices = vec![self.base_price()];
        if let Some(amount) = self.yearly_amount {
            prices.push(PlanPrice {
                interval: Interval::Year,
                amount,
                currency: self.currency.clone(),
                stripe_price_id: self.stripe_yearly_price_id.clone(),
            });
        }
        prices
    }

    /// Whether customers choose between monthly and yearly billing.
    pub fn offers_both_intervals(&self) -> bool {
        self.prices().len() > 1
    }

    /// The price for the interval a form asked for (`""`: the plan's own).
    pub fn price_for(&self, interval: &str) -> Result<PlanPrice, OfferError> {
        let interval = match interval {
            "" => self.interval,
            raw => Interval::parse(raw).ok_or(OfferError::UnknownInterval)?,
        };
        self.prices()
            .into_iter()
            .find(|price| price.interval == interval)
            .ok_or(OfferError::NotOffered)
    }

    /// How much cheaper the yearly price is than twelve months, in whole percent (if at all).
    pub fn yearly_savings_percent(&self) -> Option<i64> {
        let yearly = self.yearly_amount?;
        let twelve_months = self.amount.checked_mul(12)?;
        (self.interval == Interval::Month && twelve_months > yearly && twelve_months > 0)
            .then(|| (twelve_months - yearly) * 100 / twelve_months)
            .filter(|percent| *percent > 0)
    }

    /// Every price, e.g. `$25.00 / month · $250.00 / year`.
    pub fn price_label(&self) -> String {
        self.prices()
            .iter()
            .map(PlanPrice::label)
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// An active plan chosen by slug and interval (as submitted: checked here), e.g. from a link
/// carried through sign-up.
pub fn offer(plans: &[Plan], slug: &str, interval: &str) -> Result<(Plan, PlanPrice), OfferError> {
    let plan = plans
        .iter()
        .find(|plan| plan.active && plan.slug == slug)
        .ok_or(OfferError::NotOffered)?;
    let price = plan.price_for(interval)?;
    Ok((plan.clone(), price))
}

/// The most a plan may cost, in minor units (Stripe's limit for `unit_amount`).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// What is wrong with a submitted price: not a whole number, negative, or over the maximum
/// (which it names, in the plan's currency).
fn amount_message(parsed: Option<i64>, currency: &str) -> String {
    match parsed {
        Some(amount) if amount < 0 => "The price cannot be negative.".into(),
        Some(_) => format!(
            "The price can be at most {MAX_AMOUNT} minor units ({}).",
            format_amount(MAX_AMOUNT, currency)
        ),
        None => {
            "Enter the price as a whole number of minor units (cents), e.g. 2500 for $25.00.".into()
        }
    }
}

/// What an admin submitted, already validated.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub amount: i64,
    pub currency: String,
    pub interval: Interval,
    pub trial_days: i64,
    pub entitlements: Vec<String>,
    pub feature_lines: Vec<String>,
    pub highlighted: bool,
    pub yearly_amount: Option<i64>,
}

/// Most feature lines a plan lists, and the longest one.
pub const MAX_FEATURE_LINES: usize = 12;
pub const MAX_FEATURE_LINE_CHARS: usize = 80;

/// Field name → message, for re-rendering the form.
pub type PlanErrors = HashMap<&'static str, String>;

/// The raw form fields (strings, as submitted).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct PlanDraft {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub interval: String,
    #[serde(default)]
    pub trial_days: String,
    /// Entitlement keys, one per line.
    #[serde(default)]
    pub features: String,
    /// The pricing page's feature lines, one per line.
    #[serde(default)]
    pub feature_lines: String,
    /// A checkbox: `on` when ticked.
    #[serde(default)]
    pub highlighted: String,
    /// Empty for no yearly price.
    #[serde(default)]
    pub yearly_amount: String,
}

fn validate_feature_lines(raw: &str) -> Result<Vec<String>, String> {
    let lines: Vec<String> = raw
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.len() > MAX_FEATURE_LINES {
        return Err(format!(
            "List at most {MAX_FEATURE_LINES} features, one per line."
        ));
    }
    if let Some(n) = lines
        .iter()
        .position(|line| line.chars().count() > MAX_FEATURE_LINE_CHARS)
    {
        return Err(format!(
            "Keep each feature to {MAX_FEATURE_LINE_CHARS} characters or fewer (feature {} is longer).",
            n + 1
        ));
    }
    if lines.iter().any(|line| line.chars().any(char::is_control)) {
        return Err("Features are plain text, one per line.".into());
    }
    Ok(lines)
}

impl PlanDraft {
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            name: plan.name.clone(),
            slug: plan.slug.clone(),
            description: plan.description.clone(),
            amount: plan.amount.to_string(),
            currency: plan.currency.clone(),
            interval: plan.interval.as_str().to_owned(),
            trial_days: plan.trial_days.to_string(),
            features: plan.entitlements.join("\n"),
            feature_lines: plan.feature_lines.join("\n"),
            highlighted: if plan.highlighted { "on" } else { "" }.to_owned(),
            yearly_amount: plan
                .yearly_amount
                .map(|amount| amount.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn validate(&self) -> Result<PlanInput, PlanErrors> {
        let mut errors = PlanErrors::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 80 {
            errors.insert("name", "Give the plan a name of 1 to 80 characters.".into());
        }
        let slug = self.slug.trim().to_ascii_lowercase();
        let slug_ok = (2..=40).contains(&slug.len())
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-')
            && !slug.ends_with('-');
        if !slug_ok {
            errors.insert(
                "slug",
                "Use 2 to 40 lowercase letters, digits and dashes, e.g. pro-monthly.".into(),
            );
        }
        if self.description.chars().count() > 500 {
            errors.insert(
                "description",
                "Keep the description under 500 characters.".into(),
            );
        }
        let currency = self.currency.trim().to_ascii_lowercase();
        let currency_ok = currency.len() == 3 && currency.chars().all(|c| c.is_ascii_lowercase());
        let amount = match self.amount.trim().parse::<i64>() {
            Ok(amount) if (0..=MAX_AMOUNT).contains(&amount) => Some(amount),
            parsed => {
                let currency = if currency_ok {
                    currency.as_str()
                } else {
                    "usd"
                };
                errors.insert("amount", amount_message(parsed.ok(), currency));
                None
            }
        };
        if !currency_ok {
            errors.insert(
                "currency",
                "Use a three-letter ISO currency code, e.g. usd.".into(),
            );
        }
        let interval = Interval::parse(self.interval.trim());
        if interval.is_none() {
            errors.insert("interval", "Choose monthly or yearly billing.".into());
        }
        let trial = self.trial_days.trim();
        let trial_days = if trial.is_empty() {
            Some(0)
        } else {
            trial.parse::<i64>().ok().filter(|d| (0..=730).contains(d))
        };
        if trial_days.is_none() {
            errors.insert(
                "trial_days",
                "Trial days are a number from 0 to 730.".into(),
            );
        }
        let features: Vec<String> = self
            .features
            .split(['\n', ','])
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        if features.iter().any(|f| {
            f.len() > 64
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        }) {
            errors.insert(
                "features",
                "Entitlement keys are letters, digits and - _ . : (one per line).".into(),
            );
        }
        if amount == Some(0) && trial_days.is_some_and(|d| d > 0) {
            errors.insert(
                "trial_days",
                "A free plan has no trial: set trial days to 0.".into(),
            );
        }
        let yearly_amount = self.validate_yearly_amount(amount, interval, &mut errors);
        let feature_lines = validate_feature_lines(&self.feature_lines)
            .map_err(|message| errors.insert("feature_lines", message))
            .unwrap_or_default();
        match (amount, interval, trial_days, errors.is_empty()) {
            (Some(amount), Some(interval), Some(trial_days), true) => Ok(PlanInput {
                slug,
                name: name.to_owned(),
                description: self.description.trim().to_owned(),
                amount,
                currency,
                interval,
                trial_days,
                entitlements: features,
                feature_lines,
                highlighted: self.highlighted.trim() == "on",
                yearly_amount,
            }),
            _ => Err(errors),
        }
    }

    /// The optional yearly price: only beside a paid monthly price.
    fn validate_yearly_amount(
        &self,
        amount: Option<i64>,
        interval: Option<Interval>,
        errors: &mut PlanErrors,
    ) -> Option<i64> {
        let raw = self.yearly_amount.trim();
        if raw.is_empty() {
            return None;
        }
        let message = match raw
            .parse::<i64>()
            .ok()
            .filter(|a| (1..=MAX_AMOUNT).contains(a))
        {
            None => {
                "Enter the yearly price in minor units, e.g. 25000 for $250.00, or leave it empty."
            }
            Some(_) if interval == Some(Interval::Year) => {
                "This plan is billed yearly already: leave the yearly price empty."
            }
            Some(_) if amount == Some(0) => "A free plan has no yearly price: leave it empty.",
            Some(yearly) => return Some(yearly),
        };
        errors.insert("yearly_amount", message.into());
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("a plan with this slug already exists")]
    SlugTaken,
    #[error("the currency cannot be used with Stripe")]
    Currency,
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<DbError> for PlanError {
    fn from(err: DbError) -> Self {
        Self::Billing(err.into())
    }
}

fn stripe_interval(interval: Interval) -> CreatePriceRecurringInterval {
    match interval {
        Interval::Month => CreatePriceRecurringInterval::Month,
        Interval::Year => CreatePriceRecurringInterval::Year,
    }
}

fn fields<'a>(input: &'a PlanInput, features: &'a str, feature_lines: &'a str) -> PlanFields<'a> {
    PlanFields {
        slug: &input.slug,
        name: &input.name,
        description: &input.description,
        amount: input.amount,
        currency: &input.currency,
        billing_interval: input.interval.as_str(),
        trial_days: input.trial_days,
        features,
        feature_lines,
        highlighted: input.highlighted,
        yearly_amount: input.yearly_amount,
    }
}

/// The active plans, kept in memory for a few seconds: `/pricing` is the busiest public page.
/// Changes made here clear it at once; changes made on another instance show within the TTL.
pub struct ActivePlans {
    ttl: std::time::Duration,
    cached: std::sync::RwLock<Option<(std::time::Instant, std::sync::Arc<Vec<Plan>>)>>,
}

impl ActivePlans {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            cached: std::sync::RwLock::new(None),
        }
    }

    pub async fn get(&self, db: &Db) -> Result<std::sync::Arc<Vec<Plan>>, DbError> {
        if let Ok(guard) = self.cached.read()
            && let Some((at, plans)) = guard.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(std::sync::Arc::clone(plans));
        }
        let plans = std::sync::Arc::new(list_active(db).await?);
        if let Ok(mut guard) = self.cached.write() {
            *guard = Some((std::time::Instant::now(), std::sync::Arc::clone(&plans)));
        }
        Ok(plans)
    }

    pub fn invalidate(&self) {
        if let Ok(mut guard) = self.cached.write() {
            *guard = None;
        }
    }
}

pub async fn list_all(db: &Db) -> Result<Vec<Plan>, DbError> {
    db.run(|conn| Ok(plan::all(conn)?.into_iter().map(Plan::from).collect()))
        .await
}

pub async fn list_active(db: &Db) -> Result<Vec<Plan>, DbError> {
    db.run(|conn| Ok(plan::active(conn)?.into_iter().map(Plan::from).collect()))
        .await
}

pub async fn find(db: &Db, id: i64) -> Result<Option<Plan>, DbError> {
    db.run(move |conn| Ok(plan::find(conn, id)?.map(Plan::from)))
        .await
}

pub async fn find_by_slug(db: &Db, slug: String) -> Result<Option<Plan>, DbError> {
    db.run(move |conn| Ok(plan::find_by_slug(conn, &slug)?.map(Plan::from)))
        .await
}

/// Creates a recurring Price of `amount` per `interval` for the plan's Product.
async fn create_price(
    gateway: &Gateway,
    admin: i64,
    key: &str,
    product: &str,
    input: &PlanInput,
    (interval, amount): (Interval, i64),
) -> Result<String, PlanError> {
    let currency: stripe_types::Currency =
        input.currency.parse().map_err(|_| PlanError::Currency)?;
    let price = gateway
        .call(OperationClass::Default, admin, Some(key), || {
            CreatePrice::new(currency.clone())
                .product(product)
                .unit_amount(amount)
                .recurring(CreatePriceRecurring::new(stripe_interval(interval)))
                .metadata(HashMap::from([(
                    "tollgate_plan".to_owned(),
                    input.slug.clone(),
                )]))
        })
        .await
        .map_err(BillingError::from)?;
    Ok(price.id.to_string())
}

/// Stops a Price from being sold (Stripe prices cannot be deleted or changed).
async fn deactivate_price(
    gateway: &Gateway,
    admin: i64,
    key: &str,
    price: &str,
) -> Result<(), PlanError> {
    gateway
        .call(OperationClass::Default, admin, Some(key), || {
            UpdatePrice::new(price).active(false)
        })
        .await
        .map_err(BillingError::from)?;
    Ok(())
}

/// Records the plan's Stripe objects, marks it offered, and gives it the "most popular" badge
/// alone if it asks for it.
/// Audits `kind` for the plan in the same transaction.
async fn publish(
    db: &Db,
    id: i64,
    product: String,
    price: String,
    yearly_price: Option<String>,
    highlighted: bool,
    audit: SecurityEvent,
) -> Result<Option<PlanRow>, DbError> {
    db.run(move |conn| {
        conn.transaction(|conn| {
            let ids = StripeIds {
                product: Some(&product),
                price: Some(&price),
                yearly_price: yearly_price.as_deref(),
            };
            plan::set_stripe(conn, id, ids, true)?;
            if highlighted {
                plan::highlight_only(conn, id)?;
            }
            audit::write(conn, &audit)?;
            plan::find(conn, id)
        })
    })
    .await
}

/// The audit row of an admin's change to the plan `slug`.
fn plan_event(actor: &Actor, kind: Kind, slug: &str) -> SecurityEvent {
    actor
        .event(kind)
        .details(serde_json::json!({ "plan": slug }))
}

/// Creates the plan, its Stripe Product and its Prices, audited as `actor`'s with the
/// publication (an actor without an account is Tollgate itself, e.g. the offline demo).
/// Submitting the same form again (same operation id) finishes or repeats the same work:
/// Stripe replays, nothing is created twice.
pub async fn create(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    input: PlanInput,
) -> Result<Plan, PlanError> {
    let admin = actor.account();
    let first_time = operations::claim(db, admin, "plan.create", operation)
        .await?
        .first_time;
    let owned = input.clone();
    let row = db
        .run(move |conn| {
            let (features, lines) = (
                owned.entitlements.join("\n"),
                owned.feature_lines.join("\n"),
            );
            let fields = fields(&owned, &features, &lines);
            match plan::find_by_slug(conn, &owned.slug)? {
                // The same form again: the work is done (or is finished below).
                Some(existing) if !first_time => Ok(Ok(existing)),
                // An earlier attempt stopped before Stripe had the plan: finish it.
                Some(unfinished) if unfinished.stripe_price_id.is_none() => {
                    plan::update(conn, unfinished.id, &fields)?;
                    plan::find(conn, unfinished.id).map(|row| row.ok_or(PlanError::SlugTaken))
                }
                Some(_) => Ok(Err(PlanError::SlugTaken)),
                None => plan::insert(conn, &fields).map(Ok),
            }
        })
        .await
        .map_err(PlanError::from)??;
    if row.active && row.stripe_price_id.is_some() {
        return Ok(row.into());
    }
    let admin = admin.unwrap_or_default();
    // Keys derive from the plan row, so every attempt to finish this plan, from any form,
    // replays the same Stripe writes instead of creating a second Product or Price.
    let product_key = format!("plan-{}-product", row.id);
    let price_key = format!(
        "plan-{}-price-{}-{}-{}",
        row.id,
        input.amount,
        input.currency,
        input.interval.as_str()
    );
    let product = match &row.stripe_product_id {
        Some(existing) => existing.clone(),
        None => gateway
            .call(OperationClass::Default, admin, Some(&product_key), || {
                CreateProduct::new(input.name.clone())
                    .description(input.description.clone())
                    .metadata(HashMap::from([(
                        "tollgate_plan".to_owned(),
                        input.slug.clone(),
                    )]))
            })
            .await
            .map_err(BillingError::from)?
            .id
            .to_string(),
    };
    let base = (input.interval, input.amount);
    let price = create_price(gateway, admin, &price_key, &product, &input, base).await?;
    let yearly_price = match input.yearly_amount {
        Some(amount) => {
            let key = format!("plan-{}-yearly-price-{amount}-{}", row.id, input.currency);
            let yearly = (Interval::Year, amount);
            Some(create_price(gateway, admin, &key, &product, &input, yearly).await?)
        }
        None => None,
    };
    let audit = plan_event(actor, Kind::PlanCreated, &input.slug);
    let (id, highlighted) = (row.id, input.highlighted);
    let plan = publish(db, id, product, price, yearly_price, highlighted, audit)
        .await?
        .ok_or(PlanError::Billing(BillingError::Db(DbError::Query(
            diesel::result::Error::NotFound,
        ))))?;
    Ok(plan.into())
}

/// Updates a plan. Stripe prices are immutable: a new amount, currency or interval creates a new
/// Price and deactivates the old one (the yearly Price likewise); name and description update
/// the Product.
pub async fn update(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    plan: &Plan,
    input: PlanInput,
) -> Result<(), PlanError> {
    let admin = actor.account().unwrap_or_default();
    let operation = operations::claim(db, Some(admin), "plan.update", operation).await?;
    let (product, old_price) = match (&plan.stripe_product_id, &plan.stripe_price_id) {
        (Some(product), Some(price)) => (product.clone(), price.clone()),
        _ => {
            return Err(PlanError::Billing(BillingError::Unexpected(
                "plan is not synced to Stripe".into(),
            )));
        }
    };
    if input.slug != plan.slug {
        let slug = input.slug.clone();
        if db
            .run(move |conn| plan::find_by_slug(conn, &slug))
            .await?
            .is_some()
        {
            return Err(PlanError::SlugTaken);
        }
    }
    gateway
        .call(
            OperationClass::Default,
            admin,
            Some(&operation.idempotency_key("plan-update-product")),
            || {
                UpdateProduct::new(product.as_str())
                    .name(input.name.clone())
                    .description(input.description.clone())
            },
        )
        .await
        .map_err(BillingError::from)?;
    let price_changed = input.amount != plan.amount
        || input.currency != plan.currency
        || input.interval != plan.interval;
    let mut price = old_price.clone();
    if price_changed {
        let key = operation.idempotency_key("plan-update-price");
        let base = (input.interval, input.amount);
        price = create_price(gateway, admin, &key, &product, &input, base).await?;
        let key = operation.idempotency_key("plan-update-old-price");
        deactivate_price(gateway, admin, &key, &old_price).await?;
    }
    let yearly_price = update_yearly_price(gateway, admin, &operation, plan, &input).await?;
    let (id, active) = (plan.id, plan.active);
    let audit = plan_event(actor, Kind::PlanUpdated, &plan.slug);
    db.run(move |conn| {
        conn.transaction(|conn| {
            let (features, lines) = (
                input.entitlements.join("\n"),
                input.feature_lines.join("\n"),
            );
            plan::update(conn, id, &fields(&input, &features, &lines))?;
            let ids = StripeIds {
                product: Some(&product),
                price: Some(&price),
                yearly_price: yearly_price.as_deref(),
            };
            plan::set_stripe(conn, id, ids, active)?;
            if input.highlighted {
                plan::highlight_only(conn, id)?;
            }
            audit::write(conn, &audit)
        })
    })
    .await?;
    Ok(())
}

/// The yearly Price after an update: kept while its amount and currency stand, else replaced
/// (or, when the yearly price is dropped, only deactivated).
async fn update_yearly_price(
    gateway: &Gateway,
    admin: i64,
    operation: &Operation,
    plan: &Plan,
    input: &PlanInput,
) -> Result<Option<String>, PlanError> {
    let unchanged = input.yearly_amount == plan.yearly_amount && input.currency == plan.currency;
    if unchanged && (input.yearly_amount.is_none() || plan.stripe_yearly_price_id.is_some()) {
        return Ok(plan.stripe_yearly_price_id.clone());
    }
    let new_price = match input.yearly_amount {
        Some(amount) => {
            let key = operation.idempotency_key("plan-update-yearly-price");
            let yearly = (Interval::Year, amount);
            let product = plan.stripe_product_id.as_deref().unwrap_or_default();
            Some(create_price(gateway, admin, &key, product, input, yearly).await?)
        }
        None => None,
    };
    if let Some(old) = &plan.stripe_yearly_price_id {
        let key = operation.idempotency_key("plan-update-old-yearly-price");
        deactivate_price(gateway, admin, &key, old).await?;
    }
    Ok(new_price)
}

/// Stops offering a plan: its Prices and Product are deactivated at Stripe, and it leaves the
/// pricing page. Existing subscriptions continue.
pub async fn archive(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    plan: &Plan,
) -> Result<(), PlanError> {
    let admin = actor.account().unwrap_or_default();
    let operation = operations::claim(db, Some(admin), "plan.archive", operation).await?;
    if let Some(price) = &plan.stripe_price_id {
        let key = operation.idempotency_key("plan-archive-price");
        deactivate_price(gateway, admin, &key, price).await?;
    }
    if let Some(price) = &plan.stripe_yearly_price_id {
        let key = operation.idempotency_key("plan-archive-yearly-price");
        deactivate_price(gateway, admin, &key, price).await?;
    }
    if let Some(product) = &plan.stripe_product_id {
        gateway
            .call(
                OperationClass::Default,
                admin,
                Some(&operation.idempotency_key("plan-archive-product")),
                || UpdateProduct::new(product.as_str()).active(false),
            )
            .await
            .map_err(BillingError::from)?;
    }
    let (id, product, price, yearly_price) = (
        plan.id,
        plan.stripe_product_id.clone(),
        plan.stripe_price_id.clone(),
        plan.stripe_yearly_price_id.clone(),
    );
    let audit = plan_event(actor, Kind::PlanArchived, &plan.slug);
    db.run(move |conn| {
        conn.transaction(|conn| {
            let ids = StripeIds {
                product: product.as_deref(),
                price: price.as_deref(),
                yearly_price: yearly_price.as_deref(),
            };
            plan::set_stripe(conn, id, ids, false)?;
            audit::write(conn, &audit)
        })
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> PlanDraft {
        PlanDraft {
            name: "Pro".into(),
            slug: "pro".into(),
            description: "For teams".into(),
            amount: "2500".into(),
            currency: "USD".into(),
            interval: "month".into(),
            trial_days: "14".into(),
            features: "agents:unlimited\nbyok, support:priority".into(),
            feature_lines: "Unlimited agents\n\n  Priority support  \n".into(),
            highlighted: "on".into(),
            yearly_amount: "25000".into(),
        }
    }

    #[test]
    fn a_good_draft_validates_and_normalises() {
        let input = draft().validate().unwrap();
        assert_eq!(input.currency, "usd");
        assert_eq!(
            input.entitlements,
            ["agents:unlimited", "byok", "support:priority"]
        );
        assert_eq!(
            input.feature_lines,
            ["Unlimited agents", "Priority support"]
        );
        assert!(input.highlighted);
        assert_eq!(input.yearly_amount, Some(25000));
        assert_eq!(input.trial_days, 14);
        let plain = PlanDraft {
            highlighted: String::new(),
            yearly_amount: " ".into(),
            ..draft()
        };
        let input = plain.validate().unwrap();
        assert!(!input.highlighted);
        assert_eq!(input.yearly_amount, None);
    }

    #[test]
    fn each_bad_field_gets_its_own_message() {
        let bad = PlanDraft {
            name: String::new(),
            slug: "Pro Plan".into(),
            amount: "25.00".into(),
            currency: "dollars".into(),
            interval: "week".into(),
            trial_days: "-1".into(),
            features: "bad key".into(),
            feature_lines: "x\n".repeat(MAX_FEATURE_LINES + 1),
            yearly_amount: "250.00".into(),
            ..draft()
        };
        let errors = bad.validate().unwrap_err();
        for field in [
            "name",
            "slug",
            "amount",
            "currency",
            "interval",
            "trial_days",
            "features",
            "feature_lines",
            "yearly_amount",
        ] {
            assert!(errors.contains_key(field), "{field}");
        }
        assert_eq!(
            errors["feature_lines"],
            "List at most 12 features, one per line."
        );
    }

    #[test]
    fn feature_lines_are_bounded_in_length_and_plain() {
        let long = PlanDraft {
            feature_lines: format!("Fine\n{}", "x".repeat(MAX_FEATURE_LINE_CHARS + 1)),
            ..draft()
        };
        assert_eq!(
            long.validate().unwrap_err()["feature_lines"],
            "Keep each feature to 80 characters or fewer (feature 2 is longer)."
        );
        let exactly = PlanDraft {
            feature_lines: "é".repeat(MAX_FEATURE_LINE_CHARS),
            ..draft()
        };
        assert!(exactly.validate().is_ok(), "characters, not bytes");
        let control = PlanDraft {
            feature_lines: "Bell\u{7} included".into(),
            ..draft()
        };
        assert!(
            control
                .validate()
                .unwrap_err()
                .contains_key("feature_lines")
        );
    }

    #[test]
    fn a_yearly_price_only_sits_beside_a_paid_monthly_price() {
        let yearly_plan = PlanDraft {
            interval: "year".into(),
            ..draft()
        };
        assert!(
            yearly_plan.validate().unwrap_err()["yearly_amount"].contains("billed yearly already")
        );
        let free = PlanDraft {
            amount: "0".into(),
            trial_days: "0".into(),
            ..draft()
        };
        assert!(free.validate().unwrap_err()["yearly_amount"].contains("free plan"));
        let zero = PlanDraft {
            yearly_amount: "0".into(),
            ..draft()
        };
        assert!(zero.validate().unwrap_err().contains_key("yearly_amount"));
    }

    #[test]
    fn a_free_plan_validates_without_a_trial() {
        let free = PlanDraft {
            amount: "0".into(),
            trial_days: "0".into(),
            yearly_amount: String::new(),
            ..draft()
        };
        assert_eq!(free.validate().unwrap().amount, 0);
        let with_trial = PlanDraft {
            trial_days: "14".into(),
            ..free
        };
        assert!(with_trial.validate().unwrap_err()["trial_days"].contains("free plan"));
    }

    fn plan() -> Plan {
        let input = draft().validate().unwrap();
        Plan {
            id: 1,
            slug: input.slug,
            name: input.name,
            description: input.description,
            amount: input.amount,
            currency: input.currency,
            interval: input.interval,
            trial_days: input.trial_days,
            entitlements: input.entitlements,
            feature_lines: input.feature_lines,
            highlighted: input.highlighted,
            yearly_amount: input.yearly_amount,
            active: true,
            stripe_product_id: Some("prod_1".into()),
            stripe_price_id: Some("price_month".into()),
            stripe_yearly_price_id: Some("price_year".into()),
        }
    }

    #[test]
    fn offers_pick_the_price_of_the_asked_interval() {
        let plans = [plan()];
        let (_, monthly) = offer(&plans, "pro", "").unwrap();
        assert_eq!(monthly.stripe_price_id.as_deref(), Some("price_month"));
        let (_, yearly) = offer(&plans, "pro", "year").unwrap();
        assert_eq!(yearly.stripe_price_id.as_deref(), Some("price_year"));
        assert_eq!(yearly.label(), "$250.00 / year");
        assert_eq!(
            offer(&plans, "pro", "weekly").unwrap_err(),
            OfferError::UnknownInterval
        );
        assert_eq!(
            offer(&plans, "team", "month").unwrap_err(),
            OfferError::NotOffered
        );
        let monthly_only = [Plan {
            yearly_amount: None,
            stripe_yearly_price_id: None,
            ..plan()
        }];
        assert_eq!(
            offer(&monthly_only, "pro", "year").unwrap_err(),
            OfferError::NotOffered
        );
        let archived = [Plan {
            active: false,
            ..plan()
        }];
        assert_eq!(
            offer(&archived, "pro", "month").unwrap_err(),
            OfferError::NotOffered
        );
    }

    #[test]
    fn yearly_savings_are_whole_percent_off_twelve_months() {
        assert_eq!(plan().yearly_savings_percent(), Some(16));
        let no_saving = Plan {
            yearly_amount: Some(30000),
            ..plan()
        };
        assert_eq!(no_saving.yearly_savings_percent(), None);
        assert_eq!(plan().price_label(), "$25.00 / month · $250.00 / year");
    }

    #[test]
    fn amounts_are_formatted_from_minor_units() {
        assert_eq!(format_amount(2500, "usd"), "$25.00");
        assert_eq!(format_amount(999, "eur"), "€9.99");
        assert_eq!(format_amount(1200, "jpy"), "1200 JPY");
    }
}
