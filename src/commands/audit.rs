//! `tollgate audit verify` and `tollgate audit prune`: the audit chain's verification and
//! retention by hand (see `audit::chain` and `audit::retention`).

use std::path::Path;

use super::{CommandError, IfMissing, connect_database, failed};
use crate::audit::chain::{self, Verdict};
use crate::audit::retention::{self, Retention, Table};
use crate::config::{self, ProcessEnv};

/// Walks every chain; fails (exit 1) naming the first row that breaks a link.
pub fn verify(env_file: &Path) -> Result<(), CommandError> {
    let db = connect_database(env_file, IfMissing::Refuse)?;
    match db.run_blocking(chain::verify).map_err(failed)? {
        Verdict::Broken(broken) => Err(CommandError::Failed(format!(
            "audit trail broken at {broken}"
        ))),
        Verdict::Intact(summary) => {
            let rows: i64 = summary.chains.iter().map(|c| c.rows).sum();
            println!(
                "audit trail intact: {} chain(s), {rows} row(s) verified",
                summary.chains.len()
            );
            for chain in &summary.chains {
                println!(
                    "chain {}: sequences {}..={} ({} row(s), checkpoint {}), head {}",
                    chain.chain,
                    chain.checkpoint_sequence + 1,
                    chain.head_sequence,
                    chain.rows,
                    chain.checkpoint_sequence,
                    chain.head_hash
                );
            }
            if summary.unchained > 0 {
                println!(
                    "{} older row(s) predate the chain and are not verified",
                    summary.unchained
                );
            }
            Ok(())
        }
    }
}

/// Deletes (or, with `dry_run`, counts) what retention says is old enough, per table.
pub fn prune(env_file: &Path, dry_run: bool) -> Result<(), CommandError> {
    let db = connect_database(env_file, IfMissing::Refuse)?;
    let retention = Retention::new(&config::audit_trail(&ProcessEnv)?);
    let now = crate::db::now();
    let pruned = if dry_run {
        db.run_blocking(|conn| retention::count(conn, retention, now))
    } else {
        db.run_blocking(|conn| retention::prune_blocking(conn, retention, now))
    }
    .map_err(failed)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for table in Table::ALL {
        println!("{}: {verb} {}", table.name(), pruned.of(table));
    }
    Ok(())
}
