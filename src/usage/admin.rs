//! Admins' changes to a plan's metered components: the form's fields parsed, the feature's
//! Stripe Billing Meter created once, the component's metered Price created (a new one for a
//! new rate: Stripe prices are immutable), and the component stored with its audit row.

use std::collections::HashMap;

use diesel::Connection as _;
use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula,
    CreateBillingMeterValueSettings,
};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
    CreatePriceTiers, CreatePriceTiersUpTo, UpdatePrice,
};

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::billing::plans::{Interval, MAX_AMOUNT, Plan, format_amount};
use crate::billing::{BillingError, Gateway, OperationClass};
use crate::db::models::plan_meter::{self, ComponentFields};
use crate::db::models::usage;
use crate::db::{Db, DbError};

use super::Rate;

/// Most metered components one plan may have.
pub const MAX_COMPONENTS: i64 = 20;
/// Longest feature key and unit name.
pub const MAX_KEY_CHARS: usize = 40;
/// Largest included quantity, package size and quota (units per period).
pub const MAX_UNITS: i64 = 1_000_000_000_000;
/// Largest package size.
pub const MAX_PACKAGE_SIZE: i64 = 1_000_000_000;

/// The admin's form, as typed.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ComponentForm {
    #[serde(default)]
    pub feature: String,
    #[serde(default)]
    pub unit_name: String,
    #[serde(default)]
    pub included: String,
    #[serde(default)]
    pub price: String,
    #[serde(default)]
    pub package_size: String,
    #[serde(default)]
    pub quota: String,
    /// `open` or `closed`.
    #[serde(default)]
    pub undecided: String,
}

impl ComponentForm {
    /// Every field cut to a length no valid value exceeds (the messages still name the fault).
    pub fn truncated(self) -> Self {
        let cut = |s: String, n: usize| s.chars().take(n).collect::<String>();
        Self {
            feature: cut(self.feature, MAX_KEY_CHARS + 1),
            unit_name: cut(self.unit_name, MAX_KEY_CHARS + 1),
            included: cut(self.included, 20),
            price: cut(self.price, 20),
            package_size: cut(self.package_size, 20),
            quota: cut(self.quota, 20),
            undecided: cut(self.undecided, 10),
        }
    }
}

/// A component as an admin set it, valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInput {
    pub feature: String,
    pub unit_name: String,
    pub rate: Rate,
    pub quota: Option<i64>,
    pub fail_open: bool,
}

/// The field ids of the form, in order (for the error summary).
pub const FIELDS: [&str; 7] = [
    "feature",
    "unit_name",
    "included",
    "price",
    "package_size",
    "quota",
    "undecided",
];

/// A feature key: lowercase letters, digits and `_`, 1 to 40 characters.
pub fn valid_feature(raw: &str) -> bool {
    (1..=MAX_KEY_CHARS).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn zero_decimal(currency: &str) -> bool {
    matches!(currency, "jpy" | "krw" | "vnd" | "clp" | "isk" | "ugx")
}

/// `2.00` (major units of `currency`) as minor units.
fn parse_price(raw: &str, currency: &str) -> Result<i64, String> {
    let raw = raw.trim().trim_start_matches(['$', '€', '£']);
    let example = if zero_decimal(currency) {
        "e.g. 200"
    } else {
        "e.g. 2.00"
    };
    let bad = || {
        format!(
            "Enter the price per package in {}, {example}.",
            currency.to_uppercase()
        )
    };
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = if zero_decimal(currency) { 0 } else { 2 };
    if whole.is_empty()
        || whole.len() > 9
        || fraction.len() > digits
        || (raw.contains('.') && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<2}").parse().map_err(|_| bad())?
    };
    let amount = whole
        .checked_mul(if digits == 0 { 1 } else { 100 })
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)?;
    if amount > MAX_AMOUNT {
        return Err(format!(
            "The price per package can be at most {}.",
            format_amount(MAX_AMOUNT, currency)
        ));
    }
    Ok(amount)
}

/// A whole number of units in `range` (thousands separators allowed).
fn parse_units(raw: &str, min: i64, max: i64, what: &str) -> Result<i64, String> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '_')
        .collect();
    match cleaned.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{what} is a whole number from {min} to {max}.")),
    }
}

/// Parses the form for a plan in `currency`: the component, or a message per failing field.
pub fn parse(
    form: &ComponentForm,
    currency: &str,
) -> Result<ComponentInput, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let feature = form.feature.trim().to_owned();
    if !valid_feature(&feature) {
        errors.push((
            "feature",
            "The feature key is 1 to 40 lowercase letters, digits or underscores, e.g. tokens."
                .to_owned(),
        ));
    }
    let unit_name = form.unit_name.trim().to_owned();
    if unit_name.is_empty()
        || unit_name.chars().count() > MAX_KEY_CHARS
        || unit_name.chars().any(char::is_control)
    {
        errors.push((
            "unit_name",
            "The unit name is 1 to 40 characters, plural, e.g. tokens.".to_owned(),
        ));
    }
    let included = parse_units(&form.included, 0, MAX_UNITS, "The included quantity")
        .map_err(|e| errors.push(("included", e)))
        .ok();
    let amount = parse_price(&form.price, currency)
        .map_err(|e| errors.push(("price", e)))
        .ok();
    let package_size = if form.package_size.trim().is_empty() {
        Some(1)
    } else {
        parse_units(&form.package_size, 1, MAX_PACKAGE_SIZE, "The package size")
            .map_err(|e| errors.push(("package_size", e)))
            .ok()
    };
    let quota = if form.quota.trim().is_empty() {
        Some(None)
    } else {
        match parse_units(&form.quota, 0, MAX_UNITS, "The quota") {
            Ok(q) if included.is_some_and(|i| q < i) => {
                errors.push((
                    "quota",
                    "The quota cannot be below the included quantity (leave it empty for no limit)."
                        .to_owned(),
                ));
                None
            }
            Ok(q) => Some(Some(q)),
            Err(e) => {
                errors.push(("quota", e));
                None
            }
        }
    };
    let fail_open = match form.undecided.as_str() {
        "open" => Some(true),
        "closed" => Some(false),
        _ => {
            errors.push((
                "undecided",
                "Choose what happens when Tollgate cannot decide: allow or refuse.".to_owned(),
            ));
            None
        }
    };
    match (included, amount, package_size, quota, fail_open) {
        (
            Some(included),
            Some(package_amount),
            Some(package_size),
            Some(quota),
            Some(fail_open),
        ) if errors.is_empty() => Ok(ComponentInput {
            feature,
            unit_name,
            rate: Rate {
                included,
                package_size,
                package_amount,
            },
            quota,
            fail_open,
        }),
        _ => Err(errors),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("the plan has as many metered components as it may")]
    TooMany,
    #[error("the plan is not synced to Stripe")]
    NotSynced,
    #[error("the currency cannot be used with Stripe")]
    Currency,
    #[error("{0} live subscriptions bill the plan's current metered prices")]
    HasSubscribers(i64),
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<DbError> for MeterError {
    fn from(err: DbError) -> Self {
        Self::Billing(err.into())
    }
}

/// The Stripe event name of `feature`'s meter.
pub fn event_name(feature: &str) -> String {
    format!("tollgate_{feature}")
}

fn throttle_key(actor: &Actor) -> UserId {
    actor.account().unwrap_or(UserId::from(0))
}

/// The feature's Stripe meter: the stored one, else created now (keyed by the feature, so a
/// retry after a crash replays the same meter) and stored.
async fn ensure_stripe_meter(
    db: &Db,
    gateway: &Gateway,
    admin: UserId,
    input: &ComponentInput,
) -> Result<String, MeterError> {
    let (feature, unit, event) = (
        input.feature.clone(),
        input.unit_name.clone(),
        event_name(&input.feature),
    );
    let stored = db
        .run(move |conn| {
            plan_meter::ensure_meter(conn, &feature, &unit, &event)?;
            usage::meter(conn, &feature)
        })
        .await?;
    if let Some(id) = stored.and_then(|m| m.stripe_meter_id) {
        return Ok(id);
    }
    let key = format!("usage-meter-{}", input.feature);
    let event = event_name(&input.feature);
    let display = format!("{} ({})", input.unit_name, input.feature);
    let meter = gateway
        .call(OperationClass::Default, admin, Some(&key), || {
            CreateBillingMeter::new(
                CreateBillingMeterDefaultAggregation::new(
                    CreateBillingMeterDefaultAggregationFormula::Sum,
                ),
                display.clone(),
                event.clone(),
            )
            .customer_mapping(CreateBillingMeterCustomerMapping::new(
                "stripe_customer_id",
                CreateBillingMeterCustomerMappingType::ById,
            ))
            .value_settings(CreateBillingMeterValueSettings::new("value"))
        })
        .await
        .map_err(BillingError::from)?;
    let (feature, id) = (input.feature.clone(), meter.id.to_string());
    db.run(move |conn| {
        plan_meter::set_stripe_meter(conn, &feature, &id)?;
        Ok::<_, DbError>(
            usage::meter(conn, &feature)?
                .and_then(|m| m.stripe_meter_id)
                .unwrap_or(id),
        )
    })
    .await
    .map_err(MeterError::from)
}

/// The metered Price of `rate` on the plan's Product: graduated tiers, free up to `included`,
/// then the exact decimal unit amount per unit.
async fn create_metered_price(
    gateway: &Gateway,
    admin: UserId,
    key: &str,
    (plan, meter): (&Plan, &str),
    (feature, rate): (&str, Rate),
) -> Result<String, MeterError> {
    let product = plan
        .stripe_product_id
        .clone()
        .ok_or(MeterError::NotSynced)?;
    let currency: stripe_types::Currency =
        plan.currency.parse().map_err(|_| MeterError::Currency)?;
    let interval = match plan.interval {
        Interval::Month => CreatePriceRecurringInterval::Month,
        Interval::Year => CreatePriceRecurringInterval::Year,
    };
    let price = gateway
        .call(OperationClass::Default, admin, Some(key), || {
            let mut recurring = CreatePriceRecurring::new(interval.clone());
            recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
            recurring.meter = Some(meter.to_owned());
            let mut included = CreatePriceTiers::new(CreatePriceTiersUpTo::I64(rate.included));
            included.unit_amount = Some(0);
            let mut above = CreatePriceTiers::new(CreatePriceTiersUpTo::Inf);
            above.unit_amount_decimal = Some(rate.unit_amount_decimal());
            // Stripe needs a first tier that ends above zero: nothing included is one tier.
            let tiers = if rate.included > 0 {
                vec![included, above]
            } else {
                vec![above]
            };
            CreatePrice::new(currency.clone())
                .product(product.as_str())
                .recurring(recurring)
                .billing_scheme(stripe_shared::PriceBillingScheme::Tiered)
                .tiers_mode(stripe_shared::PriceTiersMode::Graduated)
                .tiers(tiers)
                .metadata(HashMap::from([
                    ("tollgate_plan".to_owned(), plan.slug.clone()),
                    ("tollgate_feature".to_owned(), feature.to_owned()),
                ]))
        })
        .await
        .map_err(BillingError::from)?;
    Ok(price.id.to_string())
}

async fn deactivate(gateway: &Gateway, admin: UserId, price: &str) -> Result<(), MeterError> {
    let key = format!("metered-price-deactivate-{price}");
    gateway
        .call(OperationClass::Default, admin, Some(&key), || {
            UpdatePrice::new(price).active(false)
        })
        .await
        .map_err(BillingError::from)?;
    Ok(())
}

fn meter_event(actor: &Actor, plan: &Plan, action: &str, feature: &str) -> audit::SecurityEvent {
    actor
        .event(Kind::PlanMeterChanged)
        .details(serde_json::json!({
            "plan": plan.slug, "feature": feature, "action": action,
        }))
}

/// Adds the component to `plan`, or changes the plan's component of the same feature: the
/// feature's meter is created once; a new rate gets a new metered Price (the old one stops
/// being sold; subscribers on it keep it until their plan changes). Audited.
pub async fn save(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    plan: &Plan,
    input: ComponentInput,
) -> Result<(), MeterError> {
    let admin = throttle_key(actor);
    let (plan_id, feature) = (plan.id, input.feature.clone());
    let (existing, count, subscribers) = db
        .run(move |conn| {
            Ok::<_, DbError>((
                plan_meter::component(conn, plan_id, &feature)?,
                plan_meter::count(conn, plan_id)?,
                crate::db::models::subscription::live_count_for_plan(conn, plan_id)?,
            ))
        })
        .await?;
    if existing.is_none() && count >= MAX_COMPONENTS {
        return Err(MeterError::TooMany);
    }
    if plan.stripe_product_id.is_none() {
        return Err(MeterError::NotSynced);
    }
    let meter = ensure_stripe_meter(db, gateway, admin, &input).await?;
    let old_price = existing.as_ref().and_then(|c| c.stripe_price_id.clone());
    let same_rate = existing.as_ref().is_some_and(|c| {
        Rate {
            included: c.included,
            package_size: c.package_size,
            package_amount: c.package_amount,
        } == input.rate
    });
    // Live subscriptions carry the plan's metered prices as they were: a new rate or a new
    // component would be charged by Tollgate's caps and estimates but not by Stripe. Only the
    // quota and the undecided policy may change under them.
    if subscribers > 0 && !same_rate {
        return Err(MeterError::HasSubscribers(subscribers));
    }
    let price = match (&old_price, same_rate) {
        (Some(price), true) => price.clone(),
        _ => {
            // Keyed by what replaces what: the same form again replays, a later change back
            // to an earlier rate makes a new Price.
            let r = input.rate;
            let key = format!(
                "plan-{}-metered-{}-{}-{}-{}-after-{}",
                plan.id,
                input.feature,
                r.included,
                r.package_size,
                r.package_amount,
                old_price.as_deref().unwrap_or("none")
            );
            let component = (input.feature.as_str(), input.rate);
            create_metered_price(gateway, admin, &key, (plan, &meter), component).await?
        }
    };
    if let Some(old) = old_price.as_deref().filter(|old| *old != price) {
        deactivate(gateway, admin, old).await?;
    }
    let action = if existing.is_some() {
        "changed"
    } else {
        "added"
    };
    let audit = meter_event(actor, plan, action, &input.feature);
    db.run(move |conn| {
        conn.transaction(|conn| {
            plan_meter::upsert(
                conn,
                &ComponentFields {
                    plan_id,
                    feature: &input.feature,
                    included: input.rate.included,
                    package_size: input.rate.package_size,
                    package_amount: input.rate.package_amount,
                    quota: input.quota,
                    fail_open: input.fail_open,
                    stripe_price_id: Some(&price),
                },
            )?;
            audit::write(conn, &audit)
        })
    })
    .await?;
    Ok(())
}

/// Removes `plan`'s component of `feature` (its Price stops being sold; the feature's meter
/// stays, shared by other plans). `false` when the plan has no such component. Audited.
pub async fn remove(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    plan: &Plan,
    feature: String,
) -> Result<bool, MeterError> {
    if !valid_feature(&feature) {
        return Ok(false);
    }
    let plan_id = plan.id;
    let lookup = feature.clone();
    let (existing, subscribers) = db
        .run(move |conn| {
            Ok::<_, DbError>((
                plan_meter::component(conn, plan_id, &lookup)?,
                crate::db::models::subscription::live_count_for_plan(conn, plan_id)?,
            ))
        })
        .await?;
    let Some(existing) = existing else {
        return Ok(false);
    };
    if subscribers > 0 {
        return Err(MeterError::HasSubscribers(subscribers));
    }
    if let Some(price) = &existing.stripe_price_id {
        deactivate(gateway, throttle_key(actor), price).await?;
    }
    let audit = meter_event(actor, plan, "removed", &feature);
    db.run(move |conn| {
        conn.transaction(|conn| {
            plan_meter::delete(conn, plan_id, &feature)?;
            audit::write(conn, &audit)
        })
    })
    .await?;
    Ok(true)
}

/// The components of plan `plan_id`.
pub async fn components(db: &Db, plan_id: i64) -> Result<Vec<super::Component>, DbError> {
    db.run(move |conn| super::meters::of_plan(conn, plan_id))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> ComponentForm {
        ComponentForm {
            feature: "tokens".into(),
            unit_name: "tokens".into(),
            included: "10,000".into(),
            price: "2.00".into(),
            package_size: "1000".into(),
            quota: String::new(),
            undecided: "closed".into(),
        }
    }

    #[test]
    fn a_valid_form_is_a_component() {
        let input = parse(&form(), "usd").unwrap();
        assert_eq!(
            input.rate,
            Rate {
                included: 10_000,
                package_size: 1_000,
                package_amount: 200
            }
        );
        assert_eq!(input.quota, None);
        assert!(!input.fail_open);
        assert_eq!(parse_price("0.05", "usd"), Ok(5));
        assert_eq!(parse_price("2", "usd"), Ok(200));
        assert_eq!(parse_price("2.5", "usd"), Ok(250));
        assert_eq!(parse_price("200", "jpy"), Ok(200));
        assert!(parse_price("2.50", "jpy").is_err());
        assert!(parse_price("2.005", "usd").is_err());
        assert!(parse_price("-1", "usd").is_err());
    }

    #[test]
    fn each_bad_field_has_its_message() {
        let bad = ComponentForm {
            feature: "Tokens!".into(),
            unit_name: String::new(),
            included: "-1".into(),
            price: "two".into(),
            package_size: "0".into(),
            quota: "5".into(),
            undecided: "maybe".into(),
        };
        let errors = parse(&bad, "usd").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            [
                "feature",
                "unit_name",
                "included",
                "price",
                "package_size",
                "undecided"
            ]
        );
        let below = ComponentForm {
            quota: "9999".into(),
            ..form()
        };
        assert_eq!(parse(&below, "usd").unwrap_err()[0].0, "quota");
    }
}
