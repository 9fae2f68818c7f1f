//! `tollgate stripe-sim`: the offline Stripe simulator as a standalone server.

use std::path::Path;

use secrecy::SecretString;

use super::{CommandError, failed};
use crate::billing::Gateway;
use crate::billing::plans::{self, PlanDraft};
use crate::config::{self, Config, DatabaseUrl, Environment, ProcessEnv, Vars as _};
use crate::startup::Application;
use crate::stripe_sim::webhooks::WebhookTarget;
use crate::stripe_sim::{SimConfig, StripeSim};

pub fn run(
    env_file: &Path,
    port: u16,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
) -> Result<(), CommandError> {
    config::load_env_file(env_file)?;
    if config::environment(&ProcessEnv)? == Environment::Production {
        return Err(CommandError::Usage(
            "stripe-sim: refused: TOLLGATE_ENV=production (the simulator is for tests and demos)"
                .into(),
        ));
    }
    let webhook = match webhook_url {
        Some(url) => {
            let secret = webhook_secret
                .or_else(|| {
                    ProcessEnv
                        .get("STRIPE_WEBHOOK_SECRET")
                        .and_then(|s| s.split(',').next().map(str::to_owned))
                })
                .ok_or_else(|| {
                    CommandError::Usage("stripe-sim: --webhook-url needs --webhook-secret".into())
                })?;
            Some(WebhookTarget {
                url,
                secret: SecretString::from(secret),
            })
        }
        None => None,
    };
    let delivers_to = webhook.as_ref().map(|w| w.url.clone());
    let mut config = SimConfig::local(webhook);
    config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    actix_web::rt::System::new().block_on(async move {
        let sim = StripeSim::start(config).map_err(failed)?;
        println!("Stripe simulator listening on {}", sim.base_url);
        println!(
            "  point Tollgate at it: STRIPE_API_BASE={} STRIPE_SECRET_KEY=sk_test_DUMMY…",
            sim.base_url
        );
        match delivers_to {
            Some(url) => println!("  delivering signed webhook events to {url}"),
            None => println!("  webhook delivery is off (give --webhook-url and --webhook-secret)"),
        }
        sim.run().await.map_err(failed)
    })
}

const DEMO_DATABASE: &str = "tollgate-demo.db";

/// Sample plans for the offline demo.
fn demo_plans() -> [PlanDraft; 2] {
    let plan =
        |name: &str, slug: &str, amount: &str, description: &str, features: &str| PlanDraft {
            name: name.into(),
            slug: slug.into(),
            description: description.into(),
            amount: amount.into(),
            currency: "usd".into(),
            interval: "month".into(),
            trial_days: "0".into(),
            features: features.into(),
        };
    [
        plan(
            "Starter",
            "starter",
            "900",
            "For trying agents on your own key.",
            "agents:3\nbyok",
        ),
        plan(
            "Pro",
            "pro",
            "2900",
            "For teams that run agents all day.",
            "agents:unlimited\nbyok\nsupport:priority",
        ),
    ]
}

/// `tollgate serve --with-stripe-sim`: the whole billing flow offline, in one command.
pub async fn serve_demo(mut config: Config, port: u16) -> Result<(), CommandError> {
    if config.environment == Environment::Production {
        return Err(CommandError::Usage(
            "serve --with-stripe-sim: refused: TOLLGATE_ENV=production".into(),
        ));
    }
    let mut sim_config = SimConfig::local(None);
    sim_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (sim_server, sim_url, _) = StripeSim::start(sim_config).map_err(failed)?.into_parts();
    actix_web::rt::spawn(sim_server);
    // The simulator forgets everything when it stops; so does the demo database.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{DEMO_DATABASE}{suffix}"));
    }
    config.database_url = DatabaseUrl::Sqlite(DEMO_DATABASE.into());
    config.stripe.api_base = sim_url.clone();
    config.stripe.secret_key = Some(SecretString::from("sk_test_DUMMYofflinedemo".to_owned()));
    let gateway = Gateway::new(&config.stripe);
    let app = Application::build(config).map_err(failed)?;
    let db = app.db();
    for (index, draft) in demo_plans().iter().enumerate() {
        let input = draft
            .validate()
            .map_err(|errors| failed(format!("demo plan: {errors:?}")))?;
        plans::create(
            &db,
            &gateway,
            None,
            &format!("demo-plan-{index}-0000000000"),
            input,
        )
        .await
        .map_err(failed)?;
    }
    eprintln!(
        "tollgate: offline demo: Stripe simulator at {sim_url}, fresh database {DEMO_DATABASE} with plans Starter and Pro.\n\
         tollgate: open http://127.0.0.1:{}/ , create an account, choose a plan, pay with 4242 4242 4242 4242 \
         (4000 0000 0000 0002 is declined).",
        app.port()
    );
    app.run_until_stopped().await.map_err(failed)
}
