//! The test harness, as zero2prod's `tests/api/helpers.rs`: `TestApp::spawn` starts the real
//! application on a random port with a fresh database (`db`: a SQLite file, or a PostgreSQL
//! database cloned from a migrated template), and `Browser` talks HTTP to it with its own cookie
//! jar, like a person would. The requests tests repeat are helpers on both (`app.post_webhook(..)`,
//! `app.internal_post(..)`, `browser.signup(..)`, `browser.submit_operation(..)`); `billing`
//! walks plans and Checkout, `stripe` signs as Stripe and drives the simulator, `html` reads
//! pages, `process` runs the binary, `logs` keeps what the application logged, `smtp` stands
//! in for a mail relay, `redis` finds the Redis of the shared-limit tests. Everything is
//! re-exported here: tests name `common::X`.

#![allow(dead_code)]

mod alert_receiver;
mod app;
mod billing;
mod browser;
mod db;
mod html;
mod logs;
mod outbox;
mod process;
mod redis;
mod smtp;
mod stripe;
mod usage;

pub use alert_receiver::*;
pub use app::*;
pub use billing::*;
pub use browser::*;
pub use db::*;
pub use html::*;
pub use logs::*;
pub use outbox::*;
pub use process::*;
pub use redis::*;
pub use smtp::*;
pub use stripe::*;
pub use usage::*;

/// Runs a test on SQLite and on PostgreSQL: `on_both_backends!(name, …)` makes
/// `name::sqlite` and `name::postgres` from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }

            #[actix_web::test]
            async fn postgres() {
                if $crate::common::postgres_available() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        }
    )*};
}
