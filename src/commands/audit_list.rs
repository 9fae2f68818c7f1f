//! `tollgate audit list [--severity S] [--since 24h] [--kind K] [--actor A] [--ip IP]
//! [--limit N] [--json]`: the audit log from the command line, through the same typed filter
//! as the console's list and export ([`crate::audit::query::Filter`]). A table by default;
//! `--json` prints one JSON object per line (JSON Lines, newest first), each the same object
//! as the console's JSON export. Bad input exits 2.

use std::path::Path;

use super::{CommandError, IfMissing, connect_database, failed};
use crate::audit::query::{self, ExportedEvent, Filter, RawFilter};

/// What `audit list` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub severity: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// `30m`, `24h`, `7d`.
    pub since: Option<String>,
    pub limit: i64,
    pub json: bool,
}

/// The options as the shared filter; bad values are usage errors (exit 2).
fn filter(options: &ListOptions) -> Result<Filter, CommandError> {
    let mut filter = Filter::parse(&RawFilter {
        severity: options.severity.clone(),
        kind: options.kind.clone(),
        actor: options.actor.clone(),
        ip: options.ip.clone(),
        from: None,
        to: None,
    })
    .map_err(|err| CommandError::Usage(format!("audit list: {err}")))?;
    if let Some(since) = &options.since {
        let back = query::parse_since(since).ok_or_else(|| {
            CommandError::Usage(
                "audit list: --since must be a positive number and a unit: 90s, 30m, 24h or 7d"
                    .into(),
            )
        })?;
        filter.from = Some(crate::db::now() - back);
    }
    if !(1..=query::PAGE_SIZE_MAX).contains(&options.limit) {
        return Err(CommandError::Usage(format!(
            "audit list: --limit must be between 1 and {}",
            query::PAGE_SIZE_MAX
        )));
    }
    Ok(filter)
}

pub fn list(env_file: &Path, options: &ListOptions) -> Result<(), CommandError> {
    let filter = filter(options)?;
    let db = connect_database(env_file, IfMissing::Refuse)?;
    let events = db
        .run_blocking(|conn| query::list(conn, &filter, options.limit))
        .map_err(failed)?;
    if options.json {
        for event in &events {
            println!("{}", serde_json::to_string(event).map_err(failed)?);
        }
    } else {
        print_table(&events);
    }
    Ok(())
}

/// A cell cut to `width` characters (an ellipsis says it was cut).
fn cell(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn print_table(events: &[ExportedEvent]) {
    println!(
        "{:<8} {:<20} {:<8} {:<30} {:>6} {:<20} {:<39} DETAILS",
        "ID", "LAST SEEN (UTC)", "SEVERITY", "KIND", "COUNT", "ACTOR", "ADDRESS"
    );
    for event in events {
        println!(
            "{:<8} {:<20} {:<8} {:<30} {:>6} {:<20} {:<39} {}",
            event.id,
            cell(&event.last_seen_at.replace('T', " "), 19),
            event.severity,
            cell(&event.kind, 30),
            event.count,
            cell(event.actor.as_deref().unwrap_or("-"), 20),
            event.ip.as_deref().unwrap_or("-"),
            cell(&event.details.to_string(), 80),
        );
    }
    if events.is_empty() {
        println!("(no matching events)");
    }
}
