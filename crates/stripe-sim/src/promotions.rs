//! Coupons, promotion codes and discounts: `/v1/coupons` and `/v1/promotion_codes` (create,
//! retrieve, update, list), redeeming a code at Checkout, and a subscription's discount taken
//! off its invoices for as long as the coupon's duration lasts (`customer.discount.*` events).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::state::{
    Coupon, Discount, Event, PromotionCode, SimState, Subscription, new_id, unix_now,
};
use crate::{Sim, objects};

pub fn configure(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/coupons", web::post().to(create_coupon))
        .route("/coupons", web::get().to(list_coupons))
        .route("/coupons/{id}", web::get().to(retrieve_coupon))
        .route("/promotion_codes", web::post().to(create_promotion_code))
        .route("/promotion_codes", web::get().to(list_promotion_codes))
        .route(
            "/promotion_codes/{id}",
            web::get().to(retrieve_promotion_code),
        )
        .route(
            "/promotion_codes/{id}",
            web::post().to(update_promotion_code),
        )
}

// --- objects ---------------------------------------------------------------------------------

fn coupon_valid(c: &Coupon, now: i64) -> bool {
    c.redeem_by.is_none_or(|at| at > now) && c.max_redemptions.is_none_or(|m| c.times_redeemed < m)
}

pub fn coupon(c: &Coupon) -> Value {
    json!({
        "id": c.id, "object": "coupon", "amount_off": c.amount_off, "applies_to": null, "created": c.created,
        "currency": c.currency, "duration": c.duration, "duration_in_months": c.duration_in_months,
        "livemode": false, "max_redemptions": c.max_redemptions, "metadata": c.metadata, "name": c.name,
        "percent_off": c.percent_off, "redeem_by": c.redeem_by, "times_redeemed": c.times_redeemed,
        "valid": coupon_valid(c, unix_now()),
    })
}

pub fn promotion_code(p: &PromotionCode) -> Value {
    json!({
        "id": p.id, "object": "promotion_code", "active": p.active, "code": p.code, "created": p.created,
        "customer": null, "customer_account": null, "expires_at": p.expires_at, "livemode": false,
        "max_redemptions": p.max_redemptions, "metadata": p.metadata,
        "promotion": { "coupon": p.coupon, "type": "coupon" },
        "restrictions": { "first_time_transaction": false, "minimum_amount": null, "minimum_amount_currency": null },
        "times_redeemed": p.times_redeemed,
    })
}

pub fn discount(d: &Discount) -> Value {
    json!({
        "id": d.id, "object": "discount", "checkout_session": d.checkout_session, "customer": d.customer,
        "customer_account": null, "end": d.end, "invoice": null, "invoice_item": null,
        "promotion_code": d.promotion_code, "source": { "coupon": d.coupon, "type": "coupon" },
        "start": d.start, "subscription": d.subscription, "subscription_item": null,
    })
}

/// The ids of the discounts on a subscription (`discounts`, unexpanded).
pub fn subscription_discounts(state: &SimState, subscription: &str) -> Vec<String> {
    state
        .discounts
        .get(subscription)
        .map(|d| vec![d.id.clone()])
        .unwrap_or_default()
}

/// An invoice's discount and the amount it took off, if any.
pub fn invoice_discount(state: &SimState, invoice: &str) -> Option<(String, i64)> {
    state.invoice_discounts.get(invoice).cloned()
}

// --- redeeming at Checkout and billing -------------------------------------------------------

/// What the hosted Checkout page says about a code it cannot apply.
pub const CODE_INVALID: &str = "This code is invalid.";
pub const CODE_EXPIRED: &str = "This code has expired.";
pub const CODE_EXHAUSTED: &str = "This code has reached its maximum number of redemptions.";

/// The promotion code typed at Checkout (any case), if it can be redeemed on a price in
/// `currency`; else the message the page shows.
pub fn redeemable(state: &SimState, typed: &str, currency: &str) -> Result<String, &'static str> {
    let typed = typed.trim();
    let now = unix_now();
    let mut matching: Vec<&PromotionCode> = state
        .promotion_codes
        .values()
        .filter(|p| p.code.eq_ignore_ascii_case(typed))
        .collect();
    matching.sort_by_key(|p| !p.active);
    let promo = matching.first().ok_or(CODE_INVALID)?;
    let coupon = state.coupons.get(&promo.coupon).ok_or(CODE_INVALID)?;
    if !promo.active {
        return Err(CODE_INVALID);
    }
    if promo.expires_at.is_some_and(|at| at <= now) || coupon.redeem_by.is_some_and(|at| at <= now)
    {
        return Err(CODE_EXPIRED);
    }
    if promo
        .max_redemptions
        .is_some_and(|m| promo.times_redeemed >= m)
        || coupon
            .max_redemptions
            .is_some_and(|m| coupon.times_redeemed >= m)
    {
        return Err(CODE_EXHAUSTED);
    }
    if coupon.currency.as_ref().is_some_and(|c| c != currency) {
        return Err(CODE_INVALID);
    }
    Ok(promo.id.clone())
}

/// Applies the promotion code to a new subscription: the discount, `times_redeemed` counted on
/// the code and its coupon, and `customer.discount.created`.
pub fn redeem(
    state: &mut SimState,
    promotion_code: &str,
    sub: &Subscription,
    checkout_session: Option<&str>,
    events: &mut Vec<Event>,
) {
    let Some(promo) = state.promotion_codes.get_mut(promotion_code) else {
        return;
    };
    promo.times_redeemed += 1;
    let coupon_id = promo.coupon.clone();
    let Some(coupon) = state.coupons.get_mut(&coupon_id) else {
        return;
    };
    coupon.times_redeemed += 1;
    let start = sub.current_period_start;
    let end = match (coupon.duration.as_str(), coupon.duration_in_months) {
        ("repeating", Some(months)) => chrono::DateTime::from_timestamp(start, 0)
            .and_then(|t| t.checked_add_months(chrono::Months::new(months as u32)))
            .map(|t| t.timestamp()),
        _ => None,
    };
    let applied = Discount {
        id: new_id("di"),
        coupon: coupon_id,
        promotion_code: Some(promotion_code.to_owned()),
        customer: sub.customer.clone(),
        subscription: sub.id.clone(),
        checkout_session: checkout_session.map(str::to_owned),
        start: unix_now(),
        end,
    };
    let value = discount(&applied);
    state.discounts.insert(sub.id.clone(), applied);
    events.push(Sim::event(
        state,
        "customer.discount.created",
        value,
        None,
        None,
    ));
}

/// Ends the subscription's discount: `customer.discount.deleted`.
fn end_discount(state: &mut SimState, subscription: &str, events: &mut Vec<Event>) {
    if let Some(ended) = state.discounts.remove(subscription) {
        let value = discount(&ended);
        events.push(Sim::event(
            state,
            "customer.discount.deleted",
            value,
            None,
            None,
        ));
    }
}

/// The amount an invoice of `amount` for `sub`'s current period comes to after its discount
/// (recorded against `invoice`). A repeating discount whose months are over ends first; a
/// `once` discount ends once it has been applied.
pub fn apply_to_invoice(
    state: &mut SimState,
    sub: &Subscription,
    invoice: &str,
    amount: i64,
    events: &mut Vec<Event>,
) -> i64 {
    let Some(d) = state.discounts.get(&sub.id).cloned() else {
        return amount;
    };
    if d.end.is_some_and(|end| sub.current_period_start >= end) {
        end_discount(state, &sub.id, events);
        return amount;
    }
    let Some(coupon) = state.coupons.get(&d.coupon).cloned() else {
        return amount;
    };
    if amount <= 0 {
        return amount;
    }
    let off = match (coupon.percent_off, coupon.amount_off) {
        (Some(percent), _) => ((amount as f64) * percent / 100.0).round() as i64,
        (None, Some(off)) => off,
        (None, None) => 0,
    }
    .clamp(0, amount);
    state
        .invoice_discounts
        .insert(invoice.to_owned(), (d.id.clone(), off));
    if coupon.duration == "once" {
        end_discount(state, &sub.id, events);
    }
    amount - off
}

// --- API -------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateCoupon {
    id: Option<String>,
    name: Option<String>,
    percent_off: Option<f64>,
    amount_off: Option<i64>,
    currency: Option<String>,
    duration: Option<String>,
    duration_in_months: Option<i64>,
    redeem_by: Option<i64>,
    max_redemptions: Option<i64>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

fn check_coupon(p: &CreateCoupon, state: &SimState) -> Result<(), ApiError> {
    match (p.percent_off, p.amount_off) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid(
                "percent_off",
                "You must pass exactly one of `percent_off` or `amount_off`.",
            ));
        }
        (Some(percent), None) if !(percent > 0.0 && percent <= 100.0) => {
            return Err(ApiError::invalid(
                "percent_off",
                "Invalid percent_off: must be greater than 0 and less than or equal to 100.",
            ));
        }
        (None, Some(amount)) if amount <= 0 => {
            return Err(ApiError::invalid(
                "amount_off",
                "Invalid amount_off: must be greater than 0.",
            ));
        }
        (None, Some(_)) if p.currency.is_none() => {
            return Err(ApiError::invalid(
                "currency",
                "You must pass `currency` when passing `amount_off`.",
            ));
        }
        _ => {}
    }
    let duration = p.duration.as_deref().unwrap_or("once");
    if !["once", "repeating", "forever"].contains(&duration) {
        return Err(ApiError::invalid(
            "duration",
            format!("Invalid duration: {duration}. Must be one of forever, once, or repeating."),
        ));
    }
    if duration == "repeating" && p.duration_in_months.is_none_or(|m| m <= 0) {
        return Err(ApiError::invalid(
            "duration_in_months",
            "You must pass a positive `duration_in_months` for a repeating coupon.",
        ));
    }
    if p.redeem_by.is_some_and(|at| at <= unix_now()) {
        return Err(ApiError::invalid(
            "redeem_by",
            "redeem_by must be in the future.",
        ));
    }
    if p.max_redemptions.is_some_and(|m| m <= 0) {
        return Err(ApiError::invalid(
            "max_redemptions",
            "Invalid max_redemptions: must be greater than 0.",
        ));
    }
    if let Some(id) = &p.id
        && state.coupons.contains_key(id)
    {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("resource_already_exists"),
            message: "Coupon already exists.".into(),
            param: Some("id".into()),
        });
    }
    Ok(())
}

async fn create_coupon(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    api::post(&sim, &req, &body, |state, p: CreateCoupon, key| {
        check_coupon(&p, state)?;
        let created = Coupon {
            id: p
                .id
                .clone()
                .unwrap_or_else(|| new_id("").trim_start_matches('_').chars().take(8).collect()),
            name: p.name,
            percent_off: p.percent_off,
            amount_off: p.amount_off,
            currency: p.currency.map(|c| c.to_ascii_lowercase()),
            duration: p.duration.unwrap_or_else(|| "once".into()),
            duration_in_months: p.duration_in_months,
            redeem_by: p.redeem_by,
            max_redemptions: p.max_redemptions,
            times_redeemed: 0,
            metadata: p.metadata,
            created: unix_now(),
        };
        let value = coupon(&created);
        let event = Sim::event(state, "coupon.created", value.clone(), None, key);
        state.coupons.insert(created.id.clone(), created);
        Ok((value, vec![event]))
    })
}

async fn retrieve_coupon(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    api::retrieve(&sim, &req, "coupon", &id, |state, id| {
        state.coupons.get(id).map(coupon)
    })
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    starting_after: Option<String>,
    code: Option<String>,
    coupon: Option<String>,
    active: Option<bool>,
}

/// A page of `items` (newest first), after the cursor.
fn page(url: &str, mut items: Vec<(i64, String, Value)>, params: &ListParams) -> Value {
    items.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let after: Vec<Value> = match &params.starting_after {
        Some(cursor) => items
            .into_iter()
            .skip_while(|(_, id, _)| id != cursor)
            .skip(1)
            .map(|(_, _, v)| v)
            .collect(),
        None => items.into_iter().map(|(_, _, v)| v).collect(),
    };
    let limit = params.limit.unwrap_or(10).clamp(1, 100);
    let more = after.len() > limit;
    objects::list(url, after.into_iter().take(limit).collect(), more)
}

fn list_params(req: &HttpRequest) -> Result<ListParams, ApiError> {
    api::parse(req.query_string().as_bytes())
}

async fn list_coupons(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let params = list_params(&req);
    api::get(&sim, &req, |state| {
        let params = params?;
        let items = state
            .coupons
            .values()
            .map(|c| (c.created, c.id.clone(), coupon(c)))
            .collect();
        Ok(page("/v1/coupons", items, &params))
    })
}

#[derive(Deserialize)]
struct PromotionParam {
    coupon: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct CreatePromotionCode {
    promotion: Option<PromotionParam>,
    code: Option<String>,
    active: Option<bool>,
    expires_at: Option<i64>,
    max_redemptions: Option<i64>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

async fn create_promotion_code(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    api::post(&sim, &req, &body, |state, p: CreatePromotionCode, key| {
        let promotion = p
            .promotion
            .ok_or_else(|| ApiError::invalid("promotion", "Missing required param: promotion."))?;
        if promotion.kind.as_deref() != Some("coupon") {
            return Err(ApiError::invalid(
                "promotion[type]",
                "Invalid promotion[type]: must be coupon.",
            ));
        }
        let coupon_id = promotion.coupon.ok_or_else(|| {
            ApiError::invalid(
                "promotion[coupon]",
                "Missing required param: promotion[coupon].",
            )
        })?;
        if !state.coupons.contains_key(&coupon_id) {
            return Err(ApiError::missing("coupon", &coupon_id));
        }
        let code = p.code.unwrap_or_else(|| {
            new_id("")
                .trim_start_matches('_')
                .chars()
                .take(8)
                .collect::<String>()
                .to_ascii_uppercase()
        });
        let shaped = !code.is_empty()
            && code.len() <= 500
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !shaped {
            return Err(ApiError::invalid(
                "code",
                "Promotion codes may only contain alphanumeric characters, dashes and underscores.",
            ));
        }
        if state
            .promotion_codes
            .values()
            .any(|other| other.active && other.code.eq_ignore_ascii_case(&code))
        {
            return Err(ApiError::invalid(
                "code",
                format!("An active promotion code with `code: {code}` already exists."),
            ));
        }
        if p.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(ApiError::invalid(
                "expires_at",
                "expires_at must be in the future.",
            ));
        }
        if p.max_redemptions.is_some_and(|m| m <= 0) {
            return Err(ApiError::invalid(
                "max_redemptions",
                "Invalid max_redemptions: must be greater than 0.",
            ));
        }
        let promo = PromotionCode {
            id: new_id("promo"),
            code,
            coupon: coupon_id,
            active: p.active.unwrap_or(true),
            expires_at: p.expires_at,
            max_redemptions: p.max_redemptions,
            times_redeemed: 0,
            metadata: p.metadata,
            created: unix_now(),
        };
        let value = promotion_code(&promo);
        let event = Sim::event(state, "promotion_code.created", value.clone(), None, key);
        state.promotion_codes.insert(promo.id.clone(), promo);
        Ok((value, vec![event]))
    })
}

async fn retrieve_promotion_code(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    api::retrieve(&sim, &req, "promotion_code", &id, |state, id| {
        state.promotion_codes.get(id).map(promotion_code)
    })
}

#[derive(Deserialize)]
struct UpdatePromotionCode {
    active: Option<bool>,
    metadata: Option<HashMap<String, String>>,
}

async fn update_promotion_code(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    api::post(&sim, &req, &body, |state, p: UpdatePromotionCode, key| {
        let before = state
            .promotion_codes
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| ApiError::missing("promotion_code", &id))?;
        let mut after = before.clone();
        if let Some(active) = p.active {
            after.active = active;
        }
        if let Some(metadata) = p.metadata {
            after.metadata.extend(metadata);
        }
        let (old, new) = (promotion_code(&before), promotion_code(&after));
        state.promotion_codes.insert(after.id.clone(), after);
        let previous = objects::previous_attributes(&old, &new);
        let event = Sim::event(
            state,
            "promotion_code.updated",
            new.clone(),
            Some(previous),
            key,
        );
        Ok((new, vec![event]))
    })
}

async fn list_promotion_codes(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let params = list_params(&req);
    api::get(&sim, &req, |state| {
        let params = params?;
        let items = state
            .promotion_codes
            .values()
            .filter(|p| {
                params
                    .code
                    .as_ref()
                    .is_none_or(|c| p.code.eq_ignore_ascii_case(c))
            })
            .filter(|p| params.coupon.as_ref().is_none_or(|c| &p.coupon == c))
            .filter(|p| params.active.is_none_or(|a| p.active == a))
            .map(|p| (p.created, p.id.clone(), promotion_code(p)))
            .collect();
        Ok(page("/v1/promotion_codes", items, &params))
    })
}
