//! `tollgate sync` (reconcile local state with Stripe) and `tollgate import-stripe` (link
//! existing Stripe customers to accounts by e-mail). Both print one line per finding.

use std::path::Path;
use std::sync::Arc;

use super::{CommandError, connect, failed};
use crate::accounts::UserId;
use crate::audit::Actor;
use crate::billing::Gateway;
use crate::db::models::user;
use crate::reconcile::{Reconciler, Scope, SyncError, import};

/// The reconciler of the configured deployment; refuses when Stripe is not configured.
fn reconciler(env_file: &Path) -> Result<Reconciler, CommandError> {
    let (config, db) = connect(env_file)?;
    let gateway = Gateway::new(&config.stripe);
    if !gateway.configured() {
        return Err(CommandError::Usage(
            "billing is not configured: set STRIPE_SECRET_KEY".into(),
        ));
    }
    Ok(Reconciler {
        config: Arc::new(config),
        db,
        gateway: Arc::new(gateway),
        patient: true,
        refetching: Arc::default(),
    })
}

fn sync_failed(err: SyncError) -> CommandError {
    match err {
        SyncError::UnknownAccount(_) | SyncError::NoCustomer(_) => {
            CommandError::Usage(err.to_string())
        }
        other => failed(other),
    }
}

/// `--customer`: a Tollgate account's id (digits) or e-mail address.
fn account(reconciler: &Reconciler, given: &str) -> Result<UserId, CommandError> {
    let given = given.trim();
    let found = if !given.is_empty() && given.bytes().all(|b| b.is_ascii_digit()) {
        let id = given
            .parse::<i64>()
            .map_err(|_| CommandError::Usage(format!("no account {given}")))?;
        reconciler
            .db
            .run_blocking(|conn| user::find(conn, UserId::from(id)))
    } else if given.contains('@') && given.len() <= 254 {
        let email = given.to_lowercase();
        reconciler
            .db
            .run_blocking(|conn| user::find_by_email(conn, &email))
    } else {
        return Err(CommandError::Usage(
            "--customer takes an account id or an e-mail address".into(),
        ));
    };
    found
        .map_err(failed)?
        .map(|row| row.id)
        .ok_or_else(|| CommandError::Usage(format!("no account {given}")))
}

pub fn sync(env_file: &Path, customer: Option<&str>, dry_run: bool) -> Result<(), CommandError> {
    let reconciler = reconciler(env_file)?;
    let scope = match customer {
        Some(given) => Scope::Account(account(&reconciler, given)?),
        None => Scope::All,
    };
    let report = actix_web::rt::System::new()
        .block_on(reconciler.run(scope, dry_run, &Actor::system()))
        .map_err(sync_failed)?;
    for line in &report.events {
        println!("{line}");
    }
    for difference in &report.differences {
        println!("{difference}");
    }
    let repaired = report.differences.iter().filter(|d| d.repaired).count();
    println!(
        "{}{} customer(s) compared, {} difference(s), {repaired} repaired, {} missed event(s) replayed",
        if dry_run { "dry run: " } else { "" },
        report.customers,
        report.differences.len(),
        report.replayed,
    );
    Ok(())
}

pub fn import_stripe(env_file: &Path, apply: bool) -> Result<(), CommandError> {
    let reconciler = reconciler(env_file)?;
    let report = actix_web::rt::System::new()
        .block_on(import::import(&reconciler, apply, &Actor::system()))
        .map_err(sync_failed)?;
    for line in &report.lines {
        println!("{line}");
    }
    for difference in &report.differences {
        println!("{difference}");
    }
    let to_link = report
        .lines
        .iter()
        .filter(|l| matches!(l.decision, import::Decision::Link(..)))
        .count();
    if apply {
        println!("linked {} customer(s)", report.linked);
    } else {
        println!("dry run: {to_link} customer(s) would be linked; run with --apply to link them");
    }
    Ok(())
}
