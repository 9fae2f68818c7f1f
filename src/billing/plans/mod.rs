//! Plans: display, offers, and the Stripe Product and Price behind each plan. The admin's form
//! and its field parsers are in `draft`.

mod draft;

use std::collections::HashMap;

use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::{CreateProduct, UpdateProduct};

use diesel::Connection as _;

use super::{BillingError, Gateway, Operation, OperationClass, OperationId, operations};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind, SecurityEvent};
use crate::db::models::plan::{self, PlanFields, PlanRow, StripeIds};
use crate::db::models::plan_change;
use crate::db::models::plan_trial_option;
use crate::db::{Db, DbError};
pub use draft::{
    MAX_AMOUNT, MAX_FEATURE_LINE_CHARS, MAX_FEATURE_LINES, PlanDraft, PlanErrors, PlanInput,
};

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

/// The active plans, kept in memory for a moment (a second in the server): `/pricing` is the
/// busiest public page. Changes made here clear it at once; changes made on another instance
/// show within the TTL.
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

/// A per-seat plan's range of seats (`None`: one seat).
pub async fn seats(db: &Db, id: i64) -> Result<Option<(i64, i64)>, DbError> {
    db.run(move |conn| plan_change::seats(conn, id)).await
}

pub async fn find_by_slug(db: &Db, slug: String) -> Result<Option<Plan>, DbError> {
    db.run(move |conn| Ok(plan::find_by_slug(conn, &slug)?.map(Plan::from)))
        .await
}

/// Creates a recurring Price of `amount` per `interval` for the plan's Product.
async fn create_price(
    gateway: &Gateway,
    admin: UserId,
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
    admin: UserId,
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
    (highlighted, trial_without_card): (bool, bool),
    audit: SecurityEvent,
) -> Result<Option<PlanRow>, DbError> {
    db.run(move |conn| {
        conn.transaction(|conn| {
            plan_trial_option::set_without_card(conn, id, trial_without_card)?;
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

/// Whose Stripe throttle a plan change counts against: the admin's; Tollgate's own (no account,
/// e.g. the offline demo) share one, under an id no account has.
fn throttle_key(actor: &Actor) -> UserId {
    actor.account().unwrap_or(UserId::from(0))
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
            .map(|row| {
                if let Ok(row) = &row {
                    plan_change::set_seats(conn, row.id, owned.seats)?;
                }
                Ok::<_, DbError>(row)
            })?
        })
        .await
        .map_err(PlanError::from)??;
    if row.active && row.stripe_price_id.is_some() {
        return Ok(row.into());
    }
    let admin = throttle_key(actor);
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
    let (id, flags) = (row.id, (input.highlighted, input.trial_without_card));
    let plan = publish(db, id, product, price, yearly_price, flags, audit)
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
    let admin = throttle_key(actor);
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
            plan_change::set_seats(conn, id, input.seats)?;
            if input.highlighted {
                plan::highlight_only(conn, id)?;
            }
            plan_trial_option::set_without_card(conn, id, input.trial_without_card)?;
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
    admin: UserId,
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
    let admin = throttle_key(actor);
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

/// Whether plan `plan_id`'s trial is taken without a card.
pub async fn trial_without_card(db: &Db, plan_id: i64) -> Result<bool, DbError> {
    db.run(move |conn| plan_trial_option::without_card(conn, plan_id))
        .await
}

/// The ids of the plans whose trial is taken without a card.
pub async fn plans_with_card_free_trials(db: &Db) -> Result<Vec<i64>, DbError> {
    db.run(plan_trial_option::plans_without_card).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            id: 1,
            slug: "pro".into(),
            name: "Pro".into(),
            description: "For teams".into(),
            amount: 2500,
            currency: "usd".into(),
            interval: Interval::Month,
            trial_days: 14,
            entitlements: vec!["agents:unlimited".into(), "byok".into()],
            feature_lines: vec!["Unlimited agents".into()],
            highlighted: true,
            yearly_amount: Some(25000),
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
