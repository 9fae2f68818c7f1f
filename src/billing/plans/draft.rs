//! The admin's plan form: the fields as submitted (`PlanDraft`), one parser per field with the
//! message the form shows beside it, and the validated `PlanInput` they compose into.

use std::collections::HashMap;

use super::{Interval, Plan, format_amount};

/// The most a plan may cost, in minor units (Stripe's limit for `unit_amount`).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// What an admin submitted, already validated.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub amount: i64,
    pub currency: String,
    pub interval: Interval,
    pub trial_days: i64,
    pub entitlements: Vec<String>,
    pub feature_lines: Vec<String>,
    pub highlighted: bool,
    pub yearly_amount: Option<i64>,
    /// The trial is taken without a card (only with trial days).
    pub trial_without_card: bool,
    /// A per-seat plan's range of seats (`None`: one seat).
    pub seats: Option<(i64, i64)>,
}

/// Most feature lines a plan lists, and the longest one.
pub const MAX_FEATURE_LINES: usize = 12;
pub const MAX_FEATURE_LINE_CHARS: usize = 80;

/// Field name → message, for re-rendering the form.
pub type PlanErrors = HashMap<&'static str, String>;

/// The raw form fields (strings, as submitted).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct PlanDraft {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub interval: String,
    #[serde(default)]
    pub trial_days: String,
    /// Entitlement keys, one per line.
    #[serde(default)]
    pub features: String,
    /// The pricing page's feature lines, one per line.
    #[serde(default)]
    pub feature_lines: String,
    /// A checkbox: `on` when ticked.
    #[serde(default)]
    pub highlighted: String,
    /// Empty for no yearly price.
    #[serde(default)]
    pub yearly_amount: String,
    /// A checkbox: `on` when the trial needs no card.
    #[serde(default)]
    pub trial_without_card: String,
    /// Per-seat plans: the fewest and most seats a customer may choose (both empty: one seat).
    #[serde(default)]
    pub seats_min: String,
    #[serde(default)]
    pub seats_max: String,
}

/// Most seats a per-seat plan may allow.
pub const MAX_SEATS: i64 = 10_000;

/// Both empty: not per-seat; else whole numbers with 1 ≤ min ≤ max ≤ `MAX_SEATS`, max ≥ 2.
fn parse_seats(min: &str, max: &str) -> Parsed<Option<(i64, i64)>> {
    let (min, max) = (min.trim(), max.trim());
    if min.is_empty() && max.is_empty() {
        return Ok(None);
    }
    let message =
        || format!("Give the fewest and most seats, from 1 to {MAX_SEATS}, or leave both empty.");
    let (Ok(min), Ok(max)) = (min.parse::<i64>(), max.parse::<i64>()) else {
        return Err(message());
    };
    if !(1..=MAX_SEATS).contains(&min) || !(2..=MAX_SEATS).contains(&max) || min > max {
        return Err(message());
    }
    Ok(Some((min, max)))
}

/// A field's value, or the message the form shows beside it.
type Parsed<T> = Result<T, String>;

/// 1 to 80 characters, trimmed.
fn parse_name(raw: &str) -> Parsed<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err("Give the plan a name of 1 to 80 characters.".into());
    }
    Ok(name.to_owned())
}

/// 2 to 40 lowercase letters, digits and inner dashes (capitals are lowered first).
fn parse_slug(raw: &str) -> Parsed<String> {
    let slug = raw.trim().to_ascii_lowercase();
    let well_formed = (2..=40).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !well_formed {
        return Err("Use 2 to 40 lowercase letters, digits and dashes, e.g. pro-monthly.".into());
    }
    Ok(slug)
}

/// At most 500 characters as typed; kept trimmed.
fn parse_description(raw: &str) -> Parsed<String> {
    if raw.chars().count() > 500 {
        return Err("Keep the description under 500 characters.".into());
    }
    Ok(raw.trim().to_owned())
}

/// A three-letter ISO code, lowercased.
fn parse_currency(raw: &str) -> Parsed<String> {
    let currency = raw.trim().to_ascii_lowercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
        return Err("Use a three-letter ISO currency code, e.g. usd.".into());
    }
    Ok(currency)
}

/// Minor units from 0 to `MAX_AMOUNT`. Over the maximum, the message names it in the plan's
/// currency (`None`: the currency is wrong too, so in dollars).
fn parse_amount(raw: &str, currency: Option<&str>) -> Parsed<i64> {
    match raw.trim().parse::<i64>() {
        Ok(amount) if (0..=MAX_AMOUNT).contains(&amount) => Ok(amount),
        Ok(amount) if amount < 0 => Err("The price cannot be negative.".into()),
        Ok(_) => Err(format!(
            "The price can be at most {MAX_AMOUNT} minor units ({}).",
            format_amount(MAX_AMOUNT, currency.unwrap_or("usd"))
        )),
        Err(_) => Err(
            "Enter the price as a whole number of minor units (cents), e.g. 2500 for $25.00."
                .into(),
        ),
    }
}

fn parse_interval(raw: &str) -> Parsed<Interval> {
    Interval::parse(raw.trim()).ok_or_else(|| "Choose monthly or yearly billing.".into())
}

/// 0 to 730 days (empty: 0); a free plan (`amount` 0) has none.
fn parse_trial_days(raw: &str, amount: Option<i64>) -> Parsed<i64> {
    let raw = raw.trim();
    let days = if raw.is_empty() {
        0
    } else {
        raw.parse::<i64>()
            .ok()
            .filter(|d| (0..=730).contains(d))
            .ok_or("Trial days are a number from 0 to 730.")?
    };
    if amount == Some(0) && days > 0 {
        return Err("A free plan has no trial: set trial days to 0.".into());
    }
    Ok(days)
}

/// Entitlement keys, one per line or comma-separated, lowercased: letters, digits and
/// `- _ . :`, at most 64 characters each.
fn parse_entitlements(raw: &str) -> Parsed<Vec<String>> {
    let keys: Vec<String> = raw
        .split(['\n', ','])
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect();
    let bad = |key: &String| {
        key.len() > 64
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    };
    if keys.iter().any(bad) {
        return Err("Entitlement keys are letters, digits and - _ . : (one per line).".into());
    }
    Ok(keys)
}

/// The pricing page's lines: at most `MAX_FEATURE_LINES` of plain text, each at most
/// `MAX_FEATURE_LINE_CHARS` characters; blank lines dropped.
fn parse_feature_lines(raw: &str) -> Parsed<Vec<String>> {
    let lines: Vec<String> = raw
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.len() > MAX_FEATURE_LINES {
        return Err(format!(
            "List at most {MAX_FEATURE_LINES} features, one per line."
        ));
    }
    if let Some(n) = lines
        .iter()
        .position(|line| line.chars().count() > MAX_FEATURE_LINE_CHARS)
    {
        return Err(format!(
            "Keep each feature to {MAX_FEATURE_LINE_CHARS} characters or fewer (feature {} is longer).",
            n + 1
        ));
    }
    if lines.iter().any(|line| line.chars().any(char::is_control)) {
        return Err("Features are plain text, one per line.".into());
    }
    Ok(lines)
}

/// The optional yearly price (empty: none): only beside a paid monthly price.
fn parse_yearly_amount(
    raw: &str,
    amount: Option<i64>,
    interval: Option<Interval>,
) -> Parsed<Option<i64>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let message = match raw
        .parse::<i64>()
        .ok()
        .filter(|a| (1..=MAX_AMOUNT).contains(a))
    {
        None => "Enter the yearly price in minor units, e.g. 25000 for $250.00, or leave it empty.",
        Some(_) if interval == Some(Interval::Year) => {
            "This plan is billed yearly already: leave the yearly price empty."
        }
        Some(_) if amount == Some(0) => "A free plan has no yearly price: leave it empty.",
        Some(yearly) => return Ok(Some(yearly)),
    };
    Err(message.into())
}

/// The messages of the fields that failed, one per field, as the parsers run.
#[derive(Default)]
struct Checked {
    errors: PlanErrors,
}

impl Checked {
    /// The field's value, or `None` with its message recorded.
    fn field<T>(&mut self, field: &'static str, parsed: Parsed<T>) -> Option<T> {
        parsed
            .map_err(|message| self.errors.insert(field, message))
            .ok()
    }
}

impl PlanDraft {
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            name: plan.name.clone(),
            slug: plan.slug.clone(),
            description: plan.description.clone(),
            amount: plan.amount.to_string(),
            currency: plan.currency.clone(),
            interval: plan.interval.as_str().to_owned(),
            trial_days: plan.trial_days.to_string(),
            features: plan.entitlements.join("\n"),
            feature_lines: plan.feature_lines.join("\n"),
            highlighted: if plan.highlighted { "on" } else { "" }.to_owned(),
            yearly_amount: plan
                .yearly_amount
                .map(|amount| amount.to_string())
                .unwrap_or_default(),
            // Kept beside the plan (`plan_trial_options`): the form's handler fills it in.
            trial_without_card: String::new(),
            seats_min: String::new(),
            seats_max: String::new(),
        }
    }

    /// Every field parsed; on failure, a message for each field that is wrong.
    pub fn validate(&self) -> Result<PlanInput, PlanErrors> {
        let mut form = Checked::default();
        let currency = form.field("currency", parse_currency(&self.currency));
        let amount = form.field("amount", parse_amount(&self.amount, currency.as_deref()));
        let interval = form.field("interval", parse_interval(&self.interval));
        let fields = (
            form.field("name", parse_name(&self.name)),
            form.field("slug", parse_slug(&self.slug)),
            form.field("description", parse_description(&self.description)),
            form.field("trial_days", parse_trial_days(&self.trial_days, amount)),
            form.field("features", parse_entitlements(&self.features)),
            form.field("feature_lines", parse_feature_lines(&self.feature_lines)),
            form.field(
                "yearly_amount",
                parse_yearly_amount(&self.yearly_amount, amount, interval),
            ),
        );
        let seats = form.field("seats_max", parse_seats(&self.seats_min, &self.seats_max));
        let (
            Some(seats),
            Some(currency),
            Some(amount),
            Some(interval),
            (
                Some(name),
                Some(slug),
                Some(description),
                Some(trial_days),
                Some(entitlements),
                Some(feature_lines),
                Some(yearly_amount),
            ),
        ) = (seats, currency, amount, interval, fields)
        else {
            return Err(form.errors);
        };
        let trial_without_card = self.trial_without_card.trim() == "on";
        if trial_without_card && trial_days == 0 {
            form.errors.insert(
                "trial_without_card",
                "A trial without a card needs trial days: set them, or untick this.".into(),
            );
            return Err(form.errors);
        }
        Ok(PlanInput {
            slug,
            name,
            description,
            amount,
            currency,
            interval,
            trial_days,
            entitlements,
            feature_lines,
            // A ticked checkbox sends `on`; an unticked one sends nothing.
            highlighted: self.highlighted.trim() == "on",
            yearly_amount,
            trial_without_card,
            seats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> PlanDraft {
        PlanDraft {
            name: "Pro".into(),
            slug: "pro".into(),
            description: "For teams".into(),
            amount: "2500".into(),
            currency: "USD".into(),
            interval: "month".into(),
            trial_days: "14".into(),
            features: "agents:unlimited\nbyok, support:priority".into(),
            feature_lines: "Unlimited agents\n\n  Priority support  \n".into(),
            highlighted: "on".into(),
            yearly_amount: "25000".into(),
            trial_without_card: String::new(),
            ..PlanDraft::default()
        }
    }

    #[test]
    fn seats_are_a_range_or_nothing() {
        let seats = |min: &str, max: &str| {
            PlanDraft {
                seats_min: min.into(),
                seats_max: max.into(),
                ..draft()
            }
            .validate()
            .map(|i| i.seats)
        };
        assert_eq!(seats("", "").unwrap(), None);
        assert_eq!(seats("1", "50").unwrap(), Some((1, 50)));
        for (min, max) in [
            ("0", "5"),
            ("-1", "5"),
            ("5", "2"),
            ("1", "1"),
            ("1", ""),
            ("x", "5"),
            ("1", "99999"),
        ] {
            assert!(
                seats(min, max).unwrap_err().contains_key("seats_max"),
                "{min}..{max}"
            );
        }
    }

    #[test]
    fn a_trial_without_a_card_needs_trial_days() {
        let card_free = PlanDraft {
            trial_without_card: "on".into(),
            ..draft()
        };
        assert!(card_free.validate().unwrap().trial_without_card);
        let no_trial = PlanDraft {
            trial_days: "0".into(),
            ..card_free
        };
        assert!(
            no_trial
                .validate()
                .unwrap_err()
                .contains_key("trial_without_card")
        );
        assert!(!draft().validate().unwrap().trial_without_card);
    }

    #[test]
    fn a_good_draft_validates_and_normalises() {
        let input = draft().validate().unwrap();
        assert_eq!(input.currency, "usd");
        assert_eq!(
            input.entitlements,
            ["agents:unlimited", "byok", "support:priority"]
        );
        assert_eq!(
            input.feature_lines,
            ["Unlimited agents", "Priority support"]
        );
        assert!(input.highlighted);
        assert_eq!(input.yearly_amount, Some(25000));
        assert_eq!(input.trial_days, 14);
        let plain = PlanDraft {
            highlighted: String::new(),
            yearly_amount: " ".into(),
            ..draft()
        };
        let input = plain.validate().unwrap();
        assert!(!input.highlighted);
        assert_eq!(input.yearly_amount, None);
    }

    #[test]
    fn each_bad_field_gets_its_own_message() {
        let bad = PlanDraft {
            name: String::new(),
            slug: "Pro Plan".into(),
            amount: "25.00".into(),
            currency: "dollars".into(),
            interval: "week".into(),
            trial_days: "-1".into(),
            features: "bad key".into(),
            feature_lines: "x\n".repeat(MAX_FEATURE_LINES + 1),
            yearly_amount: "250.00".into(),
            ..draft()
        };
        let errors = bad.validate().unwrap_err();
        for field in [
            "name",
            "slug",
            "amount",
            "currency",
            "interval",
            "trial_days",
            "features",
            "feature_lines",
            "yearly_amount",
        ] {
            assert!(errors.contains_key(field), "{field}");
        }
        assert_eq!(
            errors["feature_lines"],
            "List at most 12 features, one per line."
        );
    }

    #[test]
    fn feature_lines_are_bounded_in_length_and_plain() {
        let long = PlanDraft {
            feature_lines: format!("Fine\n{}", "x".repeat(MAX_FEATURE_LINE_CHARS + 1)),
            ..draft()
        };
        assert_eq!(
            long.validate().unwrap_err()["feature_lines"],
            "Keep each feature to 80 characters or fewer (feature 2 is longer)."
        );
        let exactly = PlanDraft {
            feature_lines: "é".repeat(MAX_FEATURE_LINE_CHARS),
            ..draft()
        };
        assert!(exactly.validate().is_ok(), "characters, not bytes");
        let control = PlanDraft {
            feature_lines: "Bell\u{7} included".into(),
            ..draft()
        };
        assert!(
            control
                .validate()
                .unwrap_err()
                .contains_key("feature_lines")
        );
    }

    #[test]
    fn a_yearly_price_only_sits_beside_a_paid_monthly_price() {
        let yearly_plan = PlanDraft {
            interval: "year".into(),
            ..draft()
        };
        assert!(
            yearly_plan.validate().unwrap_err()["yearly_amount"].contains("billed yearly already")
        );
        let free = PlanDraft {
            amount: "0".into(),
            trial_days: "0".into(),
            ..draft()
        };
        assert!(free.validate().unwrap_err()["yearly_amount"].contains("free plan"));
        let zero = PlanDraft {
            yearly_amount: "0".into(),
            ..draft()
        };
        assert!(zero.validate().unwrap_err().contains_key("yearly_amount"));
    }

    #[test]
    fn a_free_plan_validates_without_a_trial() {
        let free = PlanDraft {
            amount: "0".into(),
            trial_days: "0".into(),
            yearly_amount: String::new(),
            ..draft()
        };
        assert_eq!(free.validate().unwrap().amount, 0);
        let with_trial = PlanDraft {
            trial_days: "14".into(),
            ..free
        };
        assert!(with_trial.validate().unwrap_err()["trial_days"].contains("free plan"));
    }

    /// Each parser's messages, exactly as the form shows them.
    fn message<T: std::fmt::Debug>(parsed: Parsed<T>) -> String {
        parsed.unwrap_err()
    }

    #[test]
    fn the_name_is_1_to_80_characters_trimmed() {
        assert_eq!(parse_name("  Pro  ").unwrap(), "Pro");
        assert!(parse_name(&"é".repeat(80)).is_ok(), "characters, not bytes");
        for bad in ["", "   ", &"x".repeat(81)] {
            assert_eq!(
                message(parse_name(bad)),
                "Give the plan a name of 1 to 80 characters."
            );
        }
    }

    #[test]
    fn the_slug_is_lowercased_and_dashes_only_inside() {
        assert_eq!(parse_slug(" Pro-Monthly ").unwrap(), "pro-monthly");
        assert_eq!(parse_slug("p2").unwrap(), "p2");
        for bad in [
            "p",
            "-pro",
            "pro-",
            "pro plan",
            "pro_plan",
            "prö",
            &"x".repeat(41),
        ] {
            assert_eq!(
                message(parse_slug(bad)),
                "Use 2 to 40 lowercase letters, digits and dashes, e.g. pro-monthly.",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_description_is_at_most_500_characters_as_typed() {
        assert_eq!(parse_description("  For teams \n").unwrap(), "For teams");
        assert!(parse_description(&"é".repeat(500)).is_ok());
        assert_eq!(
            message(parse_description(&format!("{} ", "x".repeat(500)))),
            "Keep the description under 500 characters."
        );
    }

    #[test]
    fn the_currency_is_a_three_letter_code() {
        assert_eq!(parse_currency(" EUR ").unwrap(), "eur");
        for bad in ["", "us", "dollars", "u$d", "us1"] {
            assert_eq!(
                message(parse_currency(bad)),
                "Use a three-letter ISO currency code, e.g. usd.",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_price_is_whole_minor_units_up_to_the_maximum() {
        assert_eq!(parse_amount(" 2500 ", Some("usd")).unwrap(), 2500);
        assert_eq!(parse_amount("0", Some("usd")).unwrap(), 0);
        assert_eq!(parse_amount("99999999", None).unwrap(), MAX_AMOUNT);
        for bad in ["", "25.00", "25 USD"] {
            assert_eq!(
                message(parse_amount(bad, Some("usd"))),
                "Enter the price as a whole number of minor units (cents), e.g. 2500 for $25.00.",
                "{bad}"
            );
        }
        assert_eq!(
            message(parse_amount("-1", Some("usd"))),
            "The price cannot be negative."
        );
        assert_eq!(
            message(parse_amount("100000000", Some("eur"))),
            "The price can be at most 99999999 minor units (€999999.99)."
        );
        assert_eq!(
            message(parse_amount("100000000", None)),
            "The price can be at most 99999999 minor units ($999999.99).",
            "in dollars when the currency is wrong too"
        );
    }

    #[test]
    fn the_interval_is_month_or_year() {
        assert_eq!(parse_interval(" month ").unwrap(), Interval::Month);
        assert_eq!(parse_interval("year").unwrap(), Interval::Year);
        for bad in ["", "week", "Month"] {
            assert_eq!(
                message(parse_interval(bad)),
                "Choose monthly or yearly billing."
            );
        }
    }

    #[test]
    fn trial_days_are_0_to_730_and_none_on_a_free_plan() {
        assert_eq!(parse_trial_days("", Some(2500)).unwrap(), 0);
        assert_eq!(parse_trial_days(" 730 ", Some(2500)).unwrap(), 730);
        assert_eq!(parse_trial_days("14", None).unwrap(), 14);
        assert_eq!(parse_trial_days("0", Some(0)).unwrap(), 0);
        for bad in ["731", "-1", "two weeks", "1.5"] {
            assert_eq!(
                message(parse_trial_days(bad, Some(2500))),
                "Trial days are a number from 0 to 730.",
                "{bad}"
            );
        }
        assert_eq!(
            message(parse_trial_days("14", Some(0))),
            "A free plan has no trial: set trial days to 0."
        );
        assert_eq!(
            message(parse_trial_days("731", Some(0))),
            "Trial days are a number from 0 to 730.",
            "the range first"
        );
    }

    #[test]
    fn entitlement_keys_are_lowercased_and_plain() {
        assert_eq!(
            parse_entitlements("Agents:Unlimited\n\nbyok, support.priority_1-a").unwrap(),
            ["agents:unlimited", "byok", "support.priority_1-a"]
        );
        assert!(parse_entitlements(" \n, ").unwrap().is_empty());
        assert!(parse_entitlements(&"k".repeat(64)).is_ok());
        for bad in ["bad key", "byok/all", &"k".repeat(65)] {
            assert_eq!(
                message(parse_entitlements(bad)),
                "Entitlement keys are letters, digits and - _ . : (one per line).",
                "{bad}"
            );
        }
    }

    #[test]
    fn feature_lines_have_their_three_messages() {
        assert_eq!(
            parse_feature_lines(" One \n\n Two ").unwrap(),
            ["One", "Two"]
        );
        assert_eq!(
            message(parse_feature_lines(&"x\n".repeat(MAX_FEATURE_LINES + 1))),
            "List at most 12 features, one per line."
        );
        assert_eq!(
            message(parse_feature_lines(&format!("Fine\n{}", "x".repeat(81)))),
            "Keep each feature to 80 characters or fewer (feature 2 is longer)."
        );
        assert_eq!(
            message(parse_feature_lines("Bell\u{7} included")),
            "Features are plain text, one per line."
        );
    }

    #[test]
    fn a_yearly_price_is_optional_and_only_beside_a_paid_monthly_price() {
        let monthly = Some(Interval::Month);
        assert_eq!(parse_yearly_amount(" ", Some(2500), monthly).unwrap(), None);
        assert_eq!(
            parse_yearly_amount("25000", Some(2500), monthly).unwrap(),
            Some(25000)
        );
        assert_eq!(
            parse_yearly_amount("25000", None, None).unwrap(),
            Some(25000),
            "judged alone when the rest is wrong"
        );
        for bad in ["0", "250.00", "-1", "100000000"] {
            assert_eq!(
                message(parse_yearly_amount(bad, Some(2500), monthly)),
                "Enter the yearly price in minor units, e.g. 25000 for $250.00, or leave it empty.",
                "{bad}"
            );
        }
        assert_eq!(
            message(parse_yearly_amount(
                "25000",
                Some(2500),
                Some(Interval::Year)
            )),
            "This plan is billed yearly already: leave the yearly price empty."
        );
        assert_eq!(
            message(parse_yearly_amount("25000", Some(0), monthly)),
            "A free plan has no yearly price: leave it empty."
        );
    }
}
