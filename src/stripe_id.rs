//! Stripe object ids (`cus_…`, `sub_…`, `in_…`) as types that mask themselves.
//!
//! An id is not a secret, but it names a customer's billing records at Stripe: pages, audit rows
//! and logs show it masked. `Display` and `Debug` print only the id's kind and its last three
//! characters (`cus_…cG1`), so an id can go into a `format!`, a `json!` detail or a `tracing`
//! field as it is, and no call site masks by hand. The raw id takes an explicit, greppable
//! [`StripeId::expose`]: for calls to Stripe, sealing and the blind index.
//!
//! The kind parameter keeps a customer id from being passed where a subscription id is meant.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// The kinds of Stripe object Tollgate names by id.
pub mod kind {
    #[derive(Debug)]
    pub enum Customer {}
    #[derive(Debug)]
    pub enum Subscription {}
    #[derive(Debug)]
    pub enum Invoice {}
    #[derive(Debug)]
    pub enum Dispute {}
    #[derive(Debug)]
    pub enum PaymentIntent {}
}

pub type CustomerId = StripeId<kind::Customer>;
pub type SubscriptionId = StripeId<kind::Subscription>;
pub type InvoiceId = StripeId<kind::Invoice>;
pub type DisputeId = StripeId<kind::Dispute>;
pub type PaymentIntentId = StripeId<kind::PaymentIntent>;

/// The id Stripe gave an object of kind `K`, as Stripe sent it. Stored as its raw text
/// (`db::text`).
#[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub struct StripeId<K> {
    raw: String,
    // `fn() -> K`: the id owns no `K` (and is `Send`/`Sync` whatever `K` is).
    kind: PhantomData<fn() -> K>,
}

impl<K> StripeId<K> {
    /// Stripe's own id, unchanged: Stripe decides the shape of its ids, and what Tollgate does
    /// with one (look it up, send it back to Stripe) works for any text.
    pub fn new(raw: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            kind: PhantomData,
        }
    }

    /// The raw id, for Stripe calls, sealing and the blind index; never for display.
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

/// The kind prefix Stripe puts on its ids (`cus_`, `in_`, `cs_` of `cs_test_…`): a few lowercase
/// letters and an underscore. Anything else has no prefix worth showing.
fn kind_prefix(id: &str) -> &str {
    match id.split_once('_') {
        Some((letters, _))
            if (1..=10).contains(&letters.len())
                && letters.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            &id[..=letters.len()]
        }
        _ => "",
    }
}

/// `cus_…cG1`: the id's kind prefix and its last three characters. An id barely longer than
/// its prefix shows the prefix alone (three characters would give too much of it away).
fn masked(id: &str) -> String {
    let id = id.trim();
    let prefix = kind_prefix(id);
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < prefix.len() + 12 {
        return format!("{prefix}…");
    }
    let last3: String = chars[chars.len() - 3..].iter().collect();
    format!("{prefix}…{last3}")
}

impl<K> fmt::Display for StripeId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&masked(&self.raw))
    }
}

impl<K> fmt::Debug for StripeId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&masked(&self.raw))
    }
}

// By hand: derived impls would require `K: Clone` (etc.) of the uninhabited kinds.
impl<K> Clone for StripeId<K> {
    fn clone(&self) -> Self {
        Self::new(self.raw.clone())
    }
}

impl<K> PartialEq for StripeId<K> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<K> Eq for StripeId<K> {}

impl<K> Hash for StripeId<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_their_kind_and_last_three_characters_only() {
        let customer = CustomerId::new("cus_FixtureCustomer01");
        assert_eq!(customer.to_string(), "cus_…r01");
        assert_eq!(format!("{customer:?}"), "cus_…r01");
        assert_eq!(
            SubscriptionId::new("sub_1FixtureSubscription").to_string(),
            "sub_…ion"
        );
        assert_eq!(
            InvoiceId::new("in_1FixtureInvoice01").to_string(),
            "in_…e01"
        );
        assert_eq!(DisputeId::new("dp_1FixtureDispute").to_string(), "dp_…ute");
        assert_eq!(
            PaymentIntentId::new("pi_3FixturePaymentIntent").to_string(),
            "pi_…ent"
        );
        assert_eq!(
            StripeId::<kind::Customer>::new("cs_test_a1B2c3D4e5F6g7").to_string(),
            "cs_…6g7"
        );
    }

    #[test]
    fn short_or_odd_ids_give_away_no_more() {
        // Twelve characters past the prefix are needed before the last three are shown.
        assert_eq!(CustomerId::new("cus_DUMMYpepper3").to_string(), "cus_…er3");
        assert_eq!(CustomerId::new("cus_DUMMYpepper").to_string(), "cus_…");
        assert_eq!(CustomerId::new("cus_").to_string(), "cus_…");
        assert_eq!(CustomerId::new("").to_string(), "…");
        assert_eq!(CustomerId::new("abcdefghijklmnopqrstu").to_string(), "…stu");
        // Not a kind prefix: upper case, or too long.
        assert_eq!(CustomerId::new("CUS_abcdefghijklmnop").to_string(), "…nop");
        assert_eq!(
            CustomerId::new("averyverylongword_abcdefghijklmnop").to_string(),
            "…nop"
        );
        assert_eq!(
            CustomerId::new("cus_ünïcödéüñïcödé").to_string(),
            "cus_…ödé"
        );
    }

    #[test]
    fn the_raw_id_is_only_what_expose_returns() {
        let id = CustomerId::new("cus_FixtureCustomer01");
        assert_eq!(id.expose(), "cus_FixtureCustomer01");
        let shown = format!("{id} {id:?} {:?}", Some(&id));
        assert!(!shown.contains("Fixture"), "{shown}");
        assert_eq!(id, CustomerId::new("cus_FixtureCustomer01"));
        assert_ne!(id, CustomerId::new("cus_FixtureCustomer02"));
    }
}
