//! How a metered component reads to a customer: "10,000 tokens included, then $2 per 1,000
//! tokens", "$0.05 per run", "up to 1,000,000 tokens a month".

use std::collections::HashMap;

use crate::billing::plans::{Interval, Plan, format_amount};
use crate::db::{Db, DbError};

use super::Component;

/// One metered component on the pricing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    pub price: String,
    pub quota: Option<String>,
}

/// The usage lines of each of `plans`, by plan id (one connection for all).
pub async fn for_plans(db: &Db, plans: &[Plan]) -> Result<HashMap<i64, Vec<UsageLine>>, DbError> {
    let plans: Vec<(i64, String, Interval)> = plans
        .iter()
        .map(|p| (p.id, p.currency.clone(), p.interval))
        .collect();
    db.run(move |conn| {
        let mut lines = HashMap::new();
        for (id, currency, interval) in plans {
            let components = super::meters::of_plan(conn, id)?;
            let usage = components
                .iter()
                .map(|c| UsageLine {
                    price: price_line(c, &currency),
                    quota: quota_line(c, interval),
                })
                .collect();
            lines.insert(id, usage);
        }
        Ok(lines)
    })
    .await
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `$2.00` as `$2`, `$0.05` as is.
fn short_amount(amount: i64, currency: &str) -> String {
    let full = format_amount(amount, currency);
    match full.strip_suffix(".00") {
        Some(whole) => whole.to_owned(),
        None => full.replacen(".00 ", " ", 1),
    }
}

/// One unit's name from the plural (`runs` → `run`); names not ending in `s` stay.
fn singular(unit: &str) -> &str {
    unit.strip_suffix('s')
        .filter(|s| !s.is_empty() && !s.ends_with('s'))
        .unwrap_or(unit)
}

/// The price line: `10,000 tokens included, then $2 per 1,000 tokens`.
pub fn price_line(component: &Component, currency: &str) -> String {
    let rate = component.rate;
    let unit = component.unit_name.as_str();
    let amount = short_amount(rate.package_amount, currency);
    let per = if rate.package_size == 1 {
        format!("{amount} per {}", singular(unit))
    } else {
        format!("{amount} per {} {unit}", thousands(rate.package_size))
    };
    if rate.included > 0 {
        format!("{} {unit} included, then {per}", thousands(rate.included))
    } else {
        per
    }
}

/// The quota line, if any: `up to 1,000,000 tokens a month`.
pub fn quota_line(component: &Component, interval: Interval) -> Option<String> {
    component.quota.map(|quota| {
        format!(
            "up to {} {} a {}",
            thousands(quota),
            component.unit_name,
            interval.as_str()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Rate;

    fn tokens() -> Component {
        Component {
            feature: "tokens".into(),
            unit_name: "tokens".into(),
            rate: Rate {
                included: 10_000,
                package_size: 1_000,
                package_amount: 200,
            },
            quota: Some(1_000_000),
            fail_open: false,
            event_name: "tollgate_tokens".into(),
            stripe_meter_id: None,
            stripe_price_id: None,
        }
    }

    #[test]
    fn components_read_as_a_customer_expects() {
        assert_eq!(
            price_line(&tokens(), "usd"),
            "10,000 tokens included, then $2 per 1,000 tokens"
        );
        assert_eq!(
            quota_line(&tokens(), Interval::Month).as_deref(),
            Some("up to 1,000,000 tokens a month")
        );
        let runs = Component {
            unit_name: "runs".into(),
            rate: Rate {
                included: 0,
                package_size: 1,
                package_amount: 5,
            },
            quota: None,
            ..tokens()
        };
        assert_eq!(price_line(&runs, "usd"), "$0.05 per run");
        assert_eq!(quota_line(&runs, Interval::Month), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(short_amount(250, "usd"), "$2.50");
        assert_eq!(short_amount(200, "eur"), "€2");
    }
}
