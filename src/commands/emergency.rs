//! Emergency switches: `revoke-sessions`, `byok disable-leases`, `byok enable-leases`.
//! Each takes effect at once on every instance (the state is in the database) and is
//! audited as CRITICAL.

use std::path::Path;

use super::{CommandError, IfMissing, connect_database, failed};
use crate::audit::{self, Kind, SecurityEvent};
use crate::db::models::session;
use crate::vault;

pub fn revoke_sessions(env_file: &Path) -> Result<(), CommandError> {
    let db = connect_database(env_file, IfMissing::Refuse)?;
    let count = db.run_blocking(session::delete_all).map_err(failed)?;
    let event = SecurityEvent::new(Kind::SessionsRevoked)
        .actor("cli")
        .details(serde_json::json!({ "sessions": count }));
    db.run_blocking(|conn| audit::write(conn, &event))
        .map_err(failed)?;
    println!("revoked {count} session(s): everyone must sign in again");
    Ok(())
}

pub fn set_leases(env_file: &Path, disabled: bool) -> Result<(), CommandError> {
    let db = connect_database(env_file, IfMissing::Refuse)?;
    db.run_blocking(|conn| vault::set_leases_disabled(conn, disabled))
        .map_err(failed)?;
    let kind = if disabled {
        Kind::LeasesDisabled
    } else {
        Kind::LeasesEnabled
    };
    db.run_blocking(|conn| audit::write(conn, &SecurityEvent::new(kind).actor("cli")))
        .map_err(failed)?;
    if disabled {
        println!(
            "BYOK leases are DISABLED: the lease API answers 503 until `tollgate byok enable-leases`"
        );
    } else {
        println!("BYOK leases are enabled");
    }
    Ok(())
}
