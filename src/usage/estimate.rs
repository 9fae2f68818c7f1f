//! The bill so far: Stripe's invoice preview of the subscription's upcoming invoice (its base
//! price and the metered usage Stripe has received this period).

use stripe_billing::invoice::CreatePreviewInvoice;

use crate::accounts::UserId;
use crate::billing::gateway::OperationClass;
use crate::billing::{Billing, BillingError, customers, plan_changes};

/// Stripe's estimate of the next invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Minor units of `currency`.
    pub total: i64,
    pub currency: String,
}

#[derive(miniserde::Deserialize)]
struct PreviewTotal {
    total: i64,
    currency: String,
}

/// Stripe's preview of `subscription`'s upcoming invoice for `user_id`. Holds no database
/// connection while Stripe answers (the customer id is read, and released, first).
pub async fn preview(
    billing: Billing<'_>,
    user_id: UserId,
    subscription: &str,
) -> Result<Estimate, BillingError> {
    let customer = customers::customer_id(billing.db, billing.keyring, user_id)
        .await?
        .ok_or_else(|| BillingError::Unexpected("no Stripe customer".into()))?;
    let preview: PreviewTotal = billing
        .gateway
        .call(OperationClass::Default, user_id, None, || {
            plan_changes::partial(
                CreatePreviewInvoice::new()
                    .customer(customer.expose())
                    .subscription(subscription),
            )
        })
        .await?;
    Ok(Estimate {
        total: preview.total,
        currency: preview.currency,
    })
}
