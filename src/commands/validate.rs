//! `tollgate validate-secrets [--test-stripe]`: checks every secret's presence and shape
//! without printing any of them. Exit 0 when all is well, 1 with one line per problem.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use super::CommandError;
use crate::config::{self, Environment, ProcessEnv, Vars as _};
use crate::crypto::{Keyring, TokenHasher};
use crate::secret::{decode_key, mask_api_key};

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

#[derive(Default)]
struct Report {
    problems: Vec<String>,
    warnings: Vec<String>,
    fine: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Test,
    Live,
}

fn body_ok(body: &str) -> bool {
    body.len() >= 8 && body.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `sk_test_…`, `rk_live_…`: which mode, if it has the shape.
fn stripe_mode(value: &str, prefixes: &[&str]) -> Option<Mode> {
    prefixes.iter().find_map(|prefix| {
        let rest = value.strip_prefix(prefix)?;
        if let Some(body) = rest.strip_prefix("test_") {
            body_ok(body).then_some(Mode::Test)
        } else if let Some(body) = rest.strip_prefix("live_") {
            body_ok(body).then_some(Mode::Live)
        } else {
            None
        }
    })
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

    fn stripe(&mut self, var: &str, prefixes: &[&str], shape: &str) -> Option<Mode> {
        let Some(value) = ProcessEnv.get(var) else {
            self.problems.push(format!("{var} is not set"));
            return None;
        };
        let mode = stripe_mode(value.trim(), prefixes);
        match mode {
            Some(mode) => self
                .fine
                .push(format!("{var}: {} ({mode:?} mode)", mask_api_key(&value))),
            None => self
                .problems
                .push(format!("{var} is malformed: expected {shape}")),
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

/// Makes one read-only call (`GET /v1/balance`) with the secret key.
async fn test_stripe(report: &mut Report) {
    let Some(key) = ProcessEnv.get("STRIPE_SECRET_KEY") else {
        return;
    };
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
    match client.get(&url).bearer_auth(key.trim()).send().await {
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
    let secret = report.stripe(
        "STRIPE_SECRET_KEY",
        &["sk_", "rk_"],
        "sk_test_…, sk_live_…, rk_test_… or rk_live_…",
    );
    let publishable = report.stripe("STRIPE_PUBLISHABLE_KEY", &["pk_"], "pk_test_… or pk_live_…");
    report.webhook_secrets();
    if let (Some(secret), Some(publishable)) = (secret, publishable)
        && secret != publishable
    {
        report.problems.push(format!(
            "STRIPE_SECRET_KEY is a {secret:?}-mode key but STRIPE_PUBLISHABLE_KEY is {publishable:?}-mode: they must match"
        ));
    }
    if ProcessEnv.get("TOLLGATE_ENV").is_none() && secret == Some(Mode::Live) {
        report.problems.push("STRIPE_SECRET_KEY is a live key but TOLLGATE_ENV is not set: set TOLLGATE_ENV=production (tollgate refuses to start like this)".into());
    } else if environment != Environment::Production
        && (secret == Some(Mode::Live) || publishable == Some(Mode::Live))
    {
        report.warnings.push("LIVE Stripe keys outside production (TOLLGATE_ENV is not `production`): real money moves".into());
    }
    report.env_file(env_file);
    if test_stripe_call {
        actix_web::rt::System::new().block_on(test_stripe(&mut report));
    }
    for line in &report.fine {
        println!("ok       {line}");
    }
    for line in &report.warnings {
        println!("WARNING  {line}");
        eprintln!("tollgate: WARNING: {line}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_modes_come_from_the_prefix() {
        assert_eq!(
            stripe_mode("sk_test_DUMMY0000", &["sk_", "rk_"]),
            Some(Mode::Test)
        );
        assert_eq!(
            stripe_mode("rk_live_DUMMY0000", &["sk_", "rk_"]),
            Some(Mode::Live)
        );
        assert_eq!(stripe_mode("pk_test_DUMMY0000", &["sk_", "rk_"]), None);
        assert_eq!(stripe_mode("sk_test_short", &["sk_"]), None);
        assert_eq!(stripe_mode("sk_prod_DUMMY0000", &["sk_"]), None);
    }
}
