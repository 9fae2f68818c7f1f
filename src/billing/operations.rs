//! Operation ids: the random id each billing form carries, so that submitting it twice does the
//! work once. The first account to submit an id claims it; every Stripe `Idempotency-Key` of the
//! operation derives from the id *and* that account, so nobody else can replay or collide with
//! the owner's Stripe writes, and another account's submission of the id is refused outright.

use super::BillingError;
use crate::accounts::UserId;
use crate::db::Db;
use crate::db::models::stripe_operation::{self, Claim};

/// A form's operation id, of the shape [`OperationId::generate`] makes (16 to 64 letters,
/// digits, `-` and `_`). Forms deserialise it, so a form whose id is missing or malformed is
/// refused as incomplete before its handler runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct OperationId(String);

/// An operation id that is not of the shape Tollgate makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an operation id")]
pub struct InvalidOperationId;

impl OperationId {
    /// A new random id for a form.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let bytes = crate::secret::random_bytes::<16>()?;
        Ok(Self(crate::secret::encode_token(&bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperationId {
    type Error = InvalidOperationId;

    fn try_from(id: String) -> Result<Self, InvalidOperationId> {
        let shaped = (16..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        shaped.then_some(Self(id)).ok_or(InvalidOperationId)
    }
}

/// A claimed operation: the only way to an idempotency key.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The user it belongs to; `None` for Tollgate itself (the offline demo's set-up).
    owner: Option<UserId>,
    id: String,
    /// Whether this submission claimed the id (`false`: the owner submitting it again).
    pub first_time: bool,
}

impl Operation {
    /// The `Idempotency-Key` of one Stripe write (`step`) of this operation, bound to its owner.
    pub fn idempotency_key(&self, step: &str) -> String {
        match self.owner {
            Some(user) => format!("user-{user}-{step}-{}", self.id),
            None => format!("tollgate-{step}-{}", self.id),
        }
    }
}

/// Claims the operation `id` for `owner`: the first submission records it, the owner's repeats
/// find it, anyone else is refused with [`BillingError::OperationTaken`].
pub async fn claim(
    db: &Db,
    owner: Option<UserId>,
    kind: &'static str,
    id: &OperationId,
) -> Result<Operation, BillingError> {
    let key = id.0.clone();
    let claimed = db
        .run(move |conn| stripe_operation::claim(conn, &key, owner, kind))
        .await?;
    let first_time = match claimed {
        Claim::First => true,
        Claim::Repeat => false,
        Claim::Foreign => return Err(BillingError::OperationTaken),
    };
    Ok(Operation {
        owner,
        id: id.0.clone(),
        first_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_have_the_generated_shape() {
        let generated = OperationId::generate().unwrap();
        assert!(OperationId::try_from(generated.as_str().to_owned()).is_ok());
        for bad in [
            "",
            "short",
            "has space in it ok",
            "<script>alert(1)</script>",
            &"a".repeat(65),
        ] {
            assert_eq!(
                OperationId::try_from(bad.to_owned()),
                Err(InvalidOperationId),
                "{bad}"
            );
        }
        assert!(OperationId::try_from("a".repeat(16)).is_ok());
        assert!(OperationId::try_from("a-b_c".repeat(12)).is_ok());
    }

    #[test]
    fn idempotency_keys_name_their_owner() {
        let op = |owner| Operation {
            owner,
            id: "AbCdEfGhIjKlMnOp".into(),
            first_time: true,
        };
        assert_eq!(
            op(Some(UserId::from(42))).idempotency_key("checkout"),
            "user-42-checkout-AbCdEfGhIjKlMnOp"
        );
        assert_ne!(
            op(Some(UserId::from(42))).idempotency_key("checkout"),
            op(Some(UserId::from(43))).idempotency_key("checkout")
        );
        assert_eq!(
            op(None).idempotency_key("plan-create"),
            "tollgate-plan-create-AbCdEfGhIjKlMnOp"
        );
    }
}
