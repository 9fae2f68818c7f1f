//! `/admin/…`: the admin console, one module per page family. Every route is declared below,
//! once, with the access it needs ([`Access`](crate::web::console::Access)): `Read` pages are
//! open to support and admin accounts, `Manage` routes to admins only; customers get 403,
//! anonymous visitors the sign-in page. A new page is one line here.

pub mod audit_log;
pub mod cancellations;
pub mod coupons;
pub mod customers;
pub mod drift;
pub mod endpoints;
pub mod notifications;
pub mod overview;
pub mod plan_grace;
pub mod plan_meters;
pub mod plans;
pub mod security;
pub mod tokens;
pub mod usage;
pub mod webhooks;

crate::console_routes! {
    "" => { GET Read security::dashboard },
    "/plans" => { GET Manage plans::list, POST Manage plans::create },
    "/plans/new" => { GET Manage plans::new_form },
    "/plans/{id}" => { POST Manage plans::update },
    "/plans/{id}/edit" => { GET Manage plans::edit_form },
    "/plans/{id}/archive" => { GET Manage plans::confirm_archive, POST Manage plans::archive },
    "/customers" => { GET Read customers::list },
    // The product's own services' webhook endpoints: support sees them (never a secret).
    "/endpoints" => { GET Read endpoints::list, POST Manage endpoints::create },
    "/endpoints/{id}" => { GET Read endpoints::show },
    "/endpoints/{id}/enable" => { POST Manage endpoints::enable },
    "/endpoints/{id}/disable" => { POST Manage endpoints::disable },
    "/endpoints/{id}/rotate" => { GET Manage endpoints::confirm_rotate, POST Manage endpoints::rotate },
    "/endpoints/{id}/delete" => { GET Manage endpoints::confirm_delete, POST Manage endpoints::delete },
    "/security" => { GET Read audit_log::list },
    // The whole log leaving in one file: admins only.
    "/security/export" => { GET Manage audit_log::export },
    "/security/overview" => { GET Read overview::show },
    "/tokens" => { GET Manage tokens::list },
    "/tokens/{id}/revoke" => { GET Manage tokens::confirm_revoke, POST Manage tokens::revoke },
    "/webhooks" => { GET Read webhooks::list },
    // The detail page shows the decrypted (masked) payload: admins only.
    "/webhooks/{id}" => { GET Manage webhooks::show },
    "/webhooks/{id}/reprocess" => { POST Manage webhooks::reprocess },
    "/notifications" => { GET Read notifications::list },
    "/notifications/{id}/redeliver" => { POST Manage notifications::redeliver },
    // Reconciliation: both read Stripe (rate limited by the gateway's throttle): admins only.
    "/customers/{id}/resync" => { POST Manage drift::resync },
    "/drift" => { GET Manage drift::show },
    "/plans/{id}/grace" => { GET Manage plan_grace::form, POST Manage plan_grace::save },
    "/plans/{id}/meters" => { GET Manage plan_meters::list, POST Manage plan_meters::save },
    "/plans/{id}/meters/remove" => { POST Manage plan_meters::remove },
    "/cancellations" => { GET Read cancellations::list },
    // Coupons and promotion codes: support sees them; admins create and deactivate.
    "/coupons" => { GET Read coupons::list, POST Manage coupons::create_coupon },
    "/coupons/new" => { GET Manage coupons::new_coupon },
    "/promotion-codes" => { POST Manage coupons::create_code },
    "/promotion-codes/new" => { GET Manage coupons::new_code },
    "/promotion-codes/deactivate" => { POST Manage coupons::deactivate_code },
    // Usage (issue 16): support reads a customer's usage page; the records leave as a file
    // only for admins, who alone set a plan's spend cap.
    "/customers/{id}/usage" => { GET Read usage::show },
    "/customers/{id}/usage.csv" => { GET Manage usage::export },
    "/plans/{id}/spend-cap" => { GET Manage usage::cap_form, POST Manage usage::save_cap },
}
