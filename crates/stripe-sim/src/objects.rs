//! Renders the simulator's records as the JSON objects Stripe sends, for API version
//! `2026-09-30.endive` (what `async-stripe` 1.0.0-rc.10 speaks). Every field its deserializers
//! require is present; optional ones are `null` when there is nothing to say.

use serde_json::{Map, Value, json};

use crate::state::{
    CardOnFile, CheckoutSession, Customer, Event, Invoice, InvoiceStatus, PaymentIntent,
    PaymentStatus, PortalSession, Price, Product, SessionStatus, SimState, Subscription,
};

pub const API_VERSION: &str = "2026-09-30.endive";

pub fn money(minor: i64, currency: &str) -> String {
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    let major = format!("{}.{:02}", minor / 100, minor.rem_euclid(100));
    if symbol.is_empty() {
        format!("{major} {}", currency.to_uppercase())
    } else {
        format!("{symbol}{major}")
    }
}

pub fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%B %-d, %Y").to_string())
        .unwrap_or_default()
}

pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "data": data, "has_more": has_more, "url": url })
}

pub fn product(p: &Product) -> Value {
    json!({
        "id": p.id, "object": "product", "active": p.active, "created": p.created, "updated": p.updated,
        "default_price": null, "description": p.description, "images": [], "livemode": false,
        "marketing_features": [], "metadata": p.metadata, "name": p.name, "package_dimensions": null,
        "shippable": null, "statement_descriptor": null, "tax_code": null, "type": "service",
        "unit_label": null, "url": null,
    })
}

pub fn price(p: &Price) -> Value {
    let mut value = json!({
        "id": p.id, "object": "price", "active": p.active, "created": p.created,
        "currency": p.currency, "custom_unit_amount": null, "livemode": false, "lookup_key": null,
        "metadata": p.metadata, "nickname": p.nickname, "product": p.product,
        "tax_behavior": "unspecified", "transform_quantity": null, "type": "recurring",
    });
    merge(&mut value, crate::metering::price_fields(p));
    value
}

/// Copies `extra`'s fields into `value` (both objects).
fn merge(value: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(fields)) = (value.as_object_mut(), extra) {
        target.extend(fields);
    }
}

fn plan(p: &Price) -> Value {
    let fields = crate::metering::price_fields(p);
    json!({
        "id": p.id, "object": "plan", "active": p.active, "amount": fields["unit_amount"],
        "amount_decimal": fields["unit_amount_decimal"], "billing_scheme": fields["billing_scheme"], "created": p.created,
        "currency": p.currency, "interval": p.interval.as_str(), "interval_count": 1, "livemode": false,
        "metadata": p.metadata, "meter": fields["recurring"]["meter"], "nickname": p.nickname, "product": p.product,
        "tiers": fields["tiers"], "tiers_mode": fields["tiers_mode"],
        "transform_usage": null, "trial_period_days": null, "usage_type": fields["recurring"]["usage_type"],
    })
}

pub fn customer(c: &Customer) -> Value {
    json!({
        "id": c.id, "object": "customer", "address": null, "balance": 0, "created": c.created, "currency": null,
        "default_source": null, "delinquent": false, "description": null, "discount": null, "email": c.email,
        "invoice_prefix": c.id.trim_start_matches("cus_").chars().take(8).collect::<String>().to_uppercase(),
        "invoice_settings": { "custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null },
        "livemode": false, "metadata": c.metadata, "name": c.name, "next_invoice_sequence": 1, "phone": null,
        "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null,
    })
}

pub fn checkout_session(state: &SimState, s: &CheckoutSession, base_url: &str) -> Value {
    let (amount, currency) = state
        .prices
        .get(&s.price)
        .map(|p| (p.unit_amount * s.quantity as i64, p.currency.clone()))
        .unwrap_or((0, "usd".into()));
    let status = match s.status {
        SessionStatus::Open => "open",
        SessionStatus::Complete => "complete",
        SessionStatus::Expired => "expired",
    };
    let paid = s.status == SessionStatus::Complete;
    let email = s
        .customer
        .as_ref()
        .and_then(|c| state.customers.get(c))
        .and_then(|c| c.email.clone())
        .or_else(|| s.customer_email.clone());
    json!({
        "id": s.id, "object": "checkout.session", "after_expiration": null, "allow_promotion_codes": if s.allow_promotion_codes { json!(true) } else { Value::Null },
        "amount_subtotal": amount, "amount_total": amount,
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_address_collection": null, "cancel_url": s.cancel_url, "client_reference_id": s.client_reference_id,
        "client_secret": null, "consent": null, "consent_collection": null, "created": s.created, "currency": currency,
        "custom_fields": [], "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
        "customer": s.customer, "customer_creation": if s.customer.is_some() { Value::Null } else { json!("always") },
        "customer_details": if paid { json!({ "address": null, "email": email, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": [] }) } else { Value::Null },
        "customer_email": s.customer_email, "expires_at": s.expires_at, "invoice": s.invoice, "invoice_creation": null,
        "livemode": false, "locale": null, "metadata": s.metadata, "mode": "subscription", "payment_intent": null,
        "payment_link": null, "payment_method_collection": s.payment_method_collection, "payment_method_types": ["card"],
        "payment_status": if paid { "paid" } else { "unpaid" }, "phone_number_collection": { "enabled": false },
        "recovered_from": null, "setup_intent": null, "shipping_address_collection": null, "shipping_cost": null,
        "shipping_options": [], "status": status, "submit_type": null, "subscription": s.subscription,
        "success_url": s.success_url, "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted_page",
        "url": if s.status == SessionStatus::Open && !base_url.is_empty() { json!(format!("{base_url}/checkout/{}", s.id)) } else { Value::Null },
    })
}

pub fn portal_session(s: &PortalSession, base_url: &str) -> Value {
    json!({
        "id": s.id, "object": "billing_portal.session", "configuration": "bpc_simulator_default",
        "created": s.created, "customer": s.customer, "flow": null, "livemode": false, "locale": null,
        "on_behalf_of": null, "return_url": s.return_url, "url": format!("{base_url}/portal/{}", s.id),
    })
}

pub fn subscription(state: &SimState, s: &Subscription) -> Value {
    let price_record = state.prices.get(&s.price);
    let currency = price_record
        .map(|p| p.currency.clone())
        .unwrap_or_else(|| "usd".into());
    let item = json!({
        "id": s.item_id, "object": "subscription_item", "billing_thresholds": null, "created": s.created,
        "current_period_end": s.current_period_end, "current_period_start": s.current_period_start,
        "discounts": [], "metadata": {}, "plan": price_record.map(plan), "price": price_record.map(price),
        "quantity": s.quantity, "subscription": s.id, "tax_rates": [],
    });
    let mut items = vec![item];
    items.extend(s.metered_items.iter().map(|m| {
        let record = state.prices.get(&m.price);
        json!({
            "id": m.id, "object": "subscription_item", "billing_thresholds": null, "created": s.created,
            "current_period_end": s.current_period_end, "current_period_start": s.current_period_start,
            "discounts": [], "metadata": {}, "plan": record.map(plan), "price": record.map(price),
            "subscription": s.id, "tax_rates": [],
        })
    }));
    json!({
        "id": s.id, "object": "subscription", "application": null, "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": s.current_period_start, "billing_cycle_anchor_config": null,
        "billing_mode": { "type": "classic" }, "billing_schedules": [], "billing_thresholds": null,
        "cancel_at": if s.cancel_at_period_end { json!(s.current_period_end) } else { Value::Null },
        "cancel_at_period_end": s.cancel_at_period_end, "canceled_at": s.canceled_at,
        "cancellation_details": {
            "comment": s.cancellation.comment, "feedback": s.cancellation.feedback,
            "reason": match (s.cancellation.reason, s.canceled_at) {
                (Some(reason), _) => json!(reason),
                (None, Some(_)) => json!("cancellation_requested"),
                (None, None) => Value::Null,
            },
        },
        "collection_method": "charge_automatically", "created": s.created, "currency": currency,
        "customer": s.customer, "days_until_due": null, "default_payment_method": null, "default_source": null,
        "default_tax_rates": [], "description": null, "discounts": crate::promotions::subscription_discounts(state, &s.id), "ended_at": s.ended_at,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": list(&format!("/v1/subscription_items?subscription={}", s.id), items, false),
        "latest_invoice": s.latest_invoice, "livemode": false, "metadata": s.metadata, "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null, "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null, "pending_setup_intent": null, "pending_update": null, "schedule": s.schedule,
        "start_date": s.created, "status": s.status.as_str(), "test_clock": null, "transfer_data": null,
        "trial_end": s.trial_end, "trial_settings": { "end_behavior": { "missing_payment_method": s.missing_payment_method } },
        "trial_start": s.trial_start,
    })
}

pub fn invoice(state: &SimState, i: &Invoice) -> Value {
    let paid = i.status == InvoiceStatus::Paid;
    let description = state
        .prices
        .get(&i.price)
        .and_then(|p| state.products.get(&p.product))
        .map(|p| p.name.clone());
    let item = state
        .subscriptions
        .get(&i.subscription)
        .map(|s| s.item_id.clone())
        .unwrap_or_default();
    // In this API version an invoice reaches its payment intent through `payments`.
    let payments: Vec<Value> = i
        .payment_intent
        .iter()
        .map(|pi| {
            json!({
                "id": format!("inpay_{}", pi.trim_start_matches("pi_")), "object": "invoice_payment",
                "amount_paid": if paid { json!(i.amount_paid) } else { Value::Null }, "amount_requested": i.amount_due,
                "created": i.created, "currency": i.currency, "invoice": i.id, "is_default": true, "livemode": false,
                "payment": { "type": "payment_intent", "payment_intent": pi, "charge": null },
                "status": match i.status { InvoiceStatus::Paid => "paid", InvoiceStatus::Open => "open", InvoiceStatus::Void => "canceled" },
                "status_transitions": { "canceled_at": i.voided_at, "paid_at": i.paid_at },
            })
        })
        .collect();
    // A discount took `off` before the amount due: the subtotal is the amount before it.
    let discount = crate::promotions::invoice_discount(state, &i.id);
    let subtotal = i.amount_due + discount.as_ref().map_or(0, |(_, off)| *off);
    let usage_total = i
        .usage_lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.amount));
    let licensed = subtotal - usage_total;
    let discount_amounts: Vec<Value> = discount
        .iter()
        .map(|(id, off)| json!({ "amount": off, "discount": id }))
        .collect();
    let discount_ids: Vec<&String> = discount.iter().map(|(id, _)| id).collect();
    let line = json!({
        "id": format!("il_{}", i.id.trim_start_matches("in_")), "object": "line_item", "amount": licensed,
        "currency": i.currency, "description": description, "discount_amounts": discount_amounts, "discountable": true,
        "discounts": discount_ids, "invoice": i.id, "livemode": false, "metadata": {},
        "parent": { "type": "subscription_item_details", "invoice_item_details": null,
                    "subscription_item_details": { "invoice_item": null, "proration": false, "proration_details": { "credited_items": null },
                                                   "subscription": i.subscription, "subscription_item": item } },
        "period": { "end": i.period_end, "start": i.period_start },
        "pretax_credit_amounts": [], "pricing": { "price_details": { "price": i.price, "product": state.prices.get(&i.price).map(|p| p.product.clone()) }, "type": "price_details", "unit_amount_decimal": null },
        "quantity": 1, "subtotal": licensed, "taxes": [],
    });
    let mut lines = vec![line];
    lines.extend(i.usage_lines.iter().map(|l| {
        crate::metering::usage_line_json(state, &i.subscription, Some(&i.id), l, &i.currency)
    }));
    json!({
        "id": i.id, "object": "invoice", "account_country": "US", "account_name": state.business_name,
        "account_tax_ids": null, "amount_due": i.amount_due, "amount_overpaid": 0, "amount_paid": i.amount_paid,
        "amount_remaining": i.amount_due - i.amount_paid, "amount_shipping": 0, "application": null,
        "attempt_count": i.attempt_count, "attempted": true, "auto_advance": crate::controls::collected_automatically(state, i),
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_reason": i.billing_reason, "collection_method": "charge_automatically", "created": i.created,
        "currency": i.currency, "custom_fields": null, "customer": i.customer, "customer_address": null,
        "customer_email": state.customers.get(&i.customer).and_then(|c| c.email.clone()), "customer_name": null,
        "customer_phone": null, "customer_shipping": null, "customer_tax_exempt": "none", "default_payment_method": null,
        "default_source": null, "default_tax_rates": [], "description": null, "discounts": discount_ids, "due_date": null,
        "effective_at": i.created, "ending_balance": 0, "footer": null, "from_invoice": null,
        "hosted_invoice_url": format!("{}/i/{}", state.base_url, i.id),
        "invoice_pdf": format!("{}/i/{}/pdf", state.base_url, i.id), "issuer": { "type": "self" }, "last_finalization_error": null,
        "latest_revision": null, "lines": list(&format!("/v1/invoices/{}/lines", i.id), lines, false),
        "livemode": false, "metadata": {}, "next_payment_attempt": i.next_payment_attempt, "number": i.number, "on_behalf_of": null,
        "parent": { "type": "subscription_details", "quote_details": null,
                    "subscription_details": { "metadata": {}, "subscription": i.subscription } },
        "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
        "payments": list(&format!("/v1/invoices/{}/payments", i.id), payments, false),
        "period_end": i.period_end, "period_start": i.period_start, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": null, "rendering": null, "shipping_cost": null,
        "shipping_details": null, "starting_balance": 0, "statement_descriptor": null,
        "status": i.status.as_str(),
        "status_transitions": { "finalized_at": i.created, "marked_uncollectible_at": null,
                                "paid_at": i.paid_at, "voided_at": i.voided_at },
        "subtotal": subtotal, "subtotal_excluding_tax": subtotal, "test_clock": null, "total": i.amount_due,
        "total_discount_amounts": discount_amounts, "total_excluding_tax": i.amount_due, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": i.created,
        // Not a field of this API version; kept for webhook consumers that read it directly.
        "payment_intent": i.payment_intent,
    })
}

pub fn payment_intent(p: &PaymentIntent) -> Value {
    let succeeded = p.status == PaymentStatus::Succeeded;
    json!({
        "id": p.id, "object": "payment_intent", "amount": p.amount, "amount_capturable": 0,
        "amount_details": { "tip": {} }, "amount_received": if succeeded { p.amount } else { 0 }, "application": null,
        "application_fee_amount": null, "automatic_payment_methods": null, "canceled_at": null,
        "cancellation_reason": null, "capture_method": "automatic", "client_secret": null,
        "confirmation_method": "automatic", "created": p.created, "currency": p.currency, "customer": p.customer,
        "description": "Subscription update", "last_payment_error": match p.decline_code {
            Some(code) => json!({ "type": "card_error", "code": "card_declined", "decline_code": code, "message": "Your card was declined." }),
            None => Value::Null,
        },
        "latest_charge": if succeeded { json!(format!("ch_{}", p.id.trim_start_matches("pi_"))) } else { Value::Null },
        "livemode": false, "metadata": {}, "next_action": null, "on_behalf_of": null,
        "payment_method": null, "payment_method_configuration_details": null, "payment_method_options": {},
        "payment_method_types": ["card"], "processing": null, "receipt_email": null, "review": null,
        "setup_future_usage": "off_session", "shipping": null, "source": null, "statement_descriptor": null,
        "statement_descriptor_suffix": null, "status": if succeeded { "succeeded" } else { "requires_payment_method" },
        "transfer_data": null, "transfer_group": null,
    })
}

/// A card payment method (`payment_method.*` events carry it): Stripe's masked fields only.
pub fn payment_method(card: &CardOnFile, customer: Option<&str>) -> Value {
    json!({
        "id": card.id, "object": "payment_method", "allow_redisplay": "always",
        "billing_details": { "address": null, "email": null, "name": card.name, "phone": null, "tax_id": null },
        "card": {
            "brand": card.brand, "checks": { "address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass" },
            "country": "US", "display_brand": card.brand, "exp_month": card.exp_month, "exp_year": card.exp_year,
            "fingerprint": null, "funding": "credit", "generated_from": null, "last4": card.last4,
            "networks": { "available": [card.brand], "preferred": null }, "regulated_status": "unregulated",
            "three_d_secure_usage": { "supported": true }, "wallet": null,
        },
        "created": card.created, "customer": customer, "livemode": false, "metadata": {}, "type": "card",
    })
}

pub fn dispute(p: &PaymentIntent) -> Value {
    json!({
        "id": format!("dp_{}", p.id.trim_start_matches("pi_")), "object": "dispute", "amount": p.amount,
        "balance_transactions": [], "charge": format!("ch_{}", p.id.trim_start_matches("pi_")),
        "created": crate::state::unix_now(), "currency": p.currency, "enhanced_eligibility_types": [],
        "evidence": {}, "evidence_details": { "due_by": crate::state::unix_now() + 7 * 86_400, "enhanced_eligibility": {},
        "has_evidence": false, "past_due": false, "submission_count": 0 }, "is_charge_refundable": false,
        "livemode": false, "metadata": {}, "payment_intent": p.id, "payment_method_details": null,
        "reason": "fraudulent", "status": "needs_response",
    })
}

pub fn event(e: &Event) -> Value {
    let mut data = Map::new();
    data.insert("object".into(), e.object.clone());
    if let Some(previous) = &e.previous_attributes {
        data.insert("previous_attributes".into(), previous.clone());
    }
    json!({
        "id": e.id, "object": "event", "api_version": API_VERSION, "context": null, "created": e.created,
        "data": data, "livemode": false, "pending_webhooks": 1,
        "request": { "id": e.idempotency_key.as_ref().map(|_| crate::state::new_id("req")), "idempotency_key": e.idempotency_key },
        "type": e.kind,
    })
}

/// The top-level fields that changed, with their old values (`data.previous_attributes`).
pub fn previous_attributes(before: &Value, after: &Value) -> Value {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return json!({});
    };
    let changed: Map<String, Value> = before
        .iter()
        .filter(|(key, old)| after.get(*key) != Some(*old))
        .map(|(key, old)| (key.clone(), old.clone()))
        .collect();
    Value::Object(changed)
}

/// Replaces id strings named by `expand[]` with the objects they name (first level only).
pub fn expand(state: &SimState, value: &mut Value, paths: &[String]) {
    for path in paths {
        let Some(slot) = value.get_mut(path.as_str()) else {
            continue;
        };
        let Some(id) = slot.as_str().map(str::to_owned) else {
            continue;
        };
        if let Some(object) = render_by_id(state, &id) {
            *slot = object;
        }
    }
}

fn render_by_id(state: &SimState, id: &str) -> Option<Value> {
    let prefix = id.split('_').next().unwrap_or_default();
    match prefix {
        "prod" => state.products.get(id).map(product),
        "price" => state.prices.get(id).map(price),
        "cus" => state.customers.get(id).map(customer),
        "sub" => state.subscriptions.get(id).map(|s| subscription(state, s)),
        "in" => state.invoices.get(id).map(|i| invoice(state, i)),
        "pi" => state.payment_intents.get(id).map(payment_intent),
        "promo" => state
            .promotion_codes
            .get(id)
            .map(crate::promotions::promotion_code),
        "di" => state
            .discounts
            .values()
            .find(|d| d.id == id)
            .map(crate::promotions::discount),
        _ => None,
    }
}
