//! `tollgate validate-secrets [--test-stripe]`: checks every secret's presence and shape
//! without printing any of them. Exit 0 when all is well, 1 with one line per problem.
//! Warnings (exit 0) say what works but needs attention: live keys outside production, a
//! primary encryption key older than `KEY_ROTATION_DAYS`, a key rotation left unfinished.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use super::CommandError;
use crate::config::{
    self, DEFAULT_STRIPE_API_BASE, Environment, ProcessEnv, StripeMode, StripeSecretKey, Vars as _,
};
use crate::crypto::{Keyring, TokenHasher};
use crate::db::Db;
use crate::encryption_keys;
use crate::secret::{decode_key, mask_api_key};

#[derive(Default)]
struct Report {
    problems: Vec<String>,
    warnings: Vec<String>,
    fine: Vec<String>,
    /// What could not be checked, and why (not a problem).
    notes: Vec<String>,
}

impl Report {
    fn key<const N: usize>(&mut self, var: &str) {
        match ProcessEnv.get(var) {
            None => self.problems.push(format!(
                "{var} is not set (generate one with `tollgate keygen`)"
            )),
            Some(raw) => match decode_key::<N>(&raw) {
                Ok(_) => self.fine.push(format!("{var}: {N} random bytes")),
                Err(err) => self.problems.push(format!("{var} {err}")),
            },
        }
    }

    fn old_keys(&mut self) {
        if let Some(raw) = ProcessEnv.get("ENCRYPTION_KEYS_OLD") {
            match Keyring::parse_old_keys(&raw) {
                Ok(keys) => self
                    .fine
                    .push(format!("ENCRYPTION_KEYS_OLD: {} old key(s)", keys.len())),
                Err(err) => self
                    .problems
                    .push(format!("ENCRYPTION_KEYS_OLD has a bad entry: {err}")),
            }
        }
    }

    fn old_peppers(&mut self) {
        if let Some(raw) = ProcessEnv.get("TOKEN_PEPPERS_OLD") {
            match TokenHasher::parse_old_peppers(&raw) {
                Ok(peppers) => self.fine.push(format!(
                    "TOKEN_PEPPERS_OLD: {} old pepper(s)",
                    peppers.len()
                )),
                Err(err) => self
                    .problems
                    .push(format!("TOKEN_PEPPERS_OLD has a bad entry: {err}")),
            }
        }
    }

    fn stripe_secret_key(&mut self) -> Option<StripeSecretKey> {
        let var = "STRIPE_SECRET_KEY";
        let Some(value) = ProcessEnv.get(var) else {
            self.problems.push(format!("{var} is not set"));
            return None;
        };
        match StripeSecretKey::parse(&value) {
            Ok(key) => {
                self.fine
                    .push(format!("{var}: {key} ({:?} mode)", key.mode()));
                Some(key)
            }
            Err(_) => {
                self.problems.push(format!(
                    "{var} is malformed: expected sk_test_…, sk_live_…, rk_test_… or rk_live_…"
                ));
                None
            }
        }
    }

    fn stripe_publishable_key(&mut self) -> Option<StripeMode> {
        let var = "STRIPE_PUBLISHABLE_KEY";
        let Some(value) = ProcessEnv.get(var) else {
            self.problems.push(format!("{var} is not set"));
            return None;
        };
        let mode = StripeMode::of_key(value.trim(), "pk_");
        match mode {
            Some(mode) => self
                .fine
                .push(format!("{var}: {} ({mode:?} mode)", mask_api_key(&value))),
            None => self.problems.push(format!(
                "{var} is malformed: expected pk_test_… or pk_live_…"
            )),
        }
        mode
    }

    fn webhook_secrets(&mut self) {
        let Some(value) = ProcessEnv.get("STRIPE_WEBHOOK_SECRET") else {
            self.problems
                .push("STRIPE_WEBHOOK_SECRET is not set".into());
            return;
        };
        let secrets: Vec<&str> = value.split(',').map(str::trim).collect();
        let well_formed = |s: &&str| {
            s.strip_prefix("whsec_").is_some_and(|b| {
                b.len() >= 8
                    && b.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            })
        };
        if secrets.len() > 2 || !secrets.iter().all(well_formed) {
            self.problems.push("STRIPE_WEBHOOK_SECRET is malformed: expected whsec_… (or two, comma-separated, during a rotation)".into());
        } else {
            let masked: Vec<_> = secrets.iter().map(|s| mask_api_key(s)).collect();
            self.fine
                .push(format!("STRIPE_WEBHOOK_SECRET: {}", masked.join(", ")));
        }
    }

    fn env_file(&mut self, env_file: &Path) {
        match config::env_file_exposure(env_file) {
            Some(problem) => self.problems.push(problem),
            None => {
                if let Ok(meta) = std::fs::metadata(env_file) {
                    let mode = meta.permissions().mode() & 0o777;
                    self.fine
                        .push(format!("{}: mode {mode:o}", env_file.display()));
                }
            }
        }
    }
}

impl Report {
    /// The encryption keys' age and rotation, from the database (read only, never created or
    /// migrated): a primary key older than `KEY_ROTATION_DAYS` or values still sealed by an old
    /// key are warnings (exit 0) — the configuration works, but needs a rotation.
    fn key_age(&mut self) {
        let rotation_days = match config::key_rotation_days(&ProcessEnv) {
            Ok(days) => days,
            Err(err) => return self.problems.push(err.to_string()),
        };
        let keys = ProcessEnv
            .get("ENCRYPTION_KEY")
            .and_then(|raw| decode_key::<32>(&raw).ok())
            .zip(
                ProcessEnv
                    .get("ENCRYPTION_KEYS_OLD")
                    .map_or(Ok(Vec::new()), |raw| Keyring::parse_old_keys(&raw))
                    .ok(),
            );
        let Some((primary, old)) = keys else {
            return; // Already reported above.
        };
        let keyring = Keyring::new(&primary, &old);
        let report = config::database_url(&ProcessEnv)
            .map_err(|err| err.to_string())
            .and_then(|url| {
                // A read-only check: the default durability is as good as any.
                Db::open_existing(url, 1, config::SqliteSynchronous::default())
                    .map_err(|err| err.to_string())
            })
            .and_then(|db| {
                db.run_blocking(|conn| {
                    encryption_keys::report(conn, &keyring, rotation_days, crate::db::now())
                })
                .map_err(|err| err.to_string())
            });
        match report {
            Err(reason) => self
                .notes
                .push(format!("encryption key age not checked: {reason}")),
            Ok(report) => {
                if let Some(primary) = report.keys.first() {
                    self.fine.push(match primary.age_days {
                        Some(days) => format!(
                            "primary encryption key {}: first seen {days} day(s) ago (KEY_ROTATION_DAYS={rotation_days})",
                            primary.key_id
                        ),
                        None => format!(
                            "primary encryption key {}: not used yet (its age starts at the next start)",
                            primary.key_id
                        ),
                    });
                }
                self.warnings
                    .extend(report.warnings.iter().map(ToString::to_string));
            }
        }
    }
}

/// Makes one read-only call (`GET /v1/balance`) with the secret key.
async fn test_stripe(report: &mut Report, key: &StripeSecretKey) {
    let base = ProcessEnv
        .get("STRIPE_API_BASE")
        .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into());
    let url = format!("{}/v1/balance", base.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            return report
                .problems
                .push(format!("could not build an HTTP client: {err}"));
        }
    };
    match client.get(&url).bearer_auth(key.expose()).send().await {
        Ok(res) if res.status().is_success() => report
            .fine
            .push(format!("Stripe accepted STRIPE_SECRET_KEY ({base})")),
        Ok(res) => report.problems.push(format!(
            "Stripe rejected STRIPE_SECRET_KEY: HTTP {} from {base}",
            res.status().as_u16()
        )),
        Err(err) => report.problems.push(format!(
            "could not reach Stripe at {base}: {}",
            describe_failure(&err)
        )),
    }
}

/// What went wrong, without the URL or any header (the error's Display may carry them).
fn describe_failure(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

pub fn validate_secrets(env_file: &Path, test_stripe_call: bool) -> Result<(), CommandError> {
    // Reported below rather than refused: this command exists to say what is wrong.
    config::read_env_file(env_file)?;
    let environment = config::environment(&ProcessEnv)?;
    let mut report = Report::default();
    report.key::<64>("SECRET_KEY");
    report.key::<32>("ENCRYPTION_KEY");
    report.old_keys();
    report.key::<32>("TOKEN_PEPPER");
    report.old_peppers();
    let secret_key = report.stripe_secret_key();
    let secret = secret_key.as_ref().map(StripeSecretKey::mode);
    let publishable = report.stripe_publishable_key();
    report.webhook_secrets();
    if let (Some(secret), Some(publishable)) = (secret, publishable)
        && secret != publishable
    {
        report.problems.push(format!(
            "STRIPE_SECRET_KEY is a {secret:?}-mode key but STRIPE_PUBLISHABLE_KEY is {publishable:?}-mode: they must match"
        ));
    }
    if ProcessEnv.get("TOLLGATE_ENV").is_none() && secret == Some(StripeMode::Live) {
        report.problems.push("STRIPE_SECRET_KEY is a live key but TOLLGATE_ENV is not set: set TOLLGATE_ENV=production (tollgate refuses to start like this)".into());
    } else if environment != Environment::Production
        && (secret == Some(StripeMode::Live) || publishable == Some(StripeMode::Live))
    {
        report.warnings.push("LIVE Stripe keys outside production (TOLLGATE_ENV is not `production`): real money moves".into());
    }
    report.env_file(env_file);
    report.key_age();
    if let Some(key) = secret_key.as_ref().filter(|_| test_stripe_call) {
        actix_web::rt::System::new().block_on(test_stripe(&mut report, key));
    }
    for line in &report.fine {
        println!("ok       {line}");
    }
    for line in &report.warnings {
        println!("WARNING  {line}");
        eprintln!("tollgate: WARNING: {line}");
    }
    for line in &report.notes {
        println!("note     {line}");
    }
    for line in &report.problems {
        println!("problem  {line}");
    }
    if report.problems.is_empty() {
        println!("all secrets are present and well-formed");
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "{} problem(s) found",
            report.problems.len()
        )))
    }
}
