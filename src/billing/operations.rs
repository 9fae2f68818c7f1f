//! Operation ids: the random id each billing form carries, so that submitting it twice does the
//! work once. The first account to submit an id claims it; every Stripe `Idempotency-Key` of the
//! operation derives from the id *and* that account, so nobody else can replay or collide with
//! the owner's Stripe writes, and another account's submission of the id is refused outright.

use super::BillingError;
use crate::db::Db;
use crate::db::models::stripe_operation::{self, Claim};

/// A claimed operation: the only way to an idempotency key.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The user it belongs to; `None` for Tollgate itself (the offline demo's set-up).
    owner: Option<i64>,
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

/// Claims the operation `id` (already checked with [`super::valid_operation_id`]) for `owner`:
/// the first submission records it, the owner's repeats find it, anyone else is refused with
/// [`BillingError::OperationTaken`].
pub async fn claim(
    db: &Db,
    owner: Option<i64>,
    kind: &'static str,
    id: &str,
) -> Result<Operation, BillingError> {
    let key = id.to_owned();
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
        id: id.to_owned(),
        first_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_name_their_owner() {
        let op = |owner| Operation {
            owner,
            id: "AbCdEfGhIjKlMnOp".into(),
            first_time: true,
        };
        assert_eq!(
            op(Some(42)).idempotency_key("checkout"),
            "user-42-checkout-AbCdEfGhIjKlMnOp"
        );
        assert_ne!(
            op(Some(42)).idempotency_key("checkout"),
            op(Some(43)).idempotency_key("checkout")
        );
        assert_eq!(
            op(None).idempotency_key("plan-create"),
            "tollgate-plan-create-AbCdEfGhIjKlMnOp"
        );
    }
}
