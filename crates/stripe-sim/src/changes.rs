//! Changing a subscription's price or quantity: prorations (Stripe's per-second formula),
//! `POST /v1/invoices/create_preview`, and subscription schedules (`/v1/subscription_schedules`)
//! whose next phase starts when the renew control moves the subscription to its next period.
//!
//! Proration, as Stripe computes it for one item: the unused part of the period is
//! `remaining = period_end - proration_date` of `span = period_end - period_start` seconds; the
//! old price is credited `-round(old_unit × old_quantity × remaining / span)` and the new one
//! charged `round(new_unit × new_quantity × remaining / span)` (each line rounded half up).
//! A change of interval resets the billing cycle to `proration_date`: the old price's unused
//! time is credited and the new price's whole first period is billed at once.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::api::{ApiError, post, retrieve};
use crate::objects;
use crate::state::{
    Event, Interval, SchedulePhase, SimState, Subscription, SubscriptionSchedule, new_id, unix_now,
};

/// `amount × remaining / span`, rounded half up (amounts are non-negative).
pub fn prorate(amount: i64, remaining: i64, span: i64) -> i64 {
    if span <= 0 {
        return 0;
    }
    let remaining = remaining.clamp(0, span);
    let scaled = i128::from(amount) * i128::from(remaining) * 2 + i128::from(span);
    i64::try_from(scaled / (2 * i128::from(span))).unwrap_or(i64::MAX)
}

/// One line of a change: what it bills (negative: a credit), its period and whether it is a
/// proration.
#[derive(Debug, Clone)]
pub struct ChangeLine {
    pub amount: i64,
    pub price: String,
    pub quantity: u64,
    pub start: i64,
    pub end: i64,
    pub proration: bool,
    pub description: String,
}

/// What changing `sub` to `price` × `quantity` at `at` bills.
pub struct Change {
    pub lines: Vec<ChangeLine>,
    /// The interval changed: the billing cycle restarts at `at` and the lines are billed now.
    pub resets_cycle: bool,
}

fn unit(state: &SimState, price: &str) -> (i64, Interval, String) {
    state
        .prices
        .get(price)
        .map(|p| (p.unit_amount, p.interval, p.currency.clone()))
        .unwrap_or((0, Interval::Month, "usd".into()))
}

fn product_name(state: &SimState, price: &str) -> String {
    state
        .prices
        .get(price)
        .and_then(|p| state.products.get(&p.product))
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// The lines of changing `sub` to `price` × `quantity` at `at`, with prorations unless
/// `prorate_lines` is false; the last line is the next period's charge (not a proration).
pub fn change(
    state: &SimState,
    sub: &Subscription,
    (price, quantity): (&str, u64),
    at: i64,
    prorate_lines: bool,
) -> Change {
    let (old_unit, old_interval, _) = unit(state, &sub.price);
    let (new_unit, new_interval, _) = unit(state, price);
    let resets_cycle = old_interval != new_interval;
    let span = sub.current_period_end - sub.current_period_start;
    let remaining = sub.current_period_end - at;
    let changed = sub.price != price || sub.quantity != quantity;
    let mut lines = Vec::new();
    let day = objects::date(at);
    if prorate_lines && changed {
        lines.push(ChangeLine {
            amount: -prorate(old_unit * sub.quantity as i64, remaining, span),
            price: sub.price.clone(),
            quantity: sub.quantity,
            start: at,
            end: sub.current_period_end,
            proration: true,
            description: format!(
                "Unused time on {} × {} after {day}",
                sub.quantity,
                product_name(state, &sub.price)
            ),
        });
        if !resets_cycle {
            lines.push(ChangeLine {
                amount: prorate(new_unit * quantity as i64, remaining, span),
                price: price.to_owned(),
                quantity,
                start: at,
                end: sub.current_period_end,
                proration: true,
                description: format!(
                    "Remaining time on {quantity} × {} after {day}",
                    product_name(state, price)
                ),
            });
        }
    }
    let next_start = if resets_cycle {
        at
    } else {
        sub.current_period_end
    };
    lines.push(ChangeLine {
        amount: new_unit * quantity as i64,
        price: price.to_owned(),
        quantity,
        start: next_start,
        end: new_interval.advance(next_start),
        proration: false,
        description: format!("{quantity} × {}", product_name(state, price)),
    });
    Change {
        lines,
        resets_cycle,
    }
}

impl Change {
    /// What is billed at once when the change is made with `always_invoice` (or resets the
    /// cycle): the prorations, and the new period when the cycle restarts. Never below zero
    /// (a credit goes to the customer's balance).
    pub fn due_now(&self) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.proration || self.resets_cycle)
            .map(|l| l.amount)
            .sum::<i64>()
            .max(0)
    }
}

fn line_json(state: &SimState, sub: &Subscription, line: &ChangeLine, currency: &str) -> Value {
    json!({
        "id": new_id("il_tmp"), "object": "line_item", "amount": line.amount, "currency": currency,
        "description": line.description, "discount_amounts": [], "discountable": !line.proration,
        "discounts": [], "invoice": null, "livemode": false, "metadata": {},
        "parent": { "type": "subscription_item_details", "invoice_item_details": null,
                    "subscription_item_details": { "invoice_item": null, "proration": line.proration,
                        "proration_details": { "credited_items": null },
                        "subscription": sub.id, "subscription_item": sub.item_id } },
        "period": { "end": line.end, "start": line.start },
        "pretax_credit_amounts": [],
        "pricing": { "price_details": { "price": line.price, "product": state.prices.get(&line.price).map(|p| p.product.clone()) },
                     "type": "price_details", "unit_amount_decimal": null },
        "quantity": line.quantity, "subtotal": line.amount, "taxes": [],
    })
}

/// A preview invoice (Stripe's `create_preview` shape: no id of its own, status `draft`).
fn preview_json(state: &SimState, sub: &Subscription, change: &Change, at: i64) -> Value {
    let (_, _, currency) = unit(state, &sub.price);
    // The metered items' usage so far this period, billed with the next invoice.
    let usage = crate::metering::usage_lines(
        state,
        sub,
        (sub.current_period_start, sub.current_period_end),
    );
    let total: i64 = change.lines.iter().map(|l| l.amount).sum::<i64>()
        + usage.iter().map(|l| l.amount).sum::<i64>();
    let mut lines: Vec<Value> = change
        .lines
        .iter()
        .map(|l| line_json(state, sub, l, &currency))
        .collect();
    lines.extend(
        usage
            .iter()
            .map(|l| crate::metering::usage_line_json(state, &sub.id, None, l, &currency)),
    );
    let next_attempt = if change.resets_cycle {
        at
    } else {
        sub.current_period_end
    };
    json!({
        "id": null, "object": "invoice", "account_country": "US", "account_name": state.business_name,
        "account_tax_ids": null, "amount_due": total.max(0), "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": total.max(0), "amount_shipping": 0, "application": null, "attempt_count": 0,
        "attempted": false, "auto_advance": false,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_reason": if change.resets_cycle { "subscription_update" } else { "upcoming" },
        "collection_method": "charge_automatically", "created": at, "currency": currency, "custom_fields": null,
        "customer": sub.customer, "customer_address": null,
        "customer_email": state.customers.get(&sub.customer).and_then(|c| c.email.clone()), "customer_name": null,
        "customer_phone": null, "customer_shipping": null, "customer_tax_exempt": "none", "default_payment_method": null,
        "default_source": null, "default_tax_rates": [], "description": null, "discounts": [], "due_date": null,
        "effective_at": null, "ending_balance": null, "footer": null, "from_invoice": null, "hosted_invoice_url": null,
        "invoice_pdf": null, "issuer": { "type": "self" }, "last_finalization_error": null, "latest_revision": null,
        "lines": objects::list("/v1/invoices/upcoming/lines", lines, false), "livemode": false, "metadata": {},
        "next_payment_attempt": next_attempt, "number": null, "on_behalf_of": null,
        "parent": { "type": "subscription_details", "quote_details": null,
                    "subscription_details": { "metadata": {}, "subscription": sub.id } },
        "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
        "payments": objects::list("/v1/invoices/upcoming/payments", Vec::new(), false),
        "period_end": sub.current_period_end, "period_start": sub.current_period_start,
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": null,
        "rendering": null, "shipping_cost": null, "shipping_details": null, "starting_balance": 0,
        "statement_descriptor": null, "status": "draft",
        "status_transitions": { "finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null },
        "subtotal": total, "subtotal_excluding_tax": total, "test_clock": null, "total": total,
        "total_discount_amounts": [], "total_excluding_tax": total, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": null,
    })
}

#[derive(Deserialize)]
struct PreviewItem {
    id: Option<String>,
    price: Option<String>,
    quantity: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PreviewDetails {
    #[serde(default)]
    items: Vec<PreviewItem>,
    proration_date: Option<i64>,
    proration_behavior: Option<String>,
}

#[derive(Deserialize)]
struct CreatePreview {
    subscription: Option<String>,
    customer: Option<String>,
    subscription_details: Option<PreviewDetails>,
}

const PRORATION_BEHAVIORS: [&str; 3] = ["always_invoice", "create_prorations", "none"];

fn check_behavior(behavior: Option<&str>, param: &str) -> Result<(), ApiError> {
    match behavior {
        Some(b) if !PRORATION_BEHAVIORS.contains(&b) => Err(ApiError::invalid(
            param,
            format!("Invalid proration_behavior: {b}"),
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/invoices/create_preview`: the invoice a subscription change would bring.
pub async fn create_preview(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreatePreview, _key| {
        let Some(sub_id) = p.subscription else {
            return Err(ApiError::invalid(
                "subscription",
                "The simulator previews subscription changes only: give subscription.",
            ));
        };
        let sub = state
            .subscriptions
            .get(&sub_id)
            .cloned()
            .ok_or_else(|| ApiError::missing("subscription", &sub_id))?;
        if p.customer.as_ref().is_some_and(|c| *c != sub.customer) {
            return Err(ApiError::invalid(
                "customer",
                "The subscription belongs to another customer.",
            ));
        }
        let details = p.subscription_details.unwrap_or_default();
        check_behavior(
            details.proration_behavior.as_deref(),
            "subscription_details[proration_behavior]",
        )?;
        let (price, quantity) = match details.items.as_slice() {
            [] => (sub.price.clone(), sub.quantity),
            [item] => {
                if item.id.as_deref().is_some_and(|id| id != sub.item_id) {
                    return Err(ApiError::missing(
                        "subscription_item",
                        item.id.as_deref().unwrap_or_default(),
                    ));
                }
                let price = item.price.clone().unwrap_or_else(|| sub.price.clone());
                crate::api::active_price(state, &price, "subscription_details[items][0][price]")?;
                (price, item.quantity.unwrap_or(sub.quantity))
            }
            _ => {
                return Err(ApiError::invalid(
                    "subscription_details[items]",
                    "The simulator's subscriptions have exactly one item.",
                ));
            }
        };
        if quantity == 0 {
            return Err(ApiError::invalid(
                "subscription_details[items][0][quantity]",
                "Quantity must be at least 1.",
            ));
        }
        let at = details.proration_date.unwrap_or_else(unix_now);
        let prorate_lines = details.proration_behavior.as_deref() != Some("none");
        let change = change(state, &sub, (&price, quantity), at, prorate_lines);
        Ok((preview_json(state, &sub, &change, at), Vec::new()))
    })
}

// --- subscription schedules ------------------------------------------------------------------

pub fn schedule_json(state: &SimState, s: &SubscriptionSchedule) -> Value {
    let currency = s
        .phases
        .first()
        .map(|p| unit(state, &p.price).2)
        .unwrap_or_else(|| "usd".into());
    let phases: Vec<Value> = s
        .phases
        .iter()
        .map(|p| {
            json!({
                "add_invoice_items": [], "application_fee_percent": null, "automatic_tax": null,
                "billing_cycle_anchor": null, "billing_thresholds": null, "collection_method": null,
                "currency": currency, "default_payment_method": null, "default_tax_rates": [],
                "description": null, "discounts": [], "end_date": p.end, "invoice_settings": null,
                "items": [{ "billing_thresholds": null, "discounts": [], "metadata": {}, "plan": p.price,
                            "price": p.price, "quantity": p.quantity, "tax_rates": [] }],
                "metadata": {}, "on_behalf_of": null, "proration_behavior": "create_prorations",
                "start_date": p.start, "transfer_data": null, "trial_end": null,
            })
        })
        .collect();
    let now = unix_now();
    let current = (s.status == "active")
        .then(|| s.phases.iter().find(|p| p.start <= now && now < p.end))
        .flatten()
        .map(|p| json!({ "end_date": p.end, "start_date": p.start }));
    json!({
        "id": s.id, "object": "subscription_schedule", "application": null,
        "billing_mode": { "flexible": null, "type": "classic", "updated_at": null },
        "canceled_at": null, "completed_at": null, "created": s.created, "current_phase": current,
        "customer": s.customer, "customer_account": null,
        "default_settings": { "application_fee_percent": null, "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
            "billing_cycle_anchor": "automatic", "billing_thresholds": null, "collection_method": "charge_automatically",
            "default_payment_method": null, "description": null,
            "invoice_settings": { "account_tax_ids": null, "days_until_due": null, "issuer": { "type": "self" } },
            "on_behalf_of": null, "transfer_data": null },
        "end_behavior": "release", "livemode": false, "metadata": {}, "phases": phases,
        "released_at": s.released_at,
        "released_subscription": (s.status == "released").then(|| s.subscription.clone()),
        "status": s.status,
        "subscription": (s.status == "active").then(|| s.subscription.clone()),
        "test_clock": null,
    })
}

/// Sets `sub.schedule` (a change Stripe reports as `customer.subscription.updated`).
fn set_schedule(
    state: &mut SimState,
    sub_id: &str,
    schedule: Option<String>,
    key: Option<&str>,
) -> Option<Event> {
    let before = state.subscriptions.get(sub_id).cloned()?;
    let mut after = before.clone();
    after.schedule = schedule;
    let (_, event) = crate::controls::replace_subscription(state, &before, after, key);
    Some(event)
}

#[derive(Deserialize)]
struct CreateSchedule {
    from_subscription: Option<String>,
}

/// `POST /v1/subscription_schedules` with `from_subscription`: one phase, the current period.
pub async fn create_schedule(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: CreateSchedule, key| {
        let Some(sub_id) = p.from_subscription else {
            return Err(ApiError::invalid(
                "from_subscription",
                "The simulator creates schedules from subscriptions only.",
            ));
        };
        let sub = state
            .subscriptions
            .get(&sub_id)
            .cloned()
            .ok_or_else(|| ApiError::missing("subscription", &sub_id))?;
        if sub.schedule.is_some() {
            return Err(ApiError::invalid(
                "from_subscription",
                "You cannot migrate a subscription that is already attached to a schedule.",
            ));
        }
        if sub.status == crate::state::SubscriptionStatus::Canceled {
            return Err(ApiError::invalid(
                "from_subscription",
                "You cannot migrate a canceled subscription.",
            ));
        }
        let schedule = SubscriptionSchedule {
            id: new_id("sub_sched"),
            customer: sub.customer.clone(),
            subscription: sub.id.clone(),
            phases: vec![SchedulePhase {
                start: sub.current_period_start,
                end: sub.current_period_end,
                price: sub.price.clone(),
                quantity: sub.quantity,
            }],
            status: "active",
            released_at: None,
            created: unix_now(),
        };
        let value = schedule_json(state, &schedule);
        state
            .subscription_schedules
            .insert(schedule.id.clone(), schedule.clone());
        let mut events = vec![Sim::event(
            state,
            "subscription_schedule.created",
            value.clone(),
            None,
            key,
        )];
        events.extend(set_schedule(state, &sub.id, Some(schedule.id), key));
        Ok((value, events))
    })
}

#[derive(Deserialize)]
struct PhaseItem {
    price: String,
    quantity: Option<u64>,
}

#[derive(Deserialize)]
struct PhaseParam {
    #[serde(default)]
    items: Vec<PhaseItem>,
    start_date: Option<String>,
    end_date: Option<i64>,
    proration_behavior: Option<String>,
}

#[derive(Deserialize)]
struct UpdateSchedule {
    phases: Option<Vec<PhaseParam>>,
    end_behavior: Option<String>,
    proration_behavior: Option<String>,
}

fn active_schedule(state: &SimState, id: &str) -> Result<SubscriptionSchedule, ApiError> {
    let schedule = state
        .subscription_schedules
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::missing("subscription_schedule", id))?;
    if schedule.status != "active" {
        return Err(ApiError::invalid(
            "id",
            format!(
                "You cannot update a subscription schedule that is currently in the `{}` status.",
                schedule.status
            ),
        ));
    }
    Ok(schedule)
}

/// `POST /v1/subscription_schedules/{id}`: new phases (the first must be the current one).
pub async fn update_schedule(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, p: UpdateSchedule, key| {
        let mut schedule = active_schedule(state, &id)?;
        if p.end_behavior
            .as_deref()
            .is_some_and(|b| !["release", "cancel", "none", "renew"].contains(&b))
        {
            return Err(ApiError::invalid("end_behavior", "Invalid end_behavior."));
        }
        check_behavior(p.proration_behavior.as_deref(), "proration_behavior")?;
        if let Some(phases) = p.phases {
            let current_start = schedule.phases.first().map(|p| p.start).unwrap_or_default();
            let mut parsed: Vec<SchedulePhase> = Vec::new();
            for (i, phase) in phases.iter().enumerate() {
                check_behavior(
                    phase.proration_behavior.as_deref(),
                    &format!("phases[{i}][proration_behavior]"),
                )?;
                let [item] = phase.items.as_slice() else {
                    return Err(ApiError::invalid(
                        &format!("phases[{i}][items]"),
                        "The simulator's phases have exactly one item.",
                    ));
                };
                let param = format!("phases[{i}][items][0][price]");
                let price = crate::api::active_price(state, &item.price, &param)?;
                let start = match (phase.start_date.as_deref(), parsed.last()) {
                    (Some("now"), _) => unix_now(),
                    (Some(raw), _) => raw.parse().map_err(|_| {
                        ApiError::invalid(&format!("phases[{i}][start_date]"), "Invalid timestamp.")
                    })?,
                    (None, Some(previous)) => previous.end,
                    (None, None) => current_start,
                };
                if i == 0 && start != current_start {
                    return Err(ApiError::invalid(
                        "phases[0][start_date]",
                        "You can not modify the start date of the current phase.",
                    ));
                }
                let end = phase
                    .end_date
                    .unwrap_or_else(|| price.interval.advance(start));
                if end <= start {
                    return Err(ApiError::invalid(
                        &format!("phases[{i}][end_date]"),
                        "The phase must end after it starts.",
                    ));
                }
                let quantity = item.quantity.unwrap_or(1);
                if quantity == 0 {
                    return Err(ApiError::invalid(
                        &format!("phases[{i}][items][0][quantity]"),
                        "Quantity must be at least 1.",
                    ));
                }
                parsed.push(SchedulePhase {
                    start,
                    end,
                    price: item.price.clone(),
                    quantity,
                });
            }
            if parsed.is_empty() {
                return Err(ApiError::invalid("phases", "Give at least one phase."));
            }
            schedule.phases = parsed;
        }
        let value = schedule_json(state, &schedule);
        state
            .subscription_schedules
            .insert(schedule.id.clone(), schedule);
        let event = Sim::event(
            state,
            "subscription_schedule.updated",
            value.clone(),
            None,
            key,
        );
        Ok((value, vec![event]))
    })
}

#[derive(Deserialize)]
struct ReleaseSchedule {}

/// Detaches the schedule from its subscription, which carries on as it is.
fn release(state: &mut SimState, id: &str, key: Option<&str>) -> Vec<Event> {
    let Some(mut schedule) = state.subscription_schedules.get(id).cloned() else {
        return Vec::new();
    };
    schedule.status = "released";
    schedule.released_at = Some(unix_now());
    let value = schedule_json(state, &schedule);
    let sub = schedule.subscription.clone();
    state
        .subscription_schedules
        .insert(schedule.id.clone(), schedule);
    let mut events = vec![Sim::event(
        state,
        "subscription_schedule.released",
        value,
        None,
        key,
    )];
    events.extend(set_schedule(state, &sub, None, key));
    events
}

/// `POST /v1/subscription_schedules/{id}/release`.
pub async fn release_schedule(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    post(&sim, &req, &body, |state, _: ReleaseSchedule, key| {
        active_schedule(state, &id)?;
        let events = release(state, &id, key);
        let value = state
            .subscription_schedules
            .get(id.as_str())
            .map(|s| schedule_json(state, s))
            .unwrap_or_default();
        Ok((value, events))
    })
}

pub async fn retrieve_schedule(
    sim: web::Data<Sim>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    retrieve(&sim, &req, "subscription_schedule", &id, |state, id| {
        state
            .subscription_schedules
            .get(id)
            .map(|s| schedule_json(state, s))
    })
}

/// At a renewal of `after` (still showing the ending period): the schedule's phase that starts
/// when this period ends sets its price and quantity; a schedule whose last phase has ended is
/// released (`end_behavior=release`).
pub fn enter_next_phase(state: &mut SimState, after: &mut Subscription, events: &mut Vec<Event>) {
    let Some(schedule) = after
        .schedule
        .as_ref()
        .and_then(|id| state.subscription_schedules.get(id))
        .filter(|s| s.status == "active")
        .cloned()
    else {
        return;
    };
    let boundary = after.current_period_end;
    match schedule.phases.iter().find(|p| p.start == boundary) {
        Some(phase) => {
            after.price = phase.price.clone();
            after.quantity = phase.quantity;
        }
        None if schedule.phases.iter().all(|p| p.end <= boundary) => {
            let mut released = schedule;
            released.status = "released";
            released.released_at = Some(boundary);
            let value = schedule_json(state, &released);
            state
                .subscription_schedules
                .insert(released.id.clone(), released);
            events.push(Sim::event(
                state,
                "subscription_schedule.released",
                value,
                None,
                None,
            ));
            after.schedule = None;
        }
        None => {}
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/invoices/create_preview", web::post().to(create_preview))
        .route("/subscription_schedules", web::post().to(create_schedule))
        .route(
            "/subscription_schedules/{id}",
            web::get().to(retrieve_schedule),
        )
        .route(
            "/subscription_schedules/{id}",
            web::post().to(update_schedule),
        )
        .route(
            "/subscription_schedules/{id}/release",
            web::post().to(release_schedule),
        );
}

#[cfg(test)]
mod tests {
    use super::prorate;

    #[test]
    fn prorations_round_half_up_and_stay_within_the_amount() {
        assert_eq!(prorate(1000, 50, 100), 500);
        assert_eq!(prorate(999, 50, 100), 500);
        assert_eq!(prorate(1000, 0, 100), 0);
        assert_eq!(prorate(1000, 150, 100), 1000);
        assert_eq!(prorate(1000, 1, 3), 333);
        assert_eq!(prorate(1000, 2, 3), 667);
        assert_eq!(prorate(1000, 10, 0), 0);
    }
}
