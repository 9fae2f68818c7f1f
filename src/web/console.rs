//! Who may open which console page. Every `/admin` route is declared once, with the access it
//! needs, in the [`console_routes!`] table of `routes::admin`: the table both registers the
//! route (wrapped in [`require`]) and lists it in `ROUTES`, which the tests walk as every role.
//! A route cannot be registered without an [`Access`].
//!
//! - [`Access::Read`]: support and admin accounts (read-only pages that decrypt nothing).
//! - [`Access::Manage`]: admin accounts only (changes, exports, decrypted payloads, tokens).
//!
//! Customers get 403, anonymous visitors the sign-in page. With `ADMIN_REQUIRE_2FA=true` a
//! console account that has not enrolled two-factor sign-in is sent to enrolment first.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, ResponseError as _, web};
use futures_util::future::LocalBoxFuture;

use crate::accounts::{Role, User, two_factor};
use crate::error::AppError;
use crate::web::AppState;
use crate::web::session::signed_in_user;

/// What a console route needs of the signed-in account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Support or admin: pages that show and change nothing.
    Read,
    /// Admin only.
    Manage,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Self::Read => role.is_console(),
            Self::Manage => role == Role::Admin,
        }
    }
}

/// One console route as declared: its method, its path under `/admin` and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleRoute {
    pub method: &'static str,
    /// Relative to `/admin` (`""` is `/admin` itself); `{id}` marks a path parameter.
    pub path: &'static str,
    pub access: Access,
}

/// Where a console account without two-factor sign-in goes when `ADMIN_REQUIRE_2FA` is on.
pub const ENROLMENT_PATH: &str = "/account/2fa";

/// The access `method` needs on a resource declared with `needs` (an undeclared method needs
/// the most: it answers 405 to admins and 403 to everyone else).
fn needed(needs: &[(&str, Access)], method: &Method) -> Access {
    needs
        .iter()
        .find(|(declared, _)| *declared == method.as_str())
        .map_or(Access::Manage, |(_, access)| *access)
}

/// The guard every console resource is wrapped in (see [`console_routes!`]).
pub async fn require(
    needs: &'static [(&'static str, Access)],
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let access = needed(needs, req.method());
    // Refusals are answered here, as responses (the error pages middleware renders them, and
    // the request's span records them like any handler's answer).
    let refuse = |req: ServiceRequest, err: AppError| Ok(req.into_response(err.error_response()));
    let user = match signed_in_user(req.request().clone()).await {
        Ok(user) => user,
        Err(err) => return refuse(req, err),
    };
    if !access.allows(user.role) {
        return refuse(req, AppError::Forbidden);
    }
    if let Some(state) = req.app_data::<web::Data<AppState>>()
        && state.config.security.admin_require_2fa
    {
        let id = user.id;
        let enrolled = state
            .db
            .run(move |conn| two_factor::is_enrolled(conn, id))
            .await;
        let enrolled = match enrolled {
            Ok(enrolled) => enrolled,
            Err(err) => return refuse(req, AppError::from(err)),
        };
        if !enrolled {
            let to_enrolment = crate::web::pages::see_other(ENROLMENT_PATH);
            return Ok(req.into_response(to_enrolment));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A signed-in support or admin account, for read-only console pages (the route's declared
/// [`Access`] has already been checked; this checks again, so a handler cannot be reached by a
/// customer even if it were registered outside the table).
pub struct ConsoleUser(pub User);

impl FromRequest for ConsoleUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let user = signed_in_user(req).await?;
            if user.role.is_console() {
                Ok(Self(user))
            } else {
                Err(AppError::Forbidden)
            }
        })
    }
}

/// The console's route table: each line `path => { METHOD Access handler, … }` registers the
/// resource, wrapped in [`require`] with what each method needs, and lists it in `ROUTES`.
#[macro_export]
macro_rules! console_routes {
    ($($path:literal => { $($method:ident $access:ident $handler:path),+ $(,)? }),* $(,)?) => {
        /// Every console route with the access it needs (what `configure` registers).
        pub const ROUTES: &[$crate::web::console::ConsoleRoute] = &[
            $($(
                $crate::web::console::ConsoleRoute {
                    method: stringify!($method),
                    path: $path,
                    access: $crate::web::console::Access::$access,
                },
            )+)*
        ];

        /// The console's routes, relative to `/admin`.
        pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
            $(
                {
                    const NEEDS: &[(&str, $crate::web::console::Access)] =
                        &[$((stringify!($method), $crate::web::console::Access::$access)),+];
                    cfg.service(
                        actix_web::web::resource($path)
                            .wrap(actix_web::middleware::from_fn(|req, next| {
                                $crate::web::console::require(NEEDS, req, next)
                            }))
                            $(.route(
                                actix_web::web::route()
                                    .method(actix_web::http::Method::$method)
                                    .to($handler),
                            ))+,
                    );
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_reads_and_only_admins_manage() {
        assert!(Access::Read.allows(Role::Support));
        assert!(Access::Read.allows(Role::Admin));
        assert!(!Access::Read.allows(Role::Customer));
        assert!(Access::Manage.allows(Role::Admin));
        assert!(!Access::Manage.allows(Role::Support));
        assert!(!Access::Manage.allows(Role::Customer));
    }

    #[test]
    fn an_undeclared_method_needs_the_most() {
        let needs = [("GET", Access::Read)];
        assert_eq!(needed(&needs, &Method::GET), Access::Read);
        assert_eq!(needed(&needs, &Method::POST), Access::Manage);
        assert_eq!(needed(&needs, &Method::DELETE), Access::Manage);
    }
}
