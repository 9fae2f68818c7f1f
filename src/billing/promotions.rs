//! Promotions: coupons and their customer-facing promotion codes, created by admins at Stripe
//! (through the gateway, with idempotency keys) and kept locally for the console; and the
//! discount Stripe applies to a subscription, as the account page shows it.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::Connection as _;
use stripe_product::coupon::CreateCoupon;
use stripe_product::promotion_code::{
    CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
    UpdatePromotionCode,
};
use stripe_shared::CouponDuration;

use super::plans::format_amount;
use super::{BillingError, Gateway, OperationClass, OperationId, operations};
use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::db::models::promotion::{
    self, CouponRow, DiscountRow, NewCoupon, NewPromotionCode, PromotionCodeRow,
};
use crate::db::{Db, DbConnection, DbError};

/// The form fields' messages, by field name.
pub type PromotionErrors = HashMap<&'static str, String>;

/// The largest amount off, in minor units ($1,000,000.00).
pub const MAX_AMOUNT_OFF: i64 = 100_000_000;
/// The most redemptions a coupon or code may allow.
pub const MAX_REDEMPTIONS: i64 = 1_000_000;
/// The longest a repeating coupon may last.
pub const MAX_DURATION_MONTHS: i64 = 36;
/// No field of these forms is longer than this (anything longer is refused, not cut).
const MAX_FIELD_CHARS: usize = 100;
/// Stripe's limit for a coupon's name.
const MAX_NAME_CHARS: usize = 40;

/// The coupon form as submitted.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct CouponDraft {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub percent_off: String,
    #[serde(default)]
    pub amount_off: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub duration_in_months: String,
    #[serde(default)]
    pub redeem_by: String,
    #[serde(default)]
    pub max_redemptions: String,
}

/// What a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    Percent(i64),
    Amount { amount: i64, currency: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    Once,
    Repeating(i64),
    Forever,
}

impl Duration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Repeating(_) => "repeating",
            Self::Forever => "forever",
        }
    }
}

/// A checked coupon form.
#[derive(Debug, Clone)]
pub struct CouponInput {
    pub name: String,
    pub off: Off,
    pub duration: Duration,
    pub redeem_by: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
}

/// A whole number in `range`, or the message to show.
fn number(raw: &str, range: std::ops::RangeInclusive<i64>, what: &str) -> Result<i64, String> {
    let value: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("Enter {what} as a whole number."))?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "Enter {what} between {} and {}.",
            range.start(),
            range.end()
        ))
    }
}

/// An optional date (`YYYY-MM-DD`), as the end of that day (UTC); it must be in the future.
fn future_date(raw: &str) -> Result<Option<NaiveDateTime>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| "Enter a date as YYYY-MM-DD.".to_owned())?;
    let end = date
        .and_hms_opt(23, 59, 59)
        .ok_or_else(|| "Enter a date as YYYY-MM-DD.".to_owned())?;
    if end <= crate::db::now() {
        return Err("Choose a date in the future.".into());
    }
    Ok(Some(end))
}

/// An optional maximum number of redemptions.
fn redemptions(raw: &str) -> Result<Option<i64>, String> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    number(raw, 1..=MAX_REDEMPTIONS, "the number of redemptions").map(Some)
}

/// Refuses fields over the size limit before reading them.
fn too_long(fields: &[(&'static str, &str)], errors: &mut PromotionErrors) {
    for (name, value) in fields {
        if value.chars().count() > MAX_FIELD_CHARS {
            errors.insert(name, "This is too long.".into());
        }
    }
}

impl CouponDraft {
    pub fn validate(&self) -> Result<CouponInput, PromotionErrors> {
        let mut errors = PromotionErrors::new();
        too_long(
            &[
                ("name", &self.name),
                ("percent_off", &self.percent_off),
                ("amount_off", &self.amount_off),
                ("currency", &self.currency),
                ("duration", &self.duration),
                ("duration_in_months", &self.duration_in_months),
                ("redeem_by", &self.redeem_by),
                ("max_redemptions", &self.max_redemptions),
            ],
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = self.name.trim().to_owned();
        if name.chars().count() > MAX_NAME_CHARS {
            errors.insert(
                "name",
                format!("Keep the name under {MAX_NAME_CHARS} characters."),
            );
        }
        let (percent, amount) = (self.percent_off.trim(), self.amount_off.trim());
        let off = match (percent.is_empty(), amount.is_empty()) {
            (true, true) | (false, false) => {
                errors.insert(
                    "percent_off",
                    "Give either a percentage or an amount off, not both.".into(),
                );
                None
            }
            (false, true) => match number(percent, 1..=100, "the percentage") {
                Ok(p) => Some(Off::Percent(p)),
                Err(message) => {
                    errors.insert("percent_off", message);
                    None
                }
            },
            (true, false) => {
                let amount = number(amount, 1..=MAX_AMOUNT_OFF, "the amount (minor units)")
                    .map_err(|message| errors.insert("amount_off", message))
                    .ok();
                let currency = self.currency.trim().to_ascii_lowercase();
                let currency_ok = currency.len() == 3
                    && currency.chars().all(|c| c.is_ascii_lowercase())
                    && currency.parse::<stripe_types::Currency>().is_ok();
                if !currency_ok {
                    errors.insert(
                        "currency",
                        "Enter a three-letter currency, e.g. usd.".into(),
                    );
                }
                amount
                    .filter(|_| currency_ok)
                    .map(|amount| Off::Amount { amount, currency })
            }
        };
        let duration = match self.duration.trim() {
            "once" => Some(Duration::Once),
            "forever" => Some(Duration::Forever),
            "repeating" => match number(
                &self.duration_in_months,
                1..=MAX_DURATION_MONTHS,
                "the number of months",
            ) {
                Ok(months) => Some(Duration::Repeating(months)),
                Err(message) => {
                    errors.insert("duration_in_months", message);
                    None
                }
            },
            _ => {
                errors.insert("duration", "Choose once, repeating or forever.".into());
                None
            }
        };
        let redeem_by = future_date(&self.redeem_by)
            .map_err(|message| errors.insert("redeem_by", message))
            .ok()
            .flatten();
        let max_redemptions = redemptions(&self.max_redemptions)
            .map_err(|message| errors.insert("max_redemptions", message))
            .ok()
            .flatten();
        match (off, duration) {
            (Some(off), Some(duration)) if errors.is_empty() => Ok(CouponInput {
                name: if name.is_empty() {
                    off_label(&off)
                } else {
                    name
                },
                off,
                duration,
                redeem_by,
                max_redemptions,
            }),
            _ => Err(errors),
        }
    }
}

/// `20% off`, `$5.00 off`.
fn off_label(off: &Off) -> String {
    match off {
        Off::Percent(p) => format!("{p}% off"),
        Off::Amount { amount, currency } => format!("{} off", format_amount(*amount, currency)),
    }
}

/// The promotion code form as submitted.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct CodeDraft {
    #[serde(default)]
    pub coupon_id: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub max_redemptions: String,
}

/// A checked promotion code form.
#[derive(Debug, Clone)]
pub struct CodeInput {
    pub coupon_id: i64,
    /// Upper-case letters, digits, `-` and `_`.
    pub code: String,
    pub expires_at: Option<NaiveDateTime>,
    pub max_redemptions: Option<i64>,
}

/// A customer-facing code: 3 to 20 letters, digits, `-` or `_` (stored upper-case).
pub fn parse_code(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_ascii_uppercase();
    let shaped = (3..=20).contains(&code.len())
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if shaped {
        Ok(code)
    } else {
        Err("Use 3 to 20 letters, digits, dashes or underscores.".into())
    }
}

impl CodeDraft {
    pub fn validate(&self) -> Result<CodeInput, PromotionErrors> {
        let mut errors = PromotionErrors::new();
        too_long(
            &[
                ("coupon_id", &self.coupon_id),
                ("code", &self.code),
                ("expires_at", &self.expires_at),
                ("max_redemptions", &self.max_redemptions),
            ],
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let coupon_id = self
            .coupon_id
            .trim()
            .parse::<i64>()
            .map_err(|_| errors.insert("coupon_id", "Choose a coupon.".into()))
            .ok();
        let code = parse_code(&self.code)
            .map_err(|message| errors.insert("code", message))
            .ok();
        let expires_at = future_date(&self.expires_at)
            .map_err(|message| errors.insert("expires_at", message))
            .ok()
            .flatten();
        let max_redemptions = redemptions(&self.max_redemptions)
            .map_err(|message| errors.insert("max_redemptions", message))
            .ok()
            .flatten();
        match (coupon_id, code) {
            (Some(coupon_id), Some(code)) if errors.is_empty() => Ok(CodeInput {
                coupon_id,
                code,
                expires_at,
                max_redemptions,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error("no such coupon")]
    UnknownCoupon,
    #[error("the code is taken")]
    CodeTaken,
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<DbError> for PromotionError {
    fn from(err: DbError) -> Self {
        Self::Billing(err.into())
    }
}

impl From<super::GatewayError> for PromotionError {
    fn from(err: super::GatewayError) -> Self {
        Self::Billing(err.into())
    }
}

/// Whose Stripe throttle an admin's change counts against.
fn throttle_key(actor: &Actor) -> UserId {
    actor.account().unwrap_or(UserId::from(0))
}

/// Creates the coupon at Stripe, then records it (audited as `actor`'s, in one transaction).
/// The same form submitted again replays the same Stripe write and records nothing new.
pub async fn create_coupon(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    input: CouponInput,
) -> Result<CouponRow, PromotionError> {
    let admin = throttle_key(actor);
    let claimed = operations::claim(db, Some(admin), "coupon.create", operation).await?;
    let op_id = operation.as_str().to_owned();
    if !claimed.first_time {
        let op = op_id.clone();
        if let Some(done) = db
            .run(move |conn| promotion::coupon_by_operation(conn, &op))
            .await?
        {
            return Ok(done);
        }
    }
    let key = claimed.idempotency_key("coupon-create");
    let coupon = gateway
        .call(OperationClass::Default, admin, Some(&key), || {
            let mut request = CreateCoupon::new().name(input.name.clone());
            request = match &input.off {
                Off::Percent(p) => request.percent_off(*p as f64),
                Off::Amount { amount, currency } => {
                    let currency: stripe_types::Currency =
                        currency.parse().unwrap_or(stripe_types::Currency::USD);
                    request.amount_off(*amount).currency(currency)
                }
            };
            request = match input.duration {
                Duration::Once => request.duration(CouponDuration::Once),
                Duration::Forever => request.duration(CouponDuration::Forever),
                Duration::Repeating(months) => request
                    .duration(CouponDuration::Repeating)
                    .duration_in_months(months),
            };
            if let Some(at) = input.redeem_by {
                request = request.redeem_by(at.and_utc().timestamp());
            }
            if let Some(max) = input.max_redemptions {
                request = request.max_redemptions(max);
            }
            request
        })
        .await?;
    let stripe_id = coupon.id.to_string();
    let event = actor.event(Kind::CouponCreated).details(serde_json::json!({
        "coupon": stripe_id,
        "off": off_label(&input.off),
        "duration": input.duration.as_str(),
    }));
    let row = db
        .run(move |conn| {
            conn.transaction(|conn| {
                let (percent_off, amount_off, currency) = match &input.off {
                    Off::Percent(p) => (Some(*p), None, None),
                    Off::Amount { amount, currency } => {
                        (None, Some(*amount), Some(currency.as_str()))
                    }
                };
                let new = NewCoupon {
                    operation_id: &op_id,
                    stripe_coupon_id: &stripe_id,
                    name: &input.name,
                    percent_off,
                    amount_off,
                    currency,
                    duration: input.duration.as_str(),
                    duration_in_months: match input.duration {
                        Duration::Repeating(months) => Some(months),
                        _ => None,
                    },
                    redeem_by: input.redeem_by,
                    max_redemptions: input.max_redemptions,
                };
                if promotion::insert_coupon(conn, &new)? {
                    audit::write(conn, &event)?;
                }
                promotion::coupon_by_operation(conn, &op_id)?
                    .ok_or(DbError::Query(diesel::result::Error::NotFound))
            })
        })
        .await?;
    Ok(row)
}

/// Creates a promotion code for a coupon at Stripe, then records it (audited, one
/// transaction). A code already used (active or not) is refused before Stripe is asked.
pub async fn create_code(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    input: CodeInput,
) -> Result<PromotionCodeRow, PromotionError> {
    let admin = throttle_key(actor);
    let claimed = operations::claim(db, Some(admin), "promotion_code.create", operation).await?;
    let op_id = operation.as_str().to_owned();
    let (coupon_id, code) = (input.coupon_id, input.code.clone());
    let (coupon, existing) = db
        .run(move |conn| {
            Ok::<_, DbError>((
                promotion::find_coupon(conn, coupon_id)?,
                promotion::code_by_text(conn, &code)?,
            ))
        })
        .await?;
    let coupon = coupon.ok_or(PromotionError::UnknownCoupon)?;
    if let Some(existing) = existing {
        // The same form again: its work is done.
        if existing.operation_id == op_id && !claimed.first_time {
            return Ok(existing);
        }
        return Err(PromotionError::CodeTaken);
    }
    let key = claimed.idempotency_key("promotion-code-create");
    let created = gateway
        .call(OperationClass::Default, admin, Some(&key), || {
            let mut promotion =
                CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
            promotion.coupon = Some(coupon.stripe_coupon_id.clone());
            let mut request = CreatePromotionCode::new(promotion).code(input.code.clone());
            if let Some(at) = input.expires_at {
                request = request.expires_at(at.and_utc().timestamp());
            }
            if let Some(max) = input.max_redemptions {
                request = request.max_redemptions(max);
            }
            request
        })
        .await?;
    let stripe_id = created.id.to_string();
    let event = actor
        .event(Kind::PromotionCodeCreated)
        .details(serde_json::json!({
            "code": input.code,
            "coupon": coupon.stripe_coupon_id,
            "promotion_code": stripe_id,
        }));
    db.run(move |conn| {
        conn.transaction(|conn| {
            let new = NewPromotionCode {
                operation_id: &op_id,
                coupon_id: coupon.id,
                code: &input.code,
                stripe_promotion_code_id: &stripe_id,
                expires_at: input.expires_at,
                max_redemptions: input.max_redemptions,
            };
            if promotion::insert_code(conn, &new)? {
                audit::write(conn, &event)?;
            }
            promotion::code_by_text(conn, &input.code)?
                .ok_or(DbError::Query(diesel::result::Error::NotFound))
        })
    })
    .await
    .map_err(PromotionError::from)
}

/// Stops a code from being redeemed, at Stripe and here (audited once).
pub async fn deactivate_code(
    db: &Db,
    gateway: &Gateway,
    actor: &Actor,
    operation: &OperationId,
    code: &PromotionCodeRow,
) -> Result<(), PromotionError> {
    let admin = throttle_key(actor);
    let claimed =
        operations::claim(db, Some(admin), "promotion_code.deactivate", operation).await?;
    let key = claimed.idempotency_key("promotion-code-deactivate");
    let stripe_id = code.stripe_promotion_code_id.clone();
    gateway
        .call(OperationClass::Default, admin, Some(&key), || {
            UpdatePromotionCode::new(stripe_id.as_str()).active(false)
        })
        .await?;
    let event = actor
        .event(Kind::PromotionCodeDeactivated)
        .details(serde_json::json!({ "code": code.code, "promotion_code": stripe_id }));
    let id = code.id;
    db.run(move |conn| {
        conn.transaction(|conn| {
            if promotion::deactivate_code(conn, id)? {
                audit::write(conn, &event)?;
            }
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// A coupon as the console lists it.
#[derive(Debug, Clone)]
pub struct CouponView {
    pub coupon: CouponRow,
    pub off: String,
    pub duration: String,
    pub codes: Vec<PromotionCodeRow>,
}

/// `once`, `3 months`, `forever`.
fn duration_label(duration: &str, months: Option<i64>) -> String {
    match (duration, months) {
        ("repeating", Some(1)) => "1 month".into(),
        ("repeating", Some(m)) => format!("{m} months"),
        (other, _) => other.to_owned(),
    }
}

fn coupon_off(row: &CouponRow) -> String {
    match (row.percent_off, row.amount_off, &row.currency) {
        (Some(p), _, _) => off_label(&Off::Percent(p)),
        (None, Some(amount), Some(currency)) => off_label(&Off::Amount {
            amount,
            currency: currency.clone(),
        }),
        _ => "—".into(),
    }
}

/// Every coupon, newest first, with its codes.
pub async fn list(db: &Db) -> Result<Vec<CouponView>, DbError> {
    db.run(|conn| {
        let coupons = promotion::all_coupons(conn)?;
        let codes = promotion::all_codes(conn)?;
        Ok(coupons
            .into_iter()
            .map(|coupon| CouponView {
                off: coupon_off(&coupon),
                duration: duration_label(&coupon.duration, coupon.duration_in_months),
                codes: codes
                    .iter()
                    .filter(|c| c.coupon_id == coupon.id)
                    .cloned()
                    .collect(),
                coupon,
            })
            .collect())
    })
    .await
}

pub async fn find_code(db: &Db, id: i64) -> Result<Option<PromotionCodeRow>, DbError> {
    db.run(move |conn| promotion::find_code(conn, id)).await
}

/// The discount on a subscription as the account page words it: "20% off, 3 months left",
/// "$5.00 off forever", with the date it ends when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountSummary {
    pub label: String,
    pub code: Option<String>,
    pub ends_on: Option<String>,
}

/// Whole months from `from` to `to`, at least one.
fn months_between(from: NaiveDateTime, to: NaiveDateTime) -> i64 {
    let days = (to - from).num_days();
    ((days + 15) / 30).max(1)
}

fn summarise(
    discount: &DiscountRow,
    coupon: Option<&CouponRow>,
    code: Option<&PromotionCodeRow>,
    now: NaiveDateTime,
) -> DiscountSummary {
    let off = coupon.map_or_else(|| "Discount".to_owned(), coupon_off);
    let label = match (coupon.map(|c| c.duration.as_str()), discount.ends_at) {
        (Some("forever"), _) | (_, None) => format!("{off} forever"),
        (Some("once"), _) => format!("{off} your next invoice"),
        (_, Some(end)) if end > now => {
            let left = months_between(now, end);
            let unit = if left == 1 { "month" } else { "months" };
            format!("{off}, {left} {unit} left")
        }
        (_, Some(_)) => off,
    };
    DiscountSummary {
        label,
        code: code.map(|c| c.code.clone()),
        ends_on: discount
            .ends_at
            .map(|end| end.format("%B %-d, %Y").to_string()),
    }
}

/// The discount in force on the subscription, if any.
pub fn discount_summary(
    conn: &mut DbConnection,
    subscription_id: &str,
) -> Result<Option<DiscountSummary>, DbError> {
    let Some(discount) = promotion::discount_for_subscription(conn, subscription_id)? else {
        return Ok(None);
    };
    let coupon = match &discount.stripe_coupon_id {
        Some(id) => promotion::coupon_by_stripe_id(conn, id)?,
        None => None,
    };
    let code = match &discount.stripe_promotion_code_id {
        Some(id) => promotion::code_by_stripe_id(conn, id)?,
        None => None,
    };
    Ok(Some(summarise(
        &discount,
        coupon.as_ref(),
        code.as_ref(),
        crate::db::now(),
    )))
}

/// The discount in force on the subscription `subscription_id`, if any.
pub async fn current_discount(
    db: &Db,
    subscription_id: String,
) -> Result<Option<DiscountSummary>, DbError> {
    db.run(move |conn| discount_summary(conn, &subscription_id))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> CouponDraft {
        CouponDraft {
            percent_off: "20".into(),
            duration: "repeating".into(),
            duration_in_months: "3".into(),
            ..CouponDraft::default()
        }
    }

    #[test]
    fn coupons_take_a_percentage_or_an_amount() {
        let input = draft().validate().unwrap();
        assert_eq!(input.off, Off::Percent(20));
        assert_eq!(input.duration, Duration::Repeating(3));
        assert_eq!(input.name, "20% off");
        for bad in ["0", "101", "-5", "12.5", "99999999999999999999"] {
            let errors = CouponDraft {
                percent_off: bad.into(),
                ..draft()
            }
            .validate()
            .unwrap_err();
            assert!(errors.contains_key("percent_off"), "{bad}");
        }
        let both = CouponDraft {
            amount_off: "500".into(),
            currency: "usd".into(),
            ..draft()
        };
        assert!(both.validate().unwrap_err().contains_key("percent_off"));
        let amount = CouponDraft {
            percent_off: String::new(),
            amount_off: "500".into(),
            currency: "USD".into(),
            duration: "forever".into(),
            ..draft()
        };
        assert_eq!(
            amount.validate().unwrap().off,
            Off::Amount {
                amount: 500,
                currency: "usd".into()
            }
        );
    }

    #[test]
    fn codes_are_short_and_plain() {
        assert_eq!(parse_code(" spring-20 ").unwrap(), "SPRING-20");
        for bad in ["ab", "has space", "<script>", &"A".repeat(21), "ÉTÉ20"] {
            assert!(parse_code(bad).is_err(), "{bad}");
        }
    }
}
