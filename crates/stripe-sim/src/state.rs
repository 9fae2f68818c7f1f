//! The simulator's state: typed records for every object, the event log, and the idempotency
//! cache. Records are the truth; the JSON Stripe would send is rendered from them (`objects`).
//!
//! The simulator keeps its own types (e.g. `Interval`) rather than borrowing Tollgate's: it
//! stands in for an external service and must not change when Tollgate's domain does.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// A Stripe-style id: prefix and up to 24 random letters and digits (the base64 of 18 random
/// bytes without its `-` and `_`).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 18];
    // Without the system's randomness the id is the bare prefix; a simulator may carry on.
    let random = getrandom::fill(&mut bytes)
        .map(|()| URL_SAFE_NO_PAD.encode(bytes))
        .unwrap_or_default();
    let clean: String = random
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}_{clean}")
}

pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

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

    /// The end of a period that starts at `start` (calendar months and years, UTC).
    pub fn advance(self, start: i64) -> i64 {
        use chrono::{DateTime, Months};
        let months = match self {
            Self::Month => 1,
            Self::Year => 12,
        };
        DateTime::from_timestamp(start, 0)
            .and_then(|t| t.checked_add_months(Months::new(months)))
            .map(|t| t.timestamp())
            .unwrap_or(start + i64::from(months) * 30 * 86_400)
    }
}

#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub metadata: HashMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

#[derive(Debug, Clone)]
pub struct Price {
    pub id: String,
    pub product: String,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: Interval,
    pub active: bool,
    pub nickname: Option<String>,
    pub metadata: HashMap<String, String>,
    pub created: i64,
    /// `recurring.usage_type=metered`: billed in arrears on its meter's events, no quantity.
    pub metered: Option<MeteredPrice>,
}

/// What makes a price metered: its meter and (for `billing_scheme=tiered`) its tiers.
#[derive(Debug, Clone, Default)]
pub struct MeteredPrice {
    /// `recurring.meter`.
    pub meter: String,
    /// `graduated` or `volume` (`None`: `billing_scheme=per_unit` at the price's unit amount).
    pub tiers_mode: Option<&'static str>,
    pub tiers: Vec<PriceTier>,
    /// `unit_amount_decimal` of a per-unit metered price.
    pub unit_amount_decimal: Option<String>,
}

/// One tier of a tiered price: units up to `up_to` (`None`: `inf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTier {
    pub up_to: Option<i64>,
    pub flat_amount: i64,
    /// Minor units per unit, as Stripe's decimal string (up to 12 decimal places).
    pub unit_amount_decimal: String,
}

/// A metered item of a subscription, beside its one licensed item.
#[derive(Debug, Clone)]
pub struct MeteredItem {
    pub id: String,
    pub price: String,
}

/// A usage line of an invoice: a metered item's usage over a period, priced by its tiers.
#[derive(Debug, Clone)]
pub struct UsageLine {
    pub item: String,
    pub price: String,
    pub quantity: i64,
    pub amount: i64,
    pub period_start: i64,
    pub period_end: i64,
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: HashMap<String, String>,
    pub created: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    Complete,
    Expired,
}

#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub client_reference_id: Option<String>,
    pub price: String,
    pub quantity: u64,
    /// Further line items: metered prices (no quantity).
    pub metered_prices: Vec<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub status: SessionStatus,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
    pub trial_period_days: Option<u32>,
    /// `always` (the default) or `if_required`: a trial then starts without a card.
    pub payment_method_collection: &'static str,
    /// `subscription_data[trial_settings][end_behavior][missing_payment_method]`.
    pub missing_payment_method: &'static str,
    pub metadata: HashMap<String, String>,
    /// `subscription_data[metadata]`: copied onto the subscription the session creates.
    pub subscription_metadata: HashMap<String, String>,
    pub created: i64,
    pub expires_at: i64,
    /// `allow_promotion_codes`: the hosted page offers a promotion code field.
    pub allow_promotion_codes: bool,
    /// The promotion code redeemed on the hosted page (applied when the session completes).
    pub promotion_code: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: String,
    pub customer: String,
    pub return_url: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Incomplete,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub item_id: String,
    pub customer: String,
    pub price: String,
    pub quantity: u64,
    pub status: SubscriptionStatus,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub latest_invoice: Option<String>,
    pub metadata: HashMap<String, String>,
    pub created: i64,
    /// What ending the trial without a payment method does: `create_invoice` (Stripe's
    /// default), `cancel` or `pause`.
    pub missing_payment_method: &'static str,
    /// `cancellation_details`: why it was (or will be) canceled.
    pub cancellation: Cancellation,
    /// The subscription schedule managing it, if any.
    pub schedule: Option<String>,
    /// Its metered items (billed in arrears on their meters' events).
    pub metered_items: Vec<MeteredItem>,
}

/// One phase of a subscription schedule: its one item's price and quantity, from `start` to
/// `end`.
#[derive(Debug, Clone)]
pub struct SchedulePhase {
    pub start: i64,
    pub end: i64,
    pub price: String,
    pub quantity: u64,
}

#[derive(Debug, Clone)]
pub struct SubscriptionSchedule {
    pub id: String,
    pub customer: String,
    pub subscription: String,
    pub phases: Vec<SchedulePhase>,
    /// `active`, `released` or `canceled`.
    pub status: &'static str,
    pub released_at: Option<i64>,
    pub created: i64,
}

/// A subscription's `cancellation_details`.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    pub reason: Option<&'static str>,
    pub feedback: Option<&'static str>,
    pub comment: Option<String>,
}

/// Stripe's `cancellation_details.feedback` values.
pub const CANCELLATION_FEEDBACK: [&str; 8] = [
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
];

/// Stripe's `trial_settings.end_behavior.missing_payment_method` values.
pub const MISSING_PAYMENT_METHOD: [&str; 3] = ["cancel", "create_invoice", "pause"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    Open,
    Paid,
    /// Voided: never collected.
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Void => "void",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: String,
    pub number: String,
    pub customer: String,
    pub subscription: String,
    pub price: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub status: InvoiceStatus,
    pub payment_intent: Option<String>,
    pub billing_reason: &'static str,
    pub attempt_count: u32,
    pub period_start: i64,
    pub period_end: i64,
    pub created: i64,
    /// When Stripe will retry an open invoice's payment (`None`: no further attempt).
    pub next_payment_attempt: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    /// Metered usage billed with it (in arrears: the period before `period_start`).
    pub usage_lines: Vec<UsageLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    RequiresPaymentMethod,
}

#[derive(Debug, Clone)]
pub struct PaymentIntent {
    pub id: String,
    pub customer: String,
    pub invoice: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub decline_code: Option<&'static str>,
    pub created: i64,
}

/// The card a customer paid with at checkout: what the portal shows as the payment method on
/// file. Only the brand, last four digits and expiry are kept, as Stripe shows them.
#[derive(Debug, Clone)]
pub struct CardOnFile {
    pub id: String,
    pub brand: &'static str,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub name: String,
    pub created: i64,
}

/// A coupon: percent or amount off, for once, some months, or forever.
#[derive(Debug, Clone)]
pub struct Coupon {
    pub id: String,
    pub name: Option<String>,
    pub percent_off: Option<f64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    pub duration_in_months: Option<i64>,
    pub redeem_by: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub times_redeemed: i64,
    pub metadata: HashMap<String, String>,
    pub created: i64,
}

/// A customer-facing code for a coupon.
#[derive(Debug, Clone)]
pub struct PromotionCode {
    pub id: String,
    pub code: String,
    pub coupon: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub times_redeemed: i64,
    pub metadata: HashMap<String, String>,
    pub created: i64,
}

/// A coupon applied to a subscription.
#[derive(Debug, Clone)]
pub struct Discount {
    pub id: String,
    pub coupon: String,
    pub promotion_code: Option<String>,
    pub customer: String,
    pub subscription: String,
    pub checkout_session: Option<String>,
    pub start: i64,
    pub end: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
    pub previous_attributes: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// A cached response for an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct IdempotentResponse {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct SimState {
    /// `http://127.0.0.1:PORT`: hosted pages' origin.
    pub base_url: String,
    pub products: HashMap<String, Product>,
    pub prices: HashMap<String, Price>,
    pub customers: HashMap<String, Customer>,
    pub checkout_sessions: HashMap<String, CheckoutSession>,
    pub portal_sessions: HashMap<String, PortalSession>,
    pub subscriptions: HashMap<String, Subscription>,
    pub subscription_schedules: HashMap<String, SubscriptionSchedule>,
    pub invoices: HashMap<String, Invoice>,
    pub payment_intents: HashMap<String, PaymentIntent>,
    /// By customer id: the card each last paid with.
    pub cards_on_file: HashMap<String, CardOnFile>,
    /// Oldest first; listed newest first.
    pub events: Vec<Event>,
    pub idempotency: HashMap<String, IdempotentResponse>,
    invoice_counter: u64,
    pub coupons: HashMap<String, Coupon>,
    pub promotion_codes: HashMap<String, PromotionCode>,
    /// By subscription id: the discount in force.
    pub discounts: HashMap<String, Discount>,
    /// By invoice id: the discount applied to it and the amount it took off.
    pub invoice_discounts: HashMap<String, (String, i64)>,
    /// The account's public business name: the merchant on hosted pages and invoices.
    pub business_name: String,
    /// Billing meters, by id.
    pub meters: HashMap<String, Meter>,
    /// Meter events as Stripe accepted them, oldest first (one per identifier).
    pub meter_events: Vec<MeterEvent>,
    /// Test controls: the next meter-event calls that fail (`/_sim/meter_events/fail`).
    pub meter_event_faults: MeterEventFaults,
}

/// Meter-event calls the simulator fails on purpose, with a 500: `outage` before storing the
/// event (Stripe down), `lost` after storing it (the answer lost on the way back).
#[derive(Debug, Clone, Copy, Default)]
pub struct MeterEventFaults {
    pub outage: u32,
    pub lost: u32,
    /// Calls refused because their identifier was stored already (a resend).
    pub duplicates: u64,
}

/// A billing meter: sums the `value` of the meter events named `event_name`, per customer.
#[derive(Debug, Clone)]
pub struct Meter {
    pub id: String,
    pub display_name: String,
    pub event_name: String,
    pub status: String,
    pub created: i64,
}

/// One accepted meter event (`POST /v1/billing/meter_events`).
#[derive(Debug, Clone)]
pub struct MeterEvent {
    /// Unique per event: a resend with the same identifier is not counted again.
    pub identifier: String,
    pub event_name: String,
    /// `payload[stripe_customer_id]`.
    pub customer: String,
    /// `payload[value]`.
    pub value: i64,
    /// When the usage happened (Unix seconds), as reported.
    pub timestamp: i64,
    pub created: i64,
}

impl SimState {
    /// `base_url`: where the simulator serves its hosted pages (invoice links point there).
    pub fn new(business_name: String, base_url: String) -> Self {
        Self {
            business_name,
            base_url,
            ..Self::default()
        }
    }

    pub fn next_invoice_number(&mut self) -> String {
        self.invoice_counter += 1;
        format!("SIM-{:06}", self.invoice_counter)
    }
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_are_the_prefix_and_random_letters_and_digits() {
        let id = new_id("cus");
        let (prefix, random) = id.split_once('_').unwrap();
        assert_eq!(prefix, "cus");
        assert!((12..=24).contains(&random.len()), "{id}");
        assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        assert_ne!(new_id("cus"), id);
    }
}
