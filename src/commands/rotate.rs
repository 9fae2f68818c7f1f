//! `tollgate rotate-key [--check]`: move every sealed value to the primary encryption key and
//! every blind index to the primary pepper; `--check` reports what is left under older ones.

use std::path::Path;

use super::{CommandError, connect, failed};
use crate::audit::{self, Kind, SecurityEvent};
use crate::billing::customers::{self, INDEX_COLUMN};
use crate::crypto::TokenHasher;
use crate::crypto::rotation::{self, Batch, KeyRole, RotationError};
use crate::db::models::{billing_customer, service_token};
use crate::db::{Db, DbConnection, DbError};
use crate::encryption_keys::{self, SEALED_COLUMNS};

pub struct RotateOptions {
    pub batch_size: usize,
    /// Stop (cleanly) after this many values: for staged rollouts and tests.
    pub max_rows: Option<usize>,
    /// Abort a batch's transaction after this many values: proves crash safety in tests.
    pub fail_after: Option<usize>,
}

/// What made a digest, as `--check` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PepperRole {
    Primary,
    Old,
    /// Not configured at all: these digests are no longer recognised.
    Missing,
    /// Made before pepper ids were recorded.
    Unrecorded,
}

/// How many digests of one column each pepper made.
struct PepperCount {
    column: &'static str,
    what: &'static str,
    pepper: Option<String>,
    count: i64,
    role: PepperRole,
}

fn pepper_report(
    conn: &mut DbConnection,
    hasher: &TokenHasher,
) -> Result<Vec<PepperCount>, DbError> {
    let known: Vec<String> = hasher
        .pepper_ids()
        .iter()
        .map(|id| id.to_string())
        .collect();
    let primary = hasher.primary_id().to_string();
    let role = |pepper: &Option<String>| match pepper {
        None => PepperRole::Unrecorded,
        Some(id) if *id == primary => PepperRole::Primary,
        Some(id) if known.contains(id) => PepperRole::Old,
        Some(_) => PepperRole::Missing,
    };
    let columns = [
        (
            INDEX_COLUMN,
            "index(es)",
            billing_customer::count_by_index_key_id(conn)?,
        ),
        (
            "service_tokens.token_hash",
            "live token(s)",
            service_token::count_live_by_hash_key_id(conn)?,
        ),
    ];
    Ok(columns
        .into_iter()
        .flat_map(|(column, what, counts)| {
            counts
                .into_iter()
                .map(move |(pepper, count)| (column, what, pepper, count))
        })
        .map(|(column, what, pepper, count)| PepperCount {
            column,
            what,
            role: role(&pepper),
            pepper,
            count,
        })
        .collect())
}

/// Prints the blind indexes and token hashes per pepper, with what to do next; fails when live
/// tokens are hashed under a pepper that is no longer configured.
fn check_peppers(report: &[PepperCount], hasher: &TokenHasher) -> Result<(), CommandError> {
    println!("primary pepper: {}", hasher.primary_id());
    let (mut stale_indexes, mut old_tokens, mut lost_tokens, mut unrecorded_tokens) = (0, 0, 0, 0);
    for line in report {
        let is_index = line.column == INDEX_COLUMN;
        let role = match line.role {
            PepperRole::Primary => "primary",
            PepperRole::Old => "old",
            PepperRole::Missing => "NOT CONFIGURED",
            PepperRole::Unrecorded => "made before pepper ids were recorded",
        };
        match (is_index, line.role) {
            (_, PepperRole::Primary) => {}
            (true, _) => stale_indexes += line.count,
            (false, PepperRole::Old) => old_tokens += line.count,
            (false, PepperRole::Missing) => lost_tokens += line.count,
            (false, PepperRole::Unrecorded) => unrecorded_tokens += line.count,
        }
        let pepper = line.pepper.as_deref().unwrap_or("(none)");
        println!(
            "{}: {} {} under pepper {pepper} ({role})",
            line.column, line.count, line.what
        );
    }
    if stale_indexes > 0 {
        println!(
            "{stale_indexes} blind index(es) are not under the primary pepper: run `tollgate rotate-key`"
        );
    }
    if old_tokens > 0 {
        println!(
            "{old_tokens} live service token(s) are hashed under old peppers: each is re-hashed on its next use; keep those peppers in TOKEN_PEPPERS_OLD until then, or replace the tokens"
        );
    }
    if unrecorded_tokens > 0 {
        println!(
            "{unrecorded_tokens} live service token(s) have no recorded pepper yet (created before pepper ids were recorded): it is recorded on their next use"
        );
    }
    if stale_indexes + old_tokens + unrecorded_tokens + lost_tokens == 0 {
        println!(
            "every blind index and live service token is under the primary pepper: old peppers can be removed from TOKEN_PEPPERS_OLD"
        );
    }
    if lost_tokens > 0 {
        return Err(CommandError::Failed(format!(
            "{lost_tokens} live service token(s) are hashed under peppers that are not configured: add them to TOKEN_PEPPERS_OLD, or replace the tokens"
        )));
    }
    Ok(())
}

pub fn check(env_file: &Path) -> Result<(), CommandError> {
    let (config, db) = connect(env_file)?;
    let keyring = config.keyring();
    let hasher = config.token_hasher();
    let report = db
        .run_blocking(|conn| rotation::check(conn, &keyring, SEALED_COLUMNS))
        .map_err(failed)?;
    let peppers = db
        .run_blocking(|conn| pepper_report(conn, &hasher))
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
    if old == 0 && missing == 0 {
        println!(
            "every sealed value is under the primary key: old keys can be removed from ENCRYPTION_KEYS_OLD"
        );
    } else if old > 0 {
        println!("{old} value(s) are still under old keys: run `tollgate rotate-key`");
    }
    let peppers = check_peppers(&peppers, &hasher);
    if missing > 0 {
        return Err(CommandError::Failed(format!(
            "{missing} value(s) are sealed under keys that are not configured: add them to ENCRYPTION_KEYS_OLD"
        )));
    }
    peppers
}

pub fn rotate(env_file: &Path, options: &RotateOptions) -> Result<(), CommandError> {
    if options.batch_size == 0 {
        return Err(CommandError::Usage(
            "rotate-key: --batch-size must be at least 1".into(),
        ));
    }
    let (config, db) = connect(env_file)?;
    let keyring = config.keyring();
    let hasher = config.token_hasher();
    println!("re-sealing under primary key {}", keyring.primary_id());
    db.run_blocking(|conn| encryption_keys::record_configured(conn, &keyring, crate::db::now()))
        .map_err(failed)?;
    let mut budget = options.max_rows.unwrap_or(usize::MAX);
    let mut total = 0;
    for column in SEALED_COLUMNS {
        total += run_batches(
            &db,
            options,
            &mut budget,
            (column.name(), "re-sealed"),
            |conn, after_id, limit| {
                column.rotate_batch(conn, &keyring, after_id, limit, options.fail_after)
            },
        )?;
    }
    println!(
        "rebuilding blind indexes under primary pepper {}",
        hasher.primary_id()
    );
    let rebuilt = run_batches(
        &db,
        options,
        &mut budget,
        (INDEX_COLUMN, "rebuilt"),
        |conn, after_user, limit| {
            customers::reindex_batch(
                conn,
                &keyring,
                &hasher,
                after_user,
                limit,
                options.fail_after,
            )
        },
    )?;
    let remaining: i64 = db
        .run_blocking(|conn| rotation::check(conn, &keyring, SEALED_COLUMNS))
        .map_err(failed)?
        .iter()
        .filter(|line| line.role != KeyRole::Primary)
        .map(|line| line.count)
        .sum();
    let stale: i64 = db
        .run_blocking(|conn| pepper_report(conn, &hasher))
        .map_err(failed)?
        .iter()
        .filter(|line| line.column == INDEX_COLUMN && line.role != PepperRole::Primary)
        .map(|line| line.count)
        .sum();
    let event = SecurityEvent::new(Kind::KeyRotated)
        .actor("cli")
        .details(serde_json::json!({
            "primary": keyring.primary_id().to_string(),
            "resealed": total,
            "remaining": remaining,
            "pepper": hasher.primary_id().to_string(),
            "reindexed": rebuilt,
            "indexes_remaining": stale,
        }));
    db.run_blocking(|conn| audit::write(conn, &event))
        .map_err(failed)?;
    println!(
        "done: re-sealed {total} value(s); {remaining} remain under other keys; \
         rebuilt {rebuilt} blind index(es); {stale} remain under other peppers"
    );
    Ok(())
}

/// Runs `next_batch` from the first row on until no row is left or `budget` is spent, printing each
/// batch as `{column}: {verb} n (total m)`; returns how many rows it replaced.
fn run_batches(
    db: &Db,
    options: &RotateOptions,
    budget: &mut usize,
    (column, verb): (&str, &str),
    next_batch: impl Fn(&mut DbConnection, i64, usize) -> Result<Batch, RotationError>,
) -> Result<usize, CommandError> {
    let mut after_id = 0;
    let mut done = 0;
    while *budget > 0 {
        let limit = options.batch_size.min(*budget);
        let batch = db
            .run_blocking(|conn| next_batch(conn, after_id, limit))
            .map_err(failed)?;
        let Some(last_id) = batch.last_id else { break };
        after_id = last_id;
        done += batch.rotated;
        *budget = budget.saturating_sub(batch.rotated + batch.raced);
        println!(
            "{column}: {verb} {} (total {done}){}",
            batch.rotated,
            raced_note(batch.raced)
        );
    }
    Ok(done)
}

fn raced_note(raced: usize) -> String {
    if raced == 0 {
        String::new()
    } else {
        format!(", {raced} already replaced by the application")
    }
}
