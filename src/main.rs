//! `tollgate`: the command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use tollgate::commands::{self, CommandError};
use tollgate::service_tokens::Scope;

/// Self-hosted, security-first Stripe billing server.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
struct Cli {
    /// The dotenv file to read (and, in development, to write generated secrets to).
    #[arg(long, global = true, default_value = ".env", value_name = "PATH")]
    env_file: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the web application (the default); applies pending migrations first.
    Serve {
        /// Try Tollgate offline: start the Stripe simulator in-process, point Tollgate at it
        /// (API and signed webhooks, with an endpoint secret generated for the run), and use the
        /// demo database (tollgate-demo.db in the current directory, kept across restarts) with
        /// two sample plans.
        #[cfg(feature = "stripe-sim")]
        #[arg(long)]
        with_stripe_sim: bool,
        /// The simulator's port with --with-stripe-sim (0 picks a free one).
        #[cfg(feature = "stripe-sim")]
        #[arg(long, default_value_t = 12111, requires = "with_stripe_sim")]
        stripe_sim_port: u16,
        /// With --with-stripe-sim: delete the demo database first and start over.
        #[cfg(feature = "stripe-sim")]
        #[arg(long, requires = "with_stripe_sim")]
        fresh: bool,
    },
    /// Apply pending database migrations and exit (creating a SQLite database that does not
    /// exist yet; every other command except `serve` refuses a missing one).
    Migrate,
    /// Print fresh random values for SECRET_KEY, ENCRYPTION_KEY and TOKEN_PEPPER.
    Keygen,
    /// Create an admin account (or, with --promote-existing, promote an existing one). The
    /// password is read from stdin, or prompted for on a terminal; it is never taken from the
    /// command line.
    CreateAdmin {
        /// The admin's email address.
        #[arg(long)]
        email: String,
        /// Allow promoting an account that already exists: its password is replaced and every
        /// session it has is ended (whoever signed up with the address first is signed out).
        #[arg(long)]
        promote_existing: bool,
        /// Create the SQLite database (migrated) if DATABASE_URL names a file that does not
        /// exist; without it, a missing file is an error naming the path.
        #[arg(long)]
        create: bool,
    },
    /// Give an account a role: `customer`, `support` (the read-only console) or `admin`. A
    /// change ends the account's sessions and is audited (`role_changed`).
    SetRole {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// customer, support or admin.
        #[arg(long)]
        role: String,
    },
    /// Manage the tokens internal services use (`Authorization: Bearer tg_svc_…`).
    #[command(subcommand)]
    ServiceToken(TokenCommand),
    /// Re-encrypt every sealed value under the primary ENCRYPTION_KEY and rebuild every blind
    /// index under the primary TOKEN_PEPPER (resumable, idempotent, safe while `serve` runs).
    /// Configure the new key or pepper first and move the old one to ENCRYPTION_KEYS_OLD or
    /// TOKEN_PEPPERS_OLD.
    RotateKey {
        /// Only report how many values each key (and indexes and tokens each pepper) still holds.
        #[arg(long)]
        check: bool,
        /// Values per transaction.
        #[arg(long, default_value_t = 500, value_name = "N")]
        batch_size: usize,
        /// Stop after re-sealing or re-indexing N values (a staged rotation; rerun to continue).
        #[arg(long, value_name = "N", hide = true)]
        max_rows: Option<usize>,
        /// Abort the batch transaction after N values, as a crash would (for tests).
        #[arg(long, value_name = "N", hide = true)]
        fail_after: Option<usize>,
    },
    /// Check that every secret is present and well-formed (never printing one); exit 1 with one
    /// line per problem.
    ValidateSecrets {
        /// Also make one read-only call to the configured Stripe API.
        #[arg(long)]
        test_stripe: bool,
    },
    /// Emergency: end every session at once; everyone must sign in again.
    RevokeSessions,
    /// Emergency switches for BYOK keys.
    #[command(subcommand)]
    Byok(ByokCommand),
    /// The security audit log: list and filter it, verify its hash chains, prune it by
    /// retention.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Benchmark tooling.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Reconcile with Stripe: replay the events missed since the newest stored one (within
    /// Stripe's 30 days), then compare each customer's subscriptions at Stripe with the local
    /// copy and repair it, printing one line per difference (customer, field, local → Stripe).
    Sync {
        /// Only this account (its id or e-mail address); no event replay.
        #[arg(long, value_name = "ID|EMAIL")]
        customer: Option<String>,
        /// Only print what differs; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Link existing Stripe customers to the accounts with the same e-mail address (that have
    /// no customer yet) and import their subscriptions. Prints what it would do unless --apply.
    ImportStripe {
        /// Write the links (without it: a dry run).
        #[arg(long)]
        apply: bool,
    },
    /// Run the offline Stripe simulator (tests and demos only; refused in production).
    #[cfg(feature = "stripe-sim")]
    StripeSim {
        /// Port to listen on (127.0.0.1); 0 picks a free one.
        #[arg(long, default_value_t = 12111)]
        port: u16,
        /// Deliver signed webhook events to this URL, e.g. http://127.0.0.1:8080/webhooks/stripe.
        #[arg(long, requires = "webhook_secret", value_name = "URL")]
        webhook_url: Option<String>,
        /// The endpoint secret to sign events with (whsec_…). Falls back to STRIPE_WEBHOOK_SECRET.
        #[arg(long, value_name = "SECRET")]
        webhook_secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// A unique name, e.g. the service's name.
        #[arg(long)]
        name: String,
        /// What the token may do: byok:lease, entitlements:read, metrics:read, usage:write (repeat for several).
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<Scope>,
    },
    /// List tokens: name, scopes, masked id, created, last used, status.
    List,
    /// Revoke a token by name, or every token with --all.
    Revoke {
        /// The token's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Revoke every token.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fill an empty scratch database (DATABASE_URL, which must exist: run `migrate` first)
    /// with made-up customers, webhook events and audit rows, to measure Tollgate at scale.
    /// Seeded accounts cannot sign in. Refuses a database that already has accounts.
    Seed {
        /// Customer accounts, each with a Stripe customer and a subscription.
        #[arg(long, default_value_t = 1_000, value_name = "N")]
        users: u64,
        /// Stored webhook events.
        #[arg(long, default_value_t = 0, value_name = "N")]
        events: u64,
        /// Audit-log rows (chained: `audit verify` passes afterwards).
        #[arg(long, default_value_t = 0, value_name = "N")]
        audit: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List security events, newest first: a table, or with --json one JSON object per line.
    List {
        /// Only this severity and higher ones: LOW, MEDIUM, HIGH or CRITICAL.
        #[arg(long, value_name = "SEVERITY")]
        severity: Option<String>,
        /// Only events seen within this long: e.g. 30m, 24h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only events of this kind (e.g. webhook_invalid_signature).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Only events by this actor (admin:3, stripe, a token name, or an account's email).
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only events from this client address.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: i64,
        /// One JSON object per line (JSON Lines) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Walk every audit chain from its checkpoint to its head; exit 1 naming the first row
    /// whose content, order or deletion breaks a link, 0 with a summary otherwise.
    Verify,
    /// Delete audit rows, finished webhook events, expired sessions and idempotency records
    /// older than their retention (AUDIT_RETENTION_DAYS, WEBHOOK_EVENT_RETENTION_DAYS), in
    /// batches; print per table how many rows went.
    Prune {
        /// Only print how many rows would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ByokCommand {
    /// Emergency: refuse every BYOK lease (the API answers 503) until enable-leases.
    DisableLeases,
    /// Allow BYOK leases again.
    EnableLeases,
}

fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|err| match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            // One line, no usage dump: scripts read it, people get a pointer to --help.
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!(
                "tollgate: {} (see `tollgate --help`)",
                first.trim_start_matches("error: ")
            );
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let command = cli.command.unwrap_or(Command::Serve {
        #[cfg(feature = "stripe-sim")]
        with_stripe_sim: false,
        #[cfg(feature = "stripe-sim")]
        stripe_sim_port: 12111,
        #[cfg(feature = "stripe-sim")]
        fresh: false,
    });
    let quiet = !matches!(command, Command::Serve { .. });
    // The log is set up before any command reads its configuration: `.env` is read here for
    // `LOG_FORMAT` and `RUST_LOG` (a problem with the file is reported by the command itself).
    let _ = tollgate::config::read_env_file(&cli.env_file);
    let format = match tollgate::config::log_format(&tollgate::config::ProcessEnv) {
        Ok(format) => format,
        Err(err) => {
            eprintln!("tollgate: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    tollgate::telemetry::init(if quiet { "warn" } else { "info" }, format);
    let outcome = match command {
        #[cfg(feature = "stripe-sim")]
        Command::Serve {
            with_stripe_sim,
            stripe_sim_port,
            fresh,
        } => serve(
            &cli.env_file,
            with_stripe_sim.then_some(commands::Demo {
                stripe_sim_port,
                fresh,
            }),
        ),
        #[cfg(not(feature = "stripe-sim"))]
        Command::Serve {} => serve(&cli.env_file, None),
        Command::Migrate => commands::migrate(&cli.env_file),
        Command::Keygen => commands::keygen(),
        Command::CreateAdmin {
            email,
            promote_existing,
            create,
        } => {
            let missing = if create {
                commands::IfMissing::Create
            } else {
                commands::IfMissing::Refuse
            };
            commands::admin::create_admin(&cli.env_file, &email, promote_existing, missing)
        }
        Command::SetRole { email, role } => commands::roles::set_role(&cli.env_file, &email, &role),
        Command::ServiceToken(TokenCommand::Create { name, scopes }) => {
            commands::tokens::create(&cli.env_file, &name, &scopes)
        }
        Command::ServiceToken(TokenCommand::List) => commands::tokens::list(&cli.env_file),
        Command::ServiceToken(TokenCommand::Revoke { name, all: _ }) => {
            commands::tokens::revoke(&cli.env_file, name.as_deref())
        }
        Command::RotateKey { check: true, .. } => commands::rotate::check(&cli.env_file),
        Command::RotateKey {
            check: false,
            batch_size,
            max_rows,
            fail_after,
        } => {
            let options = commands::rotate::RotateOptions {
                batch_size,
                max_rows,
                fail_after,
            };
            commands::rotate::rotate(&cli.env_file, &options)
        }
        Command::ValidateSecrets { test_stripe } => {
            commands::validate::validate_secrets(&cli.env_file, test_stripe)
        }
        Command::RevokeSessions => commands::emergency::revoke_sessions(&cli.env_file),
        Command::Audit(AuditCommand::List {
            severity,
            since,
            kind,
            actor,
            ip,
            limit,
            json,
        }) => commands::audit_list::list(
            &cli.env_file,
            &commands::audit_list::ListOptions {
                severity,
                kind,
                actor,
                ip,
                since,
                limit,
                json,
            },
        ),
        Command::Byok(ByokCommand::DisableLeases) => {
            commands::emergency::set_leases(&cli.env_file, true)
        }
        Command::Byok(ByokCommand::EnableLeases) => {
            commands::emergency::set_leases(&cli.env_file, false)
        }
        Command::Bench(BenchCommand::Seed {
            users,
            events,
            audit,
        }) => commands::bench::seed_command(
            &cli.env_file,
            commands::bench::SeedCounts {
                users,
                events,
                audit,
            },
        ),
        Command::Audit(AuditCommand::Verify) => commands::audit::verify(&cli.env_file),
        Command::Audit(AuditCommand::Prune { dry_run }) => {
            commands::audit::prune(&cli.env_file, dry_run)
        }
        Command::Sync { customer, dry_run } => {
            commands::sync::sync(&cli.env_file, customer.as_deref(), dry_run)
        }
        Command::ImportStripe { apply } => commands::sync::import_stripe(&cli.env_file, apply),
        #[cfg(feature = "stripe-sim")]
        Command::StripeSim {
            port,
            webhook_url,
            webhook_secret,
        } => commands::stripe_sim::run(&cli.env_file, port, webhook_url, webhook_secret),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tollgate: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn serve(env_file: &std::path::Path, demo: Option<commands::Demo>) -> Result<(), CommandError> {
    actix_web::rt::System::new().block_on(commands::serve(env_file, demo))
}
