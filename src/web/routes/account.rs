//! `/account`: the signed-in customer's account page (profile and subscription); the area's
//! route table (its keys are [`super::byok`]'s).

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::billing::{self, subscriptions};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::pages::{PageContext, datetime, render};
use crate::web::session::{CurrentUser, TypedSession};

struct SubscriptionPanel {
    plan: String,
    status: String,
    live: bool,
    cancel_at_period_end: bool,
    period_end: Option<String>,
    trial_end: Option<String>,
}

#[derive(Template)]
#[template(path = "account/index.html")]
struct AccountPage {
    ctx: PageContext,
    email: String,
    role: &'static str,
    member_since: String,
    last_login: Option<String>,
    subscription: Option<SubscriptionPanel>,
    operation_id: String,
    /// The discount on the subscription (a promotion code redeemed at Checkout).
    discount: Option<billing::promotions::DiscountSummary>,
}

pub async fn show(
    state: web::Data<AppState>,
    session: TypedSession,
    user: CurrentUser,
) -> Result<HttpResponse, AppError> {
    let user = user.0;
    let current = subscriptions::current(&state.db, user.id).await?;
    let discount = match &current {
        Some(s) => {
            let id = s.stripe_id.expose().to_owned();
            billing::promotions::current_discount(&state.db, id).await?
        }
        None => None,
    };
    let subscription = current.map(|s| SubscriptionPanel {
        plan: s
            .plan
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "Unknown plan".into()),
        live: s.is_live(),
        cancel_at_period_end: s.cancel_at_period_end,
        period_end: s.current_period_end.as_ref().map(datetime),
        trial_end: s.trial_end.as_ref().map(datetime),
        status: s.status.to_string(),
    });
    render(&AccountPage {
        ctx: PageContext::new(&session, Some(&user))?,
        role: user.role.as_str(),
        member_since: datetime(&user.created_at),
        last_login: user.last_login_at.as_ref().map(datetime),
        email: user.email,
        subscription,
        operation_id: billing::new_operation_id().map_err(AppError::internal)?,
        discount,
    })
}

/// The account's routes, relative to `/account` (the keys are [`super::byok`]'s).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::byok;
    cfg.service(web::resource("").route(web::get().to(show)))
        .service(
            web::resource("/2fa")
                .route(web::get().to(super::two_factor::enrolment))
                .route(web::post().to(super::two_factor::confirm)),
        )
        .service(
            web::resource("/keys")
                .route(web::get().to(byok::list))
                .route(web::post().to(byok::save)),
        )
        .service(
            web::resource("/keys/{provider}/delete")
                .route(web::get().to(byok::confirm_delete))
                .route(web::post().to(byok::delete)),
        );
}
