//! The Stripe Billing Portal: where a customer manages the subscription they have (card,
//! invoices, plan switches, cancellation).

use stripe_billing::billing_portal_session::CreateBillingPortalSession;

use super::{Billing, BillingError, Operation, OperationClass, customers};
use crate::accounts::UserId;
use crate::stripe_id::CustomerId;

/// A portal session for `customer`, returning to the account page; its address.
pub async fn session_url(
    billing: Billing<'_>,
    user_id: UserId,
    operation: &Operation,
    customer: &CustomerId,
) -> Result<String, BillingError> {
    let return_url = format!("{}/account", billing.public_url);
    let key = operation.idempotency_key("portal");
    let session = billing
        .gateway
        .call(OperationClass::Default, user_id, Some(&key), || {
            CreateBillingPortalSession::new()
                .customer(customer.expose())
                .return_url(return_url.clone())
        })
        .await?;
    Ok(session.url)
}

/// The portal for the user's Stripe customer; `None` when they have none yet (they have never
/// chosen a plan).
pub async fn open(
    billing: Billing<'_>,
    user_id: UserId,
    operation: &Operation,
) -> Result<Option<String>, BillingError> {
    let Some(customer) = customers::customer_id(billing.db, billing.keyring, user_id).await? else {
        return Ok(None);
    };
    session_url(billing, user_id, operation, &customer)
        .await
        .map(Some)
}
