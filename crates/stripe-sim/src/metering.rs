//! Usage-based billing: `/v1/billing/meters`, metered (tiered) prices, and the usage an
//! invoice bills for a subscription's metered items: the sum of the meter events of the
//! item's meter for the subscription's customer within the period, priced by the tiers.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::api::{ApiError, get, post, retrieve};
use crate::objects;
use crate::state::{
    Meter, MeteredPrice, Price, PriceTier, SimState, Subscription, UsageLine, new_id, unix_now,
};

/// Stripe's `billing.meter` object. The simulator's meters all sum `payload[value]` per
/// `payload[stripe_customer_id]` (the only settings it accepts).
pub fn meter_json(m: &Meter) -> Value {
    json!({
        "id": m.id, "object": "billing.meter", "created": m.created,
        "customer_mapping": { "event_payload_key": "stripe_customer_id", "type": "by_id" },
        "default_aggregation": { "formula": "sum" }, "display_name": m.display_name,
        "event_name": m.event_name, "event_time_window": null, "livemode": false, "status": m.status,
        "status_transitions": { "deactivated_at": null }, "updated": m.created,
        "value_settings": { "event_payload_key": "value" },
    })
}

#[derive(Deserialize)]
struct Aggregation {
    formula: String,
}

#[derive(Deserialize)]
struct CustomerMapping {
    event_payload_key: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ValueSettings {
    event_payload_key: String,
}

#[derive(Deserialize)]
struct CreateMeter {
    display_name: String,
    event_name: String,
    default_aggregation: Aggregation,
    customer_mapping: Option<CustomerMapping>,
    value_settings: Option<ValueSettings>,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::invalid(param, message.to_owned())
}

async fn create_meter(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreateMeter, _key| {
        if p.default_aggregation.formula != "sum" {
            return Err(invalid(
                "default_aggregation[formula]",
                "The simulator's meters sum their events: formula must be sum.",
            ));
        }
        if let Some(mapping) = &p.customer_mapping
            && (mapping.kind != "by_id" || mapping.event_payload_key != "stripe_customer_id")
        {
            return Err(invalid(
                "customer_mapping",
                "The simulator maps events by payload[stripe_customer_id] (type by_id).",
            ));
        }
        if p.value_settings
            .as_ref()
            .is_some_and(|v| v.event_payload_key != "value")
        {
            return Err(invalid(
                "value_settings[event_payload_key]",
                "The simulator reads the event's value from payload[value].",
            ));
        }
        let name_ok = !p.event_name.is_empty()
            && p.event_name.len() <= 100
            && p.event_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !name_ok {
            return Err(invalid("event_name", "Invalid event_name."));
        }
        if p.display_name.trim().is_empty() || p.display_name.chars().count() > 250 {
            return Err(invalid("display_name", "Invalid display_name."));
        }
        if state
            .meters
            .values()
            .any(|m| m.event_name == p.event_name && m.status == "active")
        {
            return Err(invalid(
                "event_name",
                "An active meter with this event_name already exists.",
            ));
        }
        let meter = Meter {
            id: new_id("mtr_test"),
            display_name: p.display_name,
            event_name: p.event_name,
            status: "active".into(),
            created: unix_now(),
        };
        let value = meter_json(&meter);
        state.meters.insert(meter.id.clone(), meter);
        Ok((value, Vec::new()))
    })
}

async fn retrieve_meter(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "billing.meter", &id, |state, id| {
        state.meters.get(id).map(meter_json)
    })
}

async fn list_meters(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    get(&sim, &req, |state| {
        let mut meters: Vec<&Meter> = state.meters.values().collect();
        meters.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        let data = meters.into_iter().map(meter_json).collect();
        Ok(objects::list("/v1/billing/meters", data, false))
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/billing/meters", web::post().to(create_meter))
        .route("/billing/meters", web::get().to(list_meters))
        .route("/billing/meters/{id}", web::get().to(retrieve_meter))
        .route(
            "/checkout/sessions/{id}/line_items",
            web::get().to(checkout_line_items),
        );
}

/// `GET /v1/checkout/sessions/{id}/line_items`: the licensed item, then the metered ones (no
/// quantity, nothing due up front).
async fn checkout_line_items(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    get(&sim, &req, |state| {
        let session = state
            .checkout_sessions
            .get(id.as_str())
            .ok_or_else(|| ApiError::missing("checkout.session", &id))?;
        let item = |price_id: &str, quantity: Option<u64>| {
            let record = state.prices.get(price_id);
            let amount = record.map_or(0, |p| p.unit_amount * quantity.unwrap_or(0) as i64);
            let description = record
                .and_then(|p| state.products.get(&p.product))
                .map(|p| p.name.clone());
            json!({
                "id": new_id("li"), "object": "item", "amount_discount": 0, "amount_subtotal": amount,
                "amount_tax": 0, "amount_total": amount, "currency": record.map(|p| p.currency.clone()),
                "description": description, "price": record.map(objects::price), "quantity": quantity,
            })
        };
        let mut data = vec![item(&session.price, Some(session.quantity))];
        data.extend(session.metered_prices.iter().map(|p| item(p, None)));
        let url = format!("/v1/checkout/sessions/{}/line_items", session.id);
        Ok(objects::list(&url, data, false))
    })
}

// --- metered prices ------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct TierParam {
    up_to: String,
    unit_amount: Option<i64>,
    unit_amount_decimal: Option<String>,
    flat_amount: Option<i64>,
}

/// The metered and tiered parameters of `POST /v1/prices`.
pub struct PriceParams<'a> {
    pub usage_type: Option<&'a str>,
    pub meter: Option<&'a str>,
    pub billing_scheme: Option<&'a str>,
    pub tiers_mode: Option<&'a str>,
    pub tiers: &'a [TierParam],
    pub unit_amount: Option<i64>,
    pub unit_amount_decimal: Option<&'a str>,
}

/// A decimal amount of minor units as (numerator, 10^12 denominator), or `None` if malformed.
fn decimal_pico(raw: &str) -> Option<i128> {
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty()
        || frac.len() > 12
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
        || whole.len() > 15
    {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let mut frac_part: i128 = 0;
    for (i, c) in frac.chars().enumerate() {
        let digit = i128::from(c.to_digit(10)?);
        frac_part += digit * 10i128.pow(11 - u32::try_from(i).ok()?);
    }
    Some(whole * 1_000_000_000_000 + frac_part)
}

/// Checks the metered and tiered parameters of a new price: `Ok(None)` for a licensed
/// per-unit price (its `unit_amount` is required), `Ok(Some(_))` for a metered one.
pub fn metered_price(
    state: &SimState,
    p: &PriceParams<'_>,
) -> Result<Option<MeteredPrice>, ApiError> {
    let tiered = match p.billing_scheme {
        None | Some("per_unit") => false,
        Some("tiered") => true,
        Some(_) => {
            return Err(invalid(
                "billing_scheme",
                "Invalid billing_scheme: must be one of per_unit or tiered",
            ));
        }
    };
    let metered = match p.usage_type {
        None | Some("licensed") => false,
        Some("metered") => true,
        Some(_) => {
            return Err(invalid(
                "recurring[usage_type]",
                "Invalid usage_type: must be one of licensed or metered",
            ));
        }
    };
    if !metered {
        if tiered || p.meter.is_some() {
            return Err(invalid(
                "recurring[usage_type]",
                "The simulator supports tiers and meters on metered prices only.",
            ));
        }
        if p.unit_amount.is_none() {
            return Err(invalid(
                "unit_amount",
                "Missing required param: unit_amount.",
            ));
        }
        return Ok(None);
    }
    let meter = p.meter.ok_or_else(|| {
        invalid(
            "recurring[meter]",
            "A metered price needs recurring[meter] (a billing meter).",
        )
    })?;
    if !state.meters.contains_key(meter) {
        return Err(ApiError::missing("billing.meter", meter));
    }
    if !tiered {
        let decimal = match (p.unit_amount, p.unit_amount_decimal) {
            (Some(amount), None) if amount >= 0 => amount.to_string(),
            (None, Some(raw)) if decimal_pico(raw).is_some() => raw.to_owned(),
            _ => {
                return Err(invalid(
                    "unit_amount",
                    "Give one of unit_amount or unit_amount_decimal.",
                ));
            }
        };
        return Ok(Some(MeteredPrice {
            meter: meter.to_owned(),
            tiers_mode: None,
            tiers: Vec::new(),
            unit_amount_decimal: Some(decimal),
        }));
    }
    if p.unit_amount.is_some() || p.unit_amount_decimal.is_some() {
        return Err(invalid(
            "unit_amount",
            "A tiered price takes its amounts from tiers.",
        ));
    }
    let tiers_mode = match p.tiers_mode {
        Some("graduated") => "graduated",
        Some("volume") => "volume",
        _ => {
            return Err(invalid(
                "tiers_mode",
                "Missing required param: tiers_mode (graduated or volume).",
            ));
        }
    };
    if p.tiers.is_empty() || p.tiers.len() > 250 {
        return Err(invalid("tiers", "Give between 1 and 250 tiers."));
    }
    let mut tiers = Vec::new();
    let mut last = 0i64;
    for (i, t) in p.tiers.iter().enumerate() {
        let param = format!("tiers[{i}]");
        let final_tier = i + 1 == p.tiers.len();
        let up_to = match t.up_to.as_str() {
            "inf" if final_tier => None,
            "inf" => return Err(invalid(&param, "Only the last tier may be up_to=inf.")),
            raw => match raw.parse::<i64>() {
                Ok(n) if n > last && !final_tier => Some(n),
                Ok(_) if final_tier => {
                    return Err(invalid(&param, "The last tier must be up_to=inf."));
                }
                _ => return Err(invalid(&param, "Tiers must have increasing up_to values.")),
            },
        };
        if let Some(n) = up_to {
            last = n;
        }
        let unit_amount_decimal = match (t.unit_amount, t.unit_amount_decimal.as_deref()) {
            (Some(a), None) if a >= 0 => a.to_string(),
            (None, Some(raw)) if decimal_pico(raw).is_some() => raw.to_owned(),
            (None, None) => "0".to_owned(),
            _ => {
                return Err(invalid(
                    &param,
                    "Give one of unit_amount or unit_amount_decimal (at most 12 decimal places).",
                ));
            }
        };
        tiers.push(PriceTier {
            up_to,
            flat_amount: t.flat_amount.unwrap_or(0).max(0),
            unit_amount_decimal,
        });
    }
    Ok(Some(MeteredPrice {
        meter: meter.to_owned(),
        tiers_mode: Some(tiers_mode),
        tiers,
        unit_amount_decimal: None,
    }))
}

/// `recurring`, `billing_scheme`, `tiers_mode`, `tiers`, `unit_amount(_decimal)` of a price.
pub fn price_fields(p: &Price) -> Value {
    let interval = p.interval.as_str();
    match &p.metered {
        None => json!({
            "billing_scheme": "per_unit", "tiers_mode": null, "tiers": null,
            "recurring": { "interval": interval, "interval_count": 1, "meter": null, "usage_type": "licensed" },
            "unit_amount": p.unit_amount, "unit_amount_decimal": p.unit_amount.to_string(),
        }),
        Some(m) => {
            let tiers: Vec<Value> = m
                .tiers
                .iter()
                .map(|t| {
                    let whole = t.unit_amount_decimal.parse::<i64>().ok();
                    json!({
                        "flat_amount": if t.flat_amount > 0 { json!(t.flat_amount) } else { Value::Null },
                        "flat_amount_decimal": if t.flat_amount > 0 { json!(t.flat_amount.to_string()) } else { Value::Null },
                        "unit_amount": whole, "unit_amount_decimal": t.unit_amount_decimal, "up_to": t.up_to,
                    })
                })
                .collect();
            let unit = m.unit_amount_decimal.as_deref();
            json!({
                "billing_scheme": if m.tiers_mode.is_some() { "tiered" } else { "per_unit" },
                "tiers_mode": m.tiers_mode,
                "tiers": if m.tiers_mode.is_some() { json!(tiers) } else { Value::Null },
                "recurring": { "interval": interval, "interval_count": 1, "meter": m.meter, "usage_type": "metered" },
                "unit_amount": unit.and_then(|u| u.parse::<i64>().ok()), "unit_amount_decimal": unit,
            })
        }
    }
}

/// What `quantity` units cost at a metered price, in minor units: each tier's units at its
/// decimal unit amount (graduated) or all units at the reached tier's (volume), plus flat
/// amounts, the total rounded half up to a whole minor unit.
pub fn metered_amount(m: &MeteredPrice, quantity: i64) -> i64 {
    const PICO: i128 = 1_000_000_000_000;
    let quantity = i128::from(quantity.max(0));
    let mut total: i128 = 0;
    if let Some(unit) = &m.unit_amount_decimal {
        total = quantity * decimal_pico(unit).unwrap_or(0);
    } else if m.tiers_mode == Some("volume") {
        let tier = m
            .tiers
            .iter()
            .find(|t| t.up_to.is_none_or(|up| quantity <= i128::from(up)));
        if let Some(t) = tier {
            total = quantity * decimal_pico(&t.unit_amount_decimal).unwrap_or(0)
                + i128::from(t.flat_amount) * PICO;
        }
    } else {
        let mut floor: i128 = 0;
        for t in &m.tiers {
            if quantity <= floor {
                break;
            }
            let ceiling = t.up_to.map_or(quantity, |up| i128::from(up).min(quantity));
            let units = ceiling - floor;
            total += units * decimal_pico(&t.unit_amount_decimal).unwrap_or(0)
                + i128::from(t.flat_amount) * PICO;
            floor = ceiling;
        }
    }
    i64::try_from((total + PICO / 2) / PICO).unwrap_or(i64::MAX)
}

/// The usage of `sub`'s metered items in `[start, end)`: one line per item, from the events of
/// the item's meter for the subscription's customer.
pub fn usage_lines(
    state: &SimState,
    sub: &Subscription,
    (start, end): (i64, i64),
) -> Vec<UsageLine> {
    sub.metered_items
        .iter()
        .filter_map(|item| {
            let price = state.prices.get(&item.price)?;
            let metered = price.metered.as_ref()?;
            let event_name = &state.meters.get(&metered.meter)?.event_name;
            let quantity = state
                .meter_events
                .iter()
                .filter(|e| {
                    e.event_name == *event_name
                        && e.customer == sub.customer
                        && start <= e.timestamp
                        && e.timestamp < end
                })
                .fold(0i64, |sum, e| sum.saturating_add(e.value));
            Some(UsageLine {
                item: item.id.clone(),
                price: item.price.clone(),
                quantity,
                amount: metered_amount(metered, quantity),
                period_start: start,
                period_end: end,
            })
        })
        .collect()
}

/// An invoice line for a usage line.
pub fn usage_line_json(
    state: &SimState,
    sub_id: &str,
    invoice: Option<&str>,
    l: &UsageLine,
    currency: &str,
) -> Value {
    let product = state.prices.get(&l.price).map(|p| p.product.clone());
    let name = product
        .as_ref()
        .and_then(|p| state.products.get(p))
        .map_or_else(String::new, |p| p.name.clone());
    let meter = state
        .prices
        .get(&l.price)
        .and_then(|p| p.metered.as_ref())
        .and_then(|m| state.meters.get(&m.meter))
        .map_or_else(String::new, |m| m.display_name.clone());
    json!({
        "id": new_id("il"), "object": "line_item", "amount": l.amount, "currency": currency,
        "description": format!("{name} – {meter} ({} units)", l.quantity), "discount_amounts": [],
        "discountable": true, "discounts": [], "invoice": invoice, "livemode": false, "metadata": {},
        "parent": { "type": "subscription_item_details", "invoice_item_details": null,
                    "subscription_item_details": { "invoice_item": null, "proration": false,
                        "proration_details": { "credited_items": null },
                        "subscription": sub_id, "subscription_item": l.item } },
        "period": { "end": l.period_end, "start": l.period_start },
        "pretax_credit_amounts": [],
        "pricing": { "price_details": { "price": l.price, "product": product },
                     "type": "price_details", "unit_amount_decimal": null },
        "quantity": l.quantity, "subtotal": l.amount, "taxes": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> MeteredPrice {
        MeteredPrice {
            meter: "mtr_1".into(),
            tiers_mode: Some("graduated"),
            tiers: vec![
                PriceTier {
                    up_to: Some(10_000),
                    flat_amount: 0,
                    unit_amount_decimal: "0".into(),
                },
                PriceTier {
                    up_to: None,
                    flat_amount: 0,
                    unit_amount_decimal: "0.2".into(),
                },
            ],
            unit_amount_decimal: None,
        }
    }

    #[test]
    fn graduated_tiers_bill_only_above_the_included_units_rounding_half_up() {
        let m = tokens();
        assert_eq!(metered_amount(&m, 0), 0);
        assert_eq!(metered_amount(&m, 10_000), 0);
        assert_eq!(metered_amount(&m, 12_500), 500);
        assert_eq!(metered_amount(&m, 10_002), 0);
        assert_eq!(metered_amount(&m, 10_003), 1);
        let per_run = MeteredPrice {
            tiers_mode: None,
            tiers: Vec::new(),
            unit_amount_decimal: Some("5".into()),
            ..tokens()
        };
        assert_eq!(metered_amount(&per_run, 7), 35);
    }

    #[test]
    fn decimals_have_at_most_twelve_places() {
        assert_eq!(decimal_pico("0.2"), Some(200_000_000_000));
        assert_eq!(decimal_pico("7"), Some(7_000_000_000_000));
        assert_eq!(decimal_pico("0.333333333333"), Some(333_333_333_333));
        assert_eq!(decimal_pico("0.1234567890123"), None);
        assert_eq!(decimal_pico("-1"), None);
        assert_eq!(decimal_pico(""), None);
    }
}
