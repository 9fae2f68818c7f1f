//! Plans: validated input, display, and the Stripe Product and Price behind each plan.

use std::collections::HashMap;

use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::{CreateProduct, UpdateProduct};

use super::{BillingError, Gateway, OperationClass, operations};
use crate::db::models::plan::{self, PlanFields, PlanRow};
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
    pub features: Vec<String>,
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

impl From<PlanRow> for Plan {
    fn from(row: PlanRow) -> Self {
        Self {
            id: row.id,
            interval: Interval::parse(&row.billing_interval).unwrap_or(Interval::Month),
            features: row
                .features
                .lines()
                .map(str::to_owned)
                .filter(|f| !f.is_empty())
                .collect(),
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

impl Plan {
    pub fn price_label(&self) -> String {
        format!(
            "{} / {}",
            format_amount(self.amount, &self.currency),
            self.interval.as_str()
        )
    }
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
    pub features: Vec<String>,
}

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
    #[serde(default)]
    pub features: String,
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
            features: plan.features.join("\n"),
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
        match (amount, interval, trial_days, errors.is_empty()) {
            (Some(amount), Some(interval), Some(trial_days), true) => Ok(PlanInput {
                slug,
                name: name.to_owned(),
                description: self.description.trim().to_owned(),
                amount,
                currency,
                interval,
                trial_days,
                features,
            }),
            _ => Err(errors),
        }
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

fn fields<'a>(input: &'a PlanInput, features: &'a str) -> PlanFields<'a> {
    PlanFields {
        slug: &input.slug,
        name: &input.name,
        description: &input.description,
        amount: input.amount,
        currency: &input.currency,
        billing_interval: input.interval.as_str(),
        trial_days: input.trial_days,
        features,
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

async fn create_price(
    gateway: &Gateway,
    admin: i64,
    key: &str,
    product: &str,
    input: &PlanInput,
) -> Result<String, PlanError> {
    let currency: stripe_types::Currency =
        input.currency.parse().map_err(|_| PlanError::Currency)?;
    let price = gateway
        .call(OperationClass::Default, admin, Some(key), || {
            CreatePrice::new(currency.clone())
                .product(product)
                .unit_amount(input.amount)
                .recurring(CreatePriceRecurring::new(stripe_interval(input.interval)))
                .metadata(HashMap::from([(
                    "tollgate_plan".to_owned(),
                    input.slug.clone(),
                )]))
        })
        .await
        .map_err(BillingError::from)?;
    Ok(price.id.to_string())
}

/// Creates the plan, its Stripe Product and its Price (`admin` is `None` for Tollgate itself,
/// e.g. the offline demo). Submitting the same form again (same
/// operation id) finishes or repeats the same work: Stripe replays, nothing is created twice.
pub async fn create(
    db: &Db,
    gateway: &Gateway,
    admin: Option<i64>,
    operation: &str,
    input: PlanInput,
) -> Result<Plan, PlanError> {
    let first_time = operations::claim(db, admin, "plan.create", operation)
        .await?
        .first_time;
    let owned = input.clone();
    let row = db
        .run(move |conn| {
            let features = owned.features.join("\n");
            let fields = fields(&owned, &features);
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
    let product_id = product;
    let price_id = create_price(gateway, admin, &price_key, &product_id, &input).await?;
    let id = row.id;
    let plan = db
        .run(move |conn| {
            plan::set_stripe(conn, id, Some(&product_id), Some(&price_id), true)?;
            plan::find(conn, id)
        })
        .await?
        .ok_or(PlanError::Billing(BillingError::Db(DbError::Query(
            diesel::result::Error::NotFound,
        ))))?;
    Ok(plan.into())
}

/// Updates a plan. Stripe prices are immutable: a new amount, currency or interval creates a new
/// Price and deactivates the old one; name and description update the Product.
pub async fn update(
    db: &Db,
    gateway: &Gateway,
    admin: i64,
    operation: &str,
    plan: &Plan,
    input: PlanInput,
) -> Result<(), PlanError> {
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
        price = create_price(gateway, admin, &key, &product, &input).await?;
        gateway
            .call(
                OperationClass::Default,
                admin,
                Some(&operation.idempotency_key("plan-update-old-price")),
                || UpdatePrice::new(old_price.as_str()).active(false),
            )
            .await
            .map_err(BillingError::from)?;
    }
    let (id, active) = (plan.id, plan.active);
    db.run(move |conn| {
        plan::update(conn, id, &fields(&input, &input.features.join("\n")))?;
        plan::set_stripe(conn, id, Some(&product), Some(&price), active)
    })
    .await?;
    Ok(())
}

/// Stops offering a plan: its Price and Product are deactivated at Stripe, and it leaves the
/// pricing page. Existing subscriptions continue.
pub async fn archive(
    db: &Db,
    gateway: &Gateway,
    admin: i64,
    operation: &str,
    plan: &Plan,
) -> Result<(), PlanError> {
    let operation = operations::claim(db, Some(admin), "plan.archive", operation).await?;
    if let Some(price) = &plan.stripe_price_id {
        gateway
            .call(
                OperationClass::Default,
                admin,
                Some(&operation.idempotency_key("plan-archive-price")),
                || UpdatePrice::new(price.as_str()).active(false),
            )
            .await
            .map_err(BillingError::from)?;
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
    let (id, product, price) = (
        plan.id,
        plan.stripe_product_id.clone(),
        plan.stripe_price_id.clone(),
    );
    db.run(move |conn| plan::set_stripe(conn, id, product.as_deref(), price.as_deref(), false))
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
        }
    }

    #[test]
    fn a_good_draft_validates_and_normalises() {
        let input = draft().validate().unwrap();
        assert_eq!(input.currency, "usd");
        assert_eq!(
            input.features,
            ["agents:unlimited", "byok", "support:priority"]
        );
        assert_eq!(input.trial_days, 14);
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
        ] {
            assert!(errors.contains_key(field), "{field}");
        }
    }

    #[test]
    fn amounts_are_formatted_from_minor_units() {
        assert_eq!(format_amount(2500, "usd"), "$25.00");
        assert_eq!(format_amount(999, "eur"), "€9.99");
        assert_eq!(format_amount(1200, "jpy"), "1200 JPY");
    }
}
