//! What metered usage costs: the arithmetic every estimate, cap and Stripe price shares.
//!
//! A component includes `included` units per period and charges `package_amount` per
//! `package_size` units above it. On Stripe it is a graduated, metered Price with two tiers:
//! up to `included` at zero, then `package_amount / package_size` per unit as a decimal unit
//! amount. Stripe multiplies and rounds the line's total to a whole minor unit (half up), and
//! so does [`Rate::charge`], so Tollgate's estimates and caps agree with Stripe's invoices.

/// The price of one metered component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per period that cost nothing.
    pub included: i64,
    /// Units one `package_amount` buys (1: a price per unit).
    pub package_size: i64,
    /// Minor units per package above `included`.
    pub package_amount: i64,
}

impl Rate {
    /// What `quantity` units in one period cost, in minor units.
    pub fn charge(&self, quantity: i64) -> i64 {
        let over = i128::from(quantity.saturating_sub(self.included).max(0));
        let size = i128::from(self.package_size.max(1));
        let amount = i128::from(self.package_amount.max(0));
        let total = (over * amount * 2 + size) / (size * 2);
        i64::try_from(total).unwrap_or(i64::MAX)
    }

    /// The most units whose [`charge`](Self::charge) stays within `budget` minor units.
    pub fn units_within(&self, budget: i64) -> i64 {
        if self.package_amount <= 0 {
            return i64::MAX;
        }
        let size = i128::from(self.package_size.max(1));
        let amount = i128::from(self.package_amount);
        // charge(included + over) <= budget  ⇔  2·over·amount < (2·budget + 1)·size
        let limit = (2 * i128::from(budget.max(0)) + 1) * size;
        let over = (limit - 1) / (2 * amount);
        let units = i128::from(self.included.max(0)) + over;
        i64::try_from(units).unwrap_or(i64::MAX)
    }

    /// Stripe's `unit_amount_decimal` for the tier above `included`: `package_amount /
    /// package_size` minor units per unit, exact (Stripe accepts up to 12 decimal places).
    pub fn unit_amount_decimal(&self) -> String {
        let size = self.package_size.max(1);
        let whole = self.package_amount / size;
        let mut rest = self.package_amount % size;
        let mut decimals = String::new();
        while rest != 0 && decimals.len() < 12 {
            rest *= 10;
            decimals.push(char::from(b'0' + u8::try_from(rest / size).unwrap_or(0)));
            rest %= size;
        }
        if decimals.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{decimals}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: Rate = Rate {
        included: 10_000,
        package_size: 1_000,
        package_amount: 200,
    };

    #[test]
    fn included_units_cost_nothing_and_the_rest_is_pro_rata() {
        assert_eq!(TOKENS.charge(0), 0);
        assert_eq!(TOKENS.charge(10_000), 0);
        assert_eq!(TOKENS.charge(11_000), 200);
        assert_eq!(TOKENS.charge(11_500), 300);
        // 1 token over: 0.2 cents, rounded to nothing; 3 tokens: 0.6, rounded up to 1.
        assert_eq!(TOKENS.charge(10_001), 0);
        assert_eq!(TOKENS.charge(10_003), 1);
        let huge = Rate {
            included: 0,
            package_size: 1,
            package_amount: i64::MAX,
        };
        assert_eq!(huge.charge(i64::MAX), i64::MAX, "saturates");
    }

    #[test]
    fn units_within_a_budget_is_the_inverse_of_charge() {
        for budget in [0, 1, 2, 199, 200, 201, 1_000, 12_345] {
            let units = TOKENS.units_within(budget);
            assert!(TOKENS.charge(units) <= budget, "budget {budget}");
            assert!(TOKENS.charge(units + 1) > budget, "budget {budget}");
        }
        let per_run = Rate {
            included: 0,
            package_size: 1,
            package_amount: 5,
        };
        assert_eq!(per_run.units_within(12), 2);
        let free = Rate {
            package_amount: 0,
            ..per_run
        };
        assert_eq!(free.units_within(0), i64::MAX);
    }

    #[test]
    fn the_unit_amount_is_an_exact_decimal() {
        assert_eq!(TOKENS.unit_amount_decimal(), "0.2");
        let per_unit = Rate {
            included: 0,
            package_size: 1,
            package_amount: 7,
        };
        assert_eq!(per_unit.unit_amount_decimal(), "7");
        let thirds = Rate {
            included: 0,
            package_size: 3,
            package_amount: 1,
        };
        assert_eq!(thirds.unit_amount_decimal(), "0.333333333333");
    }
}
