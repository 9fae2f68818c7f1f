//! `tollgate stripe-sim`: the offline Stripe simulator (the `tollgate-stripe-sim` crate) as a
//! standalone server, and `serve --with-stripe-sim`: Tollgate with the simulator in-process.

use std::path::Path;

use secrecy::SecretString;
use stripe_sim::webhooks::WebhookTarget;
use stripe_sim::{SimConfig, StripeSim};

use super::{CommandError, failed};
use crate::audit::Actor;
use crate::billing::plans::{self, PlanDraft};
use crate::billing::{Gateway, OperationId};
use crate::config::{self, Config, DatabaseUrl, Environment, ProcessEnv, Vars as _};
use crate::db::models::plan;
use crate::db::{Db, DbError};
use crate::startup::Application;

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
    if let Some(name) = config::stripe_sim_business_name(&ProcessEnv) {
        config.business_name = name;
    }
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

/// Sample plans for the offline demo: entitlement keys for services, feature lines for people,
/// and a yearly price on the highlighted plan (so the pricing page shows its toggle).
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
            ..PlanDraft::default()
        };
    [
        PlanDraft {
            feature_lines: "3 agents\nBring your own AI provider key\nEmail support".into(),
            ..plan(
                "Starter",
                "starter",
                "900",
                "For trying agents on your own key.",
                "agents:3\nbyok",
            )
        },
        PlanDraft {
            feature_lines: "Unlimited agents\nBring your own AI provider key\nPriority support"
                .into(),
            highlighted: "on".into(),
            yearly_amount: "29000".into(),
            ..plan(
                "Pro",
                "pro",
                "2900",
                "For teams that run agents all day.",
                "agents:unlimited\nbyok\nsupport:priority",
            )
        },
    ]
}

/// `word` as one shell word, for a command people paste: quoted when it holds anything but
/// the characters paths and URLs usually have.
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:+=@,%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Creates the sample plans, in the database and in the simulator. The simulator starts empty on
/// every run, so plans a kept database already has lose their old Stripe ids first and are
/// published again: `plans::create` finishes a plan without Stripe ids, as it would after an
/// interrupted attempt.
async fn publish_demo_plans(db: &Db, gateway: &Gateway) -> Result<(), CommandError> {
    let slugs: Vec<String> = demo_plans()
        .iter()
        .map(|draft| draft.slug.clone())
        .collect();
    db.run(move |conn| {
        for slug in &slugs {
            if let Some(row) = plan::find_by_slug(conn, slug)? {
                plan::set_stripe(conn, row.id, plan::StripeIds::default(), false)?;
            }
        }
        Ok::<_, DbError>(())
    })
    .await
    .map_err(failed)?;
    // A new operation per run: a repeat of an old one would return the plan unpublished.
    let run = chrono::Utc::now().timestamp_micros();
    for (index, draft) in demo_plans().iter().enumerate() {
        let input = draft
            .validate()
            .map_err(|errors| failed(format!("demo plan: {errors:?}")))?;
        let operation =
            OperationId::try_from(format!("demo-plan-{index}-{run}")).map_err(failed)?;
        plans::create(db, gateway, &Actor::system(), &operation, input)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Where the demo keeps its database (in the current directory) and whether to start over.
fn demo_database(fresh: bool) -> Result<std::path::PathBuf, CommandError> {
    let path = std::path::absolute(DEMO_DATABASE).map_err(failed)?;
    if fresh {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(failed(format!(
                        "--fresh: could not remove {}: {err}",
                        std::path::Path::new(&file).display()
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(path)
}

/// A new endpoint secret for this run, as `stripe listen` makes one: the simulator signs with
/// it and Tollgate verifies with it. Never printed or logged.
fn demo_webhook_secret() -> Result<SecretString, CommandError> {
    let random = config::generate_secret(32)?;
    Ok(SecretString::from(format!("whsec_{random}")))
}

/// `tollgate serve --with-stripe-sim`: the whole billing flow offline, in one command. The
/// simulator delivers signed events to Tollgate's own `/webhooks/stripe`; the demo database
/// (`tollgate-demo.db` in the current directory) is kept across restarts unless `fresh`.
pub async fn serve_demo(mut config: Config, port: u16, fresh: bool) -> Result<(), CommandError> {
    if config.environment == Environment::Production {
        return Err(CommandError::Usage(
            "serve --with-stripe-sim: refused: TOLLGATE_ENV=production".into(),
        ));
    }
    let database = demo_database(fresh)?;
    let reused = database.exists();
    let webhook_secret = demo_webhook_secret()?;
    let mut sim_config = SimConfig::local(None);
    if let Some(name) = config::stripe_sim_business_name(&ProcessEnv) {
        sim_config.business_name = name;
    }
    sim_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (sim_server, sim_url, sim) = StripeSim::start(sim_config).map_err(failed)?.into_parts();
    actix_web::rt::spawn(sim_server);
    config.database_url = DatabaseUrl::Sqlite(database.clone());
    config.stripe.api_base = sim_url.clone();
    config.stripe.secret_key =
        Some(config::StripeSecretKey::parse("sk_test_DUMMYofflinedemo").map_err(failed)?);
    config.stripe.webhook_secrets = vec![webhook_secret.clone()];
    let host = match config.bind.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let gateway = Gateway::new(&config.stripe);
    let app = Application::build(config).map_err(failed)?;
    let address = std::net::SocketAddr::new(host, app.port());
    sim.set_webhook_target(Some(WebhookTarget {
        url: format!("http://{address}/webhooks/stripe"),
        secret: webhook_secret,
    }));
    publish_demo_plans(&app.db(), &gateway).await?;
    let kept = if reused {
        "kept from the last run; --fresh starts over"
    } else {
        "new"
    };
    let tollgate = std::env::current_exe()
        .map(|exe| exe.display().to_string())
        .unwrap_or_else(|_| "tollgate".into());
    let database_url = format!("sqlite://{}", database.display());
    eprintln!(
        "tollgate: offline demo: Stripe simulator at {sim_url} delivering signed webhooks to \
         http://{address}/webhooks/stripe; database {} ({kept}) with plans Starter and Pro.\n\
         tollgate: open http://{address}/ , create an account, choose a plan, pay with 4242 4242 4242 4242 \
         (4000 0000 0000 0002 is declined).\n\
         tollgate: to be an admin of the demo, from any directory: \
         DATABASE_URL={} {} create-admin --email you@example.com",
        database.display(),
        shell_word(&database_url),
        shell_word(&tollgate),
    );
    app.run_until_stopped().await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn printed_words_survive_a_shell() {
        assert_eq!(
            shell_word("sqlite:///tmp/a-b_c.db"),
            "sqlite:///tmp/a-b_c.db"
        );
        assert_eq!(shell_word("/home/my dir/x"), "'/home/my dir/x'");
        assert_eq!(shell_word("/it's"), r"'/it'\''s'");
    }
}
