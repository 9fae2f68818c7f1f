//! The state transitions behind hosted pages and `/_sim/…` test controls: completing a
//! checkout (keeping the card on file), renewing a subscription (paid or failed), opening a dispute, re-delivering
//! events (in any order), and listing the idempotency keys received.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::card::{self, Card, Charge};
use crate::objects;
use crate::state::{
    CardOnFile, Customer, Event, Invoice, InvoiceStatus, PaymentIntent, PaymentStatus,
    SessionStatus, SimState, Subscription, SubscriptionStatus, new_id, unix_now,
};

/// Stores `after` in place of `before` and records `customer.subscription.updated`.
pub fn replace_subscription(
    state: &mut SimState,
    before: &Subscription,
    after: Subscription,
    key: Option<&str>,
) -> (Value, Event) {
    let old = objects::subscription(state, before);
    let new = objects::subscription(state, &after);
    state.subscriptions.insert(after.id.clone(), after);
    let previous = objects::previous_attributes(&old, &new);
    let event = Sim::event(
        state,
        "customer.subscription.updated",
        new.clone(),
        Some(previous),
        key,
    );
    (new, event)
}

/// What paying a checkout with a test card led to.
pub enum CheckoutOutcome {
    Paid {
        redirect: String,
        events: Vec<Event>,
    },
    Declined(&'static str),
    NotOpen,
}

/// How long after a failed payment Stripe tries again.
const RETRY_AFTER_SECS: i64 = 3 * 86_400;

/// Bills one period: an invoice and (for a non-zero amount) a payment intent, paid or not.
fn bill(
    state: &mut SimState,
    sub: &Subscription,
    reason: &'static str,
    paid: bool,
    events: &mut Vec<Event>,
) -> String {
    let amount = state
        .prices
        .get(&sub.price)
        .map(|p| p.unit_amount * sub.quantity as i64)
        .unwrap_or(0);
    let amount = if sub.status == SubscriptionStatus::Trialing && reason == "subscription_create" {
        0
    } else {
        amount
    };
    bill_amount(state, sub, reason, paid, amount, events)
}

/// Bills `amount` for `sub` now: an invoice and (for a non-zero amount) a payment intent.
pub fn bill_amount(
    state: &mut SimState,
    sub: &Subscription,
    reason: &'static str,
    paid: bool,
    amount: i64,
    events: &mut Vec<Event>,
) -> String {
    bill_with_usage(state, sub, (reason, paid), (amount, Vec::new()), events)
}

/// Bills `amount` for `sub`'s licensed item and the `usage` lines of its metered items.
fn bill_with_usage(
    state: &mut SimState,
    sub: &Subscription,
    (reason, paid): (&'static str, bool),
    (amount, usage): (i64, Vec<crate::state::UsageLine>),
    events: &mut Vec<Event>,
) -> String {
    let amount = usage
        .iter()
        .fold(amount, |sum, line| sum.saturating_add(line.amount));
    let currency = state
        .prices
        .get(&sub.price)
        .map(|p| p.currency.clone())
        .unwrap_or_else(|| "usd".into());
    let now = unix_now();
    let invoice_id = new_id("in");
    let amount = crate::promotions::apply_to_invoice(state, sub, &invoice_id, amount, events);
    let payment_intent = (amount > 0).then(|| PaymentIntent {
        id: new_id("pi"),
        customer: sub.customer.clone(),
        invoice: Some(invoice_id.clone()),
        amount,
        currency: currency.clone(),
        status: if paid {
            PaymentStatus::Succeeded
        } else {
            PaymentStatus::RequiresPaymentMethod
        },
        decline_code: (!paid).then_some("card_declined"),
        created: now,
    });
    let invoice = Invoice {
        id: invoice_id.clone(),
        number: state.next_invoice_number(),
        customer: sub.customer.clone(),
        subscription: sub.id.clone(),
        price: sub.price.clone(),
        amount_due: amount,
        amount_paid: if paid { amount } else { 0 },
        currency,
        status: if paid {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        },
        payment_intent: payment_intent.as_ref().map(|pi| pi.id.clone()),
        billing_reason: reason,
        attempt_count: 1,
        period_start: sub.current_period_start,
        period_end: sub.current_period_end,
        created: now,
        // Smart Retries: the next attempt in three days (none once paid).
        next_payment_attempt: (!paid).then_some(now + RETRY_AFTER_SECS),
        paid_at: paid.then_some(now),
        voided_at: None,
        usage_lines: usage,
    };
    if let Some(pi) = payment_intent {
        let value = objects::payment_intent(&pi);
        let kind = if paid {
            "payment_intent.succeeded"
        } else {
            "payment_intent.payment_failed"
        };
        state.payment_intents.insert(pi.id.clone(), pi);
        events.push(Sim::event(state, kind, value, None, None));
    }
    let value = objects::invoice(state, &invoice);
    state.invoices.insert(invoice.id.clone(), invoice);
    if paid {
        events.push(Sim::event(state, "invoice.paid", value.clone(), None, None));
        events.push(Sim::event(
            state,
            "invoice.payment_succeeded",
            value,
            None,
            None,
        ));
    } else {
        events.push(Sim::event(
            state,
            "invoice.payment_failed",
            value,
            None,
            None,
        ));
    }
    invoice_id
}

/// A subscription to start without a payment (a zero price, or a trial).
pub struct NewSubscription {
    pub customer: String,
    pub price: String,
    pub quantity: u64,
    /// Metered prices, one item each.
    pub metered_prices: Vec<String>,
    pub trial_period_days: Option<u32>,
    pub metadata: std::collections::HashMap<String, String>,
    /// What ending the trial without a payment method does.
    pub missing_payment_method: &'static str,
}

/// A subscription starting `now`: trialing until its trial ends if it has one, else active
/// for one period of its price's interval. Its first invoice is the caller's to bill.
fn subscription_from(state: &SimState, new: NewSubscription, now: i64) -> Subscription {
    let interval = state
        .prices
        .get(&new.price)
        .map(|p| p.interval)
        .unwrap_or(crate::state::Interval::Month);
    let trial_end = new
        .trial_period_days
        .map(|days| now + i64::from(days) * 86_400);
    Subscription {
        id: new_id("sub"),
        item_id: new_id("si"),
        customer: new.customer,
        price: new.price,
        quantity: new.quantity,
        status: if trial_end.is_some() {
            SubscriptionStatus::Trialing
        } else {
            SubscriptionStatus::Active
        },
        current_period_start: now,
        current_period_end: trial_end.unwrap_or_else(|| interval.advance(now)),
        cancel_at_period_end: false,
        canceled_at: None,
        ended_at: None,
        trial_start: trial_end.map(|_| now),
        trial_end,
        latest_invoice: None,
        metadata: new.metadata,
        created: now,
        missing_payment_method: new.missing_payment_method,
        cancellation: Default::default(),
        schedule: None,
        metered_items: new
            .metered_prices
            .into_iter()
            .map(|price| crate::state::MeteredItem {
                id: new_id("si"),
                price,
            })
            .collect(),
    }
}

/// Starts a subscription through the API: its first (zero) invoice is paid at once, so it is
/// active (or trialing) from the start. Returns the subscription and its events.
pub fn start_subscription(
    state: &mut SimState,
    new: NewSubscription,
    key: Option<&str>,
) -> (Value, Vec<Event>) {
    let now = unix_now();
    let mut sub = subscription_from(state, new, now);
    let mut billing = Vec::new();
    sub.latest_invoice = Some(bill(state, &sub, "subscription_create", true, &mut billing));
    let value = objects::subscription(state, &sub);
    state.subscriptions.insert(sub.id.clone(), sub);
    let mut events = vec![Sim::event(
        state,
        "customer.subscription.created",
        value.clone(),
        None,
        key,
    )];
    events.extend(billing);
    (value, events)
}

/// Whether the session can complete without a card: a trial with
/// `payment_method_collection=if_required` (nothing is due until the trial ends).
pub fn card_optional(session: &crate::state::CheckoutSession) -> bool {
    session.payment_method_collection == "if_required" && session.trial_period_days.is_some()
}

/// Saves `card` as the customer's payment method: `payment_method.attached`, and
/// `payment_method.detached` for the card it replaces.
pub fn save_card(state: &mut SimState, customer: &str, card: &Card, events: &mut Vec<Event>) {
    let saved = CardOnFile {
        id: new_id("pm"),
        brand: card.brand.as_str(),
        last4: card.last4().to_owned(),
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        name: card.name.clone(),
        created: unix_now(),
    };
    let value = objects::payment_method(&saved, Some(customer));
    let replaced = state.cards_on_file.insert(customer.to_owned(), saved);
    events.push(Sim::event(
        state,
        "payment_method.attached",
        value,
        None,
        None,
    ));
    if let Some(old) = replaced {
        let value = objects::payment_method(&old, None);
        events.push(Sim::event(
            state,
            "payment_method.detached",
            value,
            Some(json!({ "customer": customer })),
            None,
        ));
    }
}

/// Pays an open checkout session with a checked card (`card::charge` says whether it pays), or
/// starts its trial without one when the session collects a card only if required.
pub fn complete_checkout(
    state: &mut SimState,
    session_id: &str,
    card: Option<&Card>,
    email: Option<String>,
) -> CheckoutOutcome {
    let Some(session) = state.checkout_sessions.get(session_id).cloned() else {
        return CheckoutOutcome::NotOpen;
    };
    if session.status != SessionStatus::Open {
        return CheckoutOutcome::NotOpen;
    }
    match card {
        Some(card) => {
            if let Charge::Declined(message) = card::charge(card) {
                return CheckoutOutcome::Declined(message);
            }
        }
        None if card_optional(&session) => {}
        None => return CheckoutOutcome::Declined("Your card number is incomplete."),
    }
    let mut events = Vec::new();
    let now = unix_now();
    let customer_id = match &session.customer {
        Some(id) => id.clone(),
        None => {
            let customer = Customer {
                id: new_id("cus"),
                email: email.or_else(|| session.customer_email.clone()),
                name: card.map(|c| c.name.clone()),
                metadata: Default::default(),
                created: now,
            };
            let value = objects::customer(&customer);
            let id = customer.id.clone();
            state.customers.insert(id.clone(), customer);
            events.push(Sim::event(state, "customer.created", value, None, None));
            id
        }
    };
    if let Some(card) = card {
        save_card(state, &customer_id, card, &mut events);
    }
    let new = NewSubscription {
        customer: customer_id.clone(),
        price: session.price.clone(),
        quantity: session.quantity,
        metered_prices: session.metered_prices.clone(),
        trial_period_days: session.trial_period_days,
        metadata: session.subscription_metadata.clone(),
        missing_payment_method: session.missing_payment_method,
    };
    let mut sub = subscription_from(state, new, now);
    if let Some(promotion_code) = &session.promotion_code {
        crate::promotions::redeem(state, promotion_code, &sub, Some(&session.id), &mut events);
    }
    let mut billing = Vec::new();
    let invoice = bill(state, &sub, "subscription_create", true, &mut billing);
    sub.latest_invoice = Some(invoice.clone());
    let value = objects::subscription(state, &sub);
    state.subscriptions.insert(sub.id.clone(), sub.clone());
    // Stripe guarantees no order; here the subscription comes before its first invoice.
    events.push(Sim::event(
        state,
        "customer.subscription.created",
        value,
        None,
        None,
    ));
    events.extend(billing);
    let mut completed = session;
    completed.status = SessionStatus::Complete;
    completed.customer = Some(customer_id);
    completed.subscription = Some(sub.id);
    completed.invoice = Some(invoice);
    let value = objects::checkout_session(state, &completed, "");
    let redirect = completed
        .success_url
        .replace("{CHECKOUT_SESSION_ID}", &completed.id);
    state
        .checkout_sessions
        .insert(completed.id.clone(), completed);
    events.push(Sim::event(
        state,
        "checkout.session.completed",
        value,
        None,
        None,
    ));
    CheckoutOutcome::Paid { redirect, events }
}

/// Moves a subscription to its next period, billing it (or ending it if it was set to cancel).
pub fn renew(state: &mut SimState, sub_id: &str, paid: bool) -> Option<Vec<Event>> {
    let before = state.subscriptions.get(sub_id).cloned()?;
    if before.status == SubscriptionStatus::Canceled {
        return Some(Vec::new());
    }
    let mut events = Vec::new();
    let mut after = before.clone();
    if before.cancel_at_period_end {
        after.status = SubscriptionStatus::Canceled;
        after.ended_at = Some(before.current_period_end);
        let value = objects::subscription(state, &after);
        state.subscriptions.insert(after.id.clone(), after);
        events.push(Sim::event(
            state,
            "customer.subscription.deleted",
            value,
            None,
            None,
        ));
        events.extend(stop_collecting(state, sub_id));
        return Some(events);
    }
    // A schedule's next phase starts with the new period (its price, its quantity).
    crate::changes::enter_next_phase(state, &mut after, &mut events);
    let start = before.current_period_end;
    start_period(state, &before, after, (start, paid), &mut events);
    Some(events)
}

/// Starts `after`'s next period at `start` and bills it (`subscription_cycle`): paid, it is
/// active; not, past due with the invoice open. Records the change's event.
fn start_period(
    state: &mut SimState,
    before: &Subscription,
    mut after: Subscription,
    (start, paid): (i64, bool),
    events: &mut Vec<Event>,
) {
    let interval = state
        .prices
        .get(&after.price)
        .map(|p| p.interval)
        .unwrap_or(crate::state::Interval::Month);
    after.current_period_start = start;
    after.current_period_end = interval.advance(start);
    after.status = if paid {
        SubscriptionStatus::Active
    } else {
        SubscriptionStatus::PastDue
    };
    // Metered items are billed in arrears: the ending period's usage (none for a trial).
    let usage = if before.status == SubscriptionStatus::Trialing {
        Vec::new()
    } else {
        let ending = (before.current_period_start, before.current_period_end);
        crate::metering::usage_lines(state, &after, ending)
    };
    let licensed = state
        .prices
        .get(&after.price)
        .map(|p| p.unit_amount * after.quantity as i64)
        .unwrap_or(0);
    let billed = ("subscription_cycle", paid);
    let invoice = bill_with_usage(state, &after, billed, (licensed, usage), events);
    after.latest_invoice = Some(invoice);
    let (_, event) = replace_subscription(state, before, after, None);
    events.push(event);
}

/// What paying an open invoice (its hosted page, or a retry) led to.
pub enum InvoicePayment {
    Paid(Vec<Event>),
    Declined(&'static str, Vec<Event>),
    /// Paid already, or voided: nothing is charged.
    NotOpen,
    Missing,
}

/// Tries to collect an open invoice: `card` on its hosted page, or (`None`) Stripe's own retry
/// with the card on file, which succeeds when `retry_pays`. Paid: the invoice's payment intent
/// succeeds, the invoice is paid and a past-due subscription whose invoice it is becomes active
/// again. Declined: one more failed attempt. A paid or void invoice is never charged.
pub fn collect_invoice(
    state: &mut SimState,
    invoice_id: &str,
    card: Option<&Card>,
    retry_pays: bool,
) -> InvoicePayment {
    let Some(mut invoice) = state.invoices.get(invoice_id).cloned() else {
        return InvoicePayment::Missing;
    };
    if invoice.status != InvoiceStatus::Open {
        return InvoicePayment::NotOpen;
    }
    let declined = match card {
        Some(card) => match card::charge(card) {
            Charge::Declined(message) => Some(message),
            _ => None,
        },
        None => (!retry_pays).then_some("Your card was declined."),
    };
    let now = unix_now();
    let mut events = Vec::new();
    invoice.attempt_count += 1;
    if let Some(pi) = invoice
        .payment_intent
        .as_ref()
        .and_then(|id| state.payment_intents.get(id))
        .cloned()
    {
        let mut pi = pi;
        let kind = if declined.is_none() {
            pi.status = PaymentStatus::Succeeded;
            pi.decline_code = None;
            "payment_intent.succeeded"
        } else {
            "payment_intent.payment_failed"
        };
        let value = objects::payment_intent(&pi);
        state.payment_intents.insert(pi.id.clone(), pi);
        events.push(Sim::event(state, kind, value, None, None));
    }
    if let Some(message) = declined {
        invoice.next_payment_attempt = Some(now + RETRY_AFTER_SECS);
        let value = objects::invoice(state, &invoice);
        state.invoices.insert(invoice.id.clone(), invoice);
        events.push(Sim::event(
            state,
            "invoice.payment_failed",
            value,
            None,
            None,
        ));
        return InvoicePayment::Declined(message, events);
    }
    if let Some(card) = card {
        save_card(state, &invoice.customer, card, &mut events);
    }
    invoice.status = InvoiceStatus::Paid;
    invoice.amount_paid = invoice.amount_due;
    invoice.paid_at = Some(now);
    invoice.next_payment_attempt = None;
    let value = objects::invoice(state, &invoice);
    let subscription = invoice.subscription.clone();
    state.invoices.insert(invoice.id.clone(), invoice);
    events.push(Sim::event(state, "invoice.paid", value.clone(), None, None));
    events.push(Sim::event(
        state,
        "invoice.payment_succeeded",
        value,
        None,
        None,
    ));
    let before = state.subscriptions.get(&subscription).cloned();
    if let Some(before) = before.filter(|s| {
        matches!(
            s.status,
            SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid
        )
    }) {
        let mut after = before.clone();
        after.status = SubscriptionStatus::Active;
        let (_, event) = replace_subscription(state, &before, after, None);
        events.push(event);
    }
    InvoicePayment::Paid(events)
}

/// A subscription was canceled: as Stripe does, its open invoices stay open but are no longer
/// collected (`auto_advance` false, no next payment attempt); the customer may still pay one on
/// its hosted page. Their `invoice.updated` events.
pub fn stop_collecting(state: &mut SimState, subscription: &str) -> Vec<Event> {
    let mut open: Vec<Invoice> = state
        .invoices
        .values()
        .filter(|i| i.subscription == subscription && i.status == InvoiceStatus::Open)
        .cloned()
        .collect();
    open.sort_by_key(|i| i.created);
    let mut events = Vec::new();
    for mut invoice in open {
        invoice.next_payment_attempt = None;
        let value = objects::invoice(state, &invoice);
        state.invoices.insert(invoice.id.clone(), invoice);
        events.push(Sim::event(state, "invoice.updated", value, None, None));
    }
    events
}

/// Whether Stripe still collects `invoice` by itself: open, of a subscription not canceled.
pub fn collected_automatically(state: &SimState, invoice: &Invoice) -> bool {
    invoice.status == InvoiceStatus::Open
        && state
            .subscriptions
            .get(&invoice.subscription)
            .is_some_and(|s| s.status != SubscriptionStatus::Canceled)
}

/// Stripe's notice three days before a trial ends: `customer.subscription.trial_will_end`.
pub fn trial_will_end(state: &mut SimState, sub_id: &str) -> Option<Event> {
    let sub = state
        .subscriptions
        .get(sub_id)
        .filter(|s| s.status == SubscriptionStatus::Trialing)?
        .clone();
    let value = objects::subscription(state, &sub);
    Some(Sim::event(
        state,
        "customer.subscription.trial_will_end",
        value,
        None,
        None,
    ))
}

/// Ends a subscription's trial now. With a card on file it becomes active and its first
/// period is charged once; without one it does what its trial settings say: `cancel` ends it
/// (no invoice, no payment attempt), otherwise an open invoice leaves it past due.
pub fn end_trial(state: &mut SimState, sub_id: &str) -> Option<Vec<Event>> {
    let before = state.subscriptions.get(sub_id).cloned()?;
    if before.status != SubscriptionStatus::Trialing {
        return Some(Vec::new());
    }
    let now = unix_now();
    let has_card = state.cards_on_file.contains_key(&before.customer);
    let mut events = Vec::new();
    let mut after = before.clone();
    after.trial_end = Some(now);
    if !has_card && before.missing_payment_method == "cancel" {
        after.status = SubscriptionStatus::Canceled;
        after.canceled_at = Some(now);
        after.ended_at = Some(now);
        after.cancel_at_period_end = false;
        after.current_period_end = now;
        after.cancellation.reason = Some("cancellation_requested");
        let value = objects::subscription(state, &after);
        state.subscriptions.insert(after.id.clone(), after);
        events.push(Sim::event(
            state,
            "customer.subscription.deleted",
            value,
            None,
            None,
        ));
        return Some(events);
    }
    start_period(state, &before, after, (now, has_card), &mut events);
    Some(events)
}

/// Opens a dispute on a succeeded payment: `charge.dispute.created`.
pub fn dispute(state: &mut SimState, payment_intent: &str) -> Option<Event> {
    let pi = state.payment_intents.get(payment_intent)?.clone();
    if pi.status != PaymentStatus::Succeeded {
        return None;
    }
    let value = objects::dispute(&pi);
    Some(Sim::event(
        state,
        "charge.dispute.created",
        value,
        None,
        None,
    ))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_sim")
            .route("/subscriptions/{id}/renew", web::post().to(renew_route))
            .route("/invoices/{id}/retry", web::post().to(retry_route))
            .route(
                "/subscriptions/{id}/trial_will_end",
                web::post().to(trial_will_end_route),
            )
            .route(
                "/subscriptions/{id}/end_trial",
                web::post().to(end_trial_route),
            )
            .route("/disputes", web::post().to(dispute_route))
            .route("/events/deliver", web::post().to(deliver_route))
            .route("/events/{id}/redeliver", web::post().to(redeliver_route))
            .route("/webhooks", web::post().to(webhooks_route))
            .route("/deliveries", web::get().to(deliveries_route))
            .route("/idempotency-keys", web::get().to(idempotency_keys_route))
            .configure(crate::meter_events::configure_controls),
    );
}

fn sim_error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({ "error": { "type": "invalid_request_error", "message": message } }))
}

#[derive(Deserialize)]
struct RenewParams {
    /// `paid` (default) or `failed`.
    outcome: Option<String>,
}

async fn renew_route(
    sim: web::Data<Sim>,
    id: web::Path<String>,
    params: web::Query<RenewParams>,
) -> HttpResponse {
    let paid = match params.outcome.as_deref() {
        None | Some("paid") => true,
        Some("failed") => false,
        Some(_) => {
            return sim_error(
                actix_web::http::StatusCode::BAD_REQUEST,
                "outcome must be paid or failed",
            );
        }
    };
    let mut state = sim.state();
    let Some(events) = renew(&mut state, &id, paid) else {
        return sim_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "no such subscription",
        );
    };
    let body = state
        .subscriptions
        .get(id.as_str())
        .map(|s| objects::subscription(&state, s));
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    drop(state);
    Arc::clone(&sim).deliver(events);
    HttpResponse::Ok().json(json!({ "subscription": body, "events": ids }))
}

/// Stripe's automatic retry of an open invoice's payment (`outcome=paid` or `failed`, the
/// default): a paid or void invoice is not charged (409).
async fn retry_route(
    sim: web::Data<Sim>,
    id: web::Path<String>,
    params: web::Query<RenewParams>,
) -> HttpResponse {
    let pays = match params.outcome.as_deref() {
        Some("paid") => true,
        None | Some("failed") => false,
        Some(_) => {
            return sim_error(
                actix_web::http::StatusCode::BAD_REQUEST,
                "outcome must be paid or failed",
            );
        }
    };
    let mut state = sim.state();
    let stopped = state
        .invoices
        .get(id.as_str())
        .is_some_and(|i| i.status == InvoiceStatus::Open && !collected_automatically(&state, i));
    if stopped {
        return sim_error(
            actix_web::http::StatusCode::CONFLICT,
            "the invoice's subscription is canceled: Stripe no longer retries it",
        );
    }
    let outcome = collect_invoice(&mut state, &id, None, pays);
    drop(state);
    let (status, events) = match outcome {
        InvoicePayment::Paid(events) | InvoicePayment::Declined(_, events) => {
            (actix_web::http::StatusCode::OK, events)
        }
        InvoicePayment::NotOpen => {
            return sim_error(
                actix_web::http::StatusCode::CONFLICT,
                "the invoice is not open: no payment is attempted",
            );
        }
        InvoicePayment::Missing => {
            return sim_error(actix_web::http::StatusCode::NOT_FOUND, "no such invoice");
        }
    };
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    Arc::clone(&sim).deliver(events);
    HttpResponse::build(status).json(json!({ "events": ids }))
}

async fn trial_will_end_route(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let mut state = sim.state();
    let Some(event) = trial_will_end(&mut state, &id) else {
        return sim_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "no trialing subscription with that id",
        );
    };
    let body = json!({ "event": event.id });
    drop(state);
    Arc::clone(&sim).deliver(vec![event]);
    HttpResponse::Ok().json(body)
}

async fn end_trial_route(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let mut state = sim.state();
    let Some(events) = end_trial(&mut state, &id) else {
        return sim_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "no such subscription",
        );
    };
    let body = state
        .subscriptions
        .get(id.as_str())
        .map(|s| objects::subscription(&state, s));
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    drop(state);
    Arc::clone(&sim).deliver(events);
    HttpResponse::Ok().json(json!({ "subscription": body, "events": ids }))
}

#[derive(Deserialize)]
struct DisputeParams {
    payment_intent: String,
}

async fn dispute_route(sim: web::Data<Sim>, params: web::Query<DisputeParams>) -> HttpResponse {
    let mut state = sim.state();
    let Some(event) = dispute(&mut state, &params.payment_intent) else {
        return sim_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "no succeeded payment intent with that id",
        );
    };
    let body = json!({ "event": event.id, "dispute": event.object });
    drop(state);
    Arc::clone(&sim).deliver(vec![event]);
    HttpResponse::Ok().json(body)
}

#[derive(Deserialize)]
struct DeliverParams {
    /// Event ids, comma-separated, in the order to deliver them.
    ids: String,
}

async fn deliver_route(sim: web::Data<Sim>, params: web::Query<DeliverParams>) -> HttpResponse {
    let state = sim.state();
    let mut events = Vec::new();
    for id in params
        .ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        match state.events.iter().find(|e| e.id == id) {
            Some(event) => events.push(event.clone()),
            None => {
                return sim_error(
                    actix_web::http::StatusCode::NOT_FOUND,
                    &format!("no such event: {id}"),
                );
            }
        }
    }
    drop(state);
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    Arc::clone(&sim).deliver_now(events);
    HttpResponse::Accepted().json(json!({ "delivering": ids }))
}

async fn redeliver_route(sim: web::Data<Sim>, id: web::Path<String>) -> HttpResponse {
    let event = sim.state().events.iter().find(|e| e.id == *id).cloned();
    let Some(event) = event else {
        return sim_error(actix_web::http::StatusCode::NOT_FOUND, "no such event");
    };
    Arc::clone(&sim).deliver_now(vec![event]);
    HttpResponse::Accepted().json(json!({ "delivering": [id.as_str()] }))
}

#[derive(Deserialize)]
struct WebhookParams {
    auto_deliver: bool,
}

async fn webhooks_route(sim: web::Data<Sim>, params: web::Query<WebhookParams>) -> HttpResponse {
    sim.auto_deliver
        .store(params.auto_deliver, std::sync::atomic::Ordering::SeqCst);
    HttpResponse::Ok().json(json!({ "auto_deliver": params.auto_deliver }))
}

async fn deliveries_route(sim: web::Data<Sim>) -> HttpResponse {
    let attempts = sim
        .deliverer
        .attempts
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    HttpResponse::Ok().json(attempts)
}

/// Every `Idempotency-Key` the simulator has been sent, sorted (what tests check keys against).
async fn idempotency_keys_route(sim: web::Data<Sim>) -> HttpResponse {
    let mut keys: Vec<String> = sim.state().idempotency.keys().cloned().collect();
    keys.sort();
    HttpResponse::Ok().json(keys)
}
