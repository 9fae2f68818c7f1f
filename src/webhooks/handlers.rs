//! What each Stripe event does to Tollgate. Runs inside the ingest transaction: reads only the
//! event and the database, never Stripe.

use serde_json::Value;

use super::{Context, EventObject, Fields, IngestError, StripeEvent};
use crate::audit::alerts::{self, AlertRule};
use crate::audit::{self, Kind, SecurityEvent};
use crate::billing::invoices::{self, StripeInvoice};
use crate::billing::subscriptions::{self, StripeSubscription, SubscriptionStatus};
use crate::billing::{cards, customers};
use crate::db::DbConnection;
use crate::db::models::billing_customer;
use crate::db::models::subscription;
use crate::db::models::user;
use crate::db::models::webhook_event::WebhookEventStatus;
use crate::notify::email::Money;
use crate::notify::{self, AppEvent, Email};
use crate::stripe_id::{CustomerId, DisputeId, InvoiceId, PaymentIntentId, SubscriptionId};

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A type Tollgate does not act on: stored and acknowledged.
    Ignored,
    /// Could not be applied (kept, with the reason, for reprocessing).
    Failed(String),
}

impl Outcome {
    /// The status and error the stored event records.
    pub fn recorded(self) -> (WebhookEventStatus, Option<String>) {
        match self {
            Self::Applied => (WebhookEventStatus::Applied, None),
            Self::Ignored => (WebhookEventStatus::Ignored, None),
            Self::Failed(reason) => (WebhookEventStatus::Failed, Some(reason)),
        }
    }
}

fn text<'a>(object: &'a (impl Fields + ?Sized), key: &'static str) -> Option<&'a str> {
    match object.field(key)? {
        Value::String(s) => Some(s.as_str()),
        // An expanded object: its id.
        Value::Object(inner) => inner.get("id").and_then(Value::as_str),
        _ => None,
    }
}

fn timestamp(object: &(impl Fields + ?Sized), key: &'static str) -> Option<chrono::NaiveDateTime> {
    object
        .field(key)?
        .as_i64()
        .and_then(subscriptions::timestamp)
}

/// The subscription an invoice object belongs to: under `parent.subscription_details` in this
/// API version, at the top level in older ones.
fn invoice_subscription(object: &(impl Fields + ?Sized)) -> Option<&str> {
    object
        .field("parent")
        .and_then(|p| p.get("subscription_details"))
        .and_then(Value::as_object)
        .and_then(|d| text(d, "subscription"))
        .or_else(|| text(object, "subscription"))
}

/// Types recorded (the stored event is the record): payments, and the marketplace side.
const RECORDED: [&str; 6] = [
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "account.updated",
    "payout.created",
    "payout.updated",
];

/// What applies one type of event to Tollgate's state.
type Handler = fn(&mut DbConnection, Context<'_>, &StripeEvent) -> Result<Outcome, IngestError>;

/// The handler for `kind`, when Tollgate acts on that type beyond recording it.
fn handler(kind: &str) -> Option<Handler> {
    let handle: Handler = match kind {
        "checkout.session.completed" => checkout_completed,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => subscription_changed,
        "customer.subscription.trial_will_end" => trial_will_end,
        "invoice.paid" => invoice_paid,
        "invoice.payment_failed" => payment_failed,
        "charge.dispute.created" => dispute_created,
        "invoice.created"
        | "invoice.finalized"
        | "invoice.updated"
        | "invoice.voided"
        | "invoice.marked_uncollectible" => invoice_changed,
        "payment_method.attached"
        | "payment_method.updated"
        | "payment_method.automatically_updated" => card_saved,
        "payment_method.detached" => card_detached,
        "customer.discount.created" | "customer.discount.updated" | "customer.discount.deleted" => {
            discount_changed
        }
        _ => return None,
    };
    Some(handle)
}

/// The status an event of `kind` ends with without any handler work (`applied` for a
/// recorded type, `ignored` for one Tollgate does not act on); `None` when a handler must run.
pub fn fixed_status(kind: &str) -> Option<WebhookEventStatus> {
    match handler(kind) {
        Some(_) => None,
        None if RECORDED.contains(&kind) => Some(WebhookEventStatus::Applied),
        None => Some(WebhookEventStatus::Ignored),
    }
}

pub fn apply(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    match handler(&event.kind) {
        Some(handle) => handle(conn, cx, event),
        None if RECORDED.contains(&event.kind.as_str()) => Ok(Outcome::Applied),
        None => Ok(Outcome::Ignored),
    }
}

/// The user a Stripe customer id belongs to, by blind index (under any configured pepper), as
/// the event's transaction saw it ([`Context::customers`]).
fn user_for_customer(
    conn: &mut DbConnection,
    cx: Context<'_>,
    customer: &CustomerId,
) -> Result<Option<user::UserId>, IngestError> {
    Ok(match cx.customers {
        Some(known) => known.user(conn, cx.hasher, customer)?,
        None => customers::find_by_customer_id(conn, cx.hasher, customer)?.map(|row| row.user_id),
    })
}

/// The customer whose user applying `event` looks up, if it names one: the handlers read it
/// from the object's `customer` (a detached card's handler also from `previous_attributes`: that
/// one is looked up on its own).
pub(crate) fn customer_to_look_up(event: &StripeEvent) -> Option<CustomerId> {
    handler(&event.kind)?;
    text(&event.data.object, "customer").map(CustomerId::new)
}

/// Links the Checkout's customer to the user named by `client_reference_id`.
fn checkout_completed(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let Context {
        keyring, hasher, ..
    } = cx;
    let Some(user_id) = text(object, "client_reference_id").and_then(|r| r.parse().ok()) else {
        return Ok(Outcome::Failed(
            "no client_reference_id: not a Tollgate checkout".into(),
        ));
    };
    let Some(customer) = text(object, "customer").map(CustomerId::new) else {
        return Ok(Outcome::Failed("the session has no customer".into()));
    };
    if user::find(conn, user_id)?.is_none() {
        return Ok(Outcome::Failed(format!("no user {user_id}")));
    }
    // Asked now, not as the batch saw it: the insert below must not link a customer that
    // another transaction linked since (under another pepper's digest, which the unique index
    // would not catch).
    match customers::find_by_customer_id(conn, hasher, &customer)?.map(|row| row.user_id) {
        Some(owner) if owner == user_id => Ok(Outcome::Applied),
        Some(owner) => Ok(Outcome::Failed(format!(
            "customer {customer} belongs to user {owner}, not {user_id}"
        ))),
        None if billing_customer::for_user(conn, user_id)?.is_some() => Ok(Outcome::Failed(
            format!("user {user_id} already has another customer"),
        )),
        None => {
            let row = customers::new_row(keyring, hasher, user_id, &customer)?;
            billing_customer::insert(conn, &row)?;
            if let Some(known) = cx.customers {
                known.linked(&customer, user_id);
            }
            Ok(Outcome::Applied)
        }
    }
}

/// Reads a subscription event's object: the webhook's reader of Stripe's subscription (the
/// API's is [`StripeSubscription::from_api`]). Lenient as Stripe's JSON may be (an expanded
/// customer or product is read by its id); the reason when the object cannot be used.
pub(crate) fn subscription_of(
    object: &(impl Fields + ?Sized),
) -> Result<StripeSubscription, &'static str> {
    let (Some(id), Some(customer), Some(status)) = (
        text(object, "id"),
        text(object, "customer"),
        text(object, "status"),
    ) else {
        return Err("subscription without id, customer or status");
    };
    // The plan's own (licensed) item: metered items sit beside it, in no promised order.
    let items = object
        .field("items")
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array);
    let item = items
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["price"]["recurring"]["usage_type"] != "metered")
                .or_else(|| items.first())
        })
        .and_then(Value::as_object);
    let price = item.and_then(|i| i.get("price")).and_then(Value::as_object);
    let Some(price_id) = price.and_then(|p| text(p, "id")) else {
        return Err("subscription without a price");
    };
    Ok(StripeSubscription {
        id: SubscriptionId::new(id),
        customer: CustomerId::new(customer),
        status: SubscriptionStatus::from(status),
        price: price_id.to_owned(),
        product: price.and_then(|p| text(p, "product")).map(str::to_owned),
        current_period_end: item.and_then(|i| timestamp(i, "current_period_end")),
        cancel_at_period_end: object
            .field("cancel_at_period_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        trial_end: timestamp(object, "trial_end"),
        quantity: item
            .and_then(|i| i.get("quantity"))
            .and_then(Value::as_u64)
            .unwrap_or(1),
    })
}

/// A subscription event's subscription and the user whose customer it belongs to; the failed
/// outcome when the object cannot be read or the customer is unknown.
fn subscriber(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Result<(StripeSubscription, user::UserId), Outcome>, IngestError> {
    let sub = match subscription_of(&event.data.object) {
        Ok(sub) => sub,
        Err(reason) => return Ok(Err(Outcome::Failed(reason.into()))),
    };
    Ok(match user_for_customer(conn, cx, &sub.customer)? {
        Some(user_id) => Ok((sub, user_id)),
        None => Err(Outcome::Failed(format!(
            "unknown customer {}",
            sub.customer
        ))),
    })
}

/// Records the subscription's state as of the event; an older event never overwrites newer state.
fn subscription_changed(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let (sub, user_id) = match subscriber(conn, cx, event)? {
        Ok(found) => found,
        Err(failed) => return Ok(failed),
    };
    // Same second as the stored state but other content: which came last is unknown. The
    // event is applied as before, and the subscription read again from Stripe after the commit.
    if let Some(stored) = subscription::find_by_stripe_id(conn, &sub.id)?
        && stored.stripe_updated_at == event.created_at()
        && (subscriptions::differs(&stored, &sub)
            || crate::db::models::plan_change::quantity(conn, &sub.id)?
                != Some(i64::try_from(sub.quantity).unwrap_or(i64::MAX)))
    {
        crate::reconcile::refetch::request(conn, cx.ties, &sub.id, user_id)?;
    }
    subscriptions::store(conn, user_id, &sub, event.created_at())?;
    Ok(Outcome::Applied)
}

/// A renewal failed: the subscription is past due, and the failure is audited.
fn payment_failed(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let subscription_id = invoice_subscription(object).map(SubscriptionId::new);
    let customer = text(object, "customer").map(CustomerId::new);
    let user_id = match &customer {
        Some(customer) => user_for_customer(conn, cx, customer)?,
        None => None,
    };
    match (&subscription_id, user_id) {
        (Some(subscription_id), Some(user_id)) => {
            subscriptions::store_status(
                conn,
                user_id,
                subscription_id,
                SubscriptionStatus::PastDue,
                event.created_at(),
            )?;
        }
        (Some(subscription_id), None) => {
            subscription::set_status_if_newer(
                conn,
                subscription_id,
                SubscriptionStatus::PastDue,
                event.created_at(),
            )?;
        }
        (None, _) => {}
    }
    if let Some(user_id) = user_id
        && let Some(stripe_invoice) = invoice_of(object)
    {
        invoices::store_event(conn, cx.ties, user_id, &stripe_invoice, event.created_at())?;
        invoices::payment_failed(
            conn,
            &stripe_invoice,
            event.created_at(),
            cx.past_due_grace_days,
        )?;
    }
    if let Some(user_id) = user_id {
        let invoice = Invoice::read(conn, object)?;
        notify::publish(
            conn,
            AppEvent::InvoicePaymentFailed,
            user_id,
            invoice.data(),
            &event.id,
        )?;
        let message = Email::PaymentFailed {
            amount: invoice.amount(Invoice::DUE),
            plan: invoice.plan.clone(),
            invoice_number: invoice.number.clone(),
            pay_url: invoice.hosted_url.clone(),
            next_attempt_at: timestamp(object, "next_payment_attempt"),
        };
        email_user(conn, user_id, &message, &event.id)?;
    }
    let audit_event = SecurityEvent::new(Kind::PaymentFailed)
        .actor("stripe")
        .details(serde_json::json!({
            "event": event.id,
            "user_id": user_id,
            "invoice": text(object, "id").map(|id| InvoiceId::new(id).to_string()),
            "customer": customer.map(|id| id.to_string()),
            "amount_due": object.field("amount_due"),
        }));
    audit::write(conn, &audit_event)?;
    alerts::check(conn, cx.alerts, AlertRule::PaymentFailures)?;
    Ok(Outcome::Applied)
}

/// E-mails `message` to the user's address, once per `cause`.
fn email_user(
    conn: &mut DbConnection,
    user_id: user::UserId,
    message: &Email,
    cause: &str,
) -> Result<(), IngestError> {
    if let Some(user) = user::find(conn, user_id)? {
        notify::email(conn, Some(user_id), &user.email, message, cause)?;
    }
    Ok(())
}

/// What Tollgate reads of an invoice event's object.
struct Invoice {
    id: Option<String>,
    number: Option<String>,
    currency: String,
    amount_paid: i64,
    amount_due: i64,
    hosted_url: Option<String>,
    subscription: Option<String>,
    /// The plan the first line's product names, by its display name and its slug.
    plan: Option<String>,
    plan_slug: Option<String>,
    period_start: Option<chrono::NaiveDateTime>,
    period_end: Option<chrono::NaiveDateTime>,
}

impl Invoice {
    const PAID: bool = true;
    const DUE: bool = false;

    fn read(conn: &mut DbConnection, object: &EventObject) -> Result<Self, IngestError> {
        let line = object
            .field("lines")
            .and_then(|l| l.get("data"))
            .and_then(|d| d.get(0))
            .and_then(Value::as_object);
        let product = line
            .and_then(|l| l.get("pricing"))
            .and_then(|p| p.get("price_details"))
            .and_then(Value::as_object)
            .and_then(|d| text(d, "product"))
            .or_else(|| {
                line.and_then(|l| l.get("price"))
                    .and_then(Value::as_object)
                    .and_then(|p| text(p, "product"))
            });
        let plan = match product {
            Some(product) => crate::db::models::plan::find_by_stripe_product(conn, product)?,
            None => None,
        };
        let period = line
            .and_then(|l| l.get("period"))
            .and_then(Value::as_object);
        // Stripe's hosted pages only: a link elsewhere is not passed on to customers.
        let hosted_url = text(object, "hosted_invoice_url")
            .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
            .map(str::to_owned);
        Ok(Self {
            id: text(object, "id").map(str::to_owned),
            number: text(object, "number").map(str::to_owned),
            currency: text(object, "currency").unwrap_or("usd").to_owned(),
            amount_paid: object
                .field("amount_paid")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            amount_due: object
                .field("amount_due")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            hosted_url,
            subscription: invoice_subscription(object).map(str::to_owned),
            plan: plan.as_ref().map(|p| p.name.clone()),
            plan_slug: plan.map(|p| p.slug),
            period_start: period.and_then(|p| timestamp(p, "start")),
            period_end: period.and_then(|p| timestamp(p, "end")),
        })
    }

    fn amount(&self, paid: bool) -> Money {
        Money {
            amount: if paid {
                self.amount_paid
            } else {
                self.amount_due
            },
            currency: self.currency.clone(),
        }
    }

    /// The invoice as the product's own services receive it in `invoice.*` events.
    fn data(&self) -> Value {
        serde_json::json!({
            "invoice": {
                "id": self.id,
                "number": self.number,
                "subscription": self.subscription,
                "plan": self.plan_slug,
                "currency": self.currency,
                "amount_paid": self.amount_paid,
                "amount_due": self.amount_due,
                "hosted_invoice_url": self.hosted_url,
            }
        })
    }
}

/// An invoice was paid: the product's own services hear `invoice.paid`, and the customer
/// gets a receipt (not for a zero invoice: a free plan's monthly $0.00 is not news).
fn invoice_paid(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let Some(customer) = text(object, "customer").map(CustomerId::new) else {
        return Ok(Outcome::Applied);
    };
    // An invoice of a customer Tollgate does not know is recorded, not acted on.
    let Some(user_id) = user_for_customer(conn, cx, &customer)? else {
        return Ok(Outcome::Applied);
    };
    if let Some(stripe_invoice) = invoice_of(object) {
        invoices::store_event(conn, cx.ties, user_id, &stripe_invoice, event.created_at())?;
    }
    let invoice = Invoice::read(conn, object)?;
    notify::publish(
        conn,
        AppEvent::InvoicePaid,
        user_id,
        invoice.data(),
        &event.id,
    )?;
    if invoice.amount_paid > 0 {
        let message = Email::Receipt {
            amount: invoice.amount(Invoice::PAID),
            plan: invoice.plan.clone(),
            period_start: invoice.period_start,
            period_end: invoice.period_end,
            invoice_number: invoice.number.clone(),
            invoice_url: invoice.hosted_url.clone(),
        };
        email_user(conn, user_id, &message, &event.id)?;
    }
    Ok(Outcome::Applied)
}

/// Reads an invoice event's object (lenient as Stripe's JSON may be: an expanded subscription
/// is read by its id); `None` without an id or a status.
pub(crate) fn invoice_of(object: &(impl Fields + ?Sized)) -> Option<StripeInvoice> {
    let (id, status) = (text(object, "id")?, text(object, "status")?);
    let amount = |key: &'static str| object.field(key).and_then(Value::as_i64).unwrap_or(0);
    let amount_due = amount("amount_due");
    let amount_paid = amount("amount_paid");
    Some(StripeInvoice {
        id: InvoiceId::new(id),
        subscription: invoice_subscription(object).map(SubscriptionId::new),
        number: text(object, "number").map(|n| n.chars().take(64).collect()),
        status: status.chars().take(32).collect(),
        amount_due,
        amount_paid,
        amount_remaining: object
            .field("amount_remaining")
            .and_then(Value::as_i64)
            .unwrap_or(amount_due - amount_paid),
        currency: text(object, "currency")
            .unwrap_or("usd")
            .chars()
            .take(8)
            .collect(),
        created: timestamp(object, "created").unwrap_or_else(crate::db::now),
        period_start: timestamp(object, "period_start"),
        period_end: timestamp(object, "period_end"),
        hosted_invoice_url: invoices::web_link(text(object, "hosted_invoice_url")),
        invoice_pdf: invoices::web_link(text(object, "invoice_pdf")),
    })
}

/// An invoice was created, finalized, updated, voided or marked uncollectible: the customer's
/// invoice list follows (an older event never overwrites newer state). An invoice of a
/// customer Tollgate does not know is recorded, not acted on.
fn invoice_changed(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let Some(stripe_invoice) = invoice_of(object) else {
        return Ok(Outcome::Failed("invoice without id or status".into()));
    };
    let Some(customer) = text(object, "customer").map(CustomerId::new) else {
        return Ok(Outcome::Applied);
    };
    if let Some(user_id) = user_for_customer(conn, cx, &customer)? {
        invoices::store_event(conn, cx.ties, user_id, &stripe_invoice, event.created_at())?;
    }
    Ok(Outcome::Applied)
}

/// A trial ends in three days (Stripe's notice): the customer is told, once per event.
fn trial_will_end(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let (sub, user_id) = match subscriber(conn, cx, event)? {
        Ok(found) => found,
        Err(failed) => return Ok(failed),
    };
    let plan = match &sub.product {
        Some(product) => crate::db::models::plan::find_by_stripe_product(conn, product)?,
        None => None,
    };
    let message = Email::TrialEnding {
        plan: plan.map(|p| p.name),
        trial_end: sub.trial_end,
    };
    email_user(conn, user_id, &message, &event.id)?;
    Ok(Outcome::Applied)
}

fn dispute_created(
    conn: &mut DbConnection,
    _cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    audit::write(
        conn,
        &SecurityEvent::new(Kind::DisputeCreated)
            .actor("stripe")
            .details(serde_json::json!({
                "event": event.id,
                "dispute": text(object, "id").map(|id| DisputeId::new(id).to_string()),
                "payment_intent": text(object, "payment_intent")
                    .map(|id| PaymentIntentId::new(id).to_string()),
                "amount": object.field("amount"),
                "currency": object.field("currency"),
                "reason": object.field("reason"),
            })),
    )?;
    Ok(Outcome::Applied)
}

/// A card was saved or changed at Stripe: it becomes the card on file (sealed), unless a newer
/// one is stored.
fn card_saved(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let card = match (object.field("id"), object.field("card")) {
        (Some(Value::String(id)), Some(Value::Object(card))) => {
            cards::Card::from_payment_method(id, card)
        }
        _ => None,
    };
    let Some(card) = card else {
        // Not a card (a bank account, a wallet): nothing to show.
        return Ok(Outcome::Ignored);
    };
    let Some(customer) = text(object, "customer").map(CustomerId::new) else {
        return Ok(Outcome::Failed("the payment method has no customer".into()));
    };
    let Some(user_id) = user_for_customer(conn, cx, &customer)? else {
        return Ok(Outcome::Failed(format!("unknown customer {customer}")));
    };
    match cards::store(conn, cx.keyring, user_id, &card, event.created_at()) {
        Ok(_) => Ok(Outcome::Applied),
        Err(err) => card_failure(err),
    }
}

/// A card was removed at Stripe: it is forgotten if it is the card on file (the object no
/// longer names its customer; the event's previous attributes do).
fn card_detached(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let customer = event
        .data
        .previous_attributes
        .as_ref()
        .and_then(|previous| text(previous, "customer"))
        .or_else(|| text(object, "customer"))
        .map(CustomerId::new);
    let (Some(customer), Some(payment_method)) = (customer, text(object, "id")) else {
        return Ok(Outcome::Ignored);
    };
    let Some(user_id) = user_for_customer(conn, cx, &customer)? else {
        return Ok(Outcome::Failed(format!("unknown customer {customer}")));
    };
    match cards::forget(
        conn,
        cx.keyring,
        user_id,
        payment_method,
        event.created_at(),
    ) {
        Ok(_) => Ok(Outcome::Applied),
        Err(err) => card_failure(err),
    }
}

fn card_failure(err: cards::StoreError) -> Result<Outcome, IngestError> {
    match err {
        cards::StoreError::Db(err) => Err(err.into()),
        cards::StoreError::Crypto(err) => Err(err.into()),
        cards::StoreError::Encoding => Ok(Outcome::Failed("the card on file is unreadable".into())),
    }
}

/// Records a subscription's discount as of the event (a deletion ends it); an older event
/// never overwrites newer state. A discount on the customer alone is not shown: acknowledged.
fn discount_changed(
    conn: &mut DbConnection,
    cx: Context<'_>,
    event: &StripeEvent,
) -> Result<Outcome, IngestError> {
    let object = &event.data.object;
    let (Some(id), Some(customer)) = (text(object, "id"), text(object, "customer")) else {
        return Ok(Outcome::Failed("discount without id or customer".into()));
    };
    let Some(subscription) = text(object, "subscription") else {
        return Ok(Outcome::Applied);
    };
    let Some(user_id) = user_for_customer(conn, cx, &CustomerId::new(customer))? else {
        return Ok(Outcome::Failed(format!(
            "unknown customer {}",
            CustomerId::new(customer)
        )));
    };
    // This API version names the coupon under `source`; older ones at the top level.
    let coupon = object
        .field("source")
        .and_then(Value::as_object)
        .and_then(|source| text(source, "coupon"))
        .or_else(|| text(object, "coupon"));
    let state = crate::db::models::promotion::DiscountState {
        stripe_discount_id: id,
        stripe_coupon_id: coupon,
        stripe_promotion_code_id: text(object, "promotion_code"),
        starts_at: timestamp(object, "start"),
        ends_at: timestamp(object, "end"),
        removed: event.kind == "customer.discount.deleted",
        stripe_updated_at: event.created_at(),
    };
    crate::db::models::promotion::upsert_discount(conn, user_id, subscription, &state)?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_statuses_match_the_handlers() {
        for kind in [
            "checkout.session.completed",
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "customer.subscription.trial_will_end",
            "invoice.paid",
            "invoice.payment_failed",
            "charge.dispute.created",
            "invoice.created",
            "invoice.finalized",
            "invoice.updated",
            "invoice.voided",
            "invoice.marked_uncollectible",
            "payment_method.attached",
            "payment_method.detached",
            "customer.discount.created",
            "customer.discount.deleted",
        ] {
            assert_eq!(fixed_status(kind), None, "{kind} has a handler");
        }
        assert_eq!(
            fixed_status("payout.created"),
            Some(WebhookEventStatus::Applied)
        );
        assert_eq!(
            fixed_status("invoice.payment_succeeded"),
            Some(WebhookEventStatus::Applied)
        );
        assert_eq!(
            fixed_status("customer.tax_id.created"),
            Some(WebhookEventStatus::Ignored)
        );
    }

    /// A subscription object as both paths receive it: a webhook event's JSON, and the same
    /// JSON parsed into async-stripe's struct as an API call would.
    fn both_readings(object: &Value) -> (StripeSubscription, StripeSubscription) {
        let typed: stripe_billing::Subscription =
            miniserde::json::from_str(&object.to_string()).unwrap();
        let from_api = StripeSubscription::from_api(&typed).unwrap();
        // As a delivery is read: only the fields handlers read are parsed.
        let event: EventObject = serde_json::from_value(object.clone()).unwrap();
        let from_event = subscription_of(&event).unwrap();
        (from_event, from_api)
    }

    #[test]
    fn the_event_and_the_api_read_one_subscription_alike() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/webhooks/customer.subscription.created.json"
        ))
        .unwrap();
        let mut object = fixture["data"]["object"].clone();
        // Off their defaults, so that each field is seen to be read.
        object["status"] = serde_json::json!("trialing");
        object["cancel_at_period_end"] = serde_json::json!(true);
        object["trial_end"] = serde_json::json!(1_765_000_000);
        object["items"]["data"][0]["quantity"] = serde_json::json!(3);
        // async-stripe's struct requires fields this payload's API version does not send.
        object["billing_schedules"] = serde_json::json!([]);
        object["items"]["data"][0]["plan"] = serde_json::json!({
            "id": "price_1FixturePrice", "object": "plan", "active": true,
            "billing_scheme": "per_unit", "created": 1_763_990_000, "currency": "usd",
            "interval": "month", "interval_count": 1, "livemode": false, "usage_type": "licensed",
        });
        let (from_event, from_api) = both_readings(&object);
        assert_eq!(from_event, from_api);
        assert_eq!(
            from_api,
            StripeSubscription {
                id: SubscriptionId::new("sub_1FixtureSubscription"),
                customer: CustomerId::new("cus_FixtureCustomer01"),
                status: SubscriptionStatus::Trialing,
                price: "price_1FixturePrice".into(),
                product: Some("prod_FixtureProduct".into()),
                current_period_end: subscriptions::timestamp(1_766_592_000),
                cancel_at_period_end: true,
                trial_end: subscriptions::timestamp(1_765_000_000),
                quantity: 3,
            }
        );

        // A status Stripe adds later is read alike too, and kept as sent.
        object["status"] = serde_json::json!("a_status_from_the_future");
        let (from_event, from_api) = both_readings(&object);
        assert_eq!(from_event, from_api);
        assert_eq!(
            from_api.status,
            SubscriptionStatus::Other("a_status_from_the_future".into())
        );
    }
}
