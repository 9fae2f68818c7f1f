//! The card on file, as Stripe shows it: brand, last 4 digits and expiry, never more. Kept from
//! Stripe's `payment_method.*` events (which carry the card), sealed with AAD bound to the user
//! (seed 000 lists the card's last 4 among the encrypted fields); an older event never
//! overwrites a newer card.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::accounts::UserId;
use crate::crypto::rotation::SealedColumn;
use crate::crypto::{Aad, CryptoError, Keyring};
use crate::db::models::payment_card::{self, PaymentCardRow};
use crate::db::{Db, DbConnection, DbError};

pub fn card_aad(user_id: UserId) -> Aad {
    Aad::new("payment_cards", "card_sealed", format!("user:{user_id}"))
}

/// `payment_cards.card_sealed` as `rotate-key` re-seals it.
pub const SEALED_CARDS: SealedColumn<PaymentCardRow> = SealedColumn {
    name: "payment_cards.card_sealed",
    not_under_key: payment_card::not_under_key,
    id: |row| row.user_id.get(),
    sealed: |row| &row.card_sealed,
    aad: |row| Ok(card_aad(row.user_id)),
    replace: payment_card::replace_sealed,
    count_by_key_id: payment_card::count_by_key_id,
};

/// What is kept of a card: Stripe's own masked fields, and the payment method's id (to tell
/// which card a `payment_method.detached` removes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub payment_method: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
}

impl Card {
    /// Reads a PaymentMethod's card from its `id` and its `card` object; `None` when it is not a
    /// well-formed card.
    pub fn from_payment_method(id: &str, card: &Map<String, Value>) -> Option<Self> {
        let brand = card.get("brand")?.as_str()?;
        let last4 = card.get("last4")?.as_str()?;
        let exp_month = u32::try_from(card.get("exp_month")?.as_u64()?).ok()?;
        let exp_year = i32::try_from(card.get("exp_year")?.as_i64()?).ok()?;
        let plausible = id.starts_with("pm_")
            && id.len() <= 255
            && brand.len() <= 32
            && brand.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && last4.len() == 4
            && last4.chars().all(|c| c.is_ascii_digit())
            && (1..=12).contains(&exp_month)
            && (2000..=2200).contains(&exp_year);
        plausible.then(|| Self {
            payment_method: id.to_owned(),
            brand: brand.to_owned(),
            last4: last4.to_owned(),
            exp_month,
            exp_year,
        })
    }

    /// The brand as people write it ("Visa", "Mastercard", …).
    pub fn brand_name(&self) -> String {
        match self.brand.as_str() {
            "visa" => "Visa".into(),
            "mastercard" => "Mastercard".into(),
            "amex" => "American Express".into(),
            "discover" => "Discover".into(),
            "diners" => "Diners Club".into(),
            "jcb" => "JCB".into(),
            "unionpay" => "UnionPay".into(),
            other => {
                let mut chars = other.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
        }
    }

    /// `MM/YYYY`.
    pub fn expiry(&self) -> String {
        format!("{:02}/{}", self.exp_month, self.exp_year)
    }
}

/// Stores `card` for `user_id` as of `as_of` (unless a newer card is stored).
pub fn store(
    conn: &mut DbConnection,
    keyring: &Keyring,
    user_id: UserId,
    card: &Card,
    as_of: NaiveDateTime,
) -> Result<bool, StoreError> {
    let plain = serde_json::to_vec(card).map_err(|_| StoreError::Encoding)?;
    let sealed = keyring.seal(&plain, &card_aad(user_id))?;
    let key_id = keyring.primary_id().to_string();
    Ok(payment_card::upsert_if_newer(
        conn, user_id, &sealed, &key_id, as_of,
    )?)
}

/// Forgets the card `payment_method` (detached at Stripe as of `as_of`) if it is the one on
/// file and nothing newer is stored.
pub fn forget(
    conn: &mut DbConnection,
    keyring: &Keyring,
    user_id: UserId,
    payment_method: &str,
    as_of: NaiveDateTime,
) -> Result<bool, StoreError> {
    let Some(row) = payment_card::for_user(conn, user_id)? else {
        return Ok(false);
    };
    // A row that cannot be opened is reported as unreadable (kept for reprocessing), not
    // retried as if the failure could pass.
    let card = open(keyring, &row).map_err(|err| match err {
        StoreError::Crypto(_) => StoreError::Encoding,
        other => other,
    })?;
    if card.payment_method != payment_method {
        return Ok(false);
    }
    Ok(payment_card::remove_if_not_newer(conn, user_id, as_of)?)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the stored card is not readable")]
    Encoding,
}

fn open(keyring: &Keyring, row: &PaymentCardRow) -> Result<Card, StoreError> {
    let plain = keyring.open(&row.card_sealed, &card_aad(row.user_id))?;
    serde_json::from_slice(&plain).map_err(|_| StoreError::Encoding)
}

/// The user's card on file, opened; `None` when there is none (or it cannot be opened, which
/// is logged: the page then offers to add one rather than failing).
pub async fn on_file(db: &Db, keyring: &Keyring, user_id: UserId) -> Result<Option<Card>, DbError> {
    let row = db
        .run(move |conn| payment_card::for_user(conn, user_id))
        .await?;
    Ok(row.and_then(|row| match open(keyring, &row) {
        Ok(card) => Some(card),
        Err(err) => {
            tracing::error!(error = %err, user_id = %user_id, "the card on file cannot be opened");
            None
        }
    }))
}
