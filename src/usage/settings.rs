//! Spend settings: the customer's monthly spend alert and hard cap, and a plan's cap per
//! customer (set by an admin). Each change writes its audit row in the same transaction.

use diesel::Connection as _;

use crate::accounts::UserId;
use crate::audit::{self, Actor, Kind};
use crate::db::models::usage_view;
use crate::db::{DbConnection, DbError};

/// The largest alert or cap, in the currency's major unit.
pub const MAX_MAJOR: i64 = 1_000_000;
/// [`MAX_MAJOR`] as a customer reads it in a message.
const MAX_MAJOR_TEXT: &str = "1,000,000";
/// Longest amount worth reading ("1000000.00" and some spaces).
pub const MAX_INPUT: usize = 32;

/// Currencies Stripe counts in whole units (no cents).
fn zero_decimal(currency: &str) -> bool {
    matches!(currency, "jpy" | "krw" | "vnd" | "clp" | "isk" | "ugx")
}

/// An amount typed in the currency's major unit ("50", "50.5" or "50.00"; empty: none) as
/// minor units, or the message that says what to type. 0 < amount ≤ 1,000,000.
pub fn parse_amount(raw: &str, currency: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let decimals: u32 = if zero_decimal(currency) { 0 } else { 2 };
    let message = || {
        if decimals == 0 {
            format!("Enter a whole amount from 1 to {MAX_MAJOR_TEXT}, or leave it empty for none.")
        } else {
            format!(
                "Enter an amount above 0 and up to {MAX_MAJOR_TEXT} (like 50 or 49.99), or leave it empty for none."
            )
        }
    };
    if raw.len() > MAX_INPUT {
        return Err(message());
    }
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = fraction.len() <= decimals as usize
        && (decimals > 0 || !raw.contains('.'))
        && !(raw.contains('.') && fraction.is_empty());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || !fraction_ok || whole.len() > 7 {
        return Err(message());
    }
    let whole: i64 = whole.parse().map_err(|_| message())?;
    let mut cents: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| message())?
    };
    if fraction.len() == 1 {
        cents *= 10;
    }
    let scale = 10_i64.pow(decimals);
    let minor = whole * scale + cents;
    if minor <= 0 || minor > MAX_MAJOR * scale {
        return Err(message());
    }
    Ok(Some(minor))
}

/// Minor units as the form shows them back ("50.00"; "5000" for a zero-decimal currency).
pub fn major_text(amount: i64, currency: &str) -> String {
    if zero_decimal(currency) {
        amount.to_string()
    } else {
        format!("{}.{:02}", amount / 100, amount.rem_euclid(100))
    }
}

/// Sets the customer's own alert and cap (minor units; `None`: none), audited as `actor`'s.
pub fn set_limits(
    conn: &mut DbConnection,
    actor: &Actor,
    user_id: UserId,
    alert: Option<i64>,
    cap: Option<i64>,
) -> Result<(), DbError> {
    let event = actor
        .event(Kind::UsageSpendLimitsChanged)
        .details(serde_json::json!({ "user_id": user_id.get(), "alert": alert, "cap": cap }));
    // Starts with a write (the upsert or delete): a SQLite transaction must.
    conn.transaction(|conn| {
        usage_view::set_spend_limits(conn, user_id, alert, cap)?;
        audit::write(conn, &event)
    })
}

/// Sets (`None`: removes) plan `plan_id`'s spend cap per customer, audited as `actor`'s.
pub fn set_plan_cap(
    conn: &mut DbConnection,
    actor: &Actor,
    plan_id: i64,
    cap: Option<i64>,
) -> Result<(), DbError> {
    let event = actor
        .event(Kind::PlanSpendCapChanged)
        .details(serde_json::json!({ "plan_id": plan_id, "cap": cap }));
    conn.transaction(|conn| {
        usage_view::set_plan_spend_cap(conn, plan_id, cap)?;
        audit::write(conn, &event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_reads_the_limit_with_thousands_separators() {
        assert_eq!(MAX_MAJOR_TEXT.replace(',', ""), MAX_MAJOR.to_string());
        let message = parse_amount("-5", "usd").err().unwrap_or_default();
        assert!(message.contains("up to 1,000,000 "), "{message}");
    }

    #[test]
    fn amounts_are_major_units_above_zero_up_to_a_million() {
        assert_eq!(parse_amount(" ", "usd"), Ok(None));
        assert_eq!(parse_amount("50", "usd"), Ok(Some(5_000)));
        assert_eq!(parse_amount("50.00", "usd"), Ok(Some(5_000)));
        assert_eq!(parse_amount("49.9", "usd"), Ok(Some(4_990)));
        assert_eq!(parse_amount("0.01", "usd"), Ok(Some(1)));
        assert_eq!(parse_amount("1000000", "usd"), Ok(Some(100_000_000)));
        assert_eq!(parse_amount("500", "jpy"), Ok(Some(500)));
        for bad in [
            "0",
            "0.00",
            "-5",
            "+5",
            "1000000.01",
            "5.001",
            "5.",
            ".5",
            "1e3",
            "fifty",
            "5,00",
            "99999999999999999999",
            "١٢",
        ] {
            assert!(parse_amount(bad, "usd").is_err(), "{bad}");
        }
        assert!(parse_amount("5.50", "jpy").is_err());
        assert_eq!(major_text(5_000, "usd"), "50.00");
        assert_eq!(major_text(500, "jpy"), "500");
    }
}
