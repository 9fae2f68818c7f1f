//! An offline, wire-compatible Stripe for tests and demos: the part of Stripe's API that
//! Tollgate uses (products, prices, customers, Checkout and Billing Portal sessions,
//! subscriptions, invoices, payment intents, events), hosted checkout and portal pages, signed
//! webhooks with retries, and `/_sim/…` test controls. It holds its state in memory.
//!
//! Its own crate, knowing nothing of Tollgate: Tollgate's tests use it as a dev-dependency,
//! and the `tollgate` binary as an optional one (its `stripe-sim` cargo feature, on by default)
//! for `tollgate stripe-sim` and `serve --with-stripe-sim`. Never in production: both commands
//! refuse to start when `TOLLGATE_ENV=production`.
//!
//! Start one with [`StripeSim::start`] (port 0 picks a free port), point a Stripe client at
//! its `base_url` with any `sk_test_…` key, and spawn or `run` its server.

// The API renders Stripe's large JSON objects with `serde_json::json!`.
#![recursion_limit = "256"]

mod api;
mod card;
mod changes;
mod controls;
mod hosted;
mod lists;
mod meter_events;
mod metering;
mod objects;
mod pdf;
mod promotions;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use serde_json::Value;

use state::{Event, SimState, new_id, unix_now};
use webhooks::{Deliverer, WebhookTarget};

/// How to run the simulator.
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: std::net::SocketAddr,
    /// Where to deliver signed events, if anywhere.
    pub webhook: Option<WebhookTarget>,
    /// First retry delay; each further retry doubles it.
    pub retry_base: Duration,
    pub max_attempts: u32,
    /// The merchant customers see on the hosted pages and invoices (Stripe's public business
    /// name).
    pub business_name: String,
}

/// The business name a simulator shows unless told otherwise.
pub const DEFAULT_BUSINESS_NAME: &str = "Tollgate";

impl SimConfig {
    pub fn local(webhook: Option<WebhookTarget>) -> Self {
        Self {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook,
            retry_base: Duration::from_secs(1),
            max_attempts: 8,
            business_name: DEFAULT_BUSINESS_NAME.to_owned(),
        }
    }
}

/// The simulator's shared state.
pub struct Sim {
    state: Mutex<SimState>,
    deliverer: Deliverer,
    /// Deliver events as they happen (off: only on `/_sim/events/deliver`).
    auto_deliver: std::sync::atomic::AtomicBool,
    /// `http://127.0.0.1:PORT`: where hosted pages are served.
    pub base_url: String,
}

impl Sim {
    /// Delivers events to `target` from now on (e.g. once the app under test has its port).
    pub fn set_webhook_target(&self, target: Option<WebhookTarget>) {
        self.deliverer.set_target(target);
    }

    /// Runs `f` on the state, for tests that set up what no endpoint of theirs can (e.g. meter
    /// events reported by a sender that is not running).
    #[cfg(feature = "testing")]
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.state())
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock would poison it; the state is still usable for a sim.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an event for a state change (call with the state locked; deliver afterwards).
    fn event(
        state: &mut SimState,
        kind: &str,
        object: Value,
        previous_attributes: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Event {
        let event = Event {
            id: new_id("evt"),
            kind: kind.to_owned(),
            created: unix_now(),
            object,
            previous_attributes,
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        state.events.push(event.clone());
        event
    }

    /// Sends events to the webhook endpoint, each on its own task, retrying on failure.
    fn deliver(self: &Arc<Self>, events: Vec<Event>) {
        if !self.deliverer.enabled() || !self.auto_deliver.load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.deliver_now(events);
    }

    fn deliver_now(self: &Arc<Self>, events: Vec<Event>) {
        let sim = Arc::clone(self);
        actix_web::rt::spawn(async move {
            // In order, one after another, like a single endpoint's queue.
            for event in events {
                let payload = objects::event(&event).to_string();
                sim.deliverer
                    .deliver(&event.id, &event.kind, payload.as_bytes())
                    .await;
            }
        });
    }
}

/// A running simulator.
pub struct StripeSim {
    pub base_url: String,
    pub port: u16,
    pub sim: Arc<Sim>,
    server: Server,
}

/// The simulator's own icon (browsers ask every origin for `/favicon.ico`: without it, each
/// hosted page logs a 404 in the console).
async fn favicon() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=86400",
        ))
        .body(include_str!("../static/favicon.svg"))
}

impl StripeSim {
    /// Binds and builds the simulator; `run` (or spawning the server) starts serving.
    pub fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(config.bind)?;
        let port = listener.local_addr()?.port();
        let base_url = format!("http://127.0.0.1:{port}");
        let sim = Arc::new(Sim {
            state: Mutex::new(SimState::new(config.business_name, base_url.clone())),
            deliverer: Deliverer::new(config.webhook, config.retry_base, config.max_attempts),
            auto_deliver: std::sync::atomic::AtomicBool::new(true),
            base_url: base_url.clone(),
        });
        let data = web::Data::from(Arc::clone(&sim));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(256 * 1024))
                .configure(api::configure)
                .configure(hosted::configure)
                .configure(controls::configure)
                .route("/favicon.ico", web::get().to(favicon))
                .route("/favicon.svg", web::get().to(favicon))
                .default_service(web::to(api::not_found))
        })
        .workers(1)
        .listen(listener)?
        .run();
        Ok(Self {
            base_url,
            port,
            sim,
            server,
        })
    }

    /// Serves until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Splits off the server future (to spawn) from the handle (to keep).
    pub fn into_parts(self) -> (Server, String, Arc<Sim>) {
        (self.server, self.base_url, self.sim)
    }
}
