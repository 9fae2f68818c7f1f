//! `tollgate rotate-key [--check]`: move every sealed value to the primary encryption key.

use std::path::Path;

use super::{CommandError, connect, failed};
use crate::audit::{self, Kind, SecurityEvent};
use crate::crypto::rotation::{self, KeyRole, SEALED_COLUMNS};

pub struct RotateOptions {
    pub batch_size: usize,
    /// Stop (cleanly) after this many values: for staged rollouts and tests.
    pub max_rows: Option<usize>,
    /// Abort a batch's transaction after this many values: proves crash safety in tests.
    pub fail_after: Option<usize>,
}

pub fn check(env_file: &Path) -> Result<(), CommandError> {
    let (config, db) = connect(env_file)?;
    let keyring = config.keyring();
    let report = db
        .run_blocking(|conn| rotation::check(conn, &keyring))
        .map_err(failed)?;
    let primary = keyring.primary_id();
    println!("primary key: {primary}");
    let mut old = 0;
    let mut missing = 0;
    for line in &report {
        let role = match line.role {
            KeyRole::Primary => "primary",
            KeyRole::Old => {
                old += line.count;
                "old"
            }
            KeyRole::Missing => {
                missing += line.count;
                "NOT IN KEYRING"
            }
        };
        println!(
            "{}: {} value(s) under key {} ({role})",
            line.column, line.count, line.key_id
        );
    }
    if missing > 0 {
        return Err(CommandError::Failed(format!(
            "{missing} value(s) are sealed under keys that are not configured: add them to ENCRYPTION_KEYS_OLD"
        )));
    }
    if old == 0 {
        println!(
            "every sealed value is under the primary key: old keys can be removed from ENCRYPTION_KEYS_OLD"
        );
    } else {
        println!("{old} value(s) are still under old keys: run `tollgate rotate-key`");
    }
    Ok(())
}

pub fn rotate(env_file: &Path, options: &RotateOptions) -> Result<(), CommandError> {
    if options.batch_size == 0 {
        return Err(CommandError::Usage(
            "rotate-key: --batch-size must be at least 1".into(),
        ));
    }
    let (config, db) = connect(env_file)?;
    let keyring = config.keyring();
    println!("re-sealing under primary key {}", keyring.primary_id());
    let mut budget = options.max_rows.unwrap_or(usize::MAX);
    let mut total = 0;
    for column in SEALED_COLUMNS {
        let mut after_id = 0;
        let mut done = 0;
        while budget > 0 {
            let limit = options.batch_size.min(budget);
            let batch = db
                .run_blocking(|conn| {
                    column.rotate_batch(conn, &keyring, after_id, limit, options.fail_after)
                })
                .map_err(failed)?;
            let Some(last_id) = batch.last_id else { break };
            after_id = last_id;
            done += batch.rotated;
            budget = budget.saturating_sub(batch.rotated + batch.raced);
            println!(
                "{}: re-sealed {} (total {done}){}",
                column.name(),
                batch.rotated,
                raced_note(batch.raced)
            );
        }
        total += done;
    }
    let remaining: i64 = db
        .run_blocking(|conn| rotation::check(conn, &keyring))
        .map_err(failed)?
        .iter()
        .filter(|line| line.role != KeyRole::Primary)
        .map(|line| line.count)
        .sum();
    let event = SecurityEvent::new(Kind::KeyRotated)
        .actor("cli")
        .details(serde_json::json!({
            "primary": keyring.primary_id().to_string(),
            "resealed": total,
            "remaining": remaining,
        }));
    db.run_blocking(|conn| audit::write(conn, &event))
        .map_err(failed)?;
    println!("done: re-sealed {total} value(s); {remaining} remain under other keys");
    Ok(())
}

fn raced_note(raced: usize) -> String {
    if raced == 0 {
        String::new()
    } else {
        format!(", {raced} already replaced by the application")
    }
}
