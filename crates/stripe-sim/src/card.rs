//! The hosted checkout's card form: what a person typed, checked the way Stripe's card field
//! checks it (with Stripe's messages), and what each test card number does when charged.
//!
//! A checked [`Card`] keeps the full number only to pick the test card's outcome; nothing
//! prints it (no `Debug`), and only the brand, last four digits and expiry are stored.

/// The card fields as posted (any of them possibly empty).
pub struct CardForm<'a> {
    pub number: &'a str,
    pub expiry: &'a str,
    pub cvc: &'a str,
    pub name: &'a str,
}

/// A card whose fields are complete and plausible.
pub struct Card {
    digits: String,
    pub brand: Brand,
    pub exp_month: u32,
    pub exp_year: i32,
    pub name: String,
}

impl Card {
    pub fn last4(&self) -> &str {
        &self.digits[self.digits.len().saturating_sub(4)..]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Unknown,
}

impl Brand {
    fn of(digits: &str) -> Self {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        match (prefix(1), prefix(2), prefix(4)) {
            (Some(4), _, _) => Self::Visa,
            (_, Some(34 | 37), _) => Self::Amex,
            (_, Some(51..=55), _) | (_, _, Some(2221..=2720)) => Self::Mastercard,
            (_, Some(65), _) | (_, _, Some(6011)) => Self::Discover,
            _ => Self::Unknown,
        }
    }

    /// As Stripe names it in `card.brand`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Unknown => "unknown",
        }
    }

    /// As a person reads it: "Visa •••• 4242".
    pub fn label(brand: &str) -> &'static str {
        match brand {
            "visa" => "Visa",
            "mastercard" => "Mastercard",
            "amex" => "American Express",
            "discover" => "Discover",
            _ => "Card",
        }
    }

    fn number_length(self) -> usize {
        match self {
            Self::Amex => 15,
            _ => 16,
        }
    }

    fn cvc_length(self) -> usize {
        match self {
            Self::Amex => 4,
            _ => 3,
        }
    }
}

/// What is wrong with each field, in Stripe's words.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CardErrors {
    pub number: Option<&'static str>,
    pub expiry: Option<&'static str>,
    pub cvc: Option<&'static str>,
    pub name: Option<&'static str>,
}

pub const NUMBER_INCOMPLETE: &str = "Your card number is incomplete.";
pub const NUMBER_INVALID: &str = "Your card number is invalid.";
pub const EXPIRY_INCOMPLETE: &str = "Your card's expiration date is incomplete.";
pub const EXPIRY_INVALID: &str = "Your card's expiration date is invalid.";
pub const EXPIRY_PAST: &str = "Your card's expiration date is in the past.";
pub const CVC_INCOMPLETE: &str = "Your card's security code is incomplete.";
pub const CVC_INVALID: &str = "Your card's security code is invalid.";
pub const NAME_MISSING: &str = "Enter the name on your card.";
pub const NAME_TOO_LONG: &str = "The name on your card is too long.";

/// Checks the form; `today` is (year, month), the month a card may still expire in.
pub fn check(form: &CardForm<'_>, today: (i32, u32)) -> Result<Card, CardErrors> {
    let mut errors = CardErrors::default();
    let number = check_number(form.number).map_err(|e| errors.number = Some(e));
    let brand = number.as_ref().map_or(Brand::Visa, |d| Brand::of(d));
    let expiry = check_expiry(form.expiry, today).map_err(|e| errors.expiry = Some(e));
    let cvc = check_cvc(form.cvc, brand).map_err(|e| errors.cvc = Some(e));
    let name = form.name.trim();
    if name.is_empty() {
        errors.name = Some(NAME_MISSING);
    } else if name.chars().count() > 100 {
        errors.name = Some(NAME_TOO_LONG);
    }
    match (number, expiry, cvc) {
        (Ok(digits), Ok((exp_month, exp_year)), Ok(())) if errors.name.is_none() => Ok(Card {
            digits,
            brand,
            exp_month,
            exp_year,
            name: name.to_owned(),
        }),
        _ => Err(errors),
    }
}

fn check_number(raw: &str) -> Result<String, &'static str> {
    if raw.len() > 32
        || raw
            .chars()
            .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return Err(NUMBER_INVALID);
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let wanted = Brand::of(&digits).number_length();
    if digits.len() < wanted {
        return Err(NUMBER_INCOMPLETE);
    }
    if digits.len() > wanted || !luhn(&digits) {
        return Err(NUMBER_INVALID);
    }
    Ok(digits)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// "MM / YY", "MM/YY", "MMYY" or with a four-digit year.
fn check_expiry(raw: &str, (year, month): (i32, u32)) -> Result<(u32, i32), &'static str> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() > 7 || compact.chars().any(|c| !(c.is_ascii_digit() || c == '/')) {
        return Err(EXPIRY_INVALID);
    }
    let (mm, yy) = match compact.split_once('/') {
        Some((mm, yy)) => (mm.to_owned(), yy.to_owned()),
        None if compact.len() >= 4 => (compact[..2].to_owned(), compact[2..].to_owned()),
        None => return Err(EXPIRY_INCOMPLETE),
    };
    if mm.is_empty() || !(yy.len() == 2 || yy.len() == 4) {
        return Err(EXPIRY_INCOMPLETE);
    }
    let exp_month: u32 = mm.parse().map_err(|_| EXPIRY_INVALID)?;
    let mut exp_year: i32 = yy.parse().map_err(|_| EXPIRY_INVALID)?;
    if yy.len() == 2 {
        exp_year += 2000;
    }
    if !(1..=12).contains(&exp_month) || mm.len() > 2 {
        return Err(EXPIRY_INVALID);
    }
    if (exp_year, exp_month) < (year, month) {
        return Err(EXPIRY_PAST);
    }
    if exp_year > year + 50 {
        return Err(EXPIRY_INVALID);
    }
    Ok((exp_month, exp_year))
}

fn check_cvc(raw: &str, brand: Brand) -> Result<(), &'static str> {
    let cvc = raw.trim();
    if cvc.chars().any(|c| !c.is_ascii_digit()) {
        return Err(CVC_INVALID);
    }
    match cvc.len().cmp(&brand.cvc_length()) {
        std::cmp::Ordering::Less => Err(CVC_INCOMPLETE),
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(CVC_INVALID),
    }
}

/// What charging a card does in test mode.
#[derive(Debug, PartialEq, Eq)]
pub enum Charge {
    Succeeds,
    /// Stripe's decline message.
    Declined(&'static str),
}

pub const DECLINED: &str = "Your card was declined.";
pub const INSUFFICIENT_FUNDS: &str = "Your card has insufficient funds.";
pub const NOT_A_TEST_CARD: &str = "Your card was declined. Your request was in test mode, but used a \
non test card. Use a test card: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined.";

/// Stripe's test cards: these succeed or decline as documented; any other number is a real
/// card, which test mode declines.
pub fn charge(card: &Card) -> Charge {
    match card.digits.as_str() {
        "4242424242424242" | "5555555555554444" | "378282246310005" => Charge::Succeeds,
        "4000000000000002" => Charge::Declined(DECLINED),
        "4000000000009995" => Charge::Declined(INSUFFICIENT_FUNDS),
        _ => Charge::Declined(NOT_A_TEST_CARD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (i32, u32) = (2026, 12);

    fn form<'a>(number: &'a str, expiry: &'a str, cvc: &'a str) -> CardForm<'a> {
        CardForm {
            number,
            expiry,
            cvc,
            name: "Ada Lovelace",
        }
    }

    #[test]
    fn a_complete_test_card_passes_in_any_common_spelling() {
        for expiry in ["12 / 34", "12/34", "1234", "12/2034", "12 / 26"] {
            let card = check(&form("4242 4242 4242 4242", expiry, "123"), TODAY)
                .unwrap_or_else(|e| panic!("{expiry}: {e:?}"));
            assert_eq!((card.brand, card.last4()), (Brand::Visa, "4242"));
            assert_eq!(charge(&card), Charge::Succeeds);
        }
        let amex = check(&form("3782-822463-10005", "01/30", "1234"), TODAY).unwrap();
        assert_eq!((amex.brand, amex.last4()), (Brand::Amex, "0005"));
    }

    #[test]
    fn each_field_gets_stripes_message() {
        let errors = check(
            &CardForm {
                number: "4242 4242",
                expiry: "11 / 26",
                cvc: "12",
                name: " ",
            },
            TODAY,
        )
        .err()
        .unwrap();
        assert_eq!(
            errors,
            CardErrors {
                number: Some(NUMBER_INCOMPLETE),
                expiry: Some(EXPIRY_PAST),
                cvc: Some(CVC_INCOMPLETE),
                name: Some(NAME_MISSING),
            }
        );
        let invalid = |n: &str, e: &str, c: &str| check(&form(n, e, c), TODAY).err().unwrap();
        assert_eq!(
            invalid("4242 4242 4242 4241", "12/34", "123").number,
            Some(NUMBER_INVALID)
        );
        assert_eq!(
            invalid("4242 4242 4242 424x", "12/34", "123").number,
            Some(NUMBER_INVALID)
        );
        assert_eq!(
            invalid("4242424242424242", "", "123").expiry,
            Some(EXPIRY_INCOMPLETE)
        );
        assert_eq!(
            invalid("4242424242424242", "12 / 3", "123").expiry,
            Some(EXPIRY_INCOMPLETE)
        );
        assert_eq!(
            invalid("4242424242424242", "13/30", "123").expiry,
            Some(EXPIRY_INVALID)
        );
        assert_eq!(
            invalid("4242424242424242", "12/34", "12a").cvc,
            Some(CVC_INVALID)
        );
    }

    #[test]
    fn the_decline_cards_decline_and_real_cards_are_refused() {
        let declined = check(&form("4000 0000 0000 0002", "12/34", "123"), TODAY).unwrap();
        assert_eq!(charge(&declined), Charge::Declined(DECLINED));
        let real = check(&form("4111 1111 1111 1111", "12/34", "123"), TODAY).unwrap();
        assert_eq!(charge(&real), Charge::Declined(NOT_A_TEST_CARD));
    }
}
